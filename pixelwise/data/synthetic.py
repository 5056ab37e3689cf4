"""Procedural scenes with semantic, instance and panoptic truth: the embedded default dataset.

Each scene has three textured "stuff" regions (sky above a wavy horizon, grass and road below it, split by
a slanted boundary) and several overlapping "thing" objects (disks, boxes, triangles) drawn back to front,
so later objects occlude earlier ones. Colours are jittered and noise is added, so a model must use both
colour and shape. Everything is a pure function of (seed, split, index): the same call gives the same image
on every machine, with no files and no network.
"""
from __future__ import annotations

import zlib

import cv2
import numpy as np

from pixelwise.data.dataset import SegmentationDataset
from pixelwise.data.sample import Instances, Sample

CLASSES = ["sky", "grass", "road", "disk", "box", "triangle"]
STUFF = [0, 1, 2]
THINGS = [3, 4, 5]
PALETTE = [(70, 130, 180), (107, 142, 35), (128, 64, 128), (220, 20, 60), (250, 170, 30), (0, 0, 230)]
_BASE_COLORS = {0: (120, 170, 230), 1: (60, 150, 50), 2: (110, 100, 110),
                3: (210, 50, 50), 4: (230, 200, 60), 5: (80, 60, 200)}
SPLIT_OFFSETS = {"train": 0, "val": 1_000_000, "test": 2_000_000}
DEFAULT_COUNTS = {"train": 96, "val": 24, "test": 24}


def _texture(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth random field in [-1, 1] of shape (H, W): bilinear upsampling of a coarse grid."""
    grid = rng.uniform(-1, 1, size=(cells, cells)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC).clip(-1, 1)


def _paint(img: np.ndarray, mask: np.ndarray, cls: int, rng: np.random.Generator) -> None:
    h, w = mask.shape
    base = np.array(_BASE_COLORS[cls], np.float32) + rng.normal(0, 18, 3)
    tex = _texture(rng, h, w, cells=int(rng.integers(4, 12)))[..., None] * rng.uniform(10, 35)
    img[mask] = (base + tex)[mask]


def _thing_mask(cls: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    canvas = np.zeros((h, w), np.uint8)
    cx, cy = int(rng.integers(0, w)), int(rng.integers(h // 4, h))
    r = int(rng.integers(max(4, h // 16), max(6, h // 6)))
    if cls == 3:
        cv2.circle(canvas, (cx, cy), r, 1, thickness=-1)
    elif cls == 4:
        angle = float(rng.uniform(0, 90))
        box = cv2.boxPoints(((cx, cy), (2 * r, 1.4 * r), angle)).astype(np.int32)
        cv2.fillPoly(canvas, [box], 1)
    else:
        angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
        pts = np.stack([cx + 1.3 * r * np.cos(angles), cy + 1.3 * r * np.sin(angles)], 1).astype(np.int32)
        cv2.fillPoly(canvas, [pts], 1)
    return canvas.astype(bool)


def make_scene(seed: int, size: int = 128, max_objects: int = 6) -> Sample:
    """One scene. Returns a Sample with image (S,S,3) uint8, semantic (S,S) int64, and visible instances."""
    rng = np.random.default_rng(seed)
    h = w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    horizon = h * rng.uniform(0.25, 0.5) + h * 0.05 * np.sin(xx / w * rng.uniform(2, 8) + rng.uniform(0, 6))
    slope = rng.uniform(-1.5, 1.5)
    split_x = w * rng.uniform(0.25, 0.75) + slope * (yy - h / 2)
    semantic = np.where(yy < horizon, 0, np.where(xx < split_x, 1, 2)).astype(np.int64)
    if rng.random() < 0.5:  # swap grass/road sides
        semantic = np.where(semantic == 1, 2, np.where(semantic == 2, 1, semantic))
    img = np.zeros((h, w, 3), np.float32)
    for cls in STUFF:
        _paint(img, semantic == cls, cls, rng)

    instance_map = np.full((h, w), -1, np.int64)
    classes = []
    for k in range(int(rng.integers(1, max_objects + 1))):
        cls = int(rng.choice(THINGS))
        mask = _thing_mask(cls, h, w, rng)
        _paint(img, mask, cls, rng)
        semantic[mask] = cls
        instance_map[mask] = k
        classes.append(cls)
    masks, ids = [], []
    for k, cls in enumerate(classes):
        m = instance_map == k
        if m.sum() >= 16:  # objects almost wholly hidden are not counted as instances
            masks.append(m)
            ids.append(cls)
        else:
            semantic[m] = cls  # still labelled semantically
    img += rng.normal(0, 6, img.shape)
    image = img.clip(0, 255).astype(np.uint8)
    inst = Instances(np.stack(masks) if masks else np.zeros((0, h, w), bool), np.array(ids, np.int64))
    return Sample(image=image, semantic=semantic, instances=inst, meta={"name": f"scene_{seed}", "path": ""})


def open_synthetic(root="default", split: str = "train", count: int | None = None, size: int = 128,
                   **_ignored) -> SegmentationDataset:
    """The synthetic dataset as `synthetic:SEED` (root is a seed or a name hashed to one).

    Splits train/val/test draw disjoint seeds; `count` images of `size` x `size` each.
    """
    from pixelwise.errors import DataError

    if split not in SPLIT_OFFSETS:
        raise DataError(f"synthetic: unknown split '{split}' (known: {', '.join(SPLIT_OFFSETS)})")
    root = str(root)
    base = int(root) if root.isdigit() else zlib.crc32(root.encode()) % 100_000
    n = count if count is not None else DEFAULT_COUNTS[split]
    seeds = [base * 10_000_000 + SPLIT_OFFSETS[split] + i for i in range(n)]
    return SegmentationDataset(records=seeds, load=lambda s: make_scene(s, size=size), classes=list(CLASSES),
                               palette=list(PALETTE), name=f"synthetic:{root} [{split}]", things=list(THINGS))
