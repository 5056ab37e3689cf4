"""Pixel clustering on colour (+ optional position) features: k-means, Gaussian mixture, mean shift.

Each returns an int32 (H, W) map of cluster ids 0..K-1 ordered by mean intensity (0 = darkest), so the same
image always gives the same numbering. Models are fitted on at most `max_samples` pixels drawn with `seed`
and then every pixel is assigned, which keeps large images fast and the result reproducible.

Features: colour in CIELAB (`space="lab"`, L in 0..100) or RGB scaled to 0..100, plus, when `xy` > 0, the pixel
position scaled so that the longer image side spans `100 * xy` (xy = 1 weighs position like lightness).
"""
from __future__ import annotations

import cv2
import numpy as np
from skimage import color

from pixelwise.classical._util import check_choice, check_int, check_positive, gray, order_by_intensity
from pixelwise.errors import ConfigError


def features(rgb: np.ndarray, space: str = "lab", xy: float = 0.0) -> np.ndarray:
    """float32 (H*W, 3 or 5) per-pixel features (see module docstring)."""
    check_choice("clustering", "space", space, ("lab", "rgb"))
    if isinstance(xy, bool) or not isinstance(xy, (int, float)) or xy < 0:
        raise ConfigError(f"clustering: parameter 'xy' must be a number >= 0, got {xy!r}")
    h, w = rgb.shape[:2]
    colour = color.rgb2lab(rgb) if space == "lab" else rgb / 2.55
    feats = [colour.reshape(-1, 3)]
    if xy > 0:
        rows, cols = np.mgrid[0:h, 0:w]
        scale = 100.0 * xy / max(h, w)
        feats.append(np.stack([rows.ravel(), cols.ravel()], axis=1) * scale)
    return np.concatenate(feats, axis=1).astype(np.float32)


def _sample(x: np.ndarray, max_samples: int, seed: int) -> np.ndarray:
    if len(x) <= max_samples:
        return x
    rng = np.random.default_rng(seed)
    return x[np.sort(rng.choice(len(x), size=max_samples, replace=False))]


def _nearest(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    # |x - c|^2 = |x|^2 - 2 x.c + |c|^2; |x|^2 is the same for every centre, so it drops out of the argmin.
    return np.argmin(-2.0 * x @ centers.T + (centers ** 2).sum(1), axis=1)


def _finish(assignment: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    return order_by_intensity(assignment.reshape(rgb.shape[:2]), gray(rgb))


def kmeans(rgb: np.ndarray, k: int = 2, space: str = "lab", xy: float = 0.0, attempts: int = 3,
           max_samples: int = 50_000, seed: int = 0) -> np.ndarray:
    """k-means (Lloyd's algorithm, k-means++ seeding) with OpenCV's `cv2.kmeans`.

    S. Lloyd, "Least squares quantization in PCM", IEEE Trans. IT 28(2), 1982; D. Arthur, S. Vassilvitskii,
    "k-means++: the advantages of careful seeding", SODA 2007.
    """
    k = check_int("kmeans", "k", k, 2)
    attempts = check_int("kmeans", "attempts", attempts, 1)
    max_samples = check_int("kmeans", "max_samples", max_samples, k)
    x = features(rgb, space, xy)
    sample = _sample(x, max_samples, seed)
    if len(sample) < k:
        raise ConfigError(f"kmeans: k={k} is more than the {len(sample)} pixels of the image")
    cv2.setRNGSeed(int(seed))  # cv2.kmeans draws its k-means++ seeds from OpenCV's global RNG
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 1e-3)
    _, _, centers = cv2.kmeans(sample, k, None, criteria, attempts, cv2.KMEANS_PP_CENTERS)
    return _finish(_nearest(x, centers), rgb)


def gmm(rgb: np.ndarray, k: int = 2, space: str = "lab", xy: float = 0.0, covariance: str = "full",
        max_samples: int = 20_000, seed: int = 0) -> np.ndarray:
    """Gaussian mixture fitted by EM (scikit-learn `GaussianMixture`); each pixel takes its most likely
    component.

    A. P. Dempster, N. M. Laird, D. B. Rubin, "Maximum likelihood from incomplete data via the EM
    algorithm", JRSS B 39(1), 1977.
    """
    from sklearn.mixture import GaussianMixture

    k = check_int("gmm", "k", k, 2)
    check_choice("gmm", "covariance", covariance, ("full", "tied", "diag", "spherical"))
    max_samples = check_int("gmm", "max_samples", max_samples, k)
    x = features(rgb, space, xy)
    sample = _sample(x, max_samples, seed)
    if len(sample) < k:
        raise ConfigError(f"gmm: k={k} is more than the {len(sample)} pixels of the image")
    model = GaussianMixture(n_components=k, covariance_type=covariance, random_state=seed, reg_covar=1e-3)
    model.fit(sample.astype(np.float64))
    return _finish(model.predict(x.astype(np.float64)), rgb)


def meanshift(rgb: np.ndarray, bandwidth: float | None = None, quantile: float = 0.2, space: str = "lab",
              xy: float = 0.0, max_samples: int = 5_000, seed: int = 0) -> np.ndarray:
    """Mean-shift clustering of the feature space (scikit-learn `MeanShift`, binned seeds); the number of
    clusters follows from the bandwidth, estimated from the `quantile` of pairwise distances when None.

    D. Comaniciu, P. Meer, "Mean shift: a robust approach toward feature space analysis", IEEE TPAMI 24(5), 2002.
    """
    from sklearn.cluster import MeanShift, estimate_bandwidth

    max_samples = check_int("meanshift", "max_samples", max_samples, 2)
    if not isinstance(quantile, (int, float)) or not 0 < quantile <= 1:
        raise ConfigError(f"meanshift: parameter 'quantile' must lie in (0, 1], got {quantile!r}")
    x = features(rgb, space, xy)
    sample = _sample(x, max_samples, seed)
    if bandwidth is None:
        bandwidth = float(estimate_bandwidth(sample, quantile=quantile, n_samples=min(len(sample), 1000),
                                             random_state=seed))
        if bandwidth <= 0:  # a flat image: every pixel in one cluster
            return np.zeros(rgb.shape[:2], np.int32)
    check_positive("meanshift", bandwidth=bandwidth)
    model = MeanShift(bandwidth=bandwidth, bin_seeding=True).fit(sample)
    return _finish(_nearest(x, model.cluster_centers_.astype(np.float32)), rgb)
