"""Mask-classification outputs of ONE image -> semantic scores, panoptic segments or instances.

The three inferences of Mask2Former (Cheng et al., "Masked-attention Mask Transformer for Universal Image
Segmentation", arXiv 2112.01527, section 4 / appendix A, `semantic_inference`, `panoptic_inference`,
`instance_inference` of the authors' `MaskFormer` meta-architecture), semantic inference as MaskFormer's
(Cheng et al., arXiv 2107.06278, section 3.4: "general inference" marginalises over queries).

Inputs: pred_logits (Q, C+1) class logits, the last the "no object" class; pred_masks (Q, h, w) mask logits at
1/4 of the padded input. With `size=(H, W)` (the un-padded input) the mask logits are first upsampled
bilinearly (align_corners=False) to `padded=(Hp, Wp)` (default (4h, 4w)) and cropped to the top-left H x W,
the authors' order (upsample to the padded batch, crop, then infer); without either, inference runs at (h, w).

Against transformers' `Mask2FormerImageProcessor.post_process_*` (which upsample to a fixed 384 x 384, then
resize to `target_sizes`): semantic scores and instances agree exactly at the same resolution. Panoptic
inference follows the authors' code where transformers departs from it, see `panoptic_inference`.
"""
from __future__ import annotations

from collections.abc import Collection

import torch
import torch.nn.functional as F

from pixelwise.errors import ModelError


def mask_logits(pred_masks: torch.Tensor, size: tuple[int, int] | None = None,
                padded: tuple[int, int] | None = None) -> torch.Tensor:
    """(Q, h, w) -> (Q, H, W) float32: bilinear (align_corners=False) to `padded` (default (4h, 4w)), cropped
    to `size`; unchanged when both are None."""
    x = pred_masks.float()
    if size is None and padded is None:
        return x
    h, w = x.shape[-2:]
    padded = tuple(padded) if padded is not None else (4 * h, 4 * w)
    size = tuple(size) if size is not None else padded
    if size[0] > padded[0] or size[1] > padded[1]:
        raise ModelError(f"size: {size[0]}x{size[1]} is larger than the padded input {padded[0]}x{padded[1]}")
    if len(x) == 0:
        return x.new_zeros((0, *size))
    if padded != (h, w):
        x = F.interpolate(x[None], size=padded, mode="bilinear", align_corners=False)[0]
    return x[:, : size[0], : size[1]]


def semantic_inference(pred_logits: torch.Tensor, pred_masks: torch.Tensor, size: tuple[int, int] | None = None,
                       padded: tuple[int, int] | None = None) -> torch.Tensor:
    """Per-class scores (C, H, W) = sum_q softmax(pred_logits)[q, c] * sigmoid(mask_q), no-object dropped.

    Not normalised over classes (the paper's; argmax gives the semantic map). Sizes: see `mask_logits`."""
    probs = pred_logits.float().softmax(-1)[:, :-1]
    return torch.einsum("qc,qhw->chw", probs, mask_logits(pred_masks, size, padded).sigmoid())


def panoptic_inference(pred_logits: torch.Tensor, pred_masks: torch.Tensor, things: Collection[int],
                       object_mask_threshold: float = 0.8, overlap_threshold: float = 0.8,
                       size: tuple[int, int] | None = None,
                       padded: tuple[int, int] | None = None) -> tuple[torch.Tensor, list[dict]]:
    """Panoptic segments: (ids int32 (H, W) with 0 = void, segments [{"id", "category_id", "isthing", "score",
    "area"}]), ids 1, 2, ... in query order.

    The authors' `panoptic_inference`: keep queries whose class is not "no object" and whose probability exceeds
    object_mask_threshold; each pixel goes to argmax_q score_q * sigmoid(mask_q); query q's segment is its
    pixels where also sigmoid(mask_q) >= 0.5, dropped if it holds less than overlap_threshold of q's own
    (sigmoid >= 0.5) area; queries of the same stuff class merge into one segment (score: the first query's),
    things stay one segment per query. area: the segment's pixels in the returned map.

    Where transformers' `post_process_panoptic_segmentation` (label_ids_to_fuse = the stuff classes) differs:
    its segment is the argmax region alone (no sigmoid >= 0.5 cut, so its segments cover more pixels); it
    measures the own area on score-scaled probabilities (score * sigmoid >= 0.5) and drops ratios <= threshold
    (here < threshold, the authors'); it lists a merged stuff segment once per query; it returns a map of -1
    when no query survives (here all 0 = void); its default threshold is 0.5, the authors' 0.8.
    """
    scores, labels = pred_logits.float().softmax(-1).max(-1)
    num_classes = pred_logits.shape[-1] - 1
    keep = (labels != num_classes) & (scores > object_mask_threshold)
    cur_scores, cur_classes = scores[keep], labels[keep]
    cur_masks = mask_logits(pred_masks[keep], size, padded).sigmoid()
    h, w = cur_masks.shape[-2:]
    ids = torch.zeros((h, w), dtype=torch.int32, device=cur_masks.device)
    if len(cur_scores) == 0:
        return ids, []
    owner = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)
    things = {int(t) for t in things}
    segments: list[dict] = []
    stuff_ids: dict[int, int] = {}
    for k in range(len(cur_classes)):
        cls = int(cur_classes[k])
        isthing = cls in things
        region = owner == k
        own = cur_masks[k] >= 0.5
        mask = region & own
        mask_area, own_area = int(region.sum()), int(own.sum())
        if mask_area == 0 or own_area == 0 or not bool(mask.any()) or mask_area / own_area < overlap_threshold:
            continue
        if not isthing and cls in stuff_ids:
            ids[mask] = stuff_ids[cls]
            continue
        seg_id = len(segments) + 1
        if not isthing:
            stuff_ids[cls] = seg_id
        ids[mask] = seg_id
        segments.append({"id": seg_id, "category_id": cls, "isthing": isthing,
                         "score": float(cur_scores[k]), "area": 0})
    areas = torch.bincount(ids.flatten().long(), minlength=len(segments) + 1).tolist()
    for seg in segments:
        seg["area"] = int(areas[seg["id"]])
    return ids, segments


def instance_inference(pred_logits: torch.Tensor, pred_masks: torch.Tensor, things: Collection[int] | None,
                       top_k: int = 100, size: tuple[int, int] | None = None,
                       padded: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Instances: (masks bool (K, H, W), class_ids int64 (K,), scores float32 (K,)), scores descending.

    The authors' `instance_inference`: the top_k (query, class) pairs by class probability (no-object dropped;
    a query may appear with several classes), only thing classes kept (`things`; None = every class), mask =
    sigmoid(mask logit) > 0.5, score = class probability * mean mask probability inside the mask.
    Departure: instances with an empty mask are dropped (the authors keep them with score 0; transformers drops
    them too). Sizes: see `mask_logits`.
    """
    num_queries, num_classes = pred_logits.shape[0], pred_logits.shape[-1] - 1
    probs = pred_logits.float().softmax(-1)[:, :-1]
    top, flat = probs.flatten().topk(min(top_k, num_queries * num_classes), sorted=True)
    classes, queries = flat % num_classes, torch.div(flat, num_classes, rounding_mode="floor")
    if things is not None:
        keep = torch.isin(classes, torch.tensor(sorted(int(t) for t in things), device=classes.device))
        top, classes, queries = top[keep], classes[keep], queries[keep]
    unique, inverse = torch.unique(queries, return_inverse=True)
    logits = mask_logits(pred_masks[unique], size, padded)[inverse]
    masks = logits > 0
    inside = masks.flatten(1).float()
    mask_scores = (logits.sigmoid().flatten(1) * inside).sum(1) / (inside.sum(1) + 1e-6)
    scores = top * mask_scores
    nonempty = inside.sum(1) > 0
    masks, classes, scores = masks[nonempty], classes[nonempty], scores[nonempty]
    order = torch.argsort(scores, descending=True, stable=True)
    return masks[order], classes[order].long(), scores[order]
