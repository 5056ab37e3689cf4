"""Accuracy near object boundaries: the "trimap" measure of Kohli et al. (CVPR 2008) that DeepLab
(Chen et al., arXiv 1412.7062, section 5) uses to show what the dense CRF gains.

The band is the set of labelled pixels within `width` pixels of a change of truth label (void borders
excluded); scores are pixel accuracy and mIoU restricted to that band.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from pixelwise.constants import IGNORE_INDEX


def boundary_band(target: np.ndarray, width: int) -> np.ndarray:
    """bool (H,W): labelled pixels within `width` px (Chebyshev distance) of a truth label change."""
    t = np.asarray(target)
    edge = np.zeros(t.shape, bool)
    edge[:, 1:] |= t[:, 1:] != t[:, :-1]
    edge[:, :-1] |= t[:, 1:] != t[:, :-1]
    edge[1:, :] |= t[1:, :] != t[:-1, :]
    edge[:-1, :] |= t[1:, :] != t[:-1, :]
    if width > 1:
        edge = ndimage.binary_dilation(edge, structure=np.ones((3, 3), bool), iterations=width - 1)
    return edge & (t != IGNORE_INDEX)


class BoundaryAccumulator:
    """Accumulates a confusion matrix over boundary bands of several widths (pure numpy, per image)."""

    def __init__(self, num_classes: int, widths=(2, 5, 10)):
        self.n = num_classes
        self.mats = {w: np.zeros((num_classes, num_classes), np.int64) for w in widths}

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """pred, target: int (H,W) for one image."""
        for w, mat in self.mats.items():
            band = boundary_band(target, w)
            idx = target[band].astype(np.int64) * self.n + np.clip(pred[band], 0, self.n - 1)
            mat += np.bincount(idx, minlength=self.n * self.n).reshape(self.n, self.n)

    def compute(self) -> dict:
        from pixelwise.metrics.semantic import scores_from_confusion

        out = {}
        for w, mat in self.mats.items():
            s = scores_from_confusion(mat)
            out[w] = {"pixel_acc": s["pixel_acc"], "miou": s["miou"], "pixels": s["pixels"]}
        return out
