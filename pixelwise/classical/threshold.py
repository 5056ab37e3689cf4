"""Global and local intensity thresholds (scikit-image), on the greyscale image.

Every method returns an int32 (H, W) map: 0 = below the threshold (dark), 1 = above (bright); multi-Otsu gives
0..classes-1 from dark to bright. `sigma` > 0 smooths the image with a Gaussian first (noisy images).

The global thresholds (otsu, multiotsu, li, triangle) work, without smoothing (sigma = 0), on the uint8 grey
levels (`_util.gray_u8`): scikit-image's histogram then has one bin per integer level, as OpenCV's Otsu, and a
pixel is bright when its level is > the threshold, as scikit-image documents (`image > threshold_otsu(image)`);
the map equals scikit-image's and OpenCV's on an 8-bit image. With sigma > 0 the smoothed image is no longer
integer: they work on the float grey in [0, 1] (256 bins over its range). `adaptive` (a local mean, and an
`offset` in [0, 1] units) always works on the float grey.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage import filters

from pixelwise.classical._util import check_choice, check_int, gray, gray_u8
from pixelwise.errors import ConfigError


def _check_sigma(sigma, method: str) -> None:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or sigma < 0:
        raise ConfigError(f"{method}: parameter 'sigma' must be a number >= 0, got {sigma!r}")


def _smoothed(rgb: np.ndarray, sigma: float, method: str) -> np.ndarray:
    """float64 grey in [0, 1], Gaussian-smoothed when sigma > 0."""
    _check_sigma(sigma, method)
    g = gray(rgb)
    return ndi.gaussian_filter(g, sigma) if sigma > 0 else g


def _levels(rgb: np.ndarray, sigma: float, method: str) -> np.ndarray:
    """What a global threshold sees: the uint8 grey levels when sigma == 0 (thresholds on 256 integer levels),
    else the smoothed float grey."""
    _check_sigma(sigma, method)
    return gray_u8(rgb) if sigma == 0 else ndi.gaussian_filter(gray(rgb), sigma)


def _binary(g: np.ndarray, t: float) -> np.ndarray:
    return (g > t).astype(np.int32)


def otsu(rgb: np.ndarray, sigma: float = 0.0) -> np.ndarray:
    """Otsu's threshold: the one that maximises between-class variance.

    N. Otsu, "A threshold selection method from gray-level histograms", IEEE Trans. SMC 9(1), 1979.
    """
    g = _levels(rgb, sigma, "otsu")
    return _binary(g, filters.threshold_otsu(g)) if g.min() < g.max() else np.zeros(g.shape, np.int32)


def multiotsu(rgb: np.ndarray, classes: int = 3, sigma: float = 0.0) -> np.ndarray:
    """Multi-level Otsu: classes-1 thresholds maximising between-class variance; labels 0..classes-1, dark first.

    P.-S. Liao, T.-S. Chen, P.-C. Chung, "A fast algorithm for multilevel thresholding", J. Inf. Sci. Eng. 17, 2001.
    """
    classes = check_int("multiotsu", "classes", classes, 2)
    if classes > 8:
        raise ConfigError(f"multiotsu: parameter 'classes' must be <= 8 (cost grows exponentially), got {classes}")
    g = _levels(rgb, sigma, "multiotsu")
    try:
        thresholds = filters.threshold_multiotsu(g, classes=classes)
    except ValueError as exc:  # too few grey levels for that many classes
        raise ConfigError(f"multiotsu: {exc}") from None
    # Each threshold is the last level of the class below it (classes=2 gives threshold_otsu's value), so a
    # pixel equal to a threshold belongs below it: right=True, the `image > t` rule of `otsu`, and the split
    # that maximises the between-class variance. scikit-image's docstring example, np.digitize(image, bins=
    # thresholds), uses right=False and so moves the pixels at exactly a threshold level one class up.
    return np.digitize(g, bins=thresholds, right=True).astype(np.int32)


def adaptive(rgb: np.ndarray, block_size: int = 51, offset: float = 0.0, mode: str = "gaussian",
             sigma: float = 0.0) -> np.ndarray:
    """Local threshold: a pixel is bright when above the (Gaussian-)weighted mean of its block_size window
    minus `offset` (in [0, 1] intensity units).

    R. C. Gonzalez, R. E. Woods, "Digital Image Processing", 3rd ed., sec. 10.3.7 (variable thresholding).
    """
    block_size = check_int("adaptive", "block_size", block_size, 3)
    if block_size % 2 == 0:
        raise ConfigError(f"adaptive: parameter 'block_size' must be odd, got {block_size}")
    check_choice("adaptive", "mode", mode, ("gaussian", "mean", "median"))
    g = _smoothed(rgb, sigma, "adaptive")
    return _binary(g, filters.threshold_local(g, block_size, method=mode, offset=offset))


def li(rgb: np.ndarray, sigma: float = 0.0) -> np.ndarray:
    """Li's minimum cross-entropy threshold.

    C. H. Li, P. K. S. Tam, "An iterative algorithm for minimum cross entropy thresholding",
    Pattern Recognition Letters 19(8), 1998.
    """
    g = _levels(rgb, sigma, "li")
    return _binary(g, filters.threshold_li(g)) if g.min() < g.max() else np.zeros(g.shape, np.int32)


def triangle(rgb: np.ndarray, sigma: float = 0.0) -> np.ndarray:
    """Triangle threshold: the histogram bin farthest from the line joining its peak and its far end
    (suits a small bright or dark class on a dominant background).

    G. W. Zack, W. E. Rogers, S. A. Latt, "Automatic measurement of sister chromatid exchange frequency",
    J. Histochem. Cytochem. 25(7), 1977.
    """
    g = _levels(rgb, sigma, "triangle")
    return _binary(g, filters.threshold_triangle(g)) if g.min() < g.max() else np.zeros(g.shape, np.int32)


def otsu_foreground(rgb: np.ndarray, polarity: str = "auto", sigma: float = 1.0) -> np.ndarray:
    """bool (H, W) foreground by Otsu's threshold: the bright side, the dark side, or ("auto") whichever side
    is smaller, on the assumption that objects cover less of the image than their background."""
    check_choice("otsu_foreground", "polarity", polarity, ("auto", "bright", "dark"))
    bright = otsu(rgb, sigma=sigma).astype(bool)
    if polarity == "bright" or (polarity == "auto" and bright.mean() <= 0.5):
        return bright
    return ~bright
