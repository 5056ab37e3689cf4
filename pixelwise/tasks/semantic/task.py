"""The semantic task: (image, label map) pairs, cross-entropy (+ auxiliary heads), confusion-matrix mIoU.

Outputs read: "out" logits (C, H, W), so a panoptic model's semantic head answers semantic questions too.
Prediction: `semantic` int64 (H, W) = argmax of the logits, `probs` (C, H, W) softmax when asked for.
"""
from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import torch

from pixelwise.errors import ConfigError
from pixelwise.fastops import class_argmax
from pixelwise.data.io import index_png_bytes
from pixelwise.data.transforms import build_transform, pad_collate
from pixelwise.losses import build_loss
from pixelwise.rle import per_class
from pixelwise.tasks.base import Prediction, TaskBase, Training, require
from pixelwise.tasks.semantic.loss import SemanticLoss, SemanticMaskLoss
from pixelwise.tasks.semantic.metric import SemanticMetric, image_miou
from pixelwise.tasks.semantic.writer import SemanticWriter


def class_table(labels: np.ndarray, classes: list[str], palette) -> list[dict]:
    """Every class with its id, name, colour [r, g, b] and pixel count (0 where absent); void not counted."""
    flat = np.asarray(labels).ravel()
    counts = np.bincount(flat[flat < len(classes)], minlength=len(classes))
    return [{"id": i, "name": name, "color": [int(c) for c in palette[i]], "pixels": int(counts[i])}
            for i, name in enumerate(classes)]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def draw_semantic(labels: np.ndarray, image: np.ndarray, classes, palette, alpha: float, legend: bool) -> np.ndarray:
    """Colour overlay of a label map (void keeps the image), with a legend of the classes present."""
    from pixelwise.viz import add_legend, overlay

    out = overlay(image, labels, palette, alpha)
    return add_legend(out, classes, palette, np.unique(labels)) if legend else out


def check_mask_classification(train_cfg, task: str) -> None:
    """A mask-classification model (Mask2Former) trains with its own set criterion: a recipe's loss, class
    weights or weight map cannot apply to it."""
    if train_cfg.loss is not None:
        raise ConfigError(f"config key 'train.loss': a mask-classification model trains with its own set criterion "
                          f"under the {task} task (classes by cross-entropy, masks by BCE + Dice); leave it unset")
    if train_cfg.class_weights is not None:
        raise ConfigError("config key 'train.class_weights': a mask-classification model weighs segments, not "
                          "pixels, and down-weights only 'no object'; leave it unset")
    if getattr(train_cfg, "border_weight", None) is not None:
        raise ConfigError("config key 'train.border_weight': a mask-classification model trains with its own set "
                          "criterion, not a per-pixel cross-entropy; leave it unset")


class SemanticTask(TaskBase):
    """Semantic segmentation: targets int64 (H, W) with 255 = void; validated by mIoU."""

    name = "semantic"
    best_key = "miou"
    record_keys = ("miou", "pixel_acc", "mean_acc", "fw_iou", "per_class_iou")
    reads = ("semantic", "panoptic")
    applies = frozenset({"tile", "tta", "crf"})
    formats = ("png", "npy", "rle", "tif")
    pointwise = True

    def training(self, data_cfg, train_cfg, model) -> Training:
        if getattr(getattr(model, "module", model), "mask_classification", False):
            check_mask_classification(train_cfg, self.name)
            return Training(build_transform(data_cfg, train=True), pad_collate, SemanticMaskLoss(self.num_classes))
        if getattr(train_cfg, "border_weight", None) is not None:
            return self.weight_map_training(data_cfg, train_cfg)
        return Training(build_transform(data_cfg, train=True), pad_collate,
                        SemanticLoss(build_loss(train_cfg, self.num_classes)))

    def weight_map_training(self, data_cfg, train_cfg) -> Training:
        """The U-Net paper's weighted cross-entropy (`train.border_weight`): the weight map travels with the
        labels through the preset; the class weights, when given, are its w_c term."""
        from pixelwise.losses import WeightMapCrossEntropy, check_class_weights
        from pixelwise.tasks.semantic.weightmap import WeightMapTransform

        if train_cfg.loss not in (None, "ce"):
            raise ConfigError(f"config key 'train.border_weight': the weight map weighs the cross-entropy; "
                              f"train.loss is {train_cfg.loss!r} (leave it unset or ce)")
        check_class_weights(train_cfg.class_weights, self.num_classes)
        if train_cfg.border_weight.background >= self.num_classes:
            raise ConfigError(f"config key 'train.border_weight.background': class id "
                              f"{train_cfg.border_weight.background} does not exist ({self.num_classes} classes)")
        preset = WeightMapTransform(build_transform(data_cfg, train=True), train_cfg.border_weight,
                                    train_cfg.class_weights)
        return Training(preset, pad_collate, SemanticLoss(WeightMapCrossEntropy(train_cfg.label_smoothing)))

    def decode(self, outputs: dict[str, torch.Tensor], probs: bool = False) -> Prediction:
        logits = outputs["out"]
        return Prediction(self, semantic=class_argmax(logits).cpu().numpy().astype(np.int64),
                          probs=logits.float().softmax(0).cpu().numpy() if probs else None)

    def truth(self, sample) -> Prediction:
        return Prediction(self, semantic=np.asarray(require(sample.semantic, "semantic labels", sample), np.int64))

    def metric(self, full: bool = True) -> SemanticMetric:
        return SemanticMetric(self.classes)

    def image_score(self, pred: Prediction, truth: Prediction) -> float:
        return image_miou(pred.semantic, truth.semantic, self.num_classes)

    def overlay(self, pred: Prediction, image: np.ndarray, alpha: float = 0.5, legend: bool = True) -> np.ndarray:
        return draw_semantic(pred.semantic, image, self.classes, self.palette, alpha, legend)

    def writer(self, out_dir, formats, overlay: bool = False) -> SemanticWriter:
        return SemanticWriter(self, out_dir, self.check_formats(formats), overlay)

    def answer(self, pred: Prediction, fmt: str) -> dict:
        labels = pred.semantic
        mask = (per_class(labels, self.classes) if fmt == "rle" else
                {"format": "png", "encoding": "index", "data": b64(index_png_bytes(labels, self.palette))})
        return {"classes": class_table(labels, self.classes, self.palette), "mask": mask}

    def summary(self, scores: dict) -> str:
        return f"val mIoU {scores['miou']:.4f}  pixel acc {scores['pixel_acc']:.4f}"

    @staticmethod
    def table(scores: dict) -> str:
        f = (lambda v: "     n/a" if v is None else f"{v:>8.4f}")
        lines = [f"{'class':<20} {'IoU':>8} {'acc':>8}"]
        for name, iou, acc in zip(scores["classes"], scores["per_class_iou"], scores["per_class_acc"]):
            lines.append(f"{name:<20} {f(iou)} {f(acc)}")
        lines += [f"{'mIoU':<20} {scores['miou']:>8.4f}", f"{'pixel accuracy':<20} {scores['pixel_acc']:>8.4f}",
                  f"{'mean class accuracy':<20} {scores['mean_acc']:>8.4f}"]
        return "\n".join(lines)

    def report(self, scores: dict, out_dir: Path) -> list[str]:
        from pixelwise.viz import plot_confusion

        plot_confusion(np.array(scores["confusion"]), self.classes, Path(out_dir) / "confusion.png")
        fmt = (lambda v: "n/a" if v is None else f"{v:.4f}")
        lines = ["| metric | value |", "|---|---|",
                 f"| mIoU | {scores['miou']:.4f} |", f"| pixel accuracy | {scores['pixel_acc']:.4f} |",
                 f"| mean class accuracy | {scores['mean_acc']:.4f} |",
                 f"| frequency-weighted IoU | {scores['fw_iou']:.4f} |", f"| mean Dice | {scores['mean_dice']:.4f} |",
                 "", "## Per-class IoU", "", "| class | IoU | accuracy | Dice |", "|---|---|---|---|"]
        for name, iou, acc, dice in zip(self.classes, scores["per_class_iou"], scores["per_class_acc"],
                                        scores["per_class_dice"]):
            lines.append(f"| {name} | {fmt(iou)} | {fmt(acc)} | {fmt(dice)} |")
        lines += ["", "## Confusion matrix (rows: truth, row-normalised)", "", "![confusion](confusion.png)"]
        return lines
