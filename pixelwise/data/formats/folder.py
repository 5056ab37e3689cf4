"""`folder`: images and index masks paired by file stem (the format for your own data).

    ROOT/classes.txt                     class names, one per line (or pass classes=[...]); required
    ROOT/images/a.jpg  ROOT/masks/a.png  index PNG masks (palette or greyscale), 255 = void
    ROOT/images/a.npy  ROOT/masks/a.png  multi-band rasters (.npy, .tif, .tiff): read by pixelwise.data.raster
                                         with their bands and dtype, (H, W, B), meta["raster"] set; masks may
                                         also be single-band .tif or .npy class ids
    ROOT/train/{images,masks}/ ...       optional per-split folders
    ROOT/A/{images,masks}/ ...           optional groups (e.g. one per scene tile), read together
    ROOT/val.txt or ROOT/splits/val.txt  optional split lists: one stem (or GROUP/stem) per line, '#' comments

Also accepted: image/ or img/ for images; mask/, labels/, label/ or annotations/ for masks.
Multi-label layout: masks/ holds one folder per class instead of mask files, masks/<class>/<stem>.png,
each a binary mask (0 = absent, any other value = present; classes may overlap). Classes are the folder
names (sorted), or classes.txt's order; an image missing from a class folder does not show that class, an
image found in no class folder is a DataError. Samples then carry `class_masks` (C, H, W) and no semantic map.
Split: ROOT/SPLIT/{images,masks} when present; else the pairs under ROOT filtered by SPLIT.txt when present;
else 'all' and 'train' give every pair (a set without split information is training data) and any other split
is a DataError. 'all' always gives every pair under ROOT.
Options: classes=[...], palette=[...], mask_suffix='_mask' (mask stem = image stem + suffix),
remap={raw: label} (e.g. ISBI membranes: remap={255: 1}, classes=['membrane', 'cell']).
lint=True (what `pixelwise data check` opens with): images without masks, masks without images and a missing
classes.txt are listed in `dataset.problems` instead of stopping the reader; without a class list every value
0..254 reads as a label (the linter then reports the values found and a classes.txt to start from).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from pixelwise.data.classes import read_class_file
from pixelwise.data.dataset import SegmentationDataset
from pixelwise.data.formats import (NO_CLASS_LIST, apply_lut, check_size, class_list, identity_lut, label_lut,
                                    require_records)
from pixelwise.data.io import DATASET_SUFFIXES, IMAGE_SUFFIXES, list_images, read_mask
from pixelwise.data.raster import read_image_file, read_label_file
from pixelwise.data.sample import Sample
from pixelwise.constants import IGNORE_INDEX
from pixelwise.errors import DataError

IMAGE_DIRS = ("images", "image", "img")
MASK_DIRS = ("masks", "mask", "labels", "label", "annotations")
SPLIT_NAMES = {"train", "val", "valid", "validation", "test", "training", "testing"}


def _pair_dirs(base: Path) -> tuple[Path, Path] | None:
    images = next((base / d for d in IMAGE_DIRS if (base / d).is_dir()), None)
    masks = next((base / d for d in MASK_DIRS if (base / d).is_dir()), None)
    return (images, masks) if images and masks else None


def _split_list(root: Path, split: str) -> set[str] | None:
    for path in (root / f"{split}.txt", root / "splits" / f"{split}.txt"):
        if path.is_file():
            lines = (ln.strip() for ln in path.read_text().splitlines())
            return {str(Path(t).with_suffix("")) if Path(t).suffix.lower() in DATASET_SUFFIXES else t
                    for t in lines if t and not t.startswith("#")}
    return None


def list_files(folder: Path, suffixes: tuple[str, ...] = DATASET_SUFFIXES) -> list[Path]:
    """The files of a folder with one of `suffixes` (default: images and rasters), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes and p.is_file())


def class_folders(mask_dir: Path) -> list[str]:
    """The class folders of a multi-label masks/ folder (sorted), or [] when it holds mask files."""
    if list_files(mask_dir):
        return []
    return sorted(d.name for d in mask_dir.iterdir() if d.is_dir() and list_images(d))


def _class_masks(mask_dir: Path, classes: list[str], suffix: str) -> dict[str, dict[str, Path]]:
    """stem -> {class: mask path} over the class folders of a multi-label masks/ folder."""
    by_stem: dict[str, dict[str, Path]] = {}
    for cls in classes:
        folder = mask_dir / cls
        for mask in (list_images(folder) if folder.is_dir() else []):
            stem = mask.stem[:-len(suffix)] if suffix and mask.stem.endswith(suffix) else mask.stem
            by_stem.setdefault(stem, {})[cls] = mask
    return by_stem


def find_pairs(root: Path, split: str, mask_suffix: str = "", class_names: list[str] | None = None,
               suffixes: tuple[str, ...] = IMAGE_SUFFIXES,
               problems: list[tuple[str, str]] | None = None) -> list[tuple[Path, Path | dict, dict]]:
    """(image, mask, meta) for a split of the folder layout above; DataError on any image without a mask.
    With `class_names` (the multi-label layout) the mask is {class: mask path} of the classes it shows.
    `suffixes`: the image and mask files listed (the folder format adds .npy: DATASET_SUFFIXES; colormask,
    which decodes with PIL only, keeps the default).
    `problems`: when given (the linter), an image without a mask and a mask without an image are appended
    to it as (file, message) and left out, instead of stopping at the first."""
    if split != "all" and (root / split).is_dir() and _pair_dirs(root / split):
        groups, keep = [(root / split, "")], None
    else:
        groups = [(root, "")] if _pair_dirs(root) else [
            (d, d.name) for d in sorted(root.iterdir()) if d.is_dir() and _pair_dirs(d)]
        if not groups:
            raise DataError(f"{root}: no images/ + masks/ folders (looked in ROOT, ROOT/{split}, ROOT/*)")
        keep = None if split == "all" else _split_list(root, split)
        per_split = any(name in SPLIT_NAMES for _, name in groups)
        if keep is None and split != "all" and (split != "train" or per_split):
            known = [name for _, name in groups if name in SPLIT_NAMES] or ["all", "train"]
            raise DataError(f"{root}: no split '{split}' (no {root / split}/ folder nor {split}.txt list;"
                            f" found: {', '.join(known)})")
    pairs = []
    for base, group in groups:
        image_dir, mask_dir = _pair_dirs(base)
        if class_names is not None:
            masks = _class_masks(mask_dir, class_names, mask_suffix)
        else:  # a .png mask wins over another file with the same stem (sorted last, so it overwrites)
            listed = sorted(list_files(mask_dir, suffixes), key=lambda p: p.suffix.lower() == ".png")
            masks = {p.stem: p for p in listed}
        images = list_files(image_dir, suffixes)
        for image in images:
            key = f"{group}/{image.stem}" if group else image.stem
            if keep is not None and key not in keep and image.stem not in keep:
                continue
            mask = masks.get(image.stem if class_names is not None else image.stem + mask_suffix)
            if mask is None:
                where = mask_dir / "CLASS" if class_names is not None else mask_dir
                message = f"image has no mask (expected {where / (image.stem + mask_suffix)}.png)"
                if problems is None:
                    raise DataError(f"{image}: {message}")
                problems.append((str(image), message))
                continue
            pairs.append((image, mask, {"group": group} if group else {}))
        if problems is not None and class_names is None and keep is None:
            stems = {image.stem + mask_suffix for image in images}
            problems += [(str(m), f"mask has no image in {image_dir}")
                         for stem, m in sorted(masks.items()) if stem not in stems]
    if keep is not None:
        found = {f"{m.get('group')}/{i.stem}" if m else i.stem for i, _, m in pairs} | {i.stem for i, _, _ in pairs}
        missing = sorted(keep - found)
        if missing:
            raise DataError(f"{root}: split list '{split}' names {len(missing)} image(s) not found, e.g. {missing[0]}")
    return require_records(pairs, root, split)


def _load_class_masks(classes: list[str], record: tuple) -> Sample:
    """(image, {class: mask path}, meta) -> Sample with class_masks uint8 (C, H, W), 1 where present."""
    image_path, paths, meta = record
    image, raster = read_image_file(image_path)
    masks = np.zeros((len(classes), *image.shape[:2]), np.uint8)
    for c, cls in enumerate(classes):
        if cls in paths:
            raw = read_mask(paths[cls])
            check_size(image, raw, image_path, paths[cls])
            masks[c] = raw > 0
    meta = {"path": str(image_path), "name": image_path.stem, **meta}
    return Sample(image=image, class_masks=masks, meta=meta | ({"raster": raster} if raster is not None else {}))


def _labels(lut: np.ndarray, expected: str, path: Path) -> np.ndarray:
    """A mask file (index PNG, single-band .tif or .npy) -> labels through `lut`."""
    return apply_lut(read_label_file(path), lut, path, expected)


def _load_pair(lut: np.ndarray, expected: str, record: tuple) -> Sample:
    """(image, mask, meta) -> Sample; raster images keep their bands and dtype and carry meta["raster"]."""
    image_path, mask_path, extra = record
    image, raster = read_image_file(image_path)
    semantic = _labels(lut, expected, mask_path)
    check_size(image, semantic, image_path, mask_path)
    meta = {"path": str(image_path), "name": image_path.stem, "mask_path": str(mask_path), **extra}
    return Sample(image=image, semantic=semantic, meta=meta | ({"raster": raster} if raster is not None else {}))


def _multilabel_root(root: Path, split: str) -> Path | None:
    """The masks/ folder to look in for class folders (ROOT's, ROOT/SPLIT's or the first group's)."""
    for base in (root / split, root, *sorted(d for d in root.iterdir() if d.is_dir())):
        dirs = _pair_dirs(base) if base.is_dir() else None
        if dirs:
            return dirs[1]
    return None


MAX_RAW_VALUE = 65535  # a 16-bit mask's largest value


def _checked_remap(root: Path, remap, num_classes: int) -> dict[int, int]:
    """remap as {raw: label}: raw values 0..65535, labels class ids or 255 (void); else a DataError."""
    if not isinstance(remap, dict):
        raise DataError(f"{root}: option remap must be a mapping {{raw value: label}}, got {remap!r:.80}")
    checked = {}
    for raw, label in remap.items():
        raw, label = (int(v) if isinstance(v, str) and v.isdigit() else v for v in (raw, label))  # JSON keys
        ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (raw, label))
        if not ok or not 0 <= raw <= MAX_RAW_VALUE or not (0 <= label < num_classes or label == IGNORE_INDEX):
            raise DataError(f"{root}: option remap {raw!r}: {label!r} must map a mask value 0..{MAX_RAW_VALUE} "
                            f"to a class id 0..{num_classes - 1} or {IGNORE_INDEX} (void)")
        checked[raw] = label
    return checked


def open_folder(root: Path, split: str, classes: list[str] | None = None, palette=None,
                mask_suffix: str = "", remap: dict[int, int] | None = None, lint: bool = False) -> SegmentationDataset:
    """Read the folder layout (see the module docstring)."""
    root = Path(root)
    problems: list[tuple[str, str]] | None = [] if lint else None
    mask_dir = _multilabel_root(root, split) if root.is_dir() else None
    per_class = class_folders(mask_dir) if mask_dir is not None else []
    if per_class:
        if remap:
            raise DataError(f"{root}: option remap applies to index masks, not to per-class mask folders")
        if classes is None and (root / "classes.txt").is_file():
            classes = read_class_file(root / "classes.txt")
        classes = list(classes or per_class)
        unknown = sorted(set(per_class) - set(classes))
        if unknown:
            raise DataError(f"{mask_dir}: class folder(s) {', '.join(unknown)} are not in the class list {classes}")
        pairs = find_pairs(root, split, mask_suffix, class_names=classes, suffixes=DATASET_SUFFIXES,
                           problems=problems)
        return SegmentationDataset(pairs, partial(_load_class_masks, classes), classes,
                                   [tuple(c) for c in palette or []], name=f"folder:{root} [{split}]",
                                   problems=problems or [])
    if classes is None and lint and not (root / "classes.txt").is_file():
        problems.append((str(root / "classes.txt"), NO_CLASS_LIST))
        pairs = find_pairs(root, split, mask_suffix, suffixes=DATASET_SUFFIXES, problems=problems)
        load = partial(_load_pair, identity_lut(IGNORE_INDEX), f"0..{IGNORE_INDEX - 1}, {IGNORE_INDEX} = void")
        return SegmentationDataset(pairs, load, [], [], name=f"folder:{root} [{split}]", problems=problems)
    classes = class_list(root, classes, "index masks")
    pairs = find_pairs(root, split, mask_suffix, suffixes=DATASET_SUFFIXES, problems=problems)
    lut = identity_lut(len(classes))
    if remap:
        lut = label_lut({i: int(v) for i, v in enumerate(lut) if v >= 0} | _checked_remap(root, remap, len(classes)),
                        size=MAX_RAW_VALUE + 1)
    expected = f"0..{len(classes) - 1}, 255 = void" + (f", remapped {remap}" if remap else "")
    load = partial(_load_pair, lut, expected)
    return SegmentationDataset(pairs, load, list(classes), [tuple(c) for c in palette or []],
                               name=f"folder:{root} [{split}]", problems=problems or [])
