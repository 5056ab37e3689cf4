"""`dicom`: DICOM series (pydicom), read as 2-D slices with the rescale to modality units and a window.

    ROOT/                      one series: its .dcm files (one slice each) ...
    ROOT/<series>/*.dcm        ... or one folder per series
    <series>/labels.npy        optional labels (or labels.nii / labels.nii.gz): integer class ids (255 = void)
                               of shape (rows, columns, slices), slices in the series' order as read (sorted by
                               ImagePositionPatient along the slice normal, else InstanceNumber)
    ROOT/classes.txt           class names (or pass classes=[...])

A series without a labels file gives Samples without a semantic map (prediction only). A folder holding two
series (two SeriesInstanceUIDs), a file without pixel data, slices of different sizes or two at one
position are DataErrors naming the folder or file. Values: stored * RescaleSlope + RescaleIntercept (HU for
CT), then the window (see pixelwise.data.window): percentile (default), ct_soft, ct_lung, ct_bone, ct_brain,
"C,W", or file (the series' own WindowCenter / WindowWidth).
Options: axis=2 (slices as stored; 0..2), window=percentile, val_every=5, classes=[...], palette=[...].
"""
from __future__ import annotations

from pathlib import Path

from pixelwise.data.dicom import is_series, series_shape
from pixelwise.data.formats.volumes import VolumeEntry, slices_along, volume_classes, volume_dataset
from pixelwise.errors import DataError

LABEL_NAMES = ("labels.npy", "labels.nii.gz", "labels.nii")


def series_folders(root: Path) -> list[Path]:
    """ROOT itself when it holds .dcm files, else its sub-folders that do."""
    if is_series(root):
        return [root]
    folders = sorted(d for d in root.iterdir() if d.is_dir() and is_series(d))
    if not folders:
        raise DataError(f"{root}: no DICOM series (.dcm files in ROOT or in ROOT/<series>/)")
    return folders


def find_series(root: Path, axis) -> list[VolumeEntry]:
    entries = []
    for folder in series_folders(root):
        label = next((folder / n for n in LABEL_NAMES if (folder / n).is_file()), None)
        shape = series_shape(folder)
        entries.append(VolumeEntry(folder.name, str(folder), None if label is None else str(label),
                                   slices_along(shape, axis, f"{root}: option axis")))
    return entries


def open_dicom(root: Path, split: str, axis: int = 2, window="percentile", val_every: int = 5,
               classes: list[str] | None = None, palette=None):
    """Read DICOM series (see the module docstring); split 'train', 'val' or 'all'."""
    root = Path(root)
    return volume_dataset("dicom", root, split, find_series(root, axis), volume_classes(root, classes), palette,
                          window, axis, val_every)
