"""Panoptic answers from any model's outputs.

- Panoptic models (outputs "out", "center", "offset"): Panoptic-DeepLab post-processing
  (pixelwise.tasks.panoptic.postprocess).
- Mask-classification models (per-query outputs "query_logits", "query_masks"): Mask2Former's panoptic
  inference (pixelwise.mask_classification).
- Semantic models: stuff classes from the label map, thing instances by connected components or marker
  watershed (pixelwise.postprocess.instances).

Both give segment ids int32 (H, W) with 0 = void and segments [{"id", "category_id" (class index),
"isthing", "iscrowd", "area", "score"}], with the semantic map int64 (H, W) they came from.
"""
from __future__ import annotations

import numpy as np
import torch

from pixelwise.fastops import class_argmax
from pixelwise.mask_classification import panoptic_inference
from pixelwise.postprocess.instances import instances_from_semantic
from pixelwise.tasks.panoptic.postprocess import merge_semantic_and_instance, panoptic_segmentation, panoptic_segments


def thing_labels(ids: np.ndarray, segments: list[dict], things=None, crowd: bool = False):
    """Thing segments (non-crowd, or crowd only when `crowd`) of a segment-id map as a label map 1..K,
    with their class ids and scores. Things: the classes in `things`, else the segments marked "isthing"."""
    things = None if things is None else {int(t) for t in things}
    picked = [s for s in segments if (s["category_id"] in things if things is not None else s.get("isthing", False))
              and bool(s.get("iscrowd", 0)) == crowd]
    lut = np.zeros(int(ids.max(initial=0)) + 1, np.int32)
    for k, seg in enumerate(picked):
        lut[seg["id"]] = k + 1
    return (lut[ids], np.array([s["category_id"] for s in picked], np.int64),
            np.array([s.get("score", 1.0) for s in picked], np.float32))


def panoptic_decode(out: dict[str, torch.Tensor], things, threshold: float = 0.1, nms_kernel: int = 7,
                    top_k: int | None = 200, stuff_area: int = 2048, min_thing_area: int = 1,
                    method: str = "components", object_mask_threshold: float = 0.8,
                    overlap_threshold: float = 0.8) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """One image's outputs {"out" (C, H, W)[, "center" (1, H, W), "offset" (2, H, W)]} -> (semantic int64
    (H, W), segment ids int32 (H, W), segments).

    With center and offset: Panoptic-DeepLab grouping; with per-query outputs (QUERY_KEYS of a
    mask-classification model): Mask2Former's panoptic inference (object_mask_threshold, overlap_threshold;
    segment score: its query's class probability); without either (a semantic model): instances by `method`
    ("components" or "watershed") on the argmax. Scores: see `panoptic_segments`.
    """
    things = [int(t) for t in things]
    probs = out["out"].float().softmax(0)
    semantic = class_argmax(probs)
    if "query_logits" in out and "query_masks" in out:
        ids, segments = panoptic_inference(out["query_logits"], out["query_masks"], things, object_mask_threshold,
                                           overlap_threshold)
        small = {s["id"] for s in segments if s["area"] < (min_thing_area if s["isthing"] else stuff_area)}
        if small:  # segments under the area limits become void, as in the other two routes
            ids = torch.where(torch.isin(ids, torch.tensor(sorted(small), dtype=ids.dtype, device=ids.device)), 0, ids)
        segments = [{**s, "iscrowd": 0} for s in segments if s["id"] not in small]
        return semantic.cpu().numpy().astype(np.int64), ids.cpu().numpy(), segments
    if "center" in out and "offset" in out:
        pan = panoptic_segmentation(out["out"], out["center"], out["offset"], things, threshold, nms_kernel, top_k,
                                    stuff_area, min_thing_area)
        ids, segments = panoptic_segments(pan, things, probs, out["center"])
    else:
        labels, _, _ = instances_from_semantic(semantic.cpu().numpy(), things, method, min_area=min_thing_area)
        pan = merge_semantic_and_instance(semantic, torch.from_numpy(labels.astype(np.int64)).to(semantic.device),
                                          things, stuff_area=stuff_area, min_thing_area=min_thing_area)
        ids, segments = panoptic_segments(pan, things, probs)  # score: mean class probability of each instance
    return semantic.cpu().numpy().astype(np.int64), ids.cpu().numpy(), segments
