"""Shared helpers of the classical methods: input checks, greyscale, deterministic label order."""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from pixelwise.errors import ConfigError, DataError


def as_rgb(image) -> np.ndarray:
    """Check an image array and return it as uint8 (H, W, 3) RGB.

    Accepts (H, W) greyscale or (H, W, 1|3|4) arrays (alpha is dropped) of dtype bool, uint8, uint16 or float.
    uint16 is scaled by 1/257; floats in [0, 1] by 255, other finite floats are stretched min..max to 0..255.
    Anything else raises `DataError`.
    """
    if not isinstance(image, np.ndarray):
        raise DataError(f"expected an image as a numpy array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] in (1, 3, 4):
        image = image[..., :3] if image.shape[2] != 1 else image[..., 0]
    if image.ndim not in (2, 3) or min(image.shape[:2], default=0) < 1:
        raise DataError(f"expected an (H, W) or (H, W, 3) image, got an array of shape {image.shape}")
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    elif image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    elif np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise DataError("image has NaN or infinite values")
        lo, hi = float(image.min()), float(image.max())
        if lo < 0.0 or hi > 1.0:
            image = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
        image = np.round(image * 255.0).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise DataError(f"unsupported image dtype {image.dtype} (use uint8, uint16, bool or float)")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image)


def gray(rgb: np.ndarray) -> np.ndarray:
    """float64 (H, W) luminance in [0, 1] (ITU-R BT.601 weights, as OpenCV and PIL use).

    Summed in integers and divided once, so that a grey pixel (R = G = B = v) gives exactly v / 255."""
    r, g, b = (rgb[..., i].astype(np.int32) for i in range(3))
    return (r * 299 + g * 587 + b * 114) / 255000.0


def gray_u8(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W) grey levels of a uint8 RGB image: round(0.299 R + 0.587 G + 0.114 B), in the fixed-point
    arithmetic of PIL's ``Image.convert("L")`` (bit-identical to it). The weights sum to 2**16, so a grey image
    stored as RGB (R = G = B = v, as ISBI's slices once read) gives back exactly v. (OpenCV's cvtColor uses
    14-bit weights and differs from PIL by one level on some colours; never on grey pixels.)
    The global thresholds (threshold.py) work on these 256 integer levels, as scikit-image and OpenCV do."""
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def order_by_intensity(labels: np.ndarray, gray_image: np.ndarray) -> np.ndarray:
    """Renumber labels 0..K-1 so that label 0 has the darkest mean intensity (ties: by old label)."""
    labels = np.asarray(labels)
    ids, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape)
    means = ndi.mean(gray_image, inverse, index=np.arange(len(ids)))
    order = np.lexsort((np.arange(len(ids)), means))
    rank = np.empty(len(ids), dtype=np.int32)
    rank[order] = np.arange(len(ids), dtype=np.int32)
    return rank[inverse]


def check_positive(method: str, **values) -> None:
    """Raise `ConfigError` naming the first parameter that is not > 0."""
    for name, value in values.items():
        if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{method}: parameter '{name}' must be a number > 0, got {value!r}")


def check_int(method: str, name: str, value, low: int) -> int:
    """Raise `ConfigError` unless value is an integer >= low."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{method}: parameter '{name}' must be an integer >= {low}, got {value!r}")
    return int(value)


def check_choice(method: str, name: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{method}: parameter '{name}' must be one of {', '.join(map(str, choices))}, got {value!r}")


def remove_small(mask: np.ndarray, min_size: int) -> np.ndarray:
    """Drop connected components (8-connected) smaller than min_size pixels from a bool mask."""
    from skimage import morphology
    import inspect

    if min_size <= 1:
        return mask.astype(bool)
    # scikit-image 0.26 replaced min_size (objects < min_size go) by max_size (objects <= max_size go).
    if "max_size" in inspect.signature(morphology.remove_small_objects).parameters:
        return morphology.remove_small_objects(mask.astype(bool), max_size=min_size - 1, connectivity=2)
    return morphology.remove_small_objects(mask.astype(bool), min_size=min_size, connectivity=2)
