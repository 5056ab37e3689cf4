"""`colormask`: images with RGB colour-coded masks and a colour -> class table.

Layout as `folder`: ROOT/images/ + ROOT/masks/ (same stems), or ROOT/SPLIT/{images,masks}, or groups
ROOT/*/{images,masks} read together, with the same split rules and split lists (see formats/folder.py).
The table, first found: option colors={name: [r, g, b] or '#rrggbb'} (order = label); option table=NAME of a
built-in table; a built-in table recognised from ROOT; ROOT/classes.json; ROOT/classes.csv.
  classes.json: {name: colour, ...}, or a list of {"name" or "title": ..., "color": ...}, or {"classes": list}
  classes.csv:  name,r,g,b  or  name,#rrggbb  per line (a header line is skipped)
A class named void, ignore, unlabeled or unlabelled is void (255) and not a class; option void_color (one
colour or a list) adds void colours. Any other colour in a mask is a DataError naming the file and colour.

Built-in tables:
  dubai_aerial - Humans in the Loop's "Semantic segmentation of aerial imagery" (Dubai, MBRSC): ROOT/Tile N/
  {images,masks}. Recognised by its classes.json, whose colours do NOT match the masks (a known defect of the
  export), so the colours below, measured on the masks, are used instead. Unlabeled #9B9B9B and black
  #000000 (0.7% of pixels) are void; 5 classes remain.
"""
from __future__ import annotations

import csv
import json
from functools import partial
from pathlib import Path

import numpy as np

from pixelwise.data.dataset import SegmentationDataset
from pixelwise.data.formats import pair_loader
from pixelwise.data.formats.folder import find_pairs
from pixelwise.data.io import read_rgb_mask
from pixelwise.errors import DataError

VOID_NAMES = {"void", "ignore", "unlabeled", "unlabelled"}
TABLES = {
    "dubai_aerial": {"Building": "#3C1098", "Land": "#8429F6", "Road": "#6EC1E4", "Vegetation": "#FEDD3A",
                     "Water": "#E2A929", "Unlabeled": "#9B9B9B", "void": "#000000"},
}
_DUBAI_EXPORT = {"Water", "Land (unpaved area)", "Road", "Building", "Vegetation", "Unlabeled"}


def parse_color(value) -> tuple[int, int, int]:
    """'#rrggbb', 'r,g,b' or [r, g, b] -> (r, g, b)."""
    if isinstance(value, str) and value.startswith("#") and len(value) == 7:
        return tuple(int(value[i:i + 2], 16) for i in (1, 3, 5))
    parts = value.split(",") if isinstance(value, str) else list(value)
    rgb = tuple(int(p) for p in parts)
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise ValueError(f"not an RGB colour: {value!r}")
    return rgb


def _read_table(root: Path) -> tuple[dict, Path] | None:
    path = root / "classes.json"
    if path.is_file():
        data = json.loads(path.read_text())
        if isinstance(data, dict) and isinstance(data.get("classes"), list):
            data = data["classes"]
        if isinstance(data, list):
            titles = {d.get("title", d.get("name")) for d in data}
            if titles == _DUBAI_EXPORT:
                return TABLES["dubai_aerial"], path
            data = {d.get("name", d.get("title")): d["color"] for d in data}
        return data, path
    path = root / "classes.csv"
    if path.is_file():
        rows = [r for r in csv.reader(path.read_text().splitlines()) if r and r[0].strip()]
        table = {}
        for i, row in enumerate(rows):
            try:
                table[row[0].strip()] = parse_color(row[1].strip() if len(row) == 2 else [c.strip() for c in row[1:]])
            except ValueError:
                if i:  # only the first line may be a header
                    raise
        return table, path
    return None


def _color_labels(codes: np.ndarray, labels: np.ndarray, path: Path) -> np.ndarray:
    """RGB mask -> labels through a table of sorted colour codes (r << 16 | g << 8 | b)."""
    rgb = read_rgb_mask(path).astype(np.int64)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    idx = np.searchsorted(codes, code).clip(max=len(codes) - 1)
    known = codes[idx] == code
    if not known.all():
        bad = np.unique(code[~known])
        shown = ", ".join(f"#{c:06X}" for c in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise DataError(f"{path}: colours not in the class table: {shown} ({int((~known).sum())} pixels)")
    return labels[idx]


def open_colormask(root: Path, split: str, colors: dict | None = None, table: str | None = None,
                   void_color=None) -> SegmentationDataset:
    """Read colour-coded masks (see the module docstring)."""
    root = Path(root)
    source = "option colors"
    if colors is None and table is not None:
        if table not in TABLES:
            raise DataError(f"colormask: unknown table '{table}' (known: {', '.join(TABLES)})")
        colors, source = TABLES[table], f"table {table}"
    if colors is None:
        try:
            found = _read_table(root)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise DataError(f"{root}: unreadable class table classes.json/classes.csv ({exc})") from None
        if found is None:
            raise DataError(f"{root}: no colour table: write classes.json or classes.csv, or pass colors={{...}}")
        colors, source = found[0], str(found[1])
    classes, palette, codes, labels = [], [], [], []
    single = isinstance(void_color, str) or (void_color is not None and len(void_color) == 3
                                             and all(isinstance(c, int) for c in void_color))
    voids = [void_color] if single else list(void_color or [])
    entries = list(colors.items()) + [("void", c) for c in voids]
    for name, value in entries:
        try:
            rgb = parse_color(value)
        except (ValueError, TypeError) as exc:
            raise DataError(f"{source}: class '{name}': {exc}") from None
        label = 255 if str(name).lower() in VOID_NAMES else len(classes)
        if label != 255:
            classes.append(str(name))
            palette.append(rgb)
        codes.append((rgb[0] << 16) | (rgb[1] << 8) | rgb[2])
        labels.append(label)
    if len(set(codes)) != len(codes):
        raise DataError(f"{source}: the same colour is given to two classes")
    if not classes:
        raise DataError(f"{source}: the colour table has no (non-void) classes")
    order = np.argsort(codes)
    to_labels = partial(_color_labels, np.asarray(codes, np.int64)[order], np.asarray(labels, np.int64)[order])
    return SegmentationDataset(find_pairs(root, split), pair_loader(to_labels), classes, palette,
                               name=f"colormask:{root} [{split}]")
