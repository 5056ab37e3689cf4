"""`dsb`: the Kaggle 2018 Data Science Bowl layout, one PNG per nucleus.

    ROOT/<ImageId>/images/<ImageId>.png         the image (RGBA or RGB; read as RGB)
    ROOT/<ImageId>/masks/<anything>.png         one binary mask (0 / 255) per instance

ROOT may also be a folder holding one such set (e.g. stage1_train/ or stage1_test/ of the Kaggle download).
Classes: background (0) and nucleus (1, a thing). The data ships no validation split, so one is made
deterministically: ImageIds sorted by name, every `val_every`-th (index % val_every == val_every - 1) is
"val", the others "train"; "all" gives every image. Images without masks are errors, as are masks of
another size than their image.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from pixelwise.data.dataset import SegmentationDataset
from pixelwise.data.io import list_images, read_image, read_mask
from pixelwise.data.sample import Instances, Sample
from pixelwise.errors import DataError

CLASSES = ["background", "nucleus"]
PALETTE = [(0, 0, 0), (255, 200, 0)]
SPLITS = ("train", "val", "all")


def _image_folders(root: Path) -> list[Path]:
    folders = sorted(d for d in root.iterdir() if (d / "images").is_dir())
    if not folders:  # a folder around the set, e.g. ROOT/stage1_test/<ImageId>/...
        inner = [d for d in root.iterdir()
                 if d.is_dir() and any((e / "images").is_dir() for e in d.iterdir() if e.is_dir())]
        if len(inner) == 1:
            return _image_folders(inner[0])
        raise DataError(f"{root}: no DSB image folders (<ImageId>/images/<ImageId>.png) found"
                        + (f"; several sets inside ({', '.join(d.name for d in inner)}): name one" if inner else ""))
    return folders


@lru_cache(maxsize=128)
def _read(folder: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """(image, instance label map int32 (H, W), image path); cached: a DSB image has up to ~400 mask files."""
    images = list_images(folder / "images")
    if not images:
        raise DataError(f"{folder / 'images'}: no image")
    image = read_image(images[0])
    mask_paths = list_images(folder / "masks") if (folder / "masks").is_dir() else []
    if not mask_paths:
        raise DataError(f"{folder}: no instance masks in masks/")
    labels = np.zeros(image.shape[:2], np.int32)
    for path in mask_paths:
        m = read_mask(path) > 0
        if m.shape != image.shape[:2]:
            raise DataError(f"{path}: mask is {m.shape[1]}x{m.shape[0]} but its image is "
                            f"{image.shape[1]}x{image.shape[0]} (WxH)")
        if m.any():
            labels[m] = labels.max() + 1
    image.flags.writeable = labels.flags.writeable = False  # shared by the cache: never modified in place
    return image, labels, str(images[0])


def _load(folder: Path) -> Sample:
    image, labels, path = _read(folder)
    k = int(labels.max())
    masks = labels[None] == np.arange(1, k + 1, dtype=np.int32)[:, None, None]
    return Sample(image=image.copy(), semantic=(labels > 0).astype(np.int64),
                  instances=Instances(masks, np.ones(k, np.int64)), meta={"path": path, "name": folder.name})


def open_dsb(root: Path, split: str, val_every: int = 4) -> SegmentationDataset:
    """Read the DSB layout (see the module docstring); split 'train', 'val' or 'all'."""
    root = Path(root)
    if split not in SPLITS:
        raise DataError(f"{root}: no split '{split}' (dsb splits: {', '.join(SPLITS)})")
    if not isinstance(val_every, int) or val_every < 2:
        raise DataError(f"dsb: val_every must be an integer >= 2, got {val_every!r}")
    folders = _image_folders(root)
    if split != "all":
        is_val = [i % val_every == val_every - 1 for i in range(len(folders))]
        folders = [f for f, v in zip(folders, is_val) if v == (split == "val")]
    return SegmentationDataset(folders, _load, list(CLASSES), list(PALETTE), name=f"dsb:{root} [{split}]",
                               things=[1])
