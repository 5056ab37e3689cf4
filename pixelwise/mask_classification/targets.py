"""Pixel-wise training targets -> the per-image segment lists a mask-classification loss matches against.

Mask2Former (Cheng et al., arXiv 2112.01527) and MaskFormer (Cheng et al., "Per-Pixel Classification is Not All
You Need for Semantic Segmentation", arXiv 2107.06278, section 3.4) train on sets of (class, binary mask):
- semantic training: one segment per class present in the image (MaskFormer's semantic dataset mapper);
- panoptic training: one segment per thing instance and one per stuff class region (the panoptic mapper).

Each function returns {"labels": int64 (K,), "masks": bool (K, H, W), "valid": bool (H, W)}.

Void: "valid" is False on void pixels (255 in the semantic map) and masks are False there; the loss gives
points on invalid pixels weight 0, so void costs nothing (`pixelwise.mask_classification.points`). The
reference (Mask2Former's code, transformers' image processor) instead leaves void out of every mask, i.e.
trains it as background of all of them and pushes the masks to zero on unlabelled objects.
In panoptic training, thing-class pixels covered by no instance (crowd regions, objects too hidden to count)
are void as well, as in COCO panoptic and `pixelwise.tasks.panoptic.targets.panoptic_from_maps`, whose
conventions these follow (an instance's class: the majority label of its non-void pixels).
"""
from __future__ import annotations

from collections.abc import Collection

import torch

from pixelwise.constants import IGNORE_INDEX
from pixelwise.errors import DataError


def semantic_segments(semantic: torch.Tensor) -> dict[str, torch.Tensor]:
    """semantic: int64 (H, W), 255 = void -> one segment per class present, classes ascending."""
    semantic = torch.as_tensor(semantic)
    if semantic.ndim != 2:
        raise DataError(f"semantic: expected a (H, W) map, got shape {tuple(semantic.shape)}")
    valid = semantic != IGNORE_INDEX
    classes = torch.unique(semantic[valid]).long()
    masks = semantic[None] == classes[:, None, None]
    return {"labels": classes, "masks": masks, "valid": valid}


def panoptic_segments(semantic: torch.Tensor, instances: torch.Tensor,
                      things: Collection[int]) -> dict[str, torch.Tensor]:
    """semantic: int64 (H, W), 255 = void; instances: int64 (H, W), 1..K per thing instance, 0 = none;
    things: the thing class ids.

    Segments: first one per stuff class present on pixels of no instance (classes ascending), then one per
    instance id (ascending) with the majority class of its non-void pixels (an instance with none is dropped).
    """
    semantic, instances = torch.as_tensor(semantic), torch.as_tensor(instances)
    if semantic.ndim != 2 or instances.shape != semantic.shape:
        raise DataError(f"instances: shape {tuple(instances.shape)} does not match semantic {tuple(semantic.shape)}")
    thing_ids = torch.tensor(sorted(int(t) for t in things), dtype=semantic.dtype, device=semantic.device)
    valid = semantic != IGNORE_INDEX
    free = instances == 0
    valid &= ~(free & torch.isin(semantic, thing_ids))  # thing pixels of no instance: void
    labels, masks = [], []
    for cls in torch.unique(semantic[valid & free]).tolist():
        labels.append(cls)
        masks.append(valid & free & (semantic == cls))
    for k in torch.unique(instances[instances > 0]).tolist():
        mask = (instances == k) & valid
        if not bool(mask.any()):
            continue
        classes, counts = torch.unique(semantic[mask], return_counts=True)
        labels.append(int(classes[torch.argmax(counts)]))  # ties: the smallest class id, as np.argmax
        masks.append(mask)
    h, w = semantic.shape
    stacked = torch.stack(masks) if masks else torch.zeros((0, h, w), dtype=torch.bool, device=semantic.device)
    return {"labels": torch.tensor(labels, dtype=torch.int64, device=semantic.device), "masks": stacked,
            "valid": valid}


def segments_from_batch(semantic: torch.Tensor, instances: torch.Tensor | None = None,
                        things: Collection[int] = ()) -> list[dict[str, torch.Tensor]]:
    """Collated target maps -> one segment dict per image, the loss's `targets`.

    semantic: int64 (N, H, W), 255 = void (the collate's padding included); instances: int64 (N, H, W) or None.
    Without instances every image gets `semantic_segments`, with them `panoptic_segments`.
    """
    if semantic.ndim != 3:
        raise DataError(f"semantic: expected a (N, H, W) batch, got shape {tuple(semantic.shape)}")
    if instances is None:
        return [semantic_segments(s) for s in semantic]
    if instances.shape != semantic.shape:
        raise DataError(f"instances: shape {tuple(instances.shape)} does not match semantic {tuple(semantic.shape)}")
    return [panoptic_segments(s, i, things) for s, i in zip(semantic, instances)]
