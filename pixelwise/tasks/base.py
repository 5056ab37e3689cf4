"""The task contract: everything that differs between semantic, panoptic, instance and multi-label segmentation.

Generic code (the trainer, `evaluate`, the `Predictor`, batch prediction, the report, the server, the
command line) holds a `Task` and calls only what the `Task` protocol below lists; it never asks which task
it holds. A task is one folder in `pixelwise/tasks/` and one line in `TASKS`; `TaskBase` is what the tasks
share (the label set, typed options, checks of formats and inference options).

Shapes, for one image of H x W pixels and C classes:
- model outputs: a dict of float32 maps at the input size, {"out": logits (C, H, W), ...}; panoptic
  models add "center" (1, H, W) and "offset" (2, H, W) (what `Predictor.outputs` gives, batch dim dropped);
  mask-classification models add the per-query outputs of QUERY_KEYS for a task that reads them;
- `Prediction`: the typed answer of `decode` (model outputs) or `truth` (a dataset Sample), whose fields
  say what the task produces (see the class).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from pixelwise.data.classes import default_palette
from pixelwise.data.sample import Sample
from pixelwise.errors import ConfigError
from pixelwise.metrics.reduce import Reducer

INFERENCE_OPTIONS = ("tile", "tta", "crf")  # Predictor options a task may or may not be able to honour
# Per-query outputs of a mask-classification model (Mask2Former) for one image: "query_logits" (Q, C + 1) class
# logits (the last one "no object"), "query_masks" (Q, H, W) mask logits at the input size. The model gives them
# only when the task decodes them (`Task.reads_queries`); they describe the whole image, so tiles and TTA
# cannot apply to them.
QUERY_KEYS = ("query_logits", "query_masks")


@dataclass
class Prediction:
    """One image's answer. Which fields are set depends on the task that made it (`task`):

    semantic   int64 (H, W) class ids (255 = void in truth); semantic and panoptic tasks
    probs      float32 (C, H, W) class probabilities (softmax, or sigmoid for multi-label), when asked for
    panoptic   (ids int32 (H, W), 0 = void, segments [{"id", "category_id" (class index), "isthing",
               "iscrowd", "area", "score"}]); panoptic task
    instances  (labels int32 (H, W), 0 = none and k for instance k-1, class_ids int64 (K,), scores float32 (K,));
               panoptic and instance tasks
    masks      (C, H, W) one mask per class, overlapping: bool in predictions, uint8 0/1 with 255 = void in
               truth; multi-label task
    crowd      bool (H, W), truth only: crowd regions (COCO iscrowd) where predicted instances cost nothing
    """

    task: "Task" = field(repr=False, compare=False)
    semantic: np.ndarray | None = None
    probs: np.ndarray | None = None
    panoptic: tuple[np.ndarray, list[dict]] | None = None
    instances: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    masks: np.ndarray | None = None
    crowd: np.ndarray | None = None

    @property
    def classes(self) -> list[str]:
        return self.task.classes

    @property
    def palette(self) -> list[tuple[int, int, int]]:
        return self.task.palette

    def overlay(self, image: np.ndarray, alpha: float = 0.5, legend: bool = True) -> np.ndarray:
        """uint8 (H, W, 3) image -> the task's colour overlay of this prediction (with a legend)."""
        return self.task.overlay(self, image, alpha, legend)

    ROW_FIELDS: ClassVar[tuple[str, ...]] = ("semantic", "probs", "masks")  # arrays whose rows are axis -2

    @classmethod
    def cat_rows(cls, parts: Sequence["Prediction"]) -> "Prediction":
        """Predictions of consecutive row bands of one image -> the prediction of the whole image (for
        pointwise tasks, whose answer for a band is the band of the answer)."""
        first = parts[0]
        joined = {name: np.concatenate([getattr(p, name) for p in parts], axis=-2)
                  for name in cls.ROW_FIELDS if getattr(first, name) is not None}
        return dataclasses.replace(first, **joined)


@dataclass
class Training:
    """What the training loop needs from a task: the train preset Sample -> (image float32 (3, H, W),
    target), the collate function of such pairs -> (images (N, 3, H, W), targets), and the loss
    (model outputs, targets) -> scalar tensor."""

    transform: Callable[[Sample], tuple[torch.Tensor, Any]]
    collate: Callable[[list], tuple[torch.Tensor, Any]]
    criterion: nn.Module


class Metric(Protocol):
    """A streaming score: `update` per image, `all_reduce` under DDP, `compute` once at the end."""

    def update(self, pred: Prediction, truth: Prediction) -> None: ...

    def all_reduce(self, reducer: Reducer) -> None: ...

    def compute(self) -> dict: ...


class Writer(Protocol):
    """Writes predictions to disk for `pixelwise predict`. `paths(stem)`: the files `add` writes for one
    image (an image whose files all exist is skipped when resuming); `add(stem, image, pred, meta)`: image is
    the uint8 RGB picture overlays are drawn on (a multi-band image's composite), meta the source's
    `Sample.meta`-style record (its "raster" georeferencing, for GeoTIFF outputs); `close(stems)`: the files that cover
    the whole run (e.g. a COCO JSON), built from every listed image's outputs, resumed ones included."""

    def paths(self, stem: str) -> list[Path]: ...

    def add(self, stem: str, image: np.ndarray, pred: Prediction, meta: dict | None = None) -> None: ...

    def close(self, stems: list[str]) -> list[Path]: ...


@runtime_checkable
class Task(Protocol):
    """The contract between a task and the generic code. Class-level facts:

    name            the key in TASKS
    best_key        the score that picks the best checkpoint; higher_is_better says which way
    record_keys     the scores logged per epoch in metrics.jsonl
    reads           model tasks whose outputs `decode` understands (e.g. panoptic reads semantic models
                    too: instances from connected components)
    native_models   architectures whose own task this is (their training default)
    applies         the INFERENCE_OPTIONS this task can honour
    formats         output formats of `pixelwise predict` (the first is the default)
    pointwise       decoding a row band gives that band of the whole decoding (lets tiled images stream)
    trainable       whether `training` exists (the instance task evaluates panoptic or semantic models)
    needs_things    the label set must name thing classes (countable objects)
    reads_queries   decode reads a mask-classification model's per-query outputs (QUERY_KEYS) when it has them
    """

    name: ClassVar[str]
    best_key: ClassVar[str]
    higher_is_better: ClassVar[bool]
    record_keys: ClassVar[tuple[str, ...]]
    reads: ClassVar[tuple[str, ...]]
    native_models: ClassVar[frozenset[str]]
    applies: ClassVar[frozenset[str]]
    formats: ClassVar[tuple[str, ...]]
    pointwise: ClassVar[bool]
    trainable: ClassVar[bool]
    needs_things: ClassVar[bool]
    reads_queries: ClassVar[bool]
    classes: list[str]
    palette: list[tuple[int, int, int]]
    things: list[int]
    options: Any

    def training(self, data_cfg, train_cfg, model: nn.Module) -> Training:
        """Presets, collate and loss for training `model` (raises ConfigError where they do not fit)."""

    def decode(self, outputs: dict[str, torch.Tensor], probs: bool = False) -> Prediction:
        """One image's model outputs {"out" (C, H, W), ...} -> Prediction (with `probs` when asked)."""

    def truth(self, sample: Sample) -> Prediction:
        """A dataset sample's labels as this task's Prediction (what `decode` is scored against)."""

    def agreement(self, a: torch.Tensor, b: torch.Tensor) -> float:
        """Share of pixels whose per-pixel answer agrees between two "out" maps (N, C, H, W): the check a
        low-precision model or an exported graph must pass against fp32 torch."""

    def check_dataset(self, dataset) -> None:
        """Raise (DataError) unless the dataset's labels are the ones this task reads."""

    def metric(self, full: bool = True) -> Metric:
        """A fresh streaming metric whose `compute()` holds `best_key`; full=False: the cheaper subset a
        validation during training needs (e.g. PQ without mask AP)."""

    def image_score(self, pred: Prediction, truth: Prediction) -> float:
        """One image's headline score (the report ranks images by it)."""

    def overlay(self, pred: Prediction, image: np.ndarray, alpha: float = 0.5, legend: bool = True) -> np.ndarray:
        """uint8 (H, W, 3) -> uint8 overlay of the prediction (a legend column appended when `legend`)."""

    def writer(self, out_dir: str | Path, formats: Sequence[str], overlay: bool = False) -> Writer:
        """The writer of `formats` (a subset of `formats`) and, with `overlay`, NAME_overlay.png."""

    def answer(self, pred: Prediction, fmt: str) -> dict:
        """The server's JSON body for a prediction: "classes" with pixel counts and the task's mask
        fields; fmt "png" (PNG payloads) or "rle" (COCO RLE)."""

    def summary(self, scores: dict) -> str:
        """One line of validation scores (training log)."""

    @staticmethod
    def table(scores: dict) -> str:
        """The text table `pixelwise eval` prints (from the scores alone)."""

    def report(self, scores: dict, out_dir: Path) -> list[str]:
        """Markdown lines (and figures written into out_dir) for report.md."""

    @classmethod
    def score_files(cls, pred: str, spec: str) -> dict:
        """Score prediction files made elsewhere (`pixelwise eval --pred`) against a dataset spec."""


def build_options(options_type: type, values: dict | None, where: str):
    """The task's typed options (a dataclass) from plain data; an unknown key or a wrong type is a
    ConfigError naming `where.KEY`."""
    from pixelwise.config import build_dataclass

    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {values!r}")
    return build_dataclass(options_type, dict(values or {}), f"{where}.")


@dataclass
class NoOptions:
    """A task without options."""


class TaskBase:
    """What every task shares: the label set, the options, checks of output formats and of the
    inference options a caller asks for. Subclasses set the class-level facts of `Task`."""

    Options: ClassVar[type] = NoOptions
    native_models: ClassVar[frozenset[str]] = frozenset()
    pointwise: ClassVar[bool] = False
    trainable: ClassVar[bool] = True
    higher_is_better: ClassVar[bool] = True
    needs_things: ClassVar[bool] = False  # countable classes are what the task is about (panoptic, instance)
    reads_queries: ClassVar[bool] = False

    def __init__(self, classes: Sequence[str], palette=None, things: Sequence[int] = (), options: dict | None = None):
        self.classes = list(classes)
        if not self.classes:
            raise ConfigError(f"task '{self.name}': the class list is empty")
        palette = [tuple(int(c) for c in color) for color in (palette or [])]
        self.palette = palette + default_palette(len(self.classes))[len(palette):]
        self.things = sorted({int(t) for t in things})
        if self.needs_things and not self.things:
            from pixelwise.errors import DataError

            raise DataError(f"the {self.name} task needs thing classes (countable objects); this label set has none")
        self.options = build_options(self.Options, options, "task.options")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def agreement(self, a: torch.Tensor, b: torch.Tensor) -> float:
        """Argmax agreement (exclusive classes); NaN or Inf anywhere in either map agrees with nothing."""
        if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
            return 0.0
        return (a.argmax(1) == b.argmax(1)).float().mean().item()

    def probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """One image's class scores "out" (C, H, W) -> class probabilities (softmax: exclusive classes), the
        space in which video frames are smoothed; `scores` maps them back."""
        return scores.float().softmax(0)

    def scores(self, probs: torch.Tensor) -> torch.Tensor:
        """Class probabilities (C, H, W) -> scores "out" that `decode` reads (log-probabilities)."""
        return probs.clamp_min(1e-8).log()

    def check_dataset(self, dataset) -> None:
        """Raise unless the dataset's labels are the ones this task's classes read."""
        from pixelwise.errors import DataError

        if dataset.num_classes != self.num_classes:
            raise DataError(f"{dataset.name}: dataset has {dataset.num_classes} classes but the model predicts "
                            f"{self.num_classes}")

    def check_reads(self, model_task: str, where: str) -> None:
        """Raise unless this task can decode the outputs of a model trained for `model_task`."""
        if model_task not in self.reads:
            raise ConfigError(f"{where}: a {model_task} model cannot be read as the {self.name} task "
                              f"(the {self.name} task reads {', '.join(self.reads)} models)")

    def refuse_border_weight(self, train_cfg) -> None:
        """The U-Net weight map (`train.border_weight`) weighs a per-pixel cross-entropy over exclusive
        classes: the semantic task's. Any other task stops with one line naming the key."""
        if getattr(train_cfg, "border_weight", None) is not None:
            raise ConfigError(f"config key 'train.border_weight': the U-Net weight map weighs the semantic "
                              f"cross-entropy; the {self.name} task trains with other losses (train a semantic "
                              "model, then read it with --task panoptic / instance)")

    def check_applies(self, requested: dict[str, bool]) -> None:
        """Raise naming the first inference option asked for ({name: asked}) that this task cannot honour."""
        for option, asked in requested.items():
            if asked and option not in self.applies:
                raise ConfigError(f"--{option} does not apply to the {self.name} task "
                                  f"(it takes: {', '.join(sorted(self.applies)) or 'none of tile, tta, crf'})")

    def check_formats(self, formats: Sequence[str]) -> list[str]:
        """The formats asked for (default: the task's first), each one the task writes."""
        formats = list(formats or self.formats[:1])
        for f in formats:
            if f not in self.formats:
                raise ConfigError(f"--format {f} does not apply to the {self.name} task "
                                  f"(its formats: {', '.join(self.formats)})")
        return formats

    @classmethod
    def score_files(cls, pred: str, spec: str) -> dict:
        raise ConfigError(f"--pred: scoring prediction files is not available for the {cls.name} task "
                          "(--task panoptic or --task instance)")

    def summary(self, scores: dict) -> str:
        return f"val {self.best_key} {scores[self.best_key]:.4f}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.classes)} classes, options={self.options})"


def require(value, what: str, sample: Sample):
    """`value` unless None; else a DataError naming the sample's file and what it lacks."""
    if value is None:
        from pixelwise.errors import DataError

        raise DataError(f"{sample.meta.get('path', sample.name or 'sample')}: has no {what}")
    return value


def prediction_files(pred: str, spec: str, wanted: str, task: str) -> Path:
    """The ground-truth file of `spec` (FORMAT:ROOT) for scoring the prediction file `pred` of `task`:
    its format must be `wanted` and both must exist (else a DataError naming them)."""
    from pixelwise.data.formats import parse_spec
    from pixelwise.errors import DataError

    fmt, root = parse_spec(spec)
    if fmt != wanted:
        raise DataError(f"{spec}: --task {task} --pred scores against a {wanted}:JSON ground truth")
    if not Path(pred).is_file():
        raise DataError(f"{pred}: prediction file not found")
    return root
