"""The dataset linter behind `pixelwise data check FORMAT:ROOT [--split ...] [--weights]`.

`check_dataset` opens each split, loads every record and never stops at the first problem: unreadable or
truncated files, images without masks (and masks without images), a missing class list, mask/image size
mismatches and label values out of range all end up in `CheckReport.problems` (file, message). A reader that
takes `lint=True` (the folder format) lists what it would stop at in `dataset.problems` and opens the rest.
Without a class list the label values found are reported with a classes.txt to start from
(`CheckReport.suggested_classes`). Alongside it gathers image counts, the image size distribution, the
label values seen and the class histogram (pixel counts and shares of all pixels, void included).

Class weights (`weights=True`), counted over labelled (non-void) pixels; a class never seen gets weight 0:
  inverse frequency   w_c = N / (C * n_c)   (N labelled pixels, C classes seen, n_c pixels of class c)
  median frequency    freq(c) = n_c / (labelled pixels of the images where c is present),
                      w_c = median(freq) / freq(c)
  (Eigen & Fergus, "Predicting Depth, Surface Normals and Semantic Labels...", arXiv 1411.4734; used by SegNet,
  arXiv 1511.00561.)
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from pixelwise.data.formats import FORMATS, open_dataset, parse_spec
from pixelwise.constants import IGNORE_INDEX
from pixelwise.errors import DataError

PROBE_SPLITS = ("train", "val", "test")  # tried when no split is asked for; 'all' if none of them exists


@dataclass
class Problem:
    split: str
    file: str
    message: str


@dataclass
class SplitReport:
    """Statistics of one split. Counts are over the records that loaded without a problem."""

    split: str
    num_images: int = 0
    num_read: int = 0
    sizes: Counter = field(default_factory=Counter)  # (width, height) -> images
    pixel_counts: list[int] = field(default_factory=list)  # per class
    void_pixels: int = 0
    label_values: dict[int, int] = field(default_factory=dict)  # value -> pixels (255 = void)
    weights: dict[str, list[float]] | None = None

    @property
    def total_pixels(self) -> int:
        return sum(self.pixel_counts) + self.void_pixels

    def fractions(self) -> list[float]:
        total = max(self.total_pixels, 1)
        return [n / total for n in self.pixel_counts]

    def to_dict(self, classes: list[str]) -> dict:
        total = max(self.total_pixels, 1)
        widths, heights = [w for w, _ in self.sizes], [h for _, h in self.sizes]
        return {
            "split": self.split, "num_images": self.num_images, "num_read": self.num_read,
            "sizes": [{"width": w, "height": h, "count": n} for (w, h), n in self.sizes.most_common()],
            "min_size": [min(widths), min(heights)] if widths else None,
            "max_size": [max(widths), max(heights)] if widths else None,
            "label_values": sorted(self.label_values),
            "classes": [{"id": i, "name": name, "pixels": n, "fraction": n / total}
                        for i, (name, n) in enumerate(zip(classes, self.pixel_counts))],
            "void_pixels": self.void_pixels, "void_fraction": self.void_pixels / total,
            "total_pixels": self.total_pixels, "weights": self.weights,
        }


@dataclass
class CheckReport:
    """What `check_dataset` found. `ok` is True when there is no problem."""

    spec: str
    classes: list[str] = field(default_factory=list)
    splits: list[SplitReport] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    class_list: bool = True  # False: the dataset has no class list (names below are placeholders)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def suggested_classes(self) -> list[str]:
        """Without a class list: a name per label value 0..(largest value found), to edit into classes.txt."""
        if self.class_list:
            return []
        values = {v for s in self.splits for v in s.label_values if v != IGNORE_INDEX}
        return [f"class_{v}" for v in range(max(values) + 1)] if values else []

    def to_dict(self) -> dict:
        return {"spec": self.spec, "ok": self.ok, "classes": self.classes, "class_list": self.class_list,
                "suggested_classes": self.suggested_classes,
                "splits": [s.to_dict(self.classes) for s in self.splits],
                "problems": [vars(p) for p in self.problems]}

    def to_text(self, max_problems: int = 50) -> str:
        lines = [f"dataset {self.spec}: " + (f"{len(self.classes)} classes" if self.class_list else
                                             "no class list (class names below are placeholders)")]
        for s in self.splits:
            lines += _split_text(s, self.classes)
        if not self.class_list:
            values = sorted({v for s in self.splits for v in s.label_values})
            lines += ["", f"label values found: {_ranges(values)}"
                      + (f" ({IGNORE_INDEX} = void)" if IGNORE_INDEX in values else ""),
                      "a classes.txt to start from (line i names label value i; rename each line):"]
            lines += [f"  {name}" for name in self.suggested_classes] or ["  (no label values found)"]
        lines.append("")
        if self.ok:
            lines.append("OK: no problems found")
        else:
            lines.append(f"PROBLEMS: {len(self.problems)}")
            lines += [f"  [{p.split}] {p.file}: {p.message}" for p in self.problems[:max_problems]]
            if len(self.problems) > max_problems:
                lines.append(f"  ... and {len(self.problems) - max_problems} more (see --json)")
        return "\n".join(lines)


def _ranges(values: list[int]) -> str:
    """[0, 1, 2, 5, 255] -> '0-2, 5, 255'."""
    out, start = [], None
    for i, v in enumerate(values):
        start = v if start is None else start
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(str(v) if v == start else f"{start}-{v}")
            start = None
    return ", ".join(out) or "none"


def _split_text(s: SplitReport, classes: list[str]) -> list[str]:
    lines = ["", f"== split {s.split}: {s.num_images} images ({s.num_read} read without problems)"]
    if not s.sizes:
        return lines
    common = ", ".join(f"{w}x{h} ({n})" for (w, h), n in s.sizes.most_common(5))
    widths, heights = [w for w, _ in s.sizes], [h for _, h in s.sizes]
    lines.append(f"sizes (WxH): {common}{' ...' if len(s.sizes) > 5 else ''}")
    lines.append(f"  width {min(widths)}..{max(widths)}, height {min(heights)}..{max(heights)}")
    lines.append(f"label values: {_ranges(sorted(s.label_values))}")
    width = max([len(c) for c in classes] + [10])
    header = f"  {'id':>3}  {'class':<{width}}  {'pixels':>12}  {'share':>7}"
    if s.weights:
        header += f"  {'inv-freq':>9}  {'med-freq':>9}"
    lines.append(header)
    for i, (name, n, frac) in enumerate(zip(classes, s.pixel_counts, s.fractions())):
        row = f"  {i:>3}  {name:<{width}}  {n:>12,}  {frac:>7.2%}"
        if s.weights:
            row += f"  {s.weights['inverse_frequency'][i]:>9.4f}  {s.weights['median_frequency'][i]:>9.4f}"
        lines.append(row)
    lines.append(f"  {IGNORE_INDEX:>3}  {'void':<{width}}  {s.void_pixels:>12,}"
                 f"  {s.void_pixels / max(s.total_pixels, 1):>7.2%}")
    absent = [c for c, n in zip(classes, s.pixel_counts) if n == 0]
    if absent:
        lines.append(f"  absent from this split: {', '.join(absent)}")
    return lines


def class_weights(pixel_counts: np.ndarray, present_pixels: np.ndarray) -> dict[str, list[float]]:
    """Inverse- and median-frequency weights (see the module docstring); unseen classes get 0.

    pixel_counts: (C,) labelled pixels per class. present_pixels: (C,) labelled pixels of the images where the
    class is present.
    """
    counts, present = pixel_counts.astype(np.float64), present_pixels.astype(np.float64)
    seen = counts > 0
    inverse, median = np.zeros_like(counts), np.zeros_like(counts)
    if seen.any():
        inverse[seen] = counts.sum() / (seen.sum() * counts[seen])
        freq = counts[seen] / present[seen]
        median[seen] = np.median(freq) / freq
    return {"inverse_frequency": inverse.round(6).tolist(), "median_frequency": median.round(6).tolist()}


def _problem(split: str, exc: Exception, record) -> Problem:
    if isinstance(exc, DataError):
        file, sep, message = str(exc).partition(": ")
        if sep:
            return Problem(split, file, message)
    first = record[0] if isinstance(record, (tuple, list)) and record else record
    return Problem(split, str(first), f"{type(exc).__name__}: {exc}")


def _check_split(spec: str, split: str, ds, weights: bool, problems: list[Problem]) -> SplitReport:
    n = ds.num_classes or IGNORE_INDEX  # no class list: every value below void counts as a label
    problems += [Problem(split, file, message) for file, message in ds.problems]
    report = SplitReport(split, num_images=len(ds))
    counts, present = np.zeros(n, np.int64), np.zeros(n, np.int64)
    values = np.zeros(256, np.int64)
    for i in range(len(ds)):
        try:
            sample = ds[i]
        except Exception as exc:  # a linter reports every failure and goes on
            problems.append(_problem(split, exc, ds.records[i]))
            continue
        h, w = sample.image.shape[:2]
        report.sizes[(w, h)] += 1
        if sample.class_masks is not None:  # multi-label: classes overlap, each counts its own pixels
            per_class = (np.asarray(sample.class_masks) == 1).reshape(n, -1).sum(1)
            counts += per_class
            present[per_class > 0] += h * w
            report.num_read += 1
            continue
        if sample.semantic is None:
            continue
        hist = np.bincount(sample.semantic.ravel(), minlength=256)
        bad = [v for v in np.flatnonzero(hist) if n <= v != IGNORE_INDEX]
        if bad:
            problems.append(Problem(split, sample.meta.get("path", str(i)), f"label values out of range: {bad}"))
            continue
        values += hist[:256]
        labelled = hist[:n]
        counts += labelled
        present[labelled > 0] += labelled.sum()
        report.num_read += 1
    if not ds.num_classes:  # placeholders up to the largest value found
        seen = np.flatnonzero(counts)
        counts, present = (a[:seen.max() + 1 if len(seen) else 0] for a in (counts, present))
    report.pixel_counts = counts.tolist()
    report.void_pixels = int(values[IGNORE_INDEX])
    report.label_values = {int(v): int(values[v]) for v in np.flatnonzero(values)}
    if weights:
        report.weights = class_weights(counts, present)
    return report


def check_dataset(spec: str, splits: list[str] | None = None, weights: bool = False, **options) -> CheckReport:
    """Lint the dataset FORMAT:ROOT: every record of each split is loaded and every problem collected.

    splits: the splits to check; None checks whichever of train/val/test exist (else 'all').
    weights: also compute class weights. options: passed to the format reader (e.g. classes=[...]).
    """
    report = CheckReport(spec)
    if _takes_lint(spec):
        options = {"lint": True, **options}
    opened, failures = [], []
    for split in splits or PROBE_SPLITS:
        try:
            opened.append((split, open_dataset(spec, split, **options)))
        except DataError as exc:
            failures.append(_problem(split, exc, spec))
    if not splits and [s for s, _ in opened] in ([], ["train"]):
        # a set without split information opens as 'train' and 'all' alike: call it 'all'
        try:
            everything = open_dataset(spec, "all", **options)
            if not opened or len(everything) == len(opened[0][1]):
                opened = [("all", everything)]
        except DataError:
            pass
    if splits or not opened:  # splits asked for by name must open; with none asked, missing ones are fine
        report.problems += failures[:1] if not splits else failures
    seen: set[tuple[str, str]] = set()
    for split, ds in opened:
        ds.problems = [p for p in ds.problems if p not in seen]  # a missing class list is one problem, not one per split
        seen.update(ds.problems)
        report.class_list = report.class_list and bool(ds.classes)
        report.splits.append(_check_split(spec, split, ds, weights, report.problems))
    if not report.class_list:
        report.classes = report.suggested_classes
    else:
        report.classes = next((list(ds.classes) for _, ds in opened), [])
    return report


def _takes_lint(spec: str) -> bool:
    """Whether the reader of FORMAT:ROOT has the linter's mode (`lint=True`)."""
    import inspect

    try:
        fmt, _ = parse_spec(spec)
    except DataError:
        return False
    return "lint" in inspect.signature(FORMATS[fmt]).parameters
