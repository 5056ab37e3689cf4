"""Semantic segmentation scores from a streaming confusion matrix.

The matrix is accumulated with one `torch.bincount` per batch (rows = truth, columns = prediction), the
way torchvision's segmentation reference does, and all-reduced across processes under DDP. Void pixels
(255) are skipped. Scores follow the usual definitions (Long et al., FCN, arXiv 1411.4038, section 5):
pixel accuracy, mean class accuracy, mean IoU and frequency-weighted IoU; plus Dice (F1) per class.
A class that appears neither in truth nor in prediction has IoU NaN and is left out of the means.
"""
from __future__ import annotations

import numpy as np
import torch

from pixelwise.constants import IGNORE_INDEX
from pixelwise.metrics.reduce import LOCAL, Reducer


class ConfusionMatrix:
    """Accumulates a (C, C) int64 confusion matrix over batches."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, device="cpu"):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred, target: integer tensors of the same shape (N,H,W) or (H,W)."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
        n = self.num_classes
        target = target.to(self.mat.device).reshape(-1)
        pred = pred.to(self.mat.device).reshape(-1)
        keep = (target != self.ignore_index) & (target >= 0) & (target < n)
        idx = target[keep].long() * n + pred[keep].long().clamp_(0, n - 1)
        self.mat += torch.bincount(idx, minlength=n * n).reshape(n, n)

    def reset(self) -> None:
        self.mat.zero_()

    def all_reduce(self, reducer: Reducer = LOCAL) -> None:
        """Sum the matrix over all processes (see pixelwise.metrics.reduce)."""
        self.mat = reducer.sum(self.mat)

    def compute(self, class_names: list[str] | None = None) -> dict:
        """Scores (see `scores_from_confusion`) plus the raw matrix under 'confusion'."""
        mat = self.mat.cpu().numpy()
        return {**scores_from_confusion(mat, class_names), "confusion": mat.tolist()}


def confusion(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 (C, C) confusion matrix (rows truth) of one pair of int label maps; truth 255 = void."""
    cm = ConfusionMatrix(num_classes)
    cm.update(torch.from_numpy(np.asarray(pred, np.int64)), torch.from_numpy(np.asarray(target, np.int64)))
    return cm.mat.numpy()


def scores_from_confusion(mat: np.ndarray, class_names: list[str] | None = None) -> dict:
    """Scores from a (C, C) confusion matrix (rows truth, columns prediction). Fractions in 0..1.

    Returns miou, pixel_acc, mean_acc, fw_iou, mean_dice, per_class_iou, per_class_acc, per_class_dice
    (lists, NaN-free: classes absent from truth and prediction get None), and pixels (labelled count).
    """
    mat = mat.astype(np.float64)
    tp = np.diag(mat)
    gt = mat.sum(1)
    pr = mat.sum(0)
    total = mat.sum()
    union = gt + pr - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
        dice = np.where(gt + pr > 0, 2 * tp / (gt + pr), np.nan)
    freq = gt / total if total > 0 else np.zeros_like(gt)
    valid = ~np.isnan(iou)

    def mean(x):
        x = x[~np.isnan(x)]
        return float(x.mean()) if x.size else 0.0

    def listed(x):
        return [None if np.isnan(v) else float(v) for v in x]

    out = {
        "miou": mean(iou),
        "pixel_acc": float(tp.sum() / total) if total > 0 else 0.0,
        "mean_acc": mean(acc),
        "fw_iou": float((freq[valid] * iou[valid]).sum()),
        "mean_dice": mean(dice),
        "per_class_iou": listed(iou),
        "per_class_acc": listed(acc),
        "per_class_dice": listed(dice),
        "pixels": int(total),
    }
    if class_names is not None:
        out["classes"] = list(class_names)
    return out
