"""The dataset container every on-disk format returns.

A format reader finds its files and builds a `SegmentationDataset` from a list of records and a `load`
function (record -> Sample). Nothing is decoded until asked for, so listing a dataset is cheap and
`pixelwise data check` can walk every record and report every problem.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import Dataset

from pixelwise.data.classes import Color, default_palette
from pixelwise.data.sample import Sample


@dataclass
class SegmentationDataset(Dataset):
    """Records + a loader. `ds[i]` returns a `Sample`; `classes` and `palette` describe its labels.

    records: one entry per image (format-specific, e.g. a pair of paths).
    load: record -> Sample (raises `DataError` naming the file on a problem).
    classes: class names, index = label value. palette: an RGB colour per class.
    name: e.g. "camvid:/data/camvid [train]", used in messages.
    things: ids of countable classes (instance/panoptic tasks); empty for purely semantic data.
    problems: (file, message) pairs a reader opened with `lint=True` left out instead of raising (images
    without masks, a missing class list); the dataset linter reports them. Empty otherwise.
    """

    records: Sequence[Any]
    load: Callable[[Any], Sample]
    classes: list[str]
    palette: list[Color] = field(default_factory=list)
    name: str = ""
    things: list[int] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        duplicates = sorted({c for c in self.classes if list(self.classes).count(c) > 1})
        if duplicates:
            from pixelwise.errors import DataError

            raise DataError(f"{self.name or 'dataset'}: duplicate class names {duplicates}")
        if not self.palette:
            self.palette = default_palette(len(self.classes))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        return self.load(self.records[index])

    def subset(self, indices: Sequence[int]) -> "SegmentationDataset":
        """The same dataset restricted to some records (for splitting a set that ships no split)."""
        return SegmentationDataset([self.records[i] for i in indices], self.load, self.classes,
                                   self.palette, self.name, self.things, list(self.problems))


class TransformedDataset(Dataset):
    """Applies a transform (Sample -> anything, e.g. tensors) to each item of a dataset.

    cache=True keeps every decoded Sample in memory after its first read (in each loader worker), so later
    epochs skip decoding: worth it for small sets of large or slow-to-decode images (RGB-coded masks).
    The transform still runs on every read, so augmentation is unaffected.
    """

    def __init__(self, dataset: SegmentationDataset, transform: Callable[[Sample], Any], cache: bool = False):
        self.dataset = dataset
        self.transform = transform
        self.cache: dict[int, Sample] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        if self.cache is None:
            return self.transform(self.dataset[index])
        sample = self.cache.get(index)
        if sample is None:
            sample = self.cache[index] = self.dataset[index]
        return self.transform(sample)
