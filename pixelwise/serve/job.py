"""What a worker thread does for one request, for every task: decode the upload, predict, encode the answer.

The body is the same frame for every task: {"width", "height", "model", "task", "classes": [...], ...}
plus what the task's `answer` adds ("mask" for semantic and multi-label models, "segments" and
"segment_map" for panoptic ones, ...), and with ?overlay=1 the task's colour overlay as a PNG.
"""
from __future__ import annotations

import numpy as np

from pixelwise.data.io import png_bytes
from pixelwise.errors import PixelwiseError
from pixelwise.serve import codec
from pixelwise.serve.codec import RequestError


def _predict(predictor, image: np.ndarray):
    """Call the model; map the failures a client caused (an image it cannot take) to 4xx."""
    try:
        return predictor.predict(image)
    except PixelwiseError as exc:
        raise RequestError(422, f"cannot segment this image: {exc}") from None
    except MemoryError:
        raise RequestError(413, f"image {image.shape[1]}x{image.shape[0]} is too large for this server's "
                                "memory; lower --max-pixels or use --tile") from None


def segment(predictor, data: bytes, settings, model_name: str, fmt: str, overlay: bool) -> dict:
    """Upload bytes -> the /v1/segment answer of `predictor`'s task. A multi-band model takes a multi-band
    TIFF (or .npy) upload and its answer carries the RGB composite ("image") the page draws on."""
    spec = getattr(predictor, "spec", None)  # Predictor-likes without one read RGB
    bands = spec is not None and not spec.is_rgb
    if bands:
        image = codec.decode_raster(data, settings.max_pixels)
        try:
            image = predictor.check_image(image, "the upload")
        except PixelwiseError as exc:
            raise RequestError(400, str(exc)) from None
    else:
        image = codec.decode_image(data, settings.max_pixels)
    pred = _predict(predictor, image)
    h, w = image.shape[:2]
    body = {"width": int(w), "height": int(h), "model": model_name, "task": predictor.task.name,
            **predictor.task.answer(pred, fmt)}
    picture = predictor.display(image) if bands else image
    if bands:
        body["image"] = {"format": "png", "data": codec.b64(png_bytes(picture))}
    if overlay:
        drawn = pred.overlay(picture, settings.overlay_alpha, legend=False)
        body["overlay"] = {"format": "png", "data": codec.b64(png_bytes(drawn))}
    return body
