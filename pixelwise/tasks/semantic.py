"""The semantic task: (image, label map) pairs, cross-entropy (+ auxiliary heads), confusion-matrix mIoU."""
from __future__ import annotations

import torch
from torch import nn

from pixelwise.data.transforms import build_transform, pad_collate
from pixelwise.engine.evaluate import evaluate_logits_fn, model_logits_fn
from pixelwise.losses import build_loss

AUX_WEIGHT = 0.4  # weight of auxiliary (deep-supervision) heads, as in PSPNet/DeepLab references


class SemanticLoss(nn.Module):
    """`loss(logits, target)`, plus AUX_WEIGHT x the same loss for every other head of a dict output."""

    def __init__(self, loss: nn.Module, aux_weight: float = AUX_WEIGHT):
        super().__init__()
        self.loss, self.aux_weight = loss, aux_weight

    def forward(self, out, target: torch.Tensor) -> torch.Tensor:
        if isinstance(out, dict):
            return self.loss(out["out"], target) + sum(self.aux_weight * self.loss(v, target)
                                                       for k, v in out.items() if k != "out")
        return self.loss(out, target)


class SemanticTask:
    """Semantic segmentation: targets int64 (H, W) with 255 = void; validated by mIoU."""

    name = "semantic"
    best_key = "miou"
    record_keys = ("miou", "pixel_acc", "mean_acc", "fw_iou", "per_class_iou")

    def __init__(self, cfg, num_classes: int):
        self.cfg, self.num_classes = cfg, num_classes

    def transform(self, train: bool):
        return build_transform(self.cfg.data, train=train)

    def collate(self, batch):
        return pad_collate(batch)

    def criterion(self) -> nn.Module:
        return SemanticLoss(build_loss(self.cfg.train, self.num_classes))

    def validate(self, model, dataset, device, rank: int = 0, world: int = 1, progress: bool = False) -> dict:
        """mIoU and friends of `model` (in eval mode) on `dataset`, in fp32, confusion matrix all-reduced."""
        return evaluate_logits_fn(model_logits_fn(model), dataset, self.transform(False), self.num_classes, device,
                                  rank=rank, world=world, progress=progress)

    @staticmethod
    def summary(scores: dict) -> str:
        return f"val mIoU {scores['miou']:.4f}  pixel acc {scores['pixel_acc']:.4f}"
