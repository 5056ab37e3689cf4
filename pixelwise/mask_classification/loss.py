"""The mask-classification set criterion of Mask2Former.

Cheng et al., "Masked-attention Mask Transformer for Universal Image Segmentation" (arXiv 2112.01527), section
3.3 and 4 (training settings): queries are matched one-to-one to target segments (`HungarianMatcher`); the loss
is class_weight * CE + mask_weight * BCE + dice_weight * Dice with weights 2.0, 5.0, 5.0, the cross-entropy over
the C + 1 classes with weight `eos_coef` = 0.1 on "no object" (every unmatched query's target), the two mask
losses on K = 12544 importance-sampled points of each matched mask (PointRend, arXiv 1912.08193: 3x oversampling,
75 % of the points the most uncertain, uncertainty = -|logit|), summed over masks and divided by the number of
target masks in the batch (averaged over processes when torch.distributed is initialised, as the paper's code);
the same again on every "aux_outputs" layer (deep supervision).

Parity: with targets that have no void and cover the whole padded input, `losses` equals transformers'
`Mask2FormerLoss` (same keys: "loss_cross_entropy", "loss_mask", "loss_dice", then "_0", "_1", ... per auxiliary
layer) under the same torch seed: the points are drawn by the same `torch.rand` calls in the same order.
Departures: void (255) and padding cost nothing (see `pixelwise.mask_classification.points`); the reference has
no void and treats padding as background of every mask. With `cap_points=True` (what the tasks train with) K is
at most the mask map's pixel count h * w, in the loss and in the matcher: the paper's K = 12544 = 112^2 suits its
1/4-resolution maps of 512-1024 px crops (65k+ pixels, K about a fifth of them), while a 128-px crop's 32x32 map
would be read 12 times over through bilinear interpolation at 12x the cost; the default (False) keeps the
reference's K for the parity tests.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.errors import DataError, ModelError
from pixelwise.mask_classification.matcher import HungarianMatcher
from pixelwise.mask_classification.points import (PointTargets, point_sample, prepare_targets, sample_labels,
                                                  uncertain_points)

PARTS = ("loss_cross_entropy", "loss_mask", "loss_dice")


def sigmoid_ce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None,
               num_masks: torch.Tensor) -> torch.Tensor:
    """Sum over masks of the (weighted) mean point BCE, / num_masks. logits, labels, weights: (M, P)."""
    bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    per_mask = bce.mean(1) if weights is None else (bce * weights).sum(1) / weights.sum(1).clamp_min(1e-6)
    return per_mask.sum() / num_masks


def dice(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None,
         num_masks: torch.Tensor) -> torch.Tensor:
    """Sum over masks of 1 - (2 sum w p y + 1) / (sum w p + sum w y + 1), / num_masks. (M, P) inputs."""
    probs = logits.sigmoid()
    if weights is not None:
        probs, labels = probs * weights, labels * weights
    numerator = 2 * (probs * labels).sum(-1)
    denominator = probs.sum(-1) + labels.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def count_masks(targets: list[PointTargets], device: torch.device) -> torch.Tensor:
    """Number of target masks in the batch, averaged over processes, at least 1."""
    num = torch.tensor(float(sum(len(t.labels) for t in targets)), device=device)
    world = 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(num)
        world = torch.distributed.get_world_size()
    return torch.clamp(num / world, min=1)


class MaskClassificationLoss(nn.Module):
    """forward(outputs, targets) -> scalar: the weighted sum of `losses(outputs, targets)`.

    outputs: {"pred_logits": (N, Q, C+1), "pred_masks": (N, Q, h, w) at 1/mask_stride of the padded input,
    optionally "aux_outputs": [dicts of the same two keys]}. targets: N dicts {"labels" int64 (K,), "masks" bool
    or float (K, H, W) at the un-padded input resolution, optionally "valid" bool (H, W)} (see
    `pixelwise.mask_classification.targets`); H <= mask_stride * h, the rest is padding.
    """

    def __init__(self, num_classes: int, class_weight: float = 2.0, mask_weight: float = 5.0,
                 dice_weight: float = 5.0, eos_coef: float = 0.1, num_points: int = 12544,
                 oversample_ratio: float = 3.0, importance_sample_ratio: float = 0.75, mask_stride: int = 4,
                 cap_points: bool = False):
        super().__init__()
        if not 0.0 <= importance_sample_ratio <= 1.0:
            raise ModelError(f"importance_sample_ratio: expected a value in [0, 1], got {importance_sample_ratio}")
        self.num_classes = num_classes
        self.weights = {"loss_cross_entropy": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
        self.num_points, self.oversample_ratio = num_points, oversample_ratio
        self.importance_sample_ratio, self.mask_stride = importance_sample_ratio, mask_stride
        self.cap_points = cap_points
        self.matcher = HungarianMatcher(class_weight, mask_weight, dice_weight, num_points, cap_points)
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)

    def forward(self, outputs: dict, targets: list[dict]) -> torch.Tensor:
        total = 0
        for key, value in self.losses(outputs, targets).items():
            part = key if key in self.weights else key.rsplit("_", 1)[0]  # "loss_dice_3" -> "loss_dice"
            total = total + self.weights[part] * value
        return total

    def losses(self, outputs: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        """The unweighted parts: PARTS for the last layer, then f"{part}_{i}" for aux_outputs[i]."""
        logits, masks = outputs["pred_logits"], outputs["pred_masks"]
        if logits.shape[-1] != self.num_classes + 1:
            raise ModelError(f"pred_logits: expected {self.num_classes + 1} classes (num_classes + no object), "
                             f"got {logits.shape[-1]}")
        if len(targets) != len(logits):
            raise ModelError(f"targets: {len(targets)} images for a batch of {len(logits)}")
        padded = (masks.shape[-2] * self.mask_stride, masks.shape[-1] * self.mask_stride)
        prepared = prepare_targets(targets, padded, masks.device)
        for i, t in enumerate(prepared):
            if len(t.labels) and (int(t.labels.min()) < 0 or int(t.labels.max()) >= self.num_classes):
                raise DataError(f"targets[{i}]: labels {t.labels.tolist()} are outside 0..{self.num_classes - 1}")
        num_masks = count_masks(prepared, masks.device)
        out = self._layer(logits, masks, prepared, num_masks)
        for i, aux in enumerate(outputs.get("aux_outputs") or []):
            parts = self._layer(aux["pred_logits"], aux["pred_masks"], prepared, num_masks)
            out.update({f"{key}_{i}": value for key, value in parts.items()})
        return out

    def _layer(self, logits: torch.Tensor, masks: torch.Tensor, targets: list[PointTargets],
               num_masks: torch.Tensor) -> dict[str, torch.Tensor]:
        logits, masks = logits.float(), masks.float()
        indices = self.matcher(logits, masks, targets)
        parts = self._mask_losses(masks, targets, indices, num_masks)
        parts["loss_cross_entropy"] = self._class_loss(logits, targets, indices)
        return {key: parts[key] for key in PARTS}

    def _class_loss(self, logits: torch.Tensor, targets: list[PointTargets],
                    indices: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        for i, (src, tgt) in enumerate(indices):
            classes[i, src.to(logits.device)] = targets[i].labels[tgt.to(logits.device)]
        return F.cross_entropy(logits.transpose(1, 2), classes, weight=self.empty_weight)

    def _mask_losses(self, masks: torch.Tensor, targets: list[PointTargets],
                     indices: list[tuple[torch.Tensor, torch.Tensor]], num_masks: torch.Tensor) -> dict:
        device = masks.device
        batch = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)]).to(device)
        if len(batch) == 0:
            zero = masks.sum() * 0
            return {"loss_mask": zero, "loss_dice": zero}
        src = torch.cat([src for src, _ in indices]).to(device)
        pred = masks[batch, src][:, None]
        truth = torch.cat([targets[i].masks[tgt.to(device)] for i, (_, tgt) in enumerate(indices)])
        extent = torch.stack([targets[i].extent for i in batch.tolist()])
        valid = None
        if any(t.valid is not None for t in targets):
            full = [t.valid if t.valid is not None else torch.ones_like(truth[:1]) for t in targets]
            valid = torch.cat([full[i] for i in batch.tolist()])
        with torch.no_grad():
            k = min(self.num_points, pred.shape[-2] * pred.shape[-1]) if self.cap_points else self.num_points
            points = uncertain_points(pred, k, self.oversample_ratio, self.importance_sample_ratio,
                                      extent, valid)
            labels, weights = sample_labels(truth, valid, points)
        point_logits = point_sample(pred, points)[:, 0]
        return {"loss_mask": sigmoid_ce(point_logits, labels, weights, num_masks),
                "loss_dice": dice(point_logits, labels, weights, num_masks)}
