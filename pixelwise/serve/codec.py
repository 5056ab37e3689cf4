"""Uploaded bytes -> RGB array, with errors a client can act on; base64 for the payloads of answers.

Every problem with an upload raises `RequestError(status, message)`; the app turns it into a JSON
`{"error": message}` response with that status. Nothing here touches the file system.
"""
from __future__ import annotations

import base64
import io
import struct

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError



class RequestError(Exception):
    """A client error: HTTP status + one line naming the problem."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Image file bytes -> uint8 (H,W,3) RGB, upright per EXIF orientation.

    The size is checked from the header before any pixel is decoded, so a decompression bomb (a small file
    that expands to a huge image) is refused without allocating it. Raises RequestError (400/413).
    A truncated file fails in `load()`: PIL's default ImageFile.LOAD_TRUNCATED_IMAGES = False holds (we
    do not flip that process-wide switch).
    """
    if not data:
        raise RequestError(400, "the uploaded file is empty (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise RequestError(413, f"image too large: {exc} (this server's limit: {max_pixels} pixels)") from None
    except UnidentifiedImageError:
        declared = _declared_size(data)
        if declared and 0 in declared[1:]:
            raise RequestError(400, f"zero-size image: the {declared[0]} header says {declared[1]}x{declared[2]}")
        raise RequestError(400, f"not an image: could not identify the format of the upload "
                                f"({len(data)} bytes, starting {data[:8]!r})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise RequestError(400, f"truncated or corrupt image: its header cannot be read ({exc})") from None
    w, h = img.size
    if w <= 0 or h <= 0:
        raise RequestError(400, f"zero-size image ({w}x{h})")
    if w * h > max_pixels:
        raise RequestError(413, f"image too large: {w}x{h} = {w * h} pixels, over the limit of {max_pixels} "
                                f"(--max-pixels)")
    try:
        img.load()
        img = ImageOps.exif_transpose(img)
        arr = _to_rgb(img)
    except Image.DecompressionBombError as exc:
        raise RequestError(413, f"image too large: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise RequestError(400, f"truncated or corrupt image ({img.format or 'unknown format'} "
                                f"{w}x{h}): {exc}") from None
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise RequestError(400, f"zero-size image ({arr.shape[1] if arr.ndim > 1 else 0}x{arr.shape[0]})")
    return np.ascontiguousarray(arr)


def _declared_size(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) from a PNG, GIF or BMP header, for a clear message where PIL refuses the
    file outright (it does so for zero-size images)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        return ("PNG", *struct.unpack(">II", data[16:24]))
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return ("GIF", *struct.unpack("<HH", data[6:10]))
    if data[:2] == b"BM" and len(data) >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        return ("BMP", w, abs(h))
    return None


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> uint8 (H,W,3); 16-bit and float greyscale are scaled by their maximum."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        grey = np.asarray(img, dtype=np.float64)
        top = grey.max(initial=0)
        grey = (grey * (255.0 / top) if top > 255 else grey).clip(0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
