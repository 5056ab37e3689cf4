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

    def all_reduce(self) -> None:
        """Sum the per-class stats over processes (no-op without an initialised process group)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            t = torch.from_numpy(self.stats.copy())
            if torch.distributed.get_backend() == "nccl":
                t = t.cuda()
            torch.distributed.all_reduce(t)
            self.stats = t.cpu().numpy()

    def compute(self) -> dict:
        return pq_from_stats(self.stats, self.things, self.class_names)


def _numpy(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x


def pq_compute(gt_json, pred_json, gt_folder=None, pred_folder=None) -> dict:
    """Score COCO-panoptic predictions (JSON + PNG folder) against COCO-panoptic truth, as panopticapi's
    `pq_compute` does. Folders default to the JSON path without '.json'. Categories come from the truth;
    every truth image needs a prediction (matched by image_id). Returns `pq_from_stats`'s dict, with
    per_class keyed by category name, plus "images" (the count) and "category_ids"."""
    from pathlib import Path

    from pixelwise.data.formats.coco import categories, load_json, read_panoptic_png
    from pixelwise.errors import DataError

    gt_json, pred_json = Path(gt_json), Path(pred_json)
    gt, pred = load_json(gt_json), load_json(pred_json)
    gt_folder = Path(gt_folder) if gt_folder else gt_json.with_suffix("")
    pred_folder = Path(pred_folder) if pred_folder else pred_json.with_suffix("")
    for folder in (gt_folder, pred_folder):
        if not folder.is_dir():
            raise DataError(f"{folder}: panoptic PNG folder not found")
    cat_ids, names, isthing, _ = categories(gt)
    index = {c: i for i, c in enumerate(cat_ids)}
    metric = PanopticQuality(len(cat_ids), [i for i, t in enumerate(isthing) if t], names)
    preds = {a["image_id"]: a for a in pred["annotations"]}
    for gt_ann in gt["annotations"]:
        pred_ann = preds.get(gt_ann["image_id"])
        if pred_ann is None:
            raise DataError(f"{pred_json}: no prediction for the image with id {gt_ann['image_id']}")
        gt_ids = read_panoptic_png(gt_folder / gt_ann["file_name"])
        pred_ids = read_panoptic_png(pred_folder / pred_ann["file_name"])
        _check_prediction(pred_ids, pred_ann, index, pred_folder / pred_ann["file_name"])
        metric.update(gt_ids, _indexed(gt_ann["segments_info"], index), pred_ids,
                      _indexed(pred_ann["segments_info"], index))
    return {**metric.compute(), "images": len(gt["annotations"]), "category_ids": cat_ids}


def _indexed(segments: list[dict], index: dict) -> list[dict]:
    return [{**s, "category_id": index[s["category_id"]]} for s in segments]


def _check_prediction(ids: np.ndarray, ann: dict, index: dict, path) -> None:
    """panopticapi's sanity checks: every PNG segment is in the JSON and vice versa, categories known."""
    from pixelwise.errors import DataError

    listed = {int(s["id"]) for s in ann["segments_info"]}
    present = {int(v) for v in np.unique(ids)} - {0}
    if present - listed:
        raise DataError(f"{path}: segment ids {sorted(present - listed)[:5]} are in the PNG but not in the JSON")
    if listed - present:
        raise DataError(f"{path}: segment ids {sorted(listed - present)[:5]} are in the JSON but not in the PNG")
    unknown = [s["category_id"] for s in ann["segments_info"] if s["category_id"] not in index]
    if unknown:
        raise DataError(f"{path}: unknown category ids {unknown[:5]}")


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
