"""Panoptic-DeepLab post-processing as pure functions: centers -> instances -> one panoptic map.

Follows Cheng et al., "Panoptic-DeepLab" (arXiv 1911.10194), section 3.3, as detectron2's
`projects/Panoptic-DeepLab/panoptic_deeplab/post_processing.py` implements it:

1. `find_instance_centers`: keypoint-style NMS on the center heatmap (a max-pool keeps local maxima),
   a score threshold and the top-k.
2. `group_pixels`: every thing pixel moves by its predicted offset and joins the nearest center.
3. `merge_semantic_and_instance`: each instance takes the majority semantic class of its pixels; stuff
   classes fill the pixels no instance took, kept only when at least `stuff_area` pixels large.

A panoptic map here is int64 (H, W) with value class * label_divisor + instance (instance 0 for stuff,
1, 2, ... per class for things) and -1 for void. `panoptic_segments` turns it into the COCO-style pair
(segment id map, segment list) that metrics and writers take.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

LABEL_DIVISOR = 1000
VOID = -1


def find_instance_centers(center: torch.Tensor, threshold: float = 0.1, nms_kernel: int = 7,
                          top_k: int | None = 200) -> torch.Tensor:
    """Instance centers from a heatmap. center: float (1, H, W) or (H, W) -> long (K, 2) as (y, x).

    A pixel is a center if it is the maximum of its nms_kernel x nms_kernel window and above `threshold`;
    only the `top_k` highest are kept (all when None).
    """
    heat = center.reshape(1, 1, *center.shape[-2:]).float()
    heat = torch.where(heat > threshold, heat, torch.full_like(heat, -1.0))
    pooled = F.max_pool2d(heat, nms_kernel, stride=1, padding=(nms_kernel - 1) // 2)
    heat = torch.where(heat == pooled, heat, torch.full_like(heat, -1.0))[0, 0]
    points = torch.nonzero(heat > 0)
    if top_k is not None and len(points) > top_k:
        scores = heat[points[:, 0], points[:, 1]]
        points = points[torch.topk(scores, top_k).indices]
    return points


def group_pixels(centers: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None = None,
                 chunk: int = 1 << 16) -> torch.Tensor:
    """Assign pixels to their nearest center after moving them by their offset.

    centers: (K, 2) (y, x); offset: float (2, H, W) as (dy, dx); mask: bool (H, W) pixels to group
    (default all). Returns long (H, W): k + 1 for center k, 0 outside the mask or without centers.
    """
    h, w = offset.shape[-2:]
    out = torch.zeros(h * w, dtype=torch.long, device=offset.device)
    if len(centers) == 0:
        return out.view(h, w)
    idx = torch.nonzero(mask.reshape(-1)).squeeze(1) if mask is not None else torch.arange(h * w, device=out.device)
    pts = centers.to(offset.device, torch.float32)
    flat = offset.reshape(2, -1).float()
    for start in range(0, len(idx), chunk):  # chunks bound the (K, pixels) distance matrix
        i = idx[start:start + chunk]
        moved = torch.stack([torch.div(i, w, rounding_mode="floor") + flat[0, i], i % w + flat[1, i]], 1)
        out[i] = torch.cdist(moved, pts).argmin(1) + 1
    return out.view(h, w)


def merge_semantic_and_instance(semantic: torch.Tensor, instance: torch.Tensor, things: Iterable[int],
                                label_divisor: int = LABEL_DIVISOR, stuff_area: int = 2048,
                                min_thing_area: int = 1) -> torch.Tensor:
    """Fuse a semantic map and class-agnostic instances into a panoptic map.

    semantic: long (H, W) class ids; instance: long (H, W), 0 = none. Each instance takes the majority
    class of its thing pixels (pixels of stuff classes are left to stuff); instances smaller than
    `min_thing_area` and stuff regions smaller than `stuff_area` become void. Returns long (H, W).
    """
    things = {int(t) for t in things}
    pan = torch.full_like(semantic, VOID)
    is_thing = torch.zeros_like(semantic, dtype=torch.bool)
    for t in things:
        is_thing |= semantic == t
    counters: dict[int, int] = {}
    for k in torch.unique(instance).tolist():
        if k == 0:
            continue
        m = (instance == k) & is_thing
        if int(m.sum()) < max(1, min_thing_area):
            continue
        cls = int(torch.mode(semantic[m]).values)
        counters[cls] = counters.get(cls, 0) + 1
        pan[m] = cls * label_divisor + counters[cls]
    for cls in torch.unique(semantic).tolist():
        if cls in things:
            continue
        m = (semantic == cls) & (instance == 0)
        if int(m.sum()) >= stuff_area:
            pan[m] = cls * label_divisor
    return pan


def panoptic_segmentation(semantic_logits: torch.Tensor, center: torch.Tensor, offset: torch.Tensor,
                          things: Iterable[int], threshold: float = 0.1, nms_kernel: int = 7,
                          top_k: int | None = 200, stuff_area: int = 2048, min_thing_area: int = 1,
                          label_divisor: int = LABEL_DIVISOR) -> torch.Tensor:
    """One image's Panoptic-DeepLab outputs -> panoptic map.

    semantic_logits (C, H, W), center (1, H, W), offset (2, H, W) -> long (H, W) (see module docstring).
    Only pixels of thing classes are grouped into instances.
    """
    things = [int(t) for t in things]
    semantic = semantic_logits.argmax(0)
    thing_mask = torch.isin(semantic, torch.tensor(things, device=semantic.device, dtype=semantic.dtype))
    centers = find_instance_centers(center, threshold, nms_kernel, top_k)
    instance = group_pixels(centers, offset, thing_mask)
    return merge_semantic_and_instance(semantic, instance, things, label_divisor, stuff_area, min_thing_area)


def panoptic_segments(pan: torch.Tensor, things: Iterable[int], probs: torch.Tensor | None = None,
                      center: torch.Tensor | None = None, label_divisor: int = LABEL_DIVISOR):
    """Panoptic map (H, W) -> (ids int32 (H, W) with 0 = void and 1..S per segment, segments).

    segments: [{"id", "category_id" (class index), "isthing", "iscrowd": 0, "area", "score"}]. The score of
    a thing is the mean probability of its class over its pixels (probs (C, H, W) softmax, when given)
    times the peak of the center heatmap inside it (center (1, H, W), when given), as detectron2 scores
    Panoptic-DeepLab instances; 1.0 for stuff or without the maps.
    """
    things = {int(t) for t in things}
    ids = torch.zeros(pan.shape, dtype=torch.int32, device=pan.device)
    segments = []
    values, areas = torch.unique(pan, return_counts=True)
    for value, area in zip(values.tolist(), areas.tolist()):
        if value < 0:
            continue
        cls = value // label_divisor
        mask = pan == value
        score = 1.0
        if cls in things and probs is not None:
            score = float(probs[cls][mask].mean())
        if cls in things and center is not None:
            score *= float(center.reshape(pan.shape)[mask].max().clamp(0, 1))
        segments.append({"id": len(segments) + 1, "category_id": cls, "isthing": cls in things, "iscrowd": 0,
                         "area": int(area), "score": score})
        ids[mask] = segments[-1]["id"]
    return ids, segments
