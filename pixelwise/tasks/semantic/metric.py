"""Semantic scores of Predictions: a streaming confusion matrix (pixelwise.metrics.semantic)."""
from __future__ import annotations

import numpy as np
import torch

from pixelwise.metrics.reduce import Reducer
from pixelwise.metrics.semantic import ConfusionMatrix, scores_from_confusion


class SemanticMetric:
    """mIoU, pixel accuracy, mean class accuracy, frequency-weighted IoU, Dice and the confusion matrix of
    `pred.semantic` against `truth.semantic` (int (H, W), truth 255 = void), over every image updated."""

    def __init__(self, classes: list[str]):
        self.classes = list(classes)
        self.cm = ConfusionMatrix(len(self.classes))

    def update(self, pred, truth) -> None:
        self.cm.update(torch.from_numpy(np.asarray(pred.semantic)), torch.from_numpy(np.asarray(truth.semantic)))

    def all_reduce(self, reducer: Reducer) -> None:
        self.cm.all_reduce(reducer)

    def compute(self) -> dict:
        return self.cm.compute(self.classes)


def image_miou(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> float:
    """mIoU of one image (classes absent from both left out), truth 255 = void."""
    keep = truth != 255
    idx = truth[keep].astype(np.int64) * num_classes + np.clip(pred[keep], 0, num_classes - 1).astype(np.int64)
    mat = np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    return scores_from_confusion(mat)["miou"]
