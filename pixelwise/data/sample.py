"""The one record every dataset reader yields.

A `Sample` holds an image (RGB, or any number of bands) and whatever truth the dataset has: a semantic map, instance masks, or both
(panoptic truth is the pair), or overlapping per-class masks (multi-label truth). Inside the library the void label is always 255 (`IGNORE_INDEX`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Instances:
    """Object instances of one image.

    masks: bool (K, H, W), one mask per object; class_ids: int64 (K,), the semantic class of each.
    """

    masks: np.ndarray
    class_ids: np.ndarray

    def __post_init__(self) -> None:
        if self.masks.ndim != 3 or len(self.masks) != len(self.class_ids):
            raise ValueError(f"instances: masks {self.masks.shape} do not match {len(self.class_ids)} class ids")

    def __len__(self) -> int:
        return len(self.class_ids)


@dataclass
class Sample:
    """One image and its truth.

    image: uint8 (H, W, 3) RGB, or a raster's raw bands (H, W, B) of uint8/uint16/int16/float32 (then
    `meta["raster"]` holds its georeferencing and band names; see pixelwise.data.raster / bands). semantic: int64 (H, W) class ids with 255 = void, or None.
    instances: `Instances` or None. class_masks: multi-label truth, uint8 (C, H, W), 1 where class c is
    present (classes may overlap), 0 where absent, 255 = void; or None. meta: free-form (at least `path`
    and `name` when read from disk).
    """

    image: np.ndarray
    semantic: np.ndarray | None = None
    instances: Instances | None = None
    meta: dict = field(default_factory=dict)
    class_masks: np.ndarray | None = None

    @property
    def name(self) -> str:
        return str(self.meta.get("name", ""))
