"""Instance segmentation scores: COCO mask AP through pycocotools, and the nuclei scores of DSB 2018.

- `MaskAP`: streaming COCO mask AP / AP50 / AP75 (Lin et al., "Microsoft COCO", arXiv 1405.0312), one
  `update` per image with label maps or masks, computed by pycocotools' COCOeval (iouType "segm").
- `dsb_score`: the 2018 Data Science Bowl metric of one image, the mean over IoU thresholds
  0.5, 0.55, ..., 0.95 of TP / (TP + FP + FN), where a prediction is a hit when its IoU with a truth object
  is above the threshold; a data set's score is the mean over its images.
- `aggregated_jaccard`: the Aggregated Jaccard Index (Kumar et al., "A Dataset and a Technique for
  Generalized Nuclear Segmentation for Computational Pathology", IEEE TMI 2017) of one image.

Instances here are label maps, int (H, W) with 0 = background and 1..K per object (nuclei never overlap).
"""
from __future__ import annotations

import contextlib
import io

import numpy as np

from pixelwise import rle
from pixelwise.metrics.reduce import LOCAL, Reducer

DSB_THRESHOLDS = np.arange(0.5, 1.0, 0.05)


def iou_matrix(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every truth object with every prediction: float64 (G, P) from label maps (H, W)."""
    g, p = int(gt.max(initial=0)), int(pred.max(initial=0))
    inter = np.bincount(gt.astype(np.int64).ravel() * (p + 1) + pred.astype(np.int64).ravel(),
                        minlength=(g + 1) * (p + 1)).reshape(g + 1, p + 1)
    area_g, area_p = inter.sum(1), inter.sum(0)
    inter = inter[1:, 1:].astype(np.float64)
    union = area_g[1:, None] + area_p[None, 1:] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def _compact(labels: np.ndarray) -> np.ndarray:
    """Relabel to 1..K without gaps (empty labels would count as objects)."""
    values, inverse = np.unique(labels, return_inverse=True)
    out = inverse.reshape(labels.shape)
    return out if values[0] == 0 else out + 1


def dsb_score(gt: np.ndarray, pred: np.ndarray, thresholds=DSB_THRESHOLDS) -> float:
    """DSB 2018 score of one image from label maps: mean over thresholds t of TP / (TP + FP + FN)."""
    iou = iou_matrix(_compact(gt), _compact(pred))
    n_gt, n_pred = iou.shape
    if n_gt == 0 and n_pred == 0:
        return 1.0
    scores = []
    for t in thresholds:
        tp = int((iou > t).sum())  # above 0.5 each object matches at most one other
        scores.append(tp / (n_gt + n_pred - tp))
    return float(np.mean(scores))


def aggregated_jaccard(gt: np.ndarray, pred: np.ndarray) -> float:
    """AJI of one image: each truth object pairs with the prediction of highest IoU; AJI = sum of their
    intersections / sum of their unions plus the areas of predictions never paired."""
    gt, pred = _compact(gt), _compact(pred)
    g, p = int(gt.max(initial=0)), int(pred.max(initial=0))
    inter = np.bincount(gt.ravel() * (p + 1) + pred.ravel(), minlength=(g + 1) * (p + 1)).reshape(g + 1, p + 1)
    area_g, area_p = inter.sum(1)[1:], inter.sum(0)[1:]
    inter = inter[1:, 1:]
    if g == 0 or p == 0:
        return 1.0 if g == p else 0.0
    union = area_g[:, None] + area_p[None, :] - inter
    best = np.argmax(inter / np.maximum(union, 1), axis=1)
    hit = inter[np.arange(g), best] > 0
    c = int(inter[np.arange(g), best][hit].sum())
    u = int(union[np.arange(g), best][hit].sum()) + int(area_g[~hit].sum())
    used = np.zeros(p, bool)
    used[best[hit]] = True
    u += int(area_p[~used].sum())
    return c / u if u else 1.0


class MaskAP:
    """Streaming COCO mask AP. `update` per image; `compute` runs COCOeval over everything seen.

    class_ids: the classes scored (e.g. the dataset's things); max_dets: detections kept per image (COCO's
    100; crowded images such as nuclei need more).
    """

    def __init__(self, class_ids, class_names: list[str] | None = None, max_dets: int = 100):
        self.class_ids = sorted(int(c) for c in class_ids)
        self.class_names = class_names
        self.max_dets = max_dets
        self.images: list[dict] = []
        self.gts: list[dict] = []
        self.dts: list[dict] = []

    def update(self, gt_labels: np.ndarray, gt_classes, pred_labels: np.ndarray, pred_classes, scores,
               gt_crowd: np.ndarray | None = None) -> None:
        """gt_labels / pred_labels: int (H, W) label maps (k = object k-1); classes: (K,) class ids;
        scores: (P,) confidences; gt_crowd: bool (H, W) region where predictions are not penalised."""
        image_id = len(self.images) + 1
        h, w = gt_labels.shape
        self.images.append({"id": image_id, "height": h, "width": w})
        gt_masks = rle.encode_each(gt_labels, range(1, len(gt_classes) + 1))
        for k, cls in enumerate(gt_classes):
            self.gts.append({"image_id": image_id, "category_id": int(cls), "iscrowd": 0,
                             "segmentation": gt_masks[k + 1]})
        if gt_crowd is not None and gt_crowd.any():
            for cls in self.class_ids:
                self.gts.append({"image_id": image_id, "category_id": cls, "iscrowd": 1,
                                 "segmentation": rle.encode(gt_crowd)})
        pred_masks = rle.encode_each(pred_labels, range(1, len(pred_classes) + 1))
        for k, (cls, s) in enumerate(zip(pred_classes, scores)):
            self.dts.append({"image_id": image_id, "category_id": int(cls), "score": float(s),
                             "segmentation": pred_masks[k + 1]})

    def all_reduce(self, reducer: Reducer = LOCAL) -> None:
        """Gather every process's images (renumbered) so that each holds them all."""
        parts = reducer.gather((self.images, self.gts, self.dts))
        self.images, self.gts, self.dts = [], [], []
        for images, gts, dts in parts:
            shift = len(self.images)
            self.images += [{**im, "id": im["id"] + shift} for im in images]
            self.gts += [{**a, "image_id": a["image_id"] + shift} for a in gts]
            self.dts += [{**a, "image_id": a["image_id"] + shift} for a in dts]

    def compute(self) -> dict:
        """{"ap", "ap50", "ap75", "per_class_ap"} in 0..1 (per_class_ap None where a class has no truth)."""
        cats = [{"id": c} for c in self.class_ids]
        out = coco_mask_ap({"images": self.images, "annotations": self.gts, "categories": cats}, self.dts,
                           self.max_dets)
        if self.class_names is not None:
            out["ap_classes"] = [self.class_names[c] for c in self.class_ids]
        return out


def coco_mask_ap(gt: dict, results: list[dict], max_dets: int = 100) -> dict:
    """Mask AP of COCO results (list of {image_id, category_id, segmentation, score}) against a COCO
    instance dataset dict, through pycocotools' COCOeval. per_class_ap follows the sorted category ids."""
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = {**gt, "annotations": [dict(a) for a in gt["annotations"]]}
    for i, ann in enumerate(gt["annotations"]):
        rle = ann["segmentation"]
        if isinstance(rle, dict) and not isinstance(rle.get("counts"), list):
            ann.setdefault("area", float(mask_utils.area(rle)))
            ann.setdefault("bbox", [float(v) for v in mask_utils.toBbox(rle)])
        ann["id"] = i + 1  # COCOeval treats a match with annotation id 0 as no match: renumber from 1
    empty = {"ap": 0.0, "ap50": 0.0, "ap75": 0.0, "per_class_ap": [None] * len(gt["categories"])}
    if not results or not gt["annotations"]:
        return empty
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes([dict(r) for r in results])
        ev = COCOeval(coco_gt, coco_dt, iouType="segm")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
    # From the precision table, not ev.stats: summarize() reads AP at maxDets=100 whatever params.maxDets say.
    precision = ev.eval["precision"][:, :, :, 0, -1]  # (IoU thresholds 0.5:0.95, recall, classes), area "all"

    def mean(p: np.ndarray) -> float:
        return float(p[p > -1].mean()) if (p > -1).any() else 0.0

    per_class = [mean(precision[:, :, k]) if (precision[:, :, k] > -1).any() else None
                 for k in range(precision.shape[2])]
    return {"ap": mean(precision), "ap50": mean(precision[0]), "ap75": mean(precision[5]), "per_class_ap": per_class}


def ap_table(scores: dict) -> str:
    """A text table of mask AP scores (in %): per class when known, then AP, AP50, AP75."""
    lines = [f"{'class':<24} {'AP':>6}"]
    for name, ap in (scores.get("per_class") or {}).items():
        lines.append(f"{str(name)[:24]:<24} {'n/a' if ap is None else f'{100 * ap:.1f}':>6}")
    lines.append(f"{'mask AP':<24} {100 * scores['ap']:>6.1f}")
    lines.append(f"{'mask AP50':<24} {100 * scores['ap50']:>6.1f}")
    lines.append(f"{'mask AP75':<24} {100 * scores['ap75']:>6.1f}")
    return "\n".join(lines)
