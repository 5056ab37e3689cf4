"""On-disk dataset formats, each chosen as FORMAT:ROOT.

FORMATS maps a format name to its reader: `reader(root: Path, split: str, **options) -> SegmentationDataset`.
One module per format; adding a format is one module and one line here.

The helpers below are what every reader shares: finding folders, pairing an image with its mask, turning raw
mask values into labels (void -> 255) and checking each loaded pair, so every format reports problems alike.
"""
from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import numpy as np

from pixelwise.data.dataset import SegmentationDataset
from pixelwise.data.io import read_image, read_mask
from pixelwise.constants import IGNORE_INDEX
from pixelwise.data.sample import Sample
from pixelwise.errors import DataError

FORMATS: dict[str, Callable[..., SegmentationDataset]] = {}
VIRTUAL = {"synthetic", "spectral"}  # formats generated in memory: ROOT is a name/seed, not a folder


def parse_spec(spec: str) -> tuple[str, Path]:
    """'camvid:/data/camvid' -> ('camvid', Path('/data/camvid')). A bare path means the 'folder' format."""
    fmt, sep, root = spec.partition(":")
    if not sep:
        fmt, root = "folder", spec
    if fmt not in FORMATS:
        raise DataError(f"{spec}: unknown dataset format '{fmt}' (known: {', '.join(sorted(FORMATS))})")
    return fmt, Path(root).expanduser()


def split_slice(split: str) -> tuple[str, slice | None]:
    """'all[:18]' -> ('all', slice(None, 18)); 'train' -> ('train', None). For sets that ship no split."""
    m = re.fullmatch(r"([^\[\]]+)\[(-?\d*):(-?\d*)\]", split)
    if not m:
        return split, None
    lo, hi = (int(v) if v else None for v in m.group(2, 3))
    return m.group(1), slice(lo, hi)


def open_dataset(spec: str, split: str = "train", **options) -> SegmentationDataset:
    """Open a dataset given as FORMAT:ROOT for one split. The split may be sliced like a Python list,
    `all[:18]` / `all[18:]`, to make a train/val split of a set that ships none (records in sorted order)."""
    split, part = split_slice(split)
    dataset = _open(spec, split, **options)
    if part is not None:
        dataset = dataset.subset(range(len(dataset))[part])
        dataset.name = f"{dataset.name} {part.start or ''}:{part.stop or ''}"
    return dataset


def spread_images(spec: str, split: str, count: int, skip: int = 0) -> list[np.ndarray]:
    """`count` images of a dataset split, evenly spaced over it, after `skip` of the same spacing (left for
    another use: int8 calibration takes the first ones, its agreement check the next); each as the reader
    gives it (uint8 (H, W, 3) RGB, or a raster's bands). Reader errors propagate."""
    ds = open_dataset(spec, split)
    n = len(ds)
    if n == 0:
        return []
    picks = np.linspace(0, n - 1, min(n, count + skip)).round().astype(int)[skip:skip + count]
    return [np.asarray(ds[i].image) for i in dict.fromkeys(picks.tolist())]


def _open(spec: str, split: str, **options) -> SegmentationDataset:
    fmt, root = parse_spec(spec)
    if fmt not in VIRTUAL and not root.exists():
        raise DataError(f"{root}: dataset folder not found (from '{spec}')")
    reader = FORMATS[fmt]
    params = inspect.signature(reader).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        accepted = [name for name in params][2:]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise DataError(f"{spec}: unknown option(s) {', '.join(unknown)} for format '{fmt}'"
                            f" (accepted: {', '.join(accepted) or 'none'})")
    return reader(root, split, **options)


# ---- helpers shared by the readers -------------------------------------------------------------------------

NO_CLASS_LIST = "no class list (one class name per line, line i names label value i); pass classes=[...] or write one"


def class_list(root: Path, classes: list[str] | None, labels: str) -> list[str]:
    """The class names of a dataset of index labels: `classes` as given, else ROOT/classes.txt; a missing or
    empty list, or more names than `labels` (e.g. "index masks") can hold next to the void 255, is one line."""
    from pixelwise.data.classes import read_class_file

    where = f"{root}: option classes"
    if classes is None:
        if not (root / "classes.txt").is_file():
            raise DataError(f"{root}: no classes.txt (one class name per line); write one or pass classes=[...]")
        classes, where = read_class_file(root / "classes.txt"), str(root / "classes.txt")
    if not classes:
        raise DataError(f"{root}: the class list is empty")
    if len(classes) > IGNORE_INDEX:  # ids 0..254: 255 is the void label
        raise DataError(f"{where}: {len(classes)} classes; {labels} hold at most {IGNORE_INDEX} "
                        f"(ids 0..{IGNORE_INDEX - 1}, {IGNORE_INDEX} is void)")
    return list(classes)


def require_dir(path: Path, what: str) -> Path:
    """`path` if it is a folder, else a DataError naming it."""
    if not path.is_dir():
        raise DataError(f"{path}: {what} folder not found")
    return path


def unknown_split(root: Path, split: str, known: Iterable[str]) -> DataError:
    known = sorted(known)
    return DataError(f"{root}: no split '{split}' (found: {', '.join(known) if known else 'none'})")


def label_lut(mapping: dict[int, int], size: int = 256) -> np.ndarray:
    """Raw mask value -> label lookup table; -1 marks raw values that may not occur."""
    lut = np.full(size, -1, dtype=np.int64)
    for raw, label in mapping.items():
        lut[raw] = label
    return lut


def identity_lut(num_classes: int, void: Iterable[int] = ()) -> np.ndarray:
    """0..num_classes-1 keep their value; 255 and the `void` values become 255."""
    mapping = {i: i for i in range(num_classes)} | {v: IGNORE_INDEX for v in (*void, IGNORE_INDEX)}
    return label_lut(mapping)


def apply_lut(raw: np.ndarray, lut: np.ndarray, path: Path, expected: str) -> np.ndarray:
    """Map raw mask values through `lut`; a DataError names the file and the values it may not hold."""
    inside = (raw >= 0) & (raw < len(lut))
    labels = np.where(inside, lut[np.clip(raw, 0, len(lut) - 1)], -1)
    bad = labels < 0
    if bad.any():
        values = np.unique(raw[bad])
        shown = ", ".join(str(v) for v in values[:10]) + (" ..." if len(values) > 10 else "")
        raise DataError(f"{path}: label values out of range: {shown} ({int(bad.sum())} pixels; expected {expected})")
    return labels


def check_size(image: np.ndarray, mask: np.ndarray, image_path: Path, mask_path: Path) -> None:
    if image.shape[:2] != mask.shape[:2]:
        (h, w), (mh, mw) = image.shape[:2], mask.shape[:2]
        raise DataError(f"{mask_path}: mask is {mw}x{mh} but its image {image_path} is {w}x{h} (WxH)")


def load_pair(image_path: Path, mask_path: Path, to_labels: Callable[[Path], np.ndarray], **meta) -> Sample:
    """Read an image and its mask (decoded by `to_labels`), check they agree, return a Sample."""
    image = read_image(image_path)
    semantic = to_labels(mask_path)
    check_size(image, semantic, image_path, mask_path)
    meta = {"path": str(image_path), "name": image_path.stem, "mask_path": str(mask_path), **meta}
    return Sample(image=image, semantic=semantic, meta=meta)


# Loaders are partials of module-level functions, not closures, so datasets pickle into DataLoader workers
# under any start method (spawn, forkserver).

def _index_labels(lut: np.ndarray, expected: str, path: Path) -> np.ndarray:
    return apply_lut(read_mask(path), lut, path, expected)


def index_mask_loader(lut: np.ndarray, expected: str) -> Callable[[Path], np.ndarray]:
    """Mask decoder for index PNGs: read, then map raw values through `lut`."""
    return partial(_index_labels, lut, expected)


def _load_record(to_labels: Callable[[Path], np.ndarray], record: tuple) -> Sample:
    return load_pair(record[0], record[1], to_labels, **(record[2] if len(record) > 2 else {}))


def pair_loader(to_labels: Callable[[Path], np.ndarray]) -> Callable[[tuple], Sample]:
    """load(record) for records (image_path, mask_path[, meta dict])."""
    return partial(_load_record, to_labels)


def require_records(records: list, where: Path, split: str) -> list:
    if not records:
        raise DataError(f"{where}: no images found for split '{split}' (empty dataset)")
    return records


def _open_synthetic(root, split, **options):
    from pixelwise.data.synthetic import open_synthetic  # imported on use: the generator is optional here

    return open_synthetic(root, split, **options)


def _open_spectral(root, split, **options):
    from pixelwise.data.spectral import open_spectral  # imported on use, as the synthetic set

    return open_spectral(root, split, **options)


from pixelwise.data.formats import ade20k, camvid, cityscapes, coco, colormask, dsb, folder, voc  # noqa: E402

FORMATS.update({
    "folder": folder.open_folder,
    "colormask": colormask.open_colormask,
    "camvid": camvid.open_camvid,
    "voc": voc.open_voc,
    "cityscapes": cityscapes.open_cityscapes,
    "ade20k": ade20k.open_ade20k,
    "synthetic": _open_synthetic,
    "spectral": _open_spectral,
    "coco-instance": coco.open_coco_instance,
    "coco-panoptic": coco.open_coco_panoptic,
    "dsb": dsb.open_dsb,
})
from pixelwise.data.formats import dicom, nifti  # noqa: E402  (volumes: nibabel / pydicom imported on use)

FORMATS.update({"nifti": nifti.open_nifti, "dicom": dicom.open_dicom})
from pixelwise.data.formats import geotiff  # noqa: E402  (remote sensing: rasterio imported on use)

FORMATS["geotiff"] = geotiff.open_geotiff
