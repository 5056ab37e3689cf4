"""Training losses. Every loss takes logits (N,C,H,W) and targets (N,H,W) int64 with 255 = void."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pixelwise.data.sample import IGNORE_INDEX
from pixelwise.errors import ConfigError


class CrossEntropy(torch.nn.Module):
    """Pixel-wise cross-entropy with optional class weights and label smoothing; void pixels ignored."""

    def __init__(self, weight: list[float] | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.register_buffer("weight", torch.tensor(weight, dtype=torch.float32) if weight else None)
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target, weight=self.weight, ignore_index=IGNORE_INDEX,
                               label_smoothing=self.label_smoothing)


def build_loss(train_cfg, num_classes: int) -> torch.nn.Module:
    """The loss a TrainConfig names."""
    weights = train_cfg.class_weights
    if weights is not None and len(weights) != num_classes:
        raise ConfigError(f"config key 'train.class_weights': {len(weights)} weights for {num_classes} classes")
    if train_cfg.loss == "ce":
        return CrossEntropy(weights, train_cfg.label_smoothing)
    raise ConfigError(f"config key 'train.loss': unknown loss '{train_cfg.loss}' (known: ce)")
