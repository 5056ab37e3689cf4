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
from pixelwise.fastops import class_argmax

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
    class of its thing pixels (ties: the lower class id; pixels of stuff classes are left to stuff) and is
    numbered 1, 2, ... within its class in instance order; instances smaller than `min_thing_area` and
    stuff regions smaller than `stuff_area` become void. Returns long (H, W).

    Counted with one bincount over (instance, class) pairs, not one pass over the image per instance (a
    4000 x 3000 image with 1000 instances took 73 s that way).
    """
    things_t = torch.tensor(sorted({int(t) for t in things}), device=semantic.device, dtype=semantic.dtype)
    is_thing = torch.isin(semantic, things_t)
    pan = torch.full_like(semantic, VOID)
    n_cls = int(semantic.max()) + 1 if semantic.numel() else 1
    n_inst = int(instance.max()) if instance.numel() else 0
    grouped = (instance > 0) & is_thing
    if n_inst > 0 and grouped.any():
        key = instance[grouped] * n_cls + semantic[grouped]
        counts = torch.bincount(key, minlength=(n_inst + 1) * n_cls).view(n_inst + 1, n_cls)
        area, cls = counts.sum(1), counts.argmax(1)
        keep = area >= max(1, min_thing_area)
        keep[0] = False
        number = torch.zeros(n_inst + 1, dtype=torch.long, device=semantic.device)
        for c in torch.unique(cls[keep]).tolist():
            members = torch.nonzero(keep & (cls == c)).squeeze(1)
            number[members] = torch.arange(1, len(members) + 1, device=semantic.device)
        lut = torch.where(keep, cls * label_divisor + number, torch.full_like(cls, VOID))
        pan = torch.where(grouped, lut[instance], pan)
    stuff = ~is_thing & (instance == 0)
    area = torch.bincount(semantic[stuff], minlength=n_cls)
    lut = torch.where(area >= stuff_area, torch.arange(n_cls, device=semantic.device) * label_divisor,
                      torch.full_like(area, VOID))
    return torch.where(stuff, lut[semantic], pan)


def panoptic_segmentation(semantic_logits: torch.Tensor, center: torch.Tensor, offset: torch.Tensor,
                          things: Iterable[int], threshold: float = 0.1, nms_kernel: int = 7,
                          top_k: int | None = 200, stuff_area: int = 2048, min_thing_area: int = 1,
                          label_divisor: int = LABEL_DIVISOR) -> torch.Tensor:
    """One image's Panoptic-DeepLab outputs -> panoptic map.

    semantic_logits (C, H, W), center (1, H, W), offset (2, H, W) -> long (H, W) (see module docstring).
    Only pixels of thing classes are grouped into instances.
    """
    things = [int(t) for t in things]
    semantic = class_argmax(semantic_logits)
    thing_mask = torch.isin(semantic, torch.tensor(things, device=semantic.device, dtype=semantic.dtype))
    centers = find_instance_centers(center, threshold, nms_kernel, top_k)
    instance = group_pixels(centers, offset, thing_mask)
    return merge_semantic_and_instance(semantic, instance, things, label_divisor, stuff_area, min_thing_area)


def panoptic_segments(pan: torch.Tensor, things: Iterable[int], probs: torch.Tensor | None = None,
                      center: torch.Tensor | None = None, label_divisor: int = LABEL_DIVISOR):
    """Panoptic map (H, W) -> (ids int32 (H, W) with 0 = void and 1..S per segment, segments).

    segments: [{"id", "category_id" (class index), "isthing", "iscrowd": 0, "area", "score"}], in the order
    of their panoptic values. The score of a thing is the mean probability of its class over its pixels
    (probs (C, H, W) softmax, when given) times the peak of the center heatmap inside it (center (1, H, W),
    when given), as detectron2 scores Panoptic-DeepLab instances; 1.0 for stuff or without the maps.
    Every per-segment sum is one scatter over the image, not one pass per segment.
    """
    things = {int(t) for t in things}
    values, inverse, areas = torch.unique(pan, return_inverse=True, return_counts=True)
    valid = values >= 0
    number = torch.cumsum(valid.long(), 0) * valid  # 1..S for segments, 0 for void
    ids = number[inverse].to(torch.int32)
    cls = torch.where(valid, values // label_divisor, torch.zeros_like(values))
    n = len(values)
    score = torch.ones(n, dtype=torch.float64, device=pan.device)
    flat = inverse.reshape(-1)
    if probs is not None:
        p = probs.reshape(probs.shape[0], -1).gather(0, cls[flat][None].clamp(max=probs.shape[0] - 1))[0]
        score = torch.zeros(n, dtype=torch.float64, device=pan.device).index_add_(0, flat, p.double()) / areas
    if center is not None:
        peak = torch.zeros(n, dtype=center.dtype, device=pan.device).scatter_reduce_(
            0, flat, center.reshape(-1), reduce="amax", include_self=False)
        score = score * peak.clamp(0, 1).double()
    segments = []
    for k in torch.nonzero(valid).squeeze(1).tolist():
        c = int(cls[k])
        isthing = c in things
        segments.append({"id": len(segments) + 1, "category_id": c, "isthing": isthing, "iscrowd": 0,
                         "area": int(areas[k]), "score": float(score[k]) if isthing else 1.0})
    return ids, segments
