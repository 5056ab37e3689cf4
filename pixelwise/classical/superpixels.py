"""Superpixels and graph-based segmentation (scikit-image), with optional merging to a target region count.

Each returns an int32 (H, W) map of regions 0..K-1, numbered in raster order of their first pixel. With
`n_regions`, neighbouring regions are merged on the region adjacency graph (RAG, edge weight = distance of
mean colours) by cutting it at the smallest threshold that leaves at most `n_regions` regions.
"""
from __future__ import annotations

import numpy as np
from skimage import graph, segmentation

from pixelwise.classical._util import check_int, check_positive
from pixelwise.errors import ConfigError


def _sequential(labels: np.ndarray) -> np.ndarray:
    # relabel in raster order of first appearance, so the numbering never depends on the library's internals
    _, first, inverse = np.unique(labels.ravel(), return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int32)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first), dtype=np.int32)
    return rank[inverse].reshape(labels.shape)


def merge_regions(rgb: np.ndarray, labels: np.ndarray, n_regions: int) -> np.ndarray:
    """Merge adjacent regions of similar mean colour until at most `n_regions` remain (RAG threshold cut).

    A. Tremeau, P. Colantoni, "Regions adjacency graph applied to color image segmentation",
    IEEE Trans. Image Processing 9(4), 2000.
    """
    n_regions = check_int("merge", "n_regions", n_regions, 1)
    labels = _sequential(labels)
    if labels.max() + 1 <= n_regions:
        return labels
    rag = graph.rag_mean_color(rgb, labels, mode="distance")
    weights = np.unique([w for _, _, w in rag.edges(data="weight")])
    # cut_threshold merges across every edge lighter than the threshold: the count falls as it grows.
    best = None
    lo, hi = 0, len(weights) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        merged = graph.cut_threshold(labels, rag, float(weights[mid]) + 1e-9, in_place=False)
        if len(np.unique(merged)) <= n_regions:
            best, hi = merged, mid - 1
        else:
            lo = mid + 1
    if best is None:  # several disconnected components of the graph: merge everything that can be merged
        best = graph.cut_threshold(labels, rag, float(weights[-1]) + 1.0, in_place=False)
    return _sequential(best)


def _finish(rgb: np.ndarray, labels: np.ndarray, n_regions: int | None) -> np.ndarray:
    return _sequential(labels) if n_regions is None else merge_regions(rgb, labels, n_regions)


def slic(rgb: np.ndarray, n_segments: int = 200, compactness: float = 10.0, sigma: float = 1.0,
         n_regions: int | None = None) -> np.ndarray:
    """SLIC superpixels: k-means in (Lab colour, position) space restricted to a local window.

    R. Achanta et al., "SLIC superpixels compared to state-of-the-art superpixel methods", IEEE TPAMI 34(11), 2012.
    """
    n_segments = check_int("slic", "n_segments", n_segments, 1)
    check_positive("slic", compactness=compactness)
    labels = segmentation.slic(rgb, n_segments=n_segments, compactness=compactness, sigma=sigma, start_label=0)
    return _finish(rgb, labels, n_regions)


def felzenszwalb(rgb: np.ndarray, scale: float = 100.0, sigma: float = 0.8, min_size: int = 20,
                 n_regions: int | None = None) -> np.ndarray:
    """Felzenszwalb-Huttenlocher graph-based segmentation (larger `scale` -> larger regions).

    P. F. Felzenszwalb, D. P. Huttenlocher, "Efficient graph-based image segmentation", IJCV 59(2), 2004.
    """
    check_positive("felzenszwalb", scale=scale)
    min_size = check_int("felzenszwalb", "min_size", min_size, 1)
    labels = segmentation.felzenszwalb(rgb, scale=scale, sigma=sigma, min_size=min_size)
    return _finish(rgb, labels, n_regions)


def quickshift(rgb: np.ndarray, kernel_size: float = 5.0, max_dist: float = 10.0, ratio: float = 1.0,
               sigma: float = 0.0, n_regions: int | None = None) -> np.ndarray:
    """Quick shift: mode seeking in (Lab colour, position) space, a fast kernelised mean shift.

    A. Vedaldi, S. Soatto, "Quick shift and kernel methods for mode seeking", ECCV 2008.
    """
    check_positive("quickshift", kernel_size=kernel_size, max_dist=max_dist)
    if not 0 <= ratio <= 1:
        raise ConfigError(f"quickshift: parameter 'ratio' must lie in [0, 1], got {ratio!r}")
    labels = segmentation.quickshift(rgb, kernel_size=kernel_size, max_dist=max_dist, ratio=ratio,
                                     sigma=sigma)  # its random tie-breaking uses a fixed default seed
    return _finish(rgb, labels, n_regions)
