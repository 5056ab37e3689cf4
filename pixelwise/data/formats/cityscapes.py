"""`cityscapes`: Cityscapes fine annotations, 19 evaluation classes (Cordts et al., arXiv 1604.01685).

    ROOT/leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    ROOT/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png     label ids 0..33

    ROOT/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_instanceIds.png  with instances=True

Split: train, val, test (test masks are blank: all void). The 34 label ids map to the 19 train ids of the
official table (cityscapesscripts labels.py); every other id becomes 255. Option target='labelTrainIds' reads
*_gtFine_labelTrainIds.png files already converted by cityscapesscripts (0..18, 255 = void) instead.
Option instances=True also reads the instance ids: a pixel value v >= 1000 is instance v % 1000 of label
id v // 1000 (the Cityscapes convention); the 8 thing classes (person ... bicycle, train ids 11..18) become
`Sample.instances`, and the dataset's `things` lists them.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from pixelwise.data.dataset import SegmentationDataset
from pixelwise.data.formats import (identity_lut, index_mask_loader, label_lut, pair_loader, require_dir,
                                    require_records, unknown_split)
from pixelwise.data.io import read_mask
from pixelwise.data.sample import Instances, Sample
from pixelwise.errors import DataError

CLASSES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
           "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
PALETTE = [(128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
           (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
           (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32)]
# label id -> train id for the 19 evaluated classes; ids 0..33 not listed here are void
LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                  26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
SUFFIX = "_leftImg8bit"
THINGS = list(range(11, 19))  # person, rider, car, truck, bus, train, motorcycle, bicycle


def _with_instances(load, record) -> Sample:
    """The semantic sample plus instances read from the *_gtFine_instanceIds.png beside its mask."""
    sample = load(record)
    path = Path(str(record[1]).replace(record[1].name.rsplit("_gtFine_", 1)[1], "instanceIds.png"))
    ids = read_mask(path)
    if ids.shape != sample.semantic.shape:
        raise DataError(f"{path}: instance map {ids.shape[1]}x{ids.shape[0]} does not match its image")
    masks, classes = [], []
    for value in np.unique(ids[ids >= 1000]):
        train_id = LABEL_TO_TRAIN.get(int(value) // 1000, 255)
        if train_id in THINGS:
            masks.append(ids == value)
            classes.append(train_id)
    h, w = ids.shape
    sample.instances = Instances(np.stack(masks) if masks else np.zeros((0, h, w), bool),
                                 np.array(classes, np.int64))
    return sample


def open_cityscapes(root: Path, split: str, target: str = "labelIds", instances: bool = False) -> SegmentationDataset:
    """Read one split of Cityscapes (see the module docstring)."""
    root = Path(root)
    images_root = require_dir(root / "leftImg8bit", "leftImg8bit")
    gt_root = require_dir(root / "gtFine", "gtFine")
    if target not in ("labelIds", "labelTrainIds"):
        raise DataError(f"cityscapes: target must be 'labelIds' or 'labelTrainIds', got '{target}'")
    if not (images_root / split).is_dir():
        raise unknown_split(root, split, [d.name for d in images_root.iterdir() if d.is_dir()])
    records = []
    for image in sorted((images_root / split).glob(f"*/*{SUFFIX}.png")):
        base = image.name[: -len(SUFFIX + ".png")]
        mask = gt_root / split / image.parent.name / f"{base}_gtFine_{target}.png"
        if not mask.is_file():
            raise DataError(f"{image}: image has no mask (expected {mask})")
        records.append((image, mask, {"city": image.parent.name}))
    if target == "labelIds":
        lut, expected = label_lut({i: LABEL_TO_TRAIN.get(i, 255) for i in range(34)}), "label ids 0..33"
    else:
        lut, expected = identity_lut(len(CLASSES)), "train ids 0..18, 255 = void"
    load = pair_loader(index_mask_loader(lut, expected))
    if instances:
        load = partial(_with_instances, load)
    return SegmentationDataset(require_records(records, images_root / split, split), load, list(CLASSES),
                               list(PALETTE), name=f"cityscapes:{root} [{split}]",
                               things=list(THINGS) if instances else [])
