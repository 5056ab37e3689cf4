"""What a worker thread does for one request: decode the upload, predict, encode the answer.

One function per task, looked up in TASKS. A panoptic model plugs in by giving its predictor a
`predict_panoptic(image)` method that returns a `pixelwise.tasks.inference.PanopticPrediction`-like object:
    .ids       int (H,W) segment ids (0 = no segment)
    .segments  [{"id": segment id, "category_id": class id, ...}, ...]   (COCO panoptic naming)
Until the Predictor has that method, `supports(predictor, "panoptic")` is False and the app answers 400.
"""
from __future__ import annotations

import numpy as np

from pixelwise import rle
from pixelwise.errors import PixelwiseError
from pixelwise.serve import codec
from pixelwise.serve.codec import RequestError


def supports(predictor, task: str) -> bool:
    if task == "semantic":
        return True
    if task == "panoptic":
        return callable(getattr(predictor, "predict_panoptic", None))
    return False


def _run(fn, image: np.ndarray, kwargs: dict):
    """Call the model; map the failures a client caused (an image it cannot take) to 4xx."""
    try:
        return fn(image, **kwargs)
    except PixelwiseError as exc:
        raise RequestError(422, f"cannot segment this image: {exc}") from None
    except MemoryError:
        raise RequestError(413, f"image {image.shape[1]}x{image.shape[0]} is too large for this server's "
                                "memory; lower --max-pixels or use --tile") from None


def semantic(predictor, data: bytes, settings, model_name: str, fmt: str, overlay: bool, kwargs: dict) -> dict:
    """Upload bytes -> the /v1/segment answer: size, model, classes with pixel counts, mask (PNG or RLE)."""
    image = codec.decode_image(data, settings.max_pixels)
    labels = np.asarray(_run(predictor.predict, image, kwargs).semantic)
    h, w = labels.shape
    body = {
        "width": int(w), "height": int(h), "model": model_name,
        "classes": codec.class_table(labels, predictor.classes, predictor.palette),
        "mask": (codec.rle_mask(labels) if fmt == "rle"
                 else {"format": "png", "data": codec.b64(codec.index_png(labels, predictor.palette))}),
    }
    if overlay:
        body["overlay"] = _overlay(image, labels, predictor.palette, settings.overlay_alpha)
    return body


def panoptic(predictor, data: bytes, settings, model_name: str, fmt: str, overlay: bool, kwargs: dict) -> dict:
    """Upload bytes -> size, model, classes with pixel counts, and segments (id, class, name, area, RLE)."""
    image = codec.decode_image(data, settings.max_pixels)
    result = _run(predictor.predict_panoptic, image, kwargs)
    ids = np.asarray(result.ids)
    h, w = ids.shape
    classes, segments = predictor.classes, []
    semantic_map = np.full((h, w), len(classes), np.int64)  # void where no segment
    for seg in result.segments:
        cls = int(seg["category_id"])
        mask = ids == int(seg["id"])
        semantic_map[mask] = cls
        segments.append({"id": int(seg["id"]), "class": cls, "name": classes[cls], "area": int(mask.sum()),
                         "rle": rle.encode(mask)})
    body = {"width": int(w), "height": int(h), "model": model_name,
            "classes": codec.class_table(semantic_map, classes, predictor.palette), "segments": segments}
    if overlay:
        body["overlay"] = _overlay(image, np.where(semantic_map < len(classes), semantic_map, 255),
                                   predictor.palette, settings.overlay_alpha)
    return body


def _overlay(image: np.ndarray, labels: np.ndarray, palette, alpha: float) -> dict:
    from PIL import Image

    from pixelwise.viz import overlay

    return {"format": "png", "data": codec.b64(codec.png_bytes(Image.fromarray(overlay(image, labels, palette,
                                                                                        alpha))))}


TASKS = {"semantic": semantic, "panoptic": panoptic}
