"""Multi-label training loss: binary cross-entropy and soft Dice per class on sigmoid outputs, void skipped.

BCE as in multi-label classification; the soft Dice (Milletari et al., "V-Net", arXiv 1606.04797) over
each class's pixels in the batch counters the imbalance of small classes. `train.loss` names the mix
({bce: 1, dice: 1} when unset); `train.class_weights` weight each class's BCE.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.constants import IGNORE_INDEX
from pixelwise.errors import ConfigError

LOSSES = ("bce", "dice")


class MultiLabelLoss(nn.Module):
    """outputs: logits (N, C, H, W) or {"out": ..., "aux": ...} (aux heads weighted `aux_weight`);
    target int64 (N, C, H, W) 0/1 with 255 = void -> scalar. A "boundary" map (PIDNet's D branch) is
    supervised from exclusive labels by the semantic task only; here that branch trains through the main output."""

    def __init__(self, weights: dict[str, float], class_weights: list[float] | None = None, aux_weight: float = 0.4,
                 eps: float = 1.0):
        super().__init__()
        self.weights, self.aux_weight, self.eps = dict(weights), aux_weight, eps
        cw = torch.tensor(class_weights, dtype=torch.float32).view(1, -1, 1, 1) if class_weights else None
        self.register_buffer("class_weights", cw)

    def _one(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        valid = (target != IGNORE_INDEX).float()
        truth = (target == 1).float()
        total = logits.new_zeros(())
        if self.weights.get("bce"):
            bce = F.binary_cross_entropy_with_logits(logits, truth, reduction="none") * valid
            if self.class_weights is not None:
                bce = bce * self.class_weights
            total = total + self.weights["bce"] * bce.sum() / valid.sum().clamp(min=1)
        if self.weights.get("dice"):
            prob = torch.sigmoid(logits) * valid
            inter = (prob * truth).sum((0, 2, 3))
            denom = prob.sum((0, 2, 3)) + (truth * valid).sum((0, 2, 3))
            total = total + self.weights["dice"] * (1 - (2 * inter + self.eps) / (denom + self.eps)).mean()
        return total

    def forward(self, out, target: torch.Tensor) -> torch.Tensor:
        if isinstance(out, dict):
            return self._one(out["out"], target) + sum(self.aux_weight * self._one(v, target)
                                                       for k, v in out.items() if k not in ("out", "boundary"))
        return self._one(out, target)


def build_multilabel_loss(train_cfg, num_classes: int) -> MultiLabelLoss:
    """train.loss: None ({bce: 1, dice: 1}), "bce", "dice" or a weighted mapping of those."""
    spec = train_cfg.loss if train_cfg.loss is not None else {"bce": 1.0, "dice": 1.0}
    spec = {spec: 1.0} if isinstance(spec, str) else dict(spec)
    unknown = sorted(set(spec) - set(LOSSES))
    if unknown or not spec:
        raise ConfigError(f"config key 'train.loss': the multilabel task trains with {', '.join(LOSSES)} or a "
                          f"weighted mix of them, got {train_cfg.loss!r}")
    weights = train_cfg.class_weights
    if weights is not None and len(weights) != num_classes:
        raise ConfigError(f"config key 'train.class_weights': {len(weights)} weights for {num_classes} classes")
    if train_cfg.label_smoothing:
        raise ConfigError("config key 'train.label_smoothing': not defined for the multilabel task's losses")
    return MultiLabelLoss({k: float(v) for k, v in spec.items()}, weights)
