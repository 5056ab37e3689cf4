"""Multi-label scores: per class IoU and F1 of the thresholded masks over non-void pixels, and their means.

IoU_c = TP / (TP + FP + FN), F1_c = 2 TP / (2 TP + FP + FN) with counts summed over images (as for a
confusion matrix); means over the classes with TP + FP + FN > 0 (a class absent from truth and
prediction everywhere scores None and is left out). Checked against scikit-learn in the tests.
"""
from __future__ import annotations

import numpy as np
import torch

from pixelwise.constants import IGNORE_INDEX
from pixelwise.metrics.reduce import Reducer


def counts(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """int64 (C, 3) TP, FP, FN of bool (C, H, W) predictions against uint8 (C, H, W) truth (255 = void)."""
    valid = truth != IGNORE_INDEX
    pos = truth == 1
    flat = lambda a: a.reshape(a.shape[0], -1)  # noqa: E731
    tp = flat(pred & pos).sum(1)
    fp = flat(pred & ~pos & valid).sum(1)
    fn = flat(~pred & pos).sum(1)
    return np.stack([tp, fp, fn], 1).astype(np.int64)


def scores_from_counts(stats: np.ndarray, classes: list[str]) -> dict:
    tp, fp, fn = stats.T.astype(np.float64)
    seen = tp + fp + fn > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(seen, tp / (tp + fp + fn), np.nan)
        f1 = np.where(seen, 2 * tp / (2 * tp + fp + fn), np.nan)
    listed = lambda x: [None if np.isnan(v) else float(v) for v in x]  # noqa: E731
    return {"miou": float(np.nanmean(iou)) if seen.any() else 0.0,
            "mean_f1": float(np.nanmean(f1)) if seen.any() else 0.0,
            "per_class_iou": listed(iou), "per_class_f1": listed(f1),
            "counts": stats.tolist(), "classes": list(classes)}


class MultiLabelMetric:
    def __init__(self, classes: list[str]):
        self.classes = list(classes)
        self.stats = torch.zeros((len(self.classes), 3), dtype=torch.int64)

    def update(self, pred, truth) -> None:
        self.stats += torch.from_numpy(counts(np.asarray(pred.masks, bool), np.asarray(truth.masks)))

    def all_reduce(self, reducer: Reducer) -> None:
        self.stats = reducer.sum(self.stats)

    def compute(self) -> dict:
        return scores_from_counts(self.stats.numpy(), self.classes)
