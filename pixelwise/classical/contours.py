"""Active contours without explicit curves (scikit-image): Chan-Vese and morphological snakes.

They fit one two-phase partition to the whole image, so they suit images with one object (or one kind of
object) on a background. All return int32 (H, W) maps with labels 0/1:
- chan_vese, morph_chan_vese: 0 = the darker phase, 1 = the brighter phase.
- morph_geodesic: 1 = inside the final contour (the object), 0 = outside.
"""
from __future__ import annotations

import numpy as np
from skimage import segmentation

from pixelwise.classical._util import check_int, check_positive, gray, order_by_intensity
from pixelwise.errors import ConfigError


def _two_phase(mask: np.ndarray, g: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask).astype(np.int32)
    if mask.min() == mask.max():
        return np.zeros(mask.shape, np.int32)
    return order_by_intensity(mask, g)


def chan_vese(rgb: np.ndarray, mu: float = 0.25, lambda1: float = 1.0, lambda2: float = 1.0,
              max_num_iter: int = 200, tol: float = 1e-3, dt: float = 0.5) -> np.ndarray:
    """Chan-Vese level-set segmentation: the two-phase piecewise-constant Mumford-Shah fit; `mu` weighs
    contour length (larger -> smoother, fewer regions).

    T. F. Chan, L. A. Vese, "Active contours without edges", IEEE Trans. Image Processing 10(2), 2001.
    """
    check_positive("chan_vese", mu=mu, lambda1=lambda1, lambda2=lambda2, tol=tol, dt=dt)
    max_num_iter = check_int("chan_vese", "max_num_iter", max_num_iter, 1)
    g = gray(rgb)
    mask = segmentation.chan_vese(g, mu=mu, lambda1=lambda1, lambda2=lambda2, tol=tol,
                                  max_num_iter=max_num_iter, dt=dt, init_level_set="checkerboard")
    return _two_phase(mask, g)


def morph_chan_vese(rgb: np.ndarray, num_iter: int = 100, smoothing: int = 1, lambda1: float = 1.0,
                    lambda2: float = 1.0) -> np.ndarray:
    """Morphological active contours without edges (MorphACWE): Chan-Vese evolved with morphological
    operators instead of a PDE; faster and without numerical tuning.

    P. Marquez-Neila, L. Baumela, L. Alvarez, "A morphological approach to curvature-based evolution of
    curves and surfaces", IEEE TPAMI 36(1), 2014.
    """
    num_iter = check_int("morph_chan_vese", "num_iter", num_iter, 1)
    smoothing = check_int("morph_chan_vese", "smoothing", smoothing, 0)
    check_positive("morph_chan_vese", lambda1=lambda1, lambda2=lambda2)
    g = gray(rgb)
    mask = segmentation.morphological_chan_vese(g, num_iter, init_level_set="checkerboard",
                                                smoothing=smoothing, lambda1=lambda1, lambda2=lambda2)
    return _two_phase(mask, g)


def morph_geodesic(rgb: np.ndarray, num_iter: int = 200, smoothing: int = 1, balloon: float = -1.0,
                   alpha: float = 100.0, sigma: float = 2.0, margin: int = 3) -> np.ndarray:
    """Morphological geodesic active contour (MorphGAC): a contour starting `margin` pixels inside the image
    border shrinks (balloon < 0) or grows (balloon > 0) until it locks onto strong edges of the
    inverse-Gaussian-gradient image. For a single object on a plain background.

    Marquez-Neila et al., TPAMI 2014 (as above); V. Caselles, R. Kimmel, G. Sapiro, "Geodesic active
    contours", IJCV 22(1), 1997.
    """
    num_iter = check_int("morph_geodesic", "num_iter", num_iter, 1)
    smoothing = check_int("morph_geodesic", "smoothing", smoothing, 0)
    margin = check_int("morph_geodesic", "margin", margin, 1)
    check_positive("morph_geodesic", alpha=alpha, sigma=sigma)
    h, w = rgb.shape[:2]
    if 2 * margin >= min(h, w):
        raise ConfigError(f"morph_geodesic: margin {margin} leaves no room inside a {h}x{w} image")
    edges = segmentation.inverse_gaussian_gradient(gray(rgb), alpha=alpha, sigma=sigma)
    init = np.zeros((h, w), dtype=np.int8)
    init[margin:h - margin, margin:w - margin] = 1
    mask = segmentation.morphological_geodesic_active_contour(edges, num_iter, init_level_set=init,
                                                              smoothing=smoothing, balloon=balloon)
    return np.asarray(mask, dtype=np.int32)
