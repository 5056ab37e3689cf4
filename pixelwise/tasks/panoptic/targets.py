"""Training targets of Panoptic-DeepLab from instance masks: Gaussian center heatmaps and center offsets.

Follows Cheng et al., "Panoptic-DeepLab: A Simple, Strong, and Fast Baseline for Bottom-Up Panoptic
Segmentation" (arXiv 1911.10194), section 3.2, and detectron2's `PanopticDeepLabTargetGenerator`:

- center: each instance is a 2-D Gaussian (standard deviation `sigma` pixels) around its centre of mass;
  the heatmap is the pixel-wise maximum over instances, in [0, 1].
- offset: every pixel of an instance holds the vector (dy, dx) from the pixel to its instance's centre,
  in pixels; zero elsewhere.
- semantic_weight: 1 per labelled pixel, `small_weight` (3 in the paper) on pixels of instances smaller
  than `small_area` (64 x 64 in the paper), 0 on void (255).
- center_weight: 1 except on void pixels; offset_weight: 1 on instance pixels only.

Also `instance_id_map` / `panoptic_from_maps`, the library's encoding of instance truth as one map, and
`PanopticTransform` / `panoptic_collate`, which turn Samples into these targets and batch them.
"""
from __future__ import annotations

import numpy as np
import torch

from pixelwise.constants import IGNORE_INDEX
from pixelwise.data.sample import Sample
from pixelwise.data.transforms import build_transform
from pixelwise.errors import DataError


def instance_id_map(masks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """bool (K, H, W) masks -> int64 (H, W) map: k+1 on the pixels of instance k, 0 elsewhere.

    Where masks overlap, the later instance wins (COCO's drawing order)."""
    ids = np.zeros(shape, np.int64)
    for k, mask in enumerate(masks):
        ids[mask] = k + 1
    return ids


def panoptic_targets(semantic: torch.Tensor, instances: torch.Tensor, sigma: float = 8.0,
                     small_area: int = 4096, small_weight: float = 3.0) -> dict[str, torch.Tensor]:
    """Targets of one image.

    semantic: int64 (H, W), 255 = void. instances: int64 (H, W), 1..K per thing instance, 0 = none.
    Returns float32 tensors: center (1, H, W), offset (2, H, W) as (dy, dx), center_weight (H, W),
    offset_weight (H, W), semantic_weight (H, W).
    """
    h, w = semantic.shape
    valid = semantic != IGNORE_INDEX
    center = torch.zeros(1, h, w)
    offset = torch.zeros(2, h, w)
    sem_weight = valid.float()
    ids = torch.unique(instances)
    ids = ids[ids > 0]
    if len(ids):
        yy = torch.arange(h, dtype=torch.float32)[:, None]
        xx = torch.arange(w, dtype=torch.float32)[None, :]
        for k in ids.tolist():
            mask = instances == k
            ys, xs = torch.nonzero(mask, as_tuple=True)
            cy, cx = ys.float().mean(), xs.float().mean()
            # a window of 3 sigma around the centre holds all but 1e-4 of the Gaussian: compute only there
            r = int(3 * sigma) + 1
            y0, y1 = max(0, int(cy) - r), min(h, int(cy) + r + 1)
            x0, x1 = max(0, int(cx) - r), min(w, int(cx) + r + 1)
            g = torch.exp(-((yy[y0:y1] - cy) ** 2 + (xx[:, x0:x1] - cx) ** 2) / (2 * sigma ** 2))
            center[0, y0:y1, x0:x1] = torch.maximum(center[0, y0:y1, x0:x1], g)
            offset[0][mask] = cy - ys.float()
            offset[1][mask] = cx - xs.float()
            if len(ys) < small_area:
                sem_weight[mask] = small_weight
    return {"center": center, "offset": offset, "center_weight": valid.float(),
            "offset_weight": (instances > 0).float(), "semantic_weight": sem_weight}


def panoptic_from_maps(semantic: np.ndarray, instances: np.ndarray, things) -> tuple[np.ndarray, list[dict]]:
    """Ground-truth panoptic segments from a semantic map and an instance id map.

    semantic: int (H, W), 255 = void. instances: int (H, W), k >= 1 per instance, 0 = none.
    Returns (ids int32 (H, W) with 0 = void, segments [{"id", "category_id", "iscrowd", "isthing", "area"}])
    with category_id = the class index. Stuff classes give one segment each; thing pixels outside every
    instance (e.g. crowd regions or objects too hidden to count) are void, as in COCO panoptic.
    """
    things = set(int(t) for t in things)
    out = np.zeros(semantic.shape, np.int32)
    segments: list[dict] = []
    for cls in np.unique(semantic):
        cls = int(cls)
        if cls == IGNORE_INDEX or cls in things:
            continue
        mask = (semantic == cls) & (instances == 0)
        if mask.any():
            segments.append({"id": len(segments) + 1, "category_id": cls, "iscrowd": 0, "isthing": False,
                             "area": int(mask.sum())})
            out[mask] = segments[-1]["id"]
    for k in np.unique(instances):
        if k == 0:
            continue
        mask = instances == k
        labels = semantic[mask]
        classes, counts = np.unique(labels[labels != IGNORE_INDEX], return_counts=True)
        if len(classes) == 0:
            continue
        cls = int(classes[np.argmax(counts)])  # the instance's class: its pixels' majority label
        segments.append({"id": len(segments) + 1, "category_id": cls, "iscrowd": 0, "isthing": cls in things,
                         "area": int(mask.sum())})
        out[mask] = segments[-1]["id"]
    return out, segments


class PanopticTransform:
    """The training preset: Sample -> (image float32 (3, H, W), targets dict of `panoptic_targets` plus
    "semantic" int64 (H, W)). The semantic map and the instance-id map travel through the semantic preset
    stacked as one (2, H, W) mask, so every geometric op moves them together; pixels the preset fills with
    255 (padding, rotation corners) are void and belong to no instance. `targets`: options of
    `panoptic_targets` (sigma, small_area, small_weight), from the model. segments=True (a mask-classification
    model): the targets are the semantic map and the instance-id map "instances" int64 (H, W) alone, the
    segments the set criterion matches (no center or offset targets)."""

    def __init__(self, data_cfg, things, targets: dict | None = None, segments: bool = False):
        self.base = build_transform(data_cfg, train=True)
        self.things, self.targets = [int(t) for t in things], dict(targets or {})
        self.segments = segments

    def __call__(self, sample: Sample):
        h, w = sample.image.shape[:2]
        if sample.semantic is None:
            raise DataError(f"{sample.meta.get('path', sample.name)}: sample has no semantic labels")
        inst = sample.instances
        masks = inst.masks[np.isin(inst.class_ids, self.things)] if inst is not None else np.zeros((0, h, w), bool)
        ids = instance_id_map(masks, (h, w))
        image, maps = self.base(Sample(sample.image, np.stack([np.asarray(sample.semantic, np.int64), ids]), None,
                                       sample.meta))
        semantic, ids = maps[0], maps[1].clone()
        ids[semantic == IGNORE_INDEX] = 0
        if self.segments:
            return image, {"semantic": semantic, "instances": ids}
        targets = panoptic_targets(semantic, ids, **self.targets)
        targets["semantic"] = semantic
        return image, targets


def panoptic_collate(batch):
    """Stack (image, targets) pairs of different sizes: images padded with 0, semantic with 255, the other
    maps with 0 (weight 0: padding costs nothing); values that are not tensors stay lists."""
    images, targets = zip(*batch)
    h = max(im.shape[-2] for im in images)
    w = max(im.shape[-1] for im in images)
    x = images[0].new_zeros((len(images), images[0].shape[0], h, w))
    for i, im in enumerate(images):
        x[i, :, :im.shape[-2], :im.shape[-1]] = im
    out = {}
    for key, first in targets[0].items():
        if not isinstance(first, torch.Tensor):
            out[key] = [t[key] for t in targets]
            continue
        fill = IGNORE_INDEX if key == "semantic" else 0
        y = first.new_full((len(targets), *first.shape[:-2], h, w), fill)
        for i, t in enumerate(targets):
            y[i, ..., :t[key].shape[-2], :t[key].shape[-1]] = t[key]
        out[key] = y
    return x, out


def panoptic_truth(sample: Sample, things) -> tuple[np.ndarray, list[dict]]:
    """(segment ids int32 (H, W), segments) of a Sample: the reader's exact truth (`meta["panoptic"]`, COCO),
    else built from its semantic map and the instances of thing classes."""
    if sample.meta.get("panoptic") is not None:
        return sample.meta["panoptic"]
    if sample.semantic is None:
        raise DataError(f"{sample.meta.get('path', sample.name)}: sample has no semantic labels")
    h, w = sample.semantic.shape
    inst = sample.instances
    masks = inst.masks[np.isin(inst.class_ids, list(things))] if inst is not None else np.zeros((0, h, w), bool)
    return panoptic_from_maps(np.asarray(sample.semantic), instance_id_map(masks, (h, w)), things)
