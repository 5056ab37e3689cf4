"""Multi-label truth from any Sample: (C, H, W) uint8 masks, 1 = present, 0 = absent, 255 = void.

- `sample.class_masks` (the per-class folder layout) is taken as it is;
- otherwise each class is the union of its semantic pixels and its instance masks, so overlapping COCO
  instances of different classes give overlapping class masks (the semantic map alone keeps only one
  class per pixel); pixels void in the semantic map and covered by no class are void for every class;
- `unions` add derived classes after the source ones, each the union of named source classes (e.g.
  built-up = Building or Road), void where all its members are void.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from pixelwise.constants import IGNORE_INDEX
from pixelwise.data.sample import Sample
from pixelwise.data.transforms import build_transform
from pixelwise.errors import DataError


def class_masks(sample: Sample, num_source: int, unions: list[list[int]],
                shape: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 (num_source + len(unions), H, W) masks of a Sample (see the module docstring); `shape`: the
    (H, W) of the labels when it is not the image's."""
    where = sample.meta.get("path", sample.name or "sample")
    if sample.class_masks is not None:
        masks = np.asarray(sample.class_masks, np.uint8)
        if masks.shape[0] != num_source:
            raise DataError(f"{where}: {masks.shape[0]} class masks for {num_source} classes")
    else:
        if sample.semantic is None and sample.instances is None:
            raise DataError(f"{where}: has no labels (semantic map, instances or class masks)")
        h, w = shape or sample.image.shape[:2]
        present = np.zeros((num_source, h, w), bool)
        semantic = None if sample.semantic is None else np.asarray(sample.semantic)
        if semantic is not None:
            for c in range(num_source):
                present[c] = semantic == c
        if sample.instances is not None:
            for mask, c in zip(sample.instances.masks, sample.instances.class_ids):
                present[int(c)] |= mask
        masks = present.astype(np.uint8)
        if semantic is not None:
            void = (semantic == IGNORE_INDEX) & ~present.any(0)
            masks[:, void] = IGNORE_INDEX
    if not unions:
        return masks
    derived = []
    for members in unions:
        part = masks[members]
        union = (part == 1).any(0).astype(np.uint8)
        union[(part == IGNORE_INDEX).all(0)] = IGNORE_INDEX
        derived.append(union)
    return np.concatenate([masks, np.stack(derived)], 0)


class MultiLabelTransform:
    """The training preset: Sample -> (image float32 (3, H, W), masks int64 (C, H, W) 0/1, 255 = void).

    A sample labelled by a semantic map alone goes through the semantic preset as it is and its masks are
    made from the crop (one-hot and unions are pointwise, so they commute with every geometric op, nearest
    resampling and void padding included): the preset moves one map, not C of them. Otherwise the masks
    go through it stacked as one uint8 label map, so every geometric op moves them together and padding is
    void."""

    def __init__(self, data_cfg, num_source: int, unions: list[list[int]]):
        self.base = build_transform(data_cfg, train=True)
        self.num_source, self.unions = num_source, unions

    def __call__(self, sample: Sample):
        if sample.class_masks is None and sample.instances is None and sample.semantic is not None:
            image, semantic = self.base(sample)
            crop = dataclasses.replace(sample, semantic=semantic.numpy())
            masks = class_masks(crop, self.num_source, self.unions, shape=tuple(semantic.shape))
        else:
            masks = class_masks(sample, self.num_source, self.unions)
            image, masks = self.base(Sample(sample.image, masks, None, sample.meta))
        return image, torch.as_tensor(masks).long()
