"""Which samples `pixelwise data show` draws: a few images of one split, evenly spaced or at random.

The drawing itself is `pixelwise.viz.dataset_grid`; this module only opens the dataset (in the linter's mode
where the reader has one, so a folder without classes.txt still shows, its classes named by label value) and
loads the picks, keeping a one-line message for each image that does not load instead of stopping.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np

from pixelwise.constants import IGNORE_INDEX
from pixelwise.data.classes import default_palette
from pixelwise.data.formats import FORMATS, open_dataset, parse_spec
from pixelwise.data.sample import Sample
from pixelwise.errors import DataError


@dataclass
class Picked:
    samples: list[Sample]
    classes: list[str]
    palette: list[tuple[int, int, int]]
    name: str
    class_list: bool = True          # False: the dataset had none; classes are "class_<value>"
    skipped: list[str] = field(default_factory=list)  # "FILE: problem" per image that did not load


def _open(spec: str, split: str | None):
    fmt, _ = parse_spec(spec)
    options = {"lint": True} if "lint" in inspect.signature(FORMATS[fmt]).parameters else {}
    if split:
        return open_dataset(spec, split, **options)
    try:
        return open_dataset(spec, "train", **options)
    except DataError:
        return open_dataset(spec, "all", **options)


def pick_samples(spec: str, split: str | None, count: int, seed: int | None = None) -> Picked:
    """Up to `count` loaded samples of FORMAT:ROOT's split (None: train, else all); `seed` picks at random,
    None evenly spaced over the split in its order."""
    ds = _open(spec, split)
    n = len(ds)
    if seed is None:
        picks = sorted(dict.fromkeys(np.linspace(0, n - 1, min(n, count)).round().astype(int).tolist()))
    else:
        picks = sorted(np.random.default_rng(seed).choice(n, size=min(n, count), replace=False).tolist())
    samples, skipped = [], []
    for i in picks:
        try:
            samples.append(ds[i])
        except DataError as exc:
            skipped.append(str(exc))
    classes, palette, class_list = list(ds.classes), list(ds.palette), bool(ds.classes)
    if not class_list:
        values = {int(v) for s in samples if s.semantic is not None for v in np.unique(s.semantic)} - {IGNORE_INDEX}
        classes = [f"class_{v}" for v in range(max(values, default=-1) + 1)]
        palette = default_palette(len(classes))
    return Picked(samples, classes, palette, ds.name, class_list, skipped)
