"""What the volume formats (`nifti`, `dicom`) share: each volume gives one Sample per 2-D slice.

Records are (VolumeEntry, slice index); a slice's Sample is cut from its volume, which is read, windowed to
uint8 and labelled once and kept in a small per-process cache (the last CACHE_VOLUMES volumes), so the
slices of one volume cost one decompression.

Sample of slice k along `axis`: image uint8 (H, W, 3), the windowed slice repeated on three channels (an RGB
model reads it as any grey image); semantic int64 (H, W) or None when the volume has no labels; meta: path
(the volume file or series folder), name ("<volume>_<k:04d>"), volume, slice (k), slices (the count along
the axis), axis, affine (4x4 list, voxel -> RAS+ mm) and spacing ((between slices, rows, columns) in mm).
meta["volume"] is what `pixelwise eval` groups slices by for its per-volume Dice and HD95.

Splits: train / val / all, by volume (slices of one volume never straddle two splits): volumes sorted by
name, every `val_every`-th (index % val_every == val_every - 1) is val.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import numpy as np

from pixelwise.constants import IGNORE_INDEX
from pixelwise.data.classes import read_class_file
from pixelwise.data.dataset import SegmentationDataset
from pixelwise.data.formats import apply_lut, identity_lut
from pixelwise.data.sample import Sample
from pixelwise.data.volume import (Volume, check_axis, is_nifti, read_labels, read_nifti, slice_spacing,
                                   take_slice)
from pixelwise.data.window import Window, apply_window, fixed_window, parse_window
from pixelwise.errors import DataError

CACHE_VOLUMES = 4
SPLITS = ("train", "val", "all")


@dataclass(frozen=True)
class VolumeEntry:
    """One volume of a dataset: its name, image (a NIfTI file or a DICOM series folder), labels (a .nii[.gz]
    or .npy file, or None) and its number of slices along the chosen axis."""

    name: str
    image: str
    labels: str | None
    slices: int


def read_volume(source: str) -> Volume:
    """A NIfTI file or a DICOM series folder -> Volume."""
    if is_nifti(source):
        return read_nifti(source)
    from pixelwise.data.dicom import read_series

    return read_series(source)


def resolve_window(volume: Volume, window: Window) -> Window:
    """`window` with "file" replaced by the volume's own centre/width (DICOM WindowCenter/WindowWidth)."""
    if window.kind != "file":
        return window
    if volume.window is None:
        raise DataError(f"{volume.path}: window=file, but the series has no WindowCenter/WindowWidth; give a "
                        "preset (ct_soft ...), CENTRE,WIDTH or percentile")
    return fixed_window(*volume.window, where=f"{volume.path}: WindowCenter/WindowWidth")


def windowed(volume: Volume, window: Window) -> np.ndarray:
    """uint8 volume of the same shape: `window` applied to the whole volume."""
    return apply_window(volume.values, resolve_window(volume, window))


@lru_cache(maxsize=CACHE_VOLUMES)
def _cached(entry: VolumeEntry, window: Window, num_classes: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """(uint8 volume, int64 labels (255 = void) or None, affine) of one entry; read-only (shared by the cache)."""
    volume = read_volume(entry.image)
    image = windowed(volume, window)
    labels = None
    if entry.labels is not None:
        raw = read_labels(entry.labels, volume.values.shape)
        labels = apply_lut(raw, identity_lut(num_classes), Path(entry.labels),
                           f"0..{num_classes - 1}, {IGNORE_INDEX} = void")
        labels.flags.writeable = False
    image.flags.writeable = False
    return image, labels, volume.affine


def _load_slice(window: Window, axis: int, num_classes: int, record: tuple[VolumeEntry, int]) -> Sample:
    entry, k = record
    image, labels, affine = _cached(entry, window, num_classes)
    if image.shape[axis] != entry.slices:
        raise DataError(f"{entry.image}: {image.shape[axis]} slices along axis {axis}, {entry.slices} when listed")
    grey = take_slice(image, axis, k)
    meta = {"path": entry.image, "name": f"{entry.name}_{k:04d}", "volume": entry.name, "slice": k,
            "slices": entry.slices, "axis": axis, "affine": np.asarray(affine).tolist(),
            "spacing": slice_spacing(affine, axis)}
    if entry.labels is not None:
        meta["mask_path"] = entry.labels
    return Sample(image=np.repeat(grey[..., None], 3, axis=2),
                  semantic=None if labels is None else take_slice(labels, axis, k), meta=meta)


def split_entries(root: Path, entries: list[VolumeEntry], split: str, val_every: int) -> list[VolumeEntry]:
    """The volumes of a split (see the module docstring)."""
    if split not in SPLITS:
        raise DataError(f"{root}: no split '{split}' (volume splits: {', '.join(SPLITS)})")
    if isinstance(val_every, bool) or not isinstance(val_every, int) or val_every < 2:
        raise DataError(f"{root}: option val_every must be an integer >= 2, got {val_every!r}")
    entries = sorted(entries, key=lambda e: e.name)
    if split == "all":
        return entries
    return [e for i, e in enumerate(entries) if (i % val_every == val_every - 1) == (split == "val")]


def volume_classes(root: Path, classes: list[str] | None) -> list[str]:
    """The class list: option classes, else ROOT/classes.txt, else an nnU-Net dataset.json "labels"."""
    if classes is not None:
        names = list(classes)
    elif (root / "classes.txt").is_file():
        names = read_class_file(root / "classes.txt")
    elif (root / "dataset.json").is_file():
        names = _nnunet_labels(root / "dataset.json")
    else:
        raise DataError(f"{root}: no classes.txt (one class name per line, line i names label value i) nor "
                        "dataset.json; write one or pass classes=[...]")
    if not names or len(names) > IGNORE_INDEX:
        raise DataError(f"{root}: {len(names)} classes; between 1 and {IGNORE_INDEX} are needed")
    return [str(n) for n in names]


def _nnunet_labels(path: Path) -> list[str]:
    """nnU-Net's dataset.json "labels": v2 {name: id}, v1 {"id": name} -> names by id (ids 0..n-1)."""
    try:
        labels = json.loads(path.read_text())["labels"]
        pairs = {int(v): str(k) for k, v in labels.items()} if all(
            isinstance(v, int) for v in labels.values()) else {int(k): str(v) for k, v in labels.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: no readable \"labels\" mapping ({exc})") from None
    if sorted(pairs) != list(range(len(pairs))):
        raise DataError(f"{path}: label ids {sorted(pairs)} are not 0..{len(pairs) - 1} (region labels are not read)")
    return [pairs[i] for i in range(len(pairs))]


def volume_dataset(fmt: str, root: Path, split: str, entries: list[VolumeEntry], classes: list[str], palette,
                   window, axis: int, val_every: int) -> SegmentationDataset:
    """The slices of a split's volumes as a SegmentationDataset (the last step of every volume format)."""
    window = parse_window(window, f"{fmt}:{root}: option window")
    if window.kind == "file" and fmt != "dicom":
        raise DataError(f"{fmt}:{root}: option window=file reads a DICOM series' own window; {fmt} volumes have "
                        "none (give a preset, CENTRE,WIDTH or percentile)")
    chosen = split_entries(root, entries, split, val_every)
    records = [(entry, k) for entry in chosen for k in range(entry.slices)]
    if not records:
        raise DataError(f"{root}: no volumes for split '{split}' ({len(entries)} volumes in all; with "
                        f"val_every={val_every} val needs at least {val_every})")
    load = partial(_load_slice, window, axis, len(classes))
    return SegmentationDataset(records, load, classes, [tuple(c) for c in palette or []],
                               name=f"{fmt}:{root} [{split}]")


def slices_along(shape: tuple[int, ...], axis, where: str) -> int:
    """The slice count of a volume of `shape` along a checked `axis`."""
    return int(shape[check_axis(axis, where)])
