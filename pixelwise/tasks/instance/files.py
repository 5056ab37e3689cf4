"""Scoring instance predictions made elsewhere: `pixelwise eval --task instance --pred RESULTS.json
--data coco-instance:GT.json` (COCO results JSON, mask AP through pycocotools)."""
from __future__ import annotations

import json
from pathlib import Path

from pixelwise.data.formats.coco import load_json
from pixelwise.errors import DataError
from pixelwise.metrics.instance import coco_mask_ap


def coco_instance_eval(gt_json, results_json, max_dets: int = 100) -> dict:
    """Score a COCO instance results JSON against a COCO instance annotation JSON: mask AP, AP50, AP75 and
    per class (keyed by category name)."""
    gt = load_json(Path(gt_json))
    try:
        results = json.loads(Path(results_json).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{results_json}: unreadable results JSON ({exc})") from None
    if isinstance(results, dict):
        results = results.get("annotations", [])
    from pycocotools import mask as mask_utils

    sizes = {im["id"]: (im["height"], im["width"]) for im in gt.get("images", [])}
    anns = []
    for ann in gt["annotations"]:  # polygons and uncompressed RLE -> compressed RLE, as COCO.annToRLE does
        seg = ann["segmentation"]
        if isinstance(seg, list) or isinstance(seg.get("counts"), list):
            rles = mask_utils.frPyObjects(seg, *sizes[ann["image_id"]])
            seg = mask_utils.merge(rles) if isinstance(rles, list) else rles
        anns.append({**ann, "segmentation": seg})
    scores = coco_mask_ap({**gt, "annotations": anns}, results, max_dets)
    names = {c["id"]: c["name"] for c in gt["categories"]}
    ids = sorted(names)
    scores["per_class"] = {names[c]: ap for c, ap in zip(ids, scores.pop("per_class_ap"))}
    return scores
