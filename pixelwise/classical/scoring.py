"""Plain-numpy scores for the classical baselines: confusion-matrix semantic scores and class-agnostic PQ.

Pure functions; sum confusion matrices / `PQStats` over images, then turn the totals into scores.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """int64 (C, C) counts, rows = true class, columns = predicted class; pixels whose target is
    `ignore_index` are skipped. pred, target: int (H, W)."""
    pred, target = np.asarray(pred).ravel(), np.asarray(target).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"pred has {pred.size} pixels, target {target.size}")
    keep = target != ignore_index
    pred, target = pred[keep].astype(np.int64), target[keep].astype(np.int64)
    if target.size and (target.min() < 0 or target.max() >= num_classes or pred.min() < 0
                        or pred.max() >= num_classes):
        raise ValueError(f"labels outside 0..{num_classes - 1} (other than {ignore_index})")
    return np.bincount(target * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def semantic_scores(cm: np.ndarray, foreground: int = 1) -> dict:
    """Scores from a confusion matrix (rows = truth): per-class IoU = TP / (TP + FP + FN), mIoU = mean over
    classes that occur in truth or prediction, pixel accuracy, mean per-class accuracy (recall), and the
    IoU of class `foreground` (fg_iou). Classes absent from both give NaN IoU and are left out of means."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    truth, predicted = cm.sum(1), cm.sum(0)
    union = truth + predicted - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(truth > 0, tp / truth, np.nan)
    total = cm.sum()
    return {
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "pixel_acc": float(tp.sum() / total) if total else float("nan"),
        "mean_acc": float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan"),
        "per_class_iou": [float(v) for v in iou],
        "fg_iou": float(iou[foreground]) if foreground < len(iou) else float("nan"),
    }


@dataclass(frozen=True)
class PQStats:
    """Totals for panoptic quality: matched pairs, unmatched predictions / truths, sum of matched IoUs."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou_sum: float = 0.0

    def __add__(self, other: "PQStats") -> "PQStats":
        return PQStats(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.iou_sum + other.iou_sum)


def pq_stats(pred: np.ndarray, truth: np.ndarray) -> PQStats:
    """Match predicted and true instances of one image by IoU > 0.5 (unique by construction).

    pred, truth: int (H, W) instance maps, 0 = background, each other value one instance.
    A. Kirillov, K. He, R. Girshick, C. Rother, P. Dollar, "Panoptic segmentation", arXiv 1801.00868.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"pred {pred.shape} and truth {truth.shape} differ in shape")
    p_ids, p = np.unique(pred, return_inverse=True)
    t_ids, t = np.unique(truth, return_inverse=True)
    p, t = p.ravel(), t.ravel()
    n_p, n_t = len(p_ids), len(t_ids)
    inter = np.bincount(t * n_p + p, minlength=n_t * n_p).reshape(n_t, n_p).astype(np.float64)
    area_t, area_p = inter.sum(1), inter.sum(0)
    union = area_t[:, None] + area_p[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    iou[t_ids == 0, :] = 0.0  # background is not an instance
    iou[:, p_ids == 0] = 0.0
    matched = iou > 0.5
    tp = int(matched.sum())
    n_pred, n_true = int((p_ids != 0).sum()), int((t_ids != 0).sum())
    return PQStats(tp, n_pred - tp, n_true - tp, float(iou[matched].sum()))


def panoptic_quality(stats: PQStats) -> dict:
    """PQ = SQ * RQ with SQ = mean IoU of matches and RQ = TP / (TP + FP/2 + FN/2) (Kirillov et al.)."""
    denom = stats.tp + 0.5 * stats.fp + 0.5 * stats.fn
    sq = stats.iou_sum / stats.tp if stats.tp else 0.0
    rq = stats.tp / denom if denom else float("nan")
    return {"pq": sq * rq if denom else float("nan"), "sq": sq, "rq": rq,
            "tp": stats.tp, "fp": stats.fp, "fn": stats.fn}
