"""Uploaded bytes -> RGB array, with errors a client can act on; base64 for the payloads of answers.

Every problem with an upload raises `RequestError(status, message)`; the app turns it into a JSON
`{"error": message}` response with that status. Nothing here touches the file system.
"""
from __future__ import annotations

import base64

import numpy as np

from pixelwise.data.io import ImageTooLarge, decode_image as decode
from pixelwise.errors import DataError


class RequestError(Exception):
    """A client error: HTTP status + one line naming the problem."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Image file bytes -> uint8 (H,W,3) RGB, upright per EXIF orientation, through the library's one image
    loader (pixelwise.data.io.decode_image: the size is checked from the header before any pixel is
    decoded, so a decompression bomb is refused without allocating it). Raises RequestError: 413 for an
    image over `max_pixels`, 400 for anything else wrong with it."""
    return _decoded(decode, data, max_pixels)


def decode_raster(data: bytes, max_pixels: int) -> np.ndarray:
    """Multi-band TIFF / GeoTIFF or .npy bytes -> raw (H, W, B) array (pixelwise.data.raster.decode_raster),
    or an 8-bit image any other format -> uint8 (H, W, 3). Raises RequestError 413 / 400 as decode_image."""
    from pixelwise.data.raster import decode_raster as decode_bands

    return _decoded(decode_bands, data, max_pixels)


def _decoded(decoder, data: bytes, max_pixels: int) -> np.ndarray:
    """decoder(data, "the upload", max_pixels), its DataErrors as RequestErrors: 413 too large, else 400."""
    try:
        return decoder(data, "the upload", max_pixels)
    except ImageTooLarge as exc:
        raise RequestError(413, f"{exc} (--max-pixels)") from None
    except DataError as exc:
        raise RequestError(400, str(exc)) from None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
