"""The multi-label task: every class its own yes/no per pixel, so classes overlap (road and wet, building
and damaged, built-up over building and road).

Outputs read: "out" logits (C, H, W), one sigmoid per class: any semantic architecture trains for it.
Prediction: `masks` bool (C, H, W) = sigmoid > threshold, `probs` (C, H, W) the sigmoids when asked for.
Truth: see targets.py (class mask folders, or semantic maps and instances, plus derived union classes).
Loss: BCE + soft Dice (loss.py). Scores: per-class IoU and F1 at the threshold and their means (metric.py).
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pixelwise.data.io import png_bytes
from pixelwise.data.transforms import pad_collate
from pixelwise.errors import ConfigError, DataError
from pixelwise.rle import per_class
from pixelwise.tasks.base import Prediction, TaskBase, Training, build_options
from pixelwise.tasks.multilabel.loss import build_multilabel_loss
from pixelwise.tasks.multilabel.metric import MultiLabelMetric, counts, scores_from_counts
from pixelwise.tasks.multilabel.targets import MultiLabelTransform, class_masks
from pixelwise.tasks.multilabel.writer import MultiLabelWriter, multilabel_overlay

MAX_BITS = 16  # classes a "bits" PNG answer can carry (16-bit greyscale)


@dataclass
class MultiLabelOptions:
    """threshold: sigmoid above which a class is present (one value, or one per class). unions: derived
    classes {name: [source class names]}, each present where any of its members is; they follow the
    dataset's classes in the model's class list."""

    threshold: float | list[float] = 0.5
    unions: dict[str, list[str]] = field(default_factory=dict)


class MultiLabelTask(TaskBase):
    """Multi-label segmentation; validated by the mean IoU over classes."""

    name = "multilabel"
    best_key = "miou"
    record_keys = ("miou", "mean_f1", "per_class_iou", "per_class_f1")
    reads = ("multilabel",)
    applies = frozenset({"tile", "tta"})  # the dense CRF is a softmax over exclusive classes: not for overlaps
    formats = ("png", "npy", "rle")
    pointwise = True
    Options = MultiLabelOptions

    def __init__(self, classes, palette=None, things=(), options=None):
        unions = build_options(self.Options, options, "task.options").unions
        classes, names = list(classes), list(unions)
        if names and classes[-len(names):] != names:  # a dataset's classes: the derived ones follow them
            classes += names                            # (a saved model's class list already ends with them)
        super().__init__(classes, palette, things, options)
        self.source = self.classes[:len(self.classes) - len(names)]
        self.unions = []
        for name, members in unions.items():
            missing = [m for m in members if m not in self.source]
            if missing or not members:
                raise ConfigError(f"task.options.unions.{name}: {missing or 'no classes'} not among the classes "
                                  f"{self.source}")
            self.unions.append([self.source.index(m) for m in members])
        threshold = self.options.threshold
        t = np.asarray(threshold if isinstance(threshold, list) else [threshold] * len(self.classes), np.float32)
        if t.shape != (len(self.classes),) or not ((t > 0) & (t < 1)).all():
            raise ConfigError(f"task.options.threshold: expected one value or {len(self.classes)} values in (0, 1), "
                              f"got {threshold}")
        self.threshold = torch.from_numpy(t).view(-1, 1, 1)

    def check_dataset(self, dataset) -> None:
        if dataset.num_classes != len(self.source):
            raise DataError(f"{dataset.name}: dataset has {dataset.num_classes} classes but the model reads "
                            f"{len(self.source)} ({len(self.unions)} more are derived)")

    def training(self, data_cfg, train_cfg, model) -> Training:
        self.refuse_border_weight(train_cfg)
        return Training(MultiLabelTransform(data_cfg, len(self.source), self.unions), pad_collate,
                        build_multilabel_loss(train_cfg, self.num_classes))

    def decode(self, outputs: dict[str, torch.Tensor], probs: bool = False) -> Prediction:
        p = torch.sigmoid(outputs["out"].float())
        masks = (p > self.threshold.to(p.device)).cpu().numpy()
        return Prediction(self, masks=masks, probs=p.cpu().numpy() if probs else None)

    def probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """Per-class sigmoid probabilities (C, H, W): the classes overlap."""
        return scores.float().sigmoid()

    def scores(self, probs: torch.Tensor) -> torch.Tensor:
        """Probabilities -> logits, which `decode` thresholds through the sigmoid."""
        return torch.logit(probs, eps=1e-6)

    def agreement(self, a: torch.Tensor, b: torch.Tensor) -> float:
        """Share of (pixel, class) pairs on the same side of the threshold."""
        if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
            return 0.0
        t = self.threshold.to(a.device)
        return ((torch.sigmoid(a.float()) > t) == (torch.sigmoid(b.float()) > t)).float().mean().item()

    def truth(self, sample) -> Prediction:
        return Prediction(self, masks=class_masks(sample, len(self.source), self.unions))

    def metric(self, full: bool = True) -> MultiLabelMetric:
        return MultiLabelMetric(self.classes)

    def image_score(self, pred: Prediction, truth: Prediction) -> float:
        return scores_from_counts(counts(pred.masks, truth.masks), self.classes)["miou"]

    def overlay(self, pred: Prediction, image: np.ndarray, alpha: float = 0.5, legend: bool = True) -> np.ndarray:
        return multilabel_overlay(image, pred.masks, self.classes, self.palette, alpha, legend)

    def writer(self, out_dir, formats, overlay: bool = False) -> MultiLabelWriter:
        return MultiLabelWriter(self, out_dir, self.check_formats(formats), overlay)

    def answer(self, pred: Prediction, fmt: str) -> dict:
        """classes with the pixels where each is present; mask: per-class RLE (fmt "rle", or past 16
        classes), else a 16-bit PNG whose bit c is set where class c is present (encoding "bits")."""
        masks = np.asarray(pred.masks, bool)
        pixels = masks.reshape(len(masks), -1).sum(1)
        table = [{"id": i, "name": name, "color": [int(c) for c in self.palette[i]], "pixels": int(pixels[i])}
                 for i, name in enumerate(self.classes)]
        if fmt == "rle" or len(self.classes) > MAX_BITS:
            return {"classes": table, "mask": per_class(masks, self.classes)}
        bits = np.tensordot(1 << np.arange(len(masks), dtype=np.int64), masks.astype(np.int64), axes=(0, 0))
        data = base64.b64encode(png_bytes(bits.astype(np.uint16))).decode("ascii")  # always 16-bit greyscale
        return {"classes": table, "mask": {"format": "png", "encoding": "bits", "data": data}}

    def summary(self, scores: dict) -> str:
        return f"val mIoU {scores['miou']:.4f}  mean F1 {scores['mean_f1']:.4f}"

    @staticmethod
    def table(scores: dict) -> str:
        f = (lambda v: "     n/a" if v is None else f"{v:>8.4f}")
        lines = [f"{'class':<20} {'IoU':>8} {'F1':>8}"]
        for name, iou, f1 in zip(scores["classes"], scores["per_class_iou"], scores["per_class_f1"]):
            lines.append(f"{name:<20} {f(iou)} {f(f1)}")
        lines += [f"{'mean IoU':<20} {scores['miou']:>8.4f}", f"{'mean F1':<20} {scores['mean_f1']:>8.4f}"]
        return "\n".join(lines)

    def report(self, scores: dict, out_dir: Path) -> list[str]:
        fmt = (lambda v: "n/a" if v is None else f"{v:.4f}")
        lines = ["| metric | value |", "|---|---|", f"| mean IoU | {scores['miou']:.4f} |",
                 f"| mean F1 | {scores['mean_f1']:.4f} |", "", "## Per class (at the threshold)", "",
                 "| class | IoU | F1 | TP | FP | FN |", "|---|---|---|---|---|---|"]
        for name, iou, f1, (tp, fp, fn) in zip(self.classes, scores["per_class_iou"], scores["per_class_f1"],
                                               scores["counts"]):
            lines.append(f"| {name} | {fmt(iou)} | {fmt(f1)} | {tp} | {fp} | {fn} |")
        return lines
