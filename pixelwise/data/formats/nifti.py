"""`nifti`: 3-D NIfTI volumes (.nii / .nii.gz) and their label volumes, read as 2-D slices (nibabel).

    ROOT/images/case1.nii.gz   ROOT/labels/case1.nii.gz     image and label volumes paired by name
    ROOT/imagesTr/case1_0000.nii.gz  ROOT/labelsTr/case1.nii.gz   the nnU-Net / Medical Segmentation Decathlon
                                                             layout (channel suffix _0000; one channel read)
    ROOT/imagesTs/...                                        nnU-Net's unlabelled test images: split 'test'
    ROOT/classes.txt or ROOT/dataset.json ("labels")         class names (or pass classes=[...])

Also accepted: masks/ or label/ for labels/. Without a labels folder the images are read alone (Samples with
no semantic map: prediction, not training). A label volume has the shape of its image and integer class ids
(255 = void). Each volume gives one Sample per slice along `axis` (see pixelwise.data.formats.volumes for the
Sample, its meta and the splits by volume).
Options: axis=2 (the slicing axis, 0..2), window=percentile (or ct_soft, ct_lung, ct_bone, ct_brain, "C,W":
see pixelwise.data.window), val_every=5, classes=[...], palette=[...].
"""
from __future__ import annotations

import re
from pathlib import Path

from pixelwise.data.formats import require_dir
from pixelwise.data.formats.volumes import VolumeEntry, slices_along, volume_classes, volume_dataset
from pixelwise.data.volume import is_nifti, load_nifti, volume_name
from pixelwise.errors import DataError

IMAGE_DIRS = ("images", "imagesTr", "image")
LABEL_DIRS = ("labels", "labelsTr", "masks", "label")
CHANNEL = re.compile(r"_(\d{4})$")  # nnU-Net's per-modality suffix


def nifti_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_nifti(p) and not p.name.startswith("."))


def _case(path: Path) -> str:
    """'case1_0000.nii.gz' -> 'case1' (nnU-Net channel 0); 'case1.nii.gz' -> 'case1'."""
    return CHANNEL.sub("", volume_name(path))


def _folders(root: Path, split: str) -> tuple[Path, Path | None]:
    if split == "test":
        return require_dir(root / "imagesTs", "nnU-Net test images (imagesTs)"), None
    images = next((root / d for d in IMAGE_DIRS if (root / d).is_dir()), None)
    if images is None:
        raise DataError(f"{root}: no images/ (or imagesTr/) folder of .nii/.nii.gz volumes")
    labels = next((root / d for d in LABEL_DIRS if (root / d).is_dir()), None)
    return images, labels


def find_volumes(root: Path, split: str, axis) -> list[VolumeEntry]:
    """One VolumeEntry per image volume; a DataError names an image without its label or a second channel."""
    image_dir, label_dir = _folders(root, split)
    images = nifti_files(image_dir)
    if not images:
        raise DataError(f"{image_dir}: no .nii / .nii.gz volumes")
    extra = [p for p in images if (m := CHANNEL.search(volume_name(p))) and m.group(1) != "0000"]
    if extra:
        raise DataError(f"{extra[0]}: a second image channel (nnU-Net _0001 ...); the nifti format reads one "
                        "channel (_0000) per case")
    labels = {volume_name(p): p for p in nifti_files(label_dir)} if label_dir is not None else {}
    entries = []
    for path in images:
        case = _case(path)
        label = labels.get(volume_name(path), labels.get(case))
        if label_dir is not None and label is None:
            raise DataError(f"{path}: no label volume {label_dir / (case + '.nii.gz')}")
        where = f"{root}: option axis"
        entries.append(VolumeEntry(case, str(path), None if label is None else str(label),
                                   slices_along(load_nifti(path).shape, axis, where)))
    return entries


def open_nifti(root: Path, split: str, axis: int = 2, window="percentile", val_every: int = 5,
               classes: list[str] | None = None, palette=None):
    """Read the NIfTI layout (see the module docstring); split 'train', 'val', 'all' or 'test' (imagesTs)."""
    root = Path(root)
    entries = find_volumes(root, split, axis)
    return volume_dataset("nifti", root, "all" if split == "test" else split, entries, volume_classes(root, classes),
                          palette, window, axis, val_every)
