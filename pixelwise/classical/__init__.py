"""Classical (training-free) segmentation under one call, as baselines and as tools.

    labels = pw.classical.segment(image, "watershed", surface="distance")   # int32 (H, W)
    semantic = pw.classical.to_semantic(labels, image, rule="bright")     # int64 (H, W), 1 = foreground

`image` is a numpy array, (H, W) or (H, W, 3) (see `_util.as_rgb` for the accepted dtypes), or a file path.
Every method returns an int32 (H, W) label map whose numbering is deterministic. Two kinds of map:
- "partition": every pixel belongs to a region 0..K-1 (thresholds and clusterings order them dark -> bright;
  superpixels and gradient watershed number them in raster order).
- "objects": 0 = background, 1..K = objects (edge methods, distance watershed, morph_geodesic).
Methods, their parameters and references: `list_methods()`, `METHODS[name].summary`, and each function's
docstring. Unknown methods or parameters and invalid values raise `ConfigError`; bad images `DataError`.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage import filters

from pixelwise.classical import clustering, contours, edges, superpixels, threshold, watershed
from pixelwise.classical._util import as_rgb, gray_u8
from pixelwise.errors import ConfigError, DataError


@dataclass(frozen=True)
class Method:
    fn: Callable[..., np.ndarray]
    kind: str  # "partition" or "objects" (see the module docstring)
    summary: str


METHODS: dict[str, Method] = {
    "sobel": Method(edges.sobel, "objects", "regions enclosed by Sobel edges"),
    "scharr": Method(edges.scharr, "objects", "regions enclosed by Scharr edges"),
    "log": Method(edges.log, "objects", "regions enclosed by Laplacian-of-Gaussian zero crossings"),
    "canny": Method(edges.canny, "objects", "regions enclosed by Canny edges (automatic thresholds)"),
    "otsu": Method(threshold.otsu, "partition", "global Otsu threshold"),
    "multiotsu": Method(threshold.multiotsu, "partition", "multi-level Otsu thresholds"),
    "adaptive": Method(threshold.adaptive, "partition", "local (adaptive) threshold"),
    "li": Method(threshold.li, "partition", "Li minimum cross-entropy threshold"),
    "triangle": Method(threshold.triangle, "partition", "triangle threshold"),
    "kmeans": Method(clustering.kmeans, "partition", "k-means on colour (+ position)"),
    "gmm": Method(clustering.gmm, "partition", "Gaussian mixture on colour (+ position)"),
    "meanshift": Method(clustering.meanshift, "partition", "mean-shift clustering on colour (+ position)"),
    "watershed": Method(watershed.watershed, "partition",
                        "marker watershed on the gradient, or surface=distance to split touching objects"),
    "slic": Method(superpixels.slic, "partition", "SLIC superpixels"),
    "felzenszwalb": Method(superpixels.felzenszwalb, "partition", "Felzenszwalb-Huttenlocher graph segmentation"),
    "quickshift": Method(superpixels.quickshift, "partition", "quick shift mode seeking"),
    "chan_vese": Method(contours.chan_vese, "partition", "Chan-Vese active contour without edges"),
    "morph_chan_vese": Method(contours.morph_chan_vese, "partition", "morphological Chan-Vese (MorphACWE)"),
    "morph_geodesic": Method(contours.morph_geodesic, "objects", "morphological geodesic active contour"),
}

RULES = ("auto", "bright", "dark", "nonzero")


def list_methods() -> list[str]:
    """Names accepted by `segment`, in a fixed order (edges, thresholds, clustering, watershed, ...)."""
    return list(METHODS)


def method_params(method: str) -> dict[str, object]:
    """The parameters of a method and their defaults."""
    fn = _lookup(method).fn
    return {name: p.default for name, p in list(inspect.signature(fn).parameters.items())[1:]}


def _lookup(method: str) -> Method:
    if method not in METHODS:
        raise ConfigError(f"unknown classical method '{method}' (known: {', '.join(METHODS)})")
    return METHODS[method]


def segment(image, method: str, **params) -> np.ndarray:
    """Segment one image with a classical method. image: array (H, W) / (H, W, 3) or a path.
    Returns int32 (H, W) labels (see the module docstring for their meaning)."""
    entry = _lookup(method)
    allowed = method_params(method)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(f"{method}: unknown parameter(s) {', '.join(unknown)} "
                          f"(its parameters: {', '.join(allowed) or 'none'})")
    if isinstance(image, (str, Path)):
        from pixelwise.data.io import read_image
        image = read_image(image)
    rgb = as_rgb(image)
    try:
        labels = entry.fn(rgb, **params)
    except (ValueError, TypeError) as exc:  # a value the underlying library refuses, e.g. a wrong type
        raise ConfigError(f"{method}: invalid parameters {params}: {exc}") from None
    return np.ascontiguousarray(labels, dtype=np.int32)


def to_semantic(labels: np.ndarray, image, rule: str = "auto", threshold: float | None = None) -> np.ndarray:
    """Turn a label map into foreground (1) / background (0), int64 (H, W).

    rule: "nonzero" -> every label > 0 is foreground (for "objects" maps).
    "bright" / "dark" -> a region is foreground when its mean intensity (grey, in [0, 1]) is above / at most
    `threshold` (default: the image's Otsu threshold, on its uint8 grey levels as the "otsu" method); a
    two-region map takes its brighter / darker region.
    "auto" -> "bright" or "dark", whichever gives the smaller foreground (objects cover less than background).
    """
    if rule not in RULES:
        raise ConfigError(f"to_semantic: rule must be one of {', '.join(RULES)}, got {rule!r}")
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"to_semantic: labels must be an integer (H, W) array, got {labels.dtype} {labels.shape}")
    if rule == "nonzero":
        return (labels > 0).astype(np.int64)
    g = gray_u8(as_rgb(image))  # grey levels 0..255, as the global thresholds see them
    if g.shape != labels.shape:
        raise DataError(f"to_semantic: labels {labels.shape} and image {g.shape} differ in size")
    ids, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape)
    means = np.asarray(ndi.mean(g, inverse, index=np.arange(len(ids))))  # float64, in levels
    if len(ids) == 2 and threshold is None:
        bright_ids = means > means.min() if means[0] != means[1] else np.zeros(2, bool)
    else:
        if threshold is None:
            t = float(filters.threshold_otsu(g)) if g.min() < g.max() else float(g.max())
        else:
            t = threshold * 255.0
        bright_ids = means > t
    bright = bright_ids[inverse]
    if rule == "bright" or (rule == "auto" and bright.mean() <= 0.5):
        return bright.astype(np.int64)
    return (~bright).astype(np.int64)


__all__ = ["METHODS", "Method", "list_methods", "method_params", "segment", "to_semantic"]
