"""`voc`: PASCAL VOC 2012 segmentation, 20 classes + background (Everingham et al., IJCV 2010).

    ROOT/JPEGImages/2007_000032.jpg
    ROOT/SegmentationClass/2007_000032.png      palette PNGs: index 0..20, 255 = void (object borders)
    ROOT/ImageSets/Segmentation/{train,val,trainval}.txt   one image id per line

ROOT may be the VOC2012 folder, the VOCdevkit folder above it, or the folder holding VOCdevkit.
Option masks='SegmentationClassAug' reads the augmented (SBD) masks from ROOT/SegmentationClassAug instead.
"""
from __future__ import annotations

from pathlib import Path

from pixelwise.data.classes import default_palette
from pixelwise.data.dataset import SegmentationDataset
from pixelwise.data.formats import (identity_lut, index_mask_loader, pair_loader, require_dir, require_records,
                                    unknown_split)
from pixelwise.errors import DataError

CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
           "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
           "tvmonitor"]
PALETTE = default_palette(len(CLASSES))  # VOC's own colour map is this bit-interleaved palette


def _voc_root(root: Path) -> Path:
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise DataError(f"{root}: not a VOC folder (no JPEGImages/ in it, in VOC2012/ or in VOCdevkit/VOC2012/)")


def open_voc(root: Path, split: str, masks: str = "SegmentationClass") -> SegmentationDataset:
    """Read one split of PASCAL VOC segmentation (see the module docstring)."""
    root = _voc_root(Path(root))
    lists = require_dir(root / "ImageSets" / "Segmentation", "split lists")
    mask_dir = require_dir(root / masks, "mask")
    list_file = lists / f"{split}.txt"
    if not list_file.is_file():
        raise unknown_split(root, split, [p.stem for p in lists.glob("*.txt")])
    records = []
    for line in list_file.read_text().splitlines():
        if not line.strip():
            continue
        image_id = line.split()[0]
        image, mask = root / "JPEGImages" / f"{image_id}.jpg", mask_dir / f"{image_id}.png"
        if not image.is_file():
            raise DataError(f"{list_file}: lists {image_id} but {image} is missing")
        if not mask.is_file():
            raise DataError(f"{image}: image has no mask (expected {mask})")
        records.append((image, mask))
    load = pair_loader(index_mask_loader(identity_lut(len(CLASSES)), "0..20, 255 = void"))
    return SegmentationDataset(require_records(records, list_file, split), load, list(CLASSES), list(PALETTE),
                               name=f"voc:{root} [{split}]")
