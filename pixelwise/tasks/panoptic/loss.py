"""Panoptic training losses: Panoptic-DeepLab's (Cheng et al., arXiv 1911.10194, section 3.2), and the set
criterion of mask-classification models (Mask2Former)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.constants import IGNORE_INDEX
from pixelwise.mask_classification import MaskClassificationLoss, segments_from_batch
from pixelwise.tasks.semantic.loss import widen


class PanopticLoss(nn.Module):
    """Panoptic-DeepLab's loss. outputs {"out", "center", "offset"}, targets of PanopticTransform -> scalar.

    semantic: cross-entropy per pixel x semantic_weight, mean over the top `top_k` fraction (detectron2's
    DeepLabCE); center: MSE x center_weight / sum of weights; offset: L1 x offset_weight / sum of weights.
    """

    def __init__(self, top_k: float = 0.2, center_weight: float = 200.0, offset_weight: float = 0.01,
                 class_weights: list[float] | None = None):
        super().__init__()
        self.top_k, self.center_weight, self.offset_weight = top_k, center_weight, offset_weight
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights)

    def forward(self, out: dict, targets: dict) -> torch.Tensor:
        pixel = F.cross_entropy(out["out"].float(), targets["semantic"], weight=self.class_weights,
                                ignore_index=IGNORE_INDEX, reduction="none") * targets["semantic_weight"]
        pixel = pixel.flatten()
        if self.top_k < 1:
            pixel = torch.topk(pixel, max(1, int(self.top_k * pixel.numel()))).values
        cw, ow = targets["center_weight"][:, None], targets["offset_weight"][:, None]
        center = ((out["center"].float() - targets["center"]) ** 2 * cw).sum() / cw.sum().clamp(min=1)
        offset = ((out["offset"].float() - targets["offset"]).abs() * ow).sum() / ow.sum().clamp(min=1)
        return pixel.mean() + self.center_weight * center + self.offset_weight * offset


class PanopticMaskLoss(nn.Module):
    """Mask classification on panoptic targets (Mask2Former, arXiv 2112.01527): every thing instance and every
    stuff class region is one target segment for the set criterion (see `SemanticMaskLoss`). outputs
    {"pred_logits", "pred_masks", "aux_outputs"}, targets {"semantic", "instances"} of PanopticTransform with
    segments=True -> scalar."""

    def __init__(self, num_classes: int, things):
        super().__init__()
        self.loss, self.things = MaskClassificationLoss(num_classes, cap_points=True), [int(t) for t in things]

    def forward(self, out: dict, targets: dict) -> torch.Tensor:
        return self.loss(widen(out), segments_from_batch(targets["semantic"], targets["instances"], self.things))
