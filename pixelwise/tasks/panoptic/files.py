"""Scoring panoptic predictions made elsewhere: `pixelwise eval --task panoptic --pred PRED.json
--data coco-panoptic:GT.json`, computed exactly as panopticapi's `pq_compute` (checked against it in tests)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pixelwise.data.formats.coco import categories, load_json, read_panoptic_png
from pixelwise.errors import DataError
from pixelwise.metrics.panoptic import PanopticQuality


def pq_compute(gt_json, pred_json, gt_folder=None, pred_folder=None) -> dict:
    """Score COCO-panoptic predictions (JSON + PNG folder) against COCO-panoptic truth, as panopticapi's
    `pq_compute` does. Folders default to the JSON path without '.json'. Categories come from the truth;
    every truth image needs a prediction (matched by image_id). Returns `pq_from_stats`'s dict, with
    per_class keyed by category name, plus "images" (the count) and "category_ids"."""
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
    listed = {int(s["id"]) for s in ann["segments_info"]}
    present = {int(v) for v in np.unique(ids)} - {0}
    if present - listed:
        raise DataError(f"{path}: segment ids {sorted(present - listed)[:5]} are in the PNG but not in the JSON")
    if listed - present:
        raise DataError(f"{path}: segment ids {sorted(listed - present)[:5]} are in the JSON but not in the PNG")
    unknown = [s["category_id"] for s in ann["segments_info"] if s["category_id"] not in index]
    if unknown:
        raise DataError(f"{path}: unknown category ids {unknown[:5]}")
