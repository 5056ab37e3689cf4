"""The semantic training loss: the recipe's loss on the main head plus deep supervision of auxiliary heads."""
from __future__ import annotations

import torch
from torch import nn

AUX_WEIGHT = 0.4  # weight of auxiliary (deep-supervision) heads, as in PSPNet/DeepLab references


class SemanticLoss(nn.Module):
    """`loss(logits, target)`, plus AUX_WEIGHT x the same loss for every other head of a dict output.
    outputs: logits (N, C, H, W) or {"out": logits, "aux": ...}; target int64 (N, H, W), 255 = void."""

    def __init__(self, loss: nn.Module, aux_weight: float = AUX_WEIGHT):
        super().__init__()
        self.loss, self.aux_weight = loss, aux_weight

    def forward(self, out, target: torch.Tensor) -> torch.Tensor:
        if isinstance(out, dict):
            return self.loss(out["out"], target) + sum(self.aux_weight * self.loss(v, target)
                                                       for k, v in out.items() if k != "out")
        return self.loss(out, target)
