"""Panoptic quality PQ = SQ x RQ, per class, for things and stuff, streaming and all-reduced under DDP.

Kirillov et al., "Panoptic Segmentation" (arXiv 1801.00868), computed exactly as the reference
panopticapi (`evaluation.py`, `pq_compute`) does:

- a predicted and a ground-truth segment of the same class match when IoU > 0.5, where the union leaves
  out the predicted pixels that fall on void (id 0) in the ground truth;
- unmatched ground-truth segments are false negatives, except crowd ones (iscrowd = 1), never counted;
- unmatched predictions are false positives unless more than half of their pixels fall on void or on a
  crowd region of their class;
- PQ_c = sum of matched IoUs / (TP + FP/2 + FN/2), SQ_c = sum IoU / TP, RQ_c = TP / (TP + FP/2 + FN/2);
  averages are over the classes with TP + FP + FN > 0.

A segmentation is a pair: an int (H, W) segment-id map (0 = void) and a list of segment dicts with "id",
"category_id" (here a class index 0..C-1) and optionally "iscrowd".
"""
from __future__ import annotations

import numpy as np
import torch

from pixelwise.metrics.reduce import LOCAL, Reducer

IOU, TP, FP, FN = range(4)


def _pair_counts(gt: np.ndarray, pred: np.ndarray) -> dict[tuple[int, int], int]:
    key = gt.astype(np.int64).ravel() << 32 | pred.astype(np.int64).ravel()
    values, counts = np.unique(key, return_counts=True)
    return {(int(v >> 32), int(v & 0xFFFFFFFF)): int(c) for v, c in zip(values, counts)}


def pq_stats(gt_ids: np.ndarray, gt_segments: list[dict], pred_ids: np.ndarray, pred_segments: list[dict],
             num_classes: int) -> np.ndarray:
    """Per-class sums for one image: float64 (num_classes, 4) of (sum of matched IoU, TP, FP, FN).

    gt_ids, pred_ids: int (H, W) segment ids, 0 = void. Areas are counted from the maps.
    """
    if gt_ids.shape != pred_ids.shape:
        raise ValueError(f"panoptic maps differ in size: truth {gt_ids.shape}, prediction {pred_ids.shape}")
    stats = np.zeros((num_classes, 4), np.float64)
    gt_segs = {int(s["id"]): s for s in gt_segments}
    pred_segs = {int(s["id"]): s for s in pred_segments}
    pairs = _pair_counts(gt_ids, pred_ids)
    gt_area: dict[int, int] = {}
    pred_area: dict[int, int] = {}
    for (g, p), n in pairs.items():
        gt_area[g] = gt_area.get(g, 0) + n
        pred_area[p] = pred_area.get(p, 0) + n
    gt_matched, pred_matched = set(), set()
    for (g, p), inter in pairs.items():
        if g not in gt_segs or p not in pred_segs or gt_segs[g].get("iscrowd", 0) == 1:
            continue
        cls = int(gt_segs[g]["category_id"])
        if cls != int(pred_segs[p]["category_id"]):
            continue
        union = pred_area[p] + gt_area[g] - inter - pairs.get((0, p), 0)
        iou = inter / union
        if iou > 0.5:
            stats[cls, TP] += 1
            stats[cls, IOU] += iou
            gt_matched.add(g)
            pred_matched.add(p)
    crowd: dict[int, int] = {}
    for g, seg in gt_segs.items():
        if g in gt_matched:
            continue
        if seg.get("iscrowd", 0) == 1:
            crowd[int(seg["category_id"])] = g
        else:
            stats[int(seg["category_id"]), FN] += 1
    for p, seg in pred_segs.items():
        if p in pred_matched or pred_area.get(p, 0) == 0:
            continue
        cls = int(seg["category_id"])
        ignored = pairs.get((0, p), 0) + (pairs.get((crowd[cls], p), 0) if cls in crowd else 0)
        if ignored / pred_area[p] > 0.5:
            continue
        stats[cls, FP] += 1
    return stats


def pq_from_stats(stats: np.ndarray, things, class_names: list[str] | None = None) -> dict:
    """Scores from summed (C, 4) stats: pq, sq, rq, n overall; "things" and "stuff" with the same keys;
    "per_class" {name: {pq, sq, rq, tp, fp, fn}} (pq/sq/rq None for classes absent from both sides)."""
    things = {int(t) for t in things}
    names = class_names or [str(i) for i in range(len(stats))]
    iou, tp, fp, fn = stats.T
    denom = tp + 0.5 * fp + 0.5 * fn
    present = denom > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        pq = np.where(present, iou / np.where(present, denom, 1), np.nan)
        sq = np.where(tp > 0, iou / np.where(tp > 0, tp, 1), 0.0)
        rq = np.where(present, tp / np.where(present, denom, 1), np.nan)

    def average(select: np.ndarray) -> dict:
        sel = select & present
        n = int(sel.sum())
        if n == 0:
            return {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}
        return {"pq": float(pq[sel].mean()), "sq": float(sq[sel].mean()), "rq": float(rq[sel].mean()), "n": n}

    is_thing = np.array([i in things for i in range(len(stats))], bool)
    per_class = {}
    for i, name in enumerate(names):
        ok = bool(present[i])
        per_class[name] = {"pq": float(pq[i]) if ok else None, "sq": float(sq[i]) if ok else None,
                           "rq": float(rq[i]) if ok else None, "tp": int(tp[i]), "fp": int(fp[i]), "fn": int(fn[i])}
    return {**average(np.ones(len(stats), bool)), "things": average(is_thing), "stuff": average(~is_thing),
            "per_class": per_class, "classes": list(names)}


class PanopticQuality:
    """Streaming PQ: `update` per image, `all_reduce` under DDP, `compute` at the end."""

    def __init__(self, num_classes: int, things, class_names: list[str] | None = None):
        self.num_classes = num_classes
        self.things = [int(t) for t in things]
        self.class_names = class_names
        self.stats = np.zeros((num_classes, 4), np.float64)

    def update(self, gt_ids, gt_segments, pred_ids, pred_segments) -> None:
        """One image: segment-id maps (H, W) (numpy or tensors) and their segment lists."""
        gt_ids, pred_ids = np.asarray(_numpy(gt_ids)), np.asarray(_numpy(pred_ids))
        self.stats += pq_stats(gt_ids, gt_segments, pred_ids, pred_segments, self.num_classes)

    def all_reduce(self, reducer: Reducer = LOCAL) -> None:
        """Sum the per-class stats over processes (see pixelwise.metrics.reduce)."""
        self.stats = reducer.sum(torch.from_numpy(self.stats.copy())).numpy()

    def compute(self) -> dict:
        return pq_from_stats(self.stats, self.things, self.class_names)


def _numpy(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x


def _agnostic(instances: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """Instance map (0 = background, k = instance k) -> panoptic pair: the background one stuff segment of
    class 0, each instance a segment of class 1."""
    ids = np.asarray(instances).astype(np.int64) + 1
    return ids, [{"id": int(v), "category_id": 0 if v == 1 else 1} for v in np.unique(ids)]


def instance_stats(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Class-agnostic PQ sums of one image's instance maps (int (H, W), 0 = background): float64 (2, 4)
    as `pq_stats` (row 1: the instances). Sum over images, then `instance_pq`."""
    return pq_stats(*_agnostic(truth), *_agnostic(pred), 2)


def instance_pq(stats: np.ndarray) -> dict:
    """PQ, SQ, RQ, TP, FP, FN of the instances of summed `instance_stats` (pq/sq/rq NaN with no instance
    on either side)."""
    c = pq_from_stats(stats, [1], ["background", "instance"])["per_class"]["instance"]
    nan = float("nan")
    return {"pq": nan if c["pq"] is None else c["pq"], "sq": nan if c["sq"] is None else c["sq"],
            "rq": nan if c["rq"] is None else c["rq"], "tp": c["tp"], "fp": c["fp"], "fn": c["fn"]}


def pq_table(scores: dict) -> str:
    """A text table of `pq_from_stats` / `pq_compute` scores: per class, then all / things / stuff (in %)."""
    lines = [f"{'class':<24} {'PQ':>6} {'SQ':>6} {'RQ':>6} {'TP':>5} {'FP':>5} {'FN':>5}"]
    for name, c in scores["per_class"].items():
        if c["pq"] is None:
            continue
        lines.append(f"{name[:24]:<24} {100 * c['pq']:>6.1f} {100 * c['sq']:>6.1f} {100 * c['rq']:>6.1f} "
                     f"{c['tp']:>5} {c['fp']:>5} {c['fn']:>5}")
    for label, s in (("All", scores), ("Things", scores["things"]), ("Stuff", scores["stuff"])):
        lines.append(f"{label:<24} {100 * s['pq']:>6.1f} {100 * s['sq']:>6.1f} {100 * s['rq']:>6.1f}   N={s['n']}")
    return "\n".join(lines)
