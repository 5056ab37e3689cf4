"""Edge detectors turned into regions: edge map -> closing -> hole filling -> connected components.

Every method returns an int32 (H, W) map: 0 = background (outside every closed contour), 1..K = the regions
enclosed by edges, numbered in raster order of their first pixel. `edge_map(...)` gives the binary edges.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage import feature, filters, measure, morphology

from pixelwise.classical._util import check_choice, check_int, gray, remove_small
from pixelwise.errors import ConfigError


def _sigma(method: str, sigma) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or sigma < 0:
        raise ConfigError(f"{method}: parameter 'sigma' must be a number >= 0, got {sigma!r}")
    return float(sigma)


def _otsu(values: np.ndarray) -> float:
    return float(filters.threshold_otsu(values)) if values.min() < values.max() else float(values.max()) + 1.0


def gradient_edges(rgb: np.ndarray, operator: str = "sobel", sigma: float = 1.0) -> np.ndarray:
    """Binary edges: gradient magnitude (Sobel or Scharr) above its Otsu threshold. bool (H, W)."""
    check_choice(operator, "operator", operator, ("sobel", "scharr"))
    g = gray(rgb)
    sigma = _sigma(operator, sigma)
    if sigma > 0:
        g = ndi.gaussian_filter(g, sigma)
    magnitude = filters.sobel(g) if operator == "sobel" else filters.scharr(g)
    return magnitude > _otsu(magnitude)


def log_edges(rgb: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """Marr-Hildreth edges: zero crossings of the Laplacian of Gaussian whose local contrast is above the
    Otsu threshold of the contrast. bool (H, W).

    D. Marr, E. Hildreth, "Theory of edge detection", Proc. R. Soc. Lond. B 207, 1980.
    """
    sigma = _sigma("log", sigma)
    if sigma == 0:
        raise ConfigError("log: parameter 'sigma' must be > 0")
    response = ndi.gaussian_laplace(gray(rgb), sigma)
    # A zero crossing: the 3x3 neighbourhood holds both signs; its strength is the local range of the response.
    lo, hi = ndi.minimum_filter(response, 3), ndi.maximum_filter(response, 3)
    crossing = (lo < 0) & (hi > 0) & (response >= 0)  # mark one side only, so edges stay one pixel thick
    contrast = hi - lo
    return crossing & (contrast > _otsu(contrast[crossing])) if crossing.any() else crossing


def canny_edges(rgb: np.ndarray, sigma: float = 2.0, low: float | None = None,
                high: float | None = None) -> np.ndarray:
    """Canny edges. Without thresholds, high = Otsu threshold of the smoothed gradient magnitude and
    low = high / 2 (M. Fang, G. X. Yue, Q. C. Yu, "The study on an application of Otsu method in Canny
    operator", ISIP 2009). bool (H, W).

    J. Canny, "A computational approach to edge detection", IEEE TPAMI 8(6), 1986.
    """
    sigma = _sigma("canny", sigma)
    g = gray(rgb)
    if high is None:
        smooth = ndi.gaussian_filter(g, sigma)
        magnitude = np.hypot(ndi.sobel(smooth, 0), ndi.sobel(smooth, 1))
        high = _otsu(magnitude)
    if low is None:
        low = high / 2
    if not (0 <= low <= high):
        raise ConfigError(f"canny: need 0 <= low <= high, got low={low!r}, high={high!r}")
    return feature.canny(g, sigma=sigma, low_threshold=low, high_threshold=high)


def edges_to_regions(edges: np.ndarray, closing: int = 2, min_size: int = 16) -> np.ndarray:
    """Close gaps in an edge map with a disk of radius `closing`, fill the enclosed holes, drop objects
    smaller than `min_size` pixels, and label the rest (8-connectivity). int32 (H, W), 0 = background."""
    closing = check_int("edges", "closing", closing, 0)
    min_size = check_int("edges", "min_size", min_size, 0)
    mask = edges.astype(np.uint8)
    if closing:  # OpenCV pads erosion with the maximum, so objects touching the border are not eaten
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, morphology.disk(closing).astype(np.uint8))
    mask = ndi.binary_fill_holes(mask)
    mask = remove_small(mask, min_size)
    return measure.label(mask, connectivity=2).astype(np.int32)


def sobel(rgb: np.ndarray, sigma: float = 1.0, closing: int = 2, min_size: int = 16) -> np.ndarray:
    """Regions enclosed by Sobel edges (I. Sobel, G. Feldman, "A 3x3 isotropic gradient operator", 1968)."""
    return edges_to_regions(gradient_edges(rgb, "sobel", sigma), closing, min_size)


def scharr(rgb: np.ndarray, sigma: float = 1.0, closing: int = 2, min_size: int = 16) -> np.ndarray:
    """Regions enclosed by Scharr edges (H. Scharr, "Optimal operators in digital image processing",
    PhD thesis, Heidelberg, 2000): Sobel with better rotation invariance."""
    return edges_to_regions(gradient_edges(rgb, "scharr", sigma), closing, min_size)


def log(rgb: np.ndarray, sigma: float = 2.0, closing: int = 2, min_size: int = 16) -> np.ndarray:
    """Regions enclosed by Laplacian-of-Gaussian zero crossings (Marr & Hildreth 1980)."""
    return edges_to_regions(log_edges(rgb, sigma), closing, min_size)


def canny(rgb: np.ndarray, sigma: float = 2.0, low: float | None = None, high: float | None = None,
          closing: int = 2, min_size: int = 16) -> np.ndarray:
    """Regions enclosed by Canny edges with automatic (Otsu) hysteresis thresholds (Canny 1986)."""
    return edges_to_regions(canny_edges(rgb, sigma, low, high), closing, min_size)
