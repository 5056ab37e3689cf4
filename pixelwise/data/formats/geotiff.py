"""`geotiff`: image rasters and label rasters paired by file stem, read with rasterio (remote sensing).

    ROOT/classes.txt                        class names, one per line (or pass classes=[...]); required
    ROOT/images/a.tif  ROOT/labels/a.tif    an image raster (any band count; uint8, uint16, int16, float32, and
                                            int32 / float64 read as float32) and a single-band raster of class
                                            ids of the same width and height
    ROOT/train/{images,labels}/ ...         optional per-split folders
    ROOT/A/{images,labels}/ ...             optional groups (e.g. one per scene), read together
    ROOT/val.txt or ROOT/splits/val.txt     optional split lists: one stem (or GROUP/stem) per line

The layout and split rules are the `folder` format's (formats/folder.py): image/ or img/ for images are
accepted too, and masks/, mask/, label/ or annotations/ for labels; files are .tif / .tiff.
Options:
  classes=[...], palette=[...]   as `folder`
  bands=[1, 2, 3] or "1,2,3"     the image bands to read, GDAL's 1-based band numbers in the file; default all
                                 (then an alpha band beside red, green and blue is dropped, as `read_raster` does)
  lint=True                      what `pixelwise data check` opens with: images without a label raster and label
                                 rasters without an image are listed in `dataset.problems` instead of stopping
Void (255): label value 255; the label raster's nodata value; image pixels whose every band read holds the
image raster's nodata value (`pixelwise.data.raster.nodata_pixels`). Any other label value outside 0..C-1
is a DataError naming the file. When an image and its label raster are both georeferenced, their CRS and
transform must agree: a label raster on another grid would pair each pixel with other ground.
A Sample's image is (H, W, B) in the raster's dtype; meta["raster"] holds its crs, transform, the names of
the bands read and its nodata value.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from pixelwise.constants import IGNORE_INDEX
from pixelwise.data.dataset import SegmentationDataset
from pixelwise.data.formats import NO_CLASS_LIST, apply_lut, check_size, class_list, identity_lut
from pixelwise.data.formats.folder import MASK_DIRS, find_pairs
from pixelwise.data.raster import (TIFF_SUFFIXES, header_meta, image_bands, nodata_pixels, open_raster,
                                   read_raster_labels, read_window)
from pixelwise.data.sample import Sample
from pixelwise.errors import DataError

NO_LABEL = "image has no"  # how folder.find_pairs begins the problem of an image without a mask (and so do we)


def parse_bands(root: Path, bands) -> list[int] | None:
    """Option bands: None, 3, [1, 2, 3] or "1,2,3" -> [1, 2, 3] (1-based); a DataError naming the option."""
    if bands is None:
        return None
    items = bands.split(",") if isinstance(bands, str) else bands if isinstance(bands, (list, tuple)) else [bands]
    try:
        numbers = [int(str(b).strip()) for b in items]
    except ValueError:
        numbers = []
    if not numbers or any(n < 1 for n in numbers) or any(isinstance(b, (bool, float)) for b in items):
        raise DataError(f"{root}: option bands must be band numbers counted from 1 (GDAL's), e.g. 1,2,3; got {bands!r}")
    return numbers


def _checked_bands(path: Path, ds, bands: list[int] | None) -> list[int]:
    """The band numbers to read of an open raster; a band past its count is a DataError naming the file."""
    if bands is None:
        return image_bands(ds)
    bad = [b for b in bands if b > ds.count]
    if bad:
        raise DataError(f"{path}: option bands asks for band {bad[0]}, but this raster has {ds.count} band(s)")
    return bands


def read_image(path: Path, bands: list[int] | None) -> tuple[np.ndarray, dict]:
    """An image raster -> ((H, W, B) of the bands asked for, meta dict of those bands)."""
    with open_raster(path) as ds:
        chosen = _checked_bands(path, ds, bands)
        image = np.ascontiguousarray(read_window(ds, chosen, 0, 0, ds.height, ds.width))
        return image, header_meta(ds, chosen)


def read_labels(path: Path) -> tuple[np.ndarray, dict]:
    """A label raster -> (int64 (H, W) class ids with its nodata pixels set to 255, its meta dict)."""
    with open_raster(path) as ds:
        meta = header_meta(ds)
    labels = read_raster_labels(path)
    nodata = meta["nodata"]
    if nodata is not None and float(nodata).is_integer():
        labels[labels == int(nodata)] = IGNORE_INDEX
    return labels, meta


def _check_grid(image_path: Path, image_meta: dict, label_path: Path, label_meta: dict) -> None:
    """Georeferenced image and label rasters must share a CRS and a transform."""
    if image_meta["transform"] is None or label_meta["transform"] is None:
        return
    if not np.allclose(image_meta["transform"], label_meta["transform"], rtol=0, atol=1e-9):
        raise DataError(f"{label_path}: its transform {label_meta['transform']} differs from its image's "
                        f"{image_meta['transform']} ({image_path}): not the same pixel grid")
    if (image_meta["crs"] is None) != (label_meta["crs"] is None) or image_meta["crs"] != label_meta["crs"]:
        from rasterio.crs import CRS

        same = image_meta["crs"] and label_meta["crs"] and CRS.from_wkt(image_meta["crs"]) == CRS.from_wkt(
            label_meta["crs"])
        if not same:
            raise DataError(f"{label_path}: its CRS differs from its image's ({image_path})")


def _load(lut: np.ndarray, expected: str, bands: list[int] | None, record: tuple) -> Sample:
    """(image path, label path, meta) -> Sample: the bands asked for, labels with every void made 255."""
    image_path, label_path, extra = record
    image, meta = read_image(image_path, bands)
    raw, label_meta = read_labels(label_path)
    check_size(image, raw, image_path, label_path)
    _check_grid(image_path, meta, label_path, label_meta)
    semantic = apply_lut(raw, lut, label_path, expected)
    void = nodata_pixels(image, meta["nodata"])
    if void is not None:
        semantic[void] = IGNORE_INDEX
    meta = {"path": str(image_path), "name": image_path.stem, "mask_path": str(label_path), **extra, "raster": meta}
    return Sample(image=image, semantic=semantic, meta=meta)


def _pairs(root: Path, split: str, lint: bool) -> tuple[list, list[tuple[str, str]]]:
    """(image, label, meta) records and the linter's problems; without lint, an image without a label raster
    stops with one line naming it."""
    problems: list[tuple[str, str]] = []
    try:
        pairs, error = find_pairs(root, split, suffixes=TIFF_SUFFIXES, problems=problems), None
    except DataError as exc:  # e.g. no pair at all; when images lack their labels, that is the error to give
        pairs, error = [], exc
    problems = [(file, _no_label(Path(file)) if message.startswith(NO_LABEL) else message)
                for file, message in problems]
    missing = [file for file, message in problems if message.startswith(NO_LABEL)]
    if missing and not lint:
        raise DataError(f"{missing[0]}: {_no_label(Path(missing[0]))}")
    if error is not None:
        raise error
    return pairs, problems if lint else []


def _no_label(image: Path) -> str:
    """The problem of an image without a label raster, naming the file expected."""
    base = image.parent.parent
    labels = next((base / d for d in MASK_DIRS if (base / d).is_dir()), base / "labels")
    return f"{NO_LABEL} label raster (expected {labels / image.stem}.tif)"


def open_geotiff(root: Path, split: str, classes: list[str] | None = None, palette=None, bands=None,
                 lint: bool = False) -> SegmentationDataset:
    """Read the geotiff layout (see the module docstring)."""
    root = Path(root)
    chosen = parse_bands(root, bands)
    missing = classes is None and lint and not (root / "classes.txt").is_file()  # data check goes on without
    classes = [] if missing else class_list(root, classes, "label rasters")
    pairs, problems = _pairs(root, split, lint)
    if chosen is not None:  # a band the rasters do not have stops at opening, naming the first image
        with open_raster(pairs[0][0]) as ds:
            _checked_bands(pairs[0][0], ds, chosen)
    if missing:
        problems = [(str(root / "classes.txt"), NO_CLASS_LIST), *problems]
    top = len(classes) if classes else IGNORE_INDEX  # without a class list: every id a label raster can hold
    expected = f"0..{top - 1}, 255 = void, or the label raster's nodata value"
    load = partial(_load, identity_lut(top), expected, chosen)
    return SegmentationDataset(pairs, load, list(classes), [tuple(c) for c in palette or []],
                               name=f"geotiff:{root} [{split}]", problems=problems)
