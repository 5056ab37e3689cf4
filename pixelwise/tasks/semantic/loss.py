"""The semantic training losses: the recipe's loss on the main head plus deep supervision of auxiliary heads;
the set criterion for mask-classification models (Mask2Former)."""
from __future__ import annotations

import torch
from torch import nn

from pixelwise.mask_classification import MaskClassificationLoss, segments_from_batch
from pixelwise.tasks.semantic.boundary import boundary_loss

AUX_WEIGHT = 0.4  # weight of auxiliary (deep-supervision) heads, as in PSPNet/DeepLab references


class SemanticLoss(nn.Module):
    """`loss(logits, target)`, plus AUX_WEIGHT x the same loss for every auxiliary head of a dict output, plus
    PIDNet's boundary losses (`boundary.boundary_loss`) for a "boundary" map.
    outputs: logits (N, C, H, W) or {"out": logits, "aux": ..., "aux2": ..., "boundary": (N, 1, H, W)};
    target int64 (N, H, W), 255 = void (or (N, 2, H, W) with a weight map)."""

    def __init__(self, loss: nn.Module, aux_weight: float = AUX_WEIGHT):
        super().__init__()
        self.loss, self.aux_weight = loss, aux_weight

    def forward(self, out, target: torch.Tensor) -> torch.Tensor:
        if not isinstance(out, dict):
            return self.loss(out, target)
        total = self.loss(out["out"], target)
        for key, value in out.items():
            if key == "boundary":
                total = total + boundary_loss(value, out["out"], target, self.loss)
            elif key != "out":
                total = total + self.aux_weight * self.loss(value, target)
        return total


class SemanticMaskLoss(nn.Module):
    """Mask classification on semantic targets (Mask2Former, arXiv 2112.01527, as the paper trains semantic
    segmentation): every class present in an image is one target segment; the set criterion matches queries
    to segments and scores classes (cross-entropy, "no object" down-weighted) and point-sampled masks (BCE +
    Dice); void pixels cost nothing. outputs {"pred_logits", "pred_masks", "aux_outputs"}, target int64
    (N, H, W) -> scalar."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.loss = MaskClassificationLoss(num_classes, cap_points=True)

    def forward(self, out: dict, target: torch.Tensor) -> torch.Tensor:
        return self.loss(widen(out), segments_from_batch(target))


def widen(out: dict) -> dict:
    """Float32 copies of a mask-classification model's outputs (autocast leaves them in bf16)."""
    return {"pred_logits": out["pred_logits"].float(), "pred_masks": out["pred_masks"].float(),
            "aux_outputs": [widen(a) for a in out.get("aux_outputs") or []]}
