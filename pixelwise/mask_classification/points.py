"""Point sampling shared by the matcher and the loss: targets padded to the predictions' extent, points.

Mask2Former (Cheng et al., "Masked-attention Mask Transformer for Universal Image Segmentation", arXiv
2112.01527, section 3.3 "Improving training efficiency") computes its mask losses on K = 12544 sampled points
instead of whole masks, following PointRend (Kirillov et al., arXiv 1912.08193). A point is a pair (x, y) in
[0, 1]^2 over the padded input image; the predicted masks (1/4 of the padded input) and the target masks (full
resolution) are both read there by bilinear interpolation (`grid_sample`, align_corners=False), so the two
resolutions need no resizing, only the same extent: `prepare_targets` pads the target masks (bottom / right)
to the padded size the predictions cover.

Void. Pixels labelled void (255) and the padding carry no truth. Where a target has any, `PointTargets.valid`
holds a float map (1 = labelled, 0 = void or padding) and each point gets a weight = the bilinear value of that
map (`sample_labels`); its label is the bilinear value of mask * valid divided by that weight, i.e. the
interpolated truth of the labelled neighbours only. A point with weight 0 costs nothing, so void is excluded from
the loss rather than treated as background of every mask (what the reference does: it sees no void). Where a
target is fully labelled and unpadded (`valid` None) the computation is the reference's exactly.
Points are drawn inside each image's un-padded extent (`PointTargets.extent`), so none is spent on padding.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pixelwise.errors import ModelError


@dataclass
class PointTargets:
    """One image's segments, ready for point sampling.

    labels: int64 (K,). masks: float32 (K, 1, Hp, Wp), zero on void and padding. valid: float32 (1, 1, Hp, Wp),
    1 on labelled pixels, or None when every pixel is labelled and nothing is padded. extent: float32 (2,), the
    un-padded fraction (W / Wp, H / Hp) in (x, y) order, the region points are drawn from.
    """

    labels: torch.Tensor
    masks: torch.Tensor
    valid: torch.Tensor | None
    extent: torch.Tensor


def prepare_targets(targets: list[dict], padded: tuple[int, int], device: torch.device) -> list[PointTargets]:
    """Per-image target dicts -> `PointTargets` padded to `padded` = (Hp, Wp).

    Each dict: "labels" int64 (K,), "masks" bool or float (K, H, W) at the un-padded input resolution, and
    optionally "valid" bool (H, W) (False = void; see `pixelwise.mask_classification.targets`).
    """
    hp, wp = padded
    out = []
    for i, t in enumerate(targets):
        masks = torch.as_tensor(t["masks"], device=device)
        labels = torch.as_tensor(t["labels"], device=device).long()
        if masks.ndim != 3 or len(masks) != len(labels):
            raise ModelError(f"targets[{i}]: masks {tuple(masks.shape)} do not match {len(labels)} labels")
        h, w = masks.shape[-2:]
        if h > hp or w > wp:
            raise ModelError(f"targets[{i}]: masks {h}x{w} are larger than the padded input {hp}x{wp} "
                             "that the predicted masks cover")
        valid = t.get("valid")
        valid = None if valid is None else torch.as_tensor(valid, device=device).bool()
        if valid is not None and valid.shape != (h, w):
            raise ModelError(f"targets[{i}]: valid {tuple(valid.shape)} does not match masks {h}x{w}")
        if valid is not None and bool(valid.all()):
            valid = None
        padded_masks = masks.new_zeros((len(masks), 1, hp, wp), dtype=torch.float32)
        padded_masks[:, 0, :h, :w] = masks.float()
        padded_valid = None
        if valid is not None or (h, w) != (hp, wp):
            padded_valid = torch.zeros((1, 1, hp, wp), dtype=torch.float32, device=device)
            padded_valid[0, 0, :h, :w] = 1.0 if valid is None else valid.float()
            padded_masks = padded_masks * padded_valid
        extent = torch.tensor([w / wp, h / hp], dtype=torch.float32, device=device)
        out.append(PointTargets(labels, padded_masks, padded_valid, extent))
    return out


def point_sample(features: torch.Tensor, points: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Bilinear values of features (M, C, H, W) at points (M, P, 2) in [0, 1]^2, (x, y) -> (M, C, P).

    align_corners=False: (0, 0) is the top-left corner of the top-left pixel, as transformers' `sample_point`."""
    grid = 2.0 * points.unsqueeze(2) - 1.0
    return F.grid_sample(features, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)[..., 0]


def random_points(count: int, num_points: int, extent: torch.Tensor) -> torch.Tensor:
    """(count, num_points, 2) points uniform in [0, extent_x] x [0, extent_y]; one `torch.rand` call of that
    shape, the reference's draw."""
    return torch.rand(count, num_points, 2, device=extent.device) * extent.view(-1, 1, 2)


def sample_labels(masks: torch.Tensor, valid: torch.Tensor | None,
                  points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Target labels and weights at points.

    masks: (M, 1, Hp, Wp) zero on void; valid: (M or 1, 1, Hp, Wp) or None; points (M, P, 2).
    Returns labels (M, P) in [0, 1] and weights (M or 1, P) (None where valid is None: every weight 1).
    The weight is valid's bilinear value with border padding (the outer edge of the image is labelled; the
    reference reads masks with zero padding there, which the labels keep); the label is renormalised by it.
    """
    labels = point_sample(masks, points)[:, 0]
    if valid is None:
        return labels, None
    weights = point_sample(valid, points[: len(valid)], padding_mode="border")[:, 0]
    labels = torch.where(weights > 0, labels / weights.clamp_min(1e-6), torch.zeros_like(labels)).clamp(0, 1)
    return labels, weights


def uncertain_points(logits: torch.Tensor, num_points: int, oversample_ratio: float, importance_sample_ratio: float,
                     extent: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """PointRend's importance sampling (arXiv 1912.08193, section 3.1 "point selection" in training), as
    Mask2Former trains with it: draw num_points * oversample_ratio random points, keep the
    importance_sample_ratio * num_points most uncertain (uncertainty = -|logit|), add the rest uniformly at random.

    logits: (M, 1, h, w) predicted mask logits; extent: (M, 2) per mask; valid: (M, 1, Hp, Wp) or None, where
    given points that fall wholly on void or padding are never chosen as uncertain (they would cost nothing).
    Returns (M, num_points, 2). Draws `torch.rand` twice, in the shapes and order of transformers'
    `Mask2FormerLoss.sample_points_using_uncertainty`, so a shared seed gives the same points.
    """
    count = logits.shape[0]
    sampled = random_points(count, int(num_points * oversample_ratio), extent)
    uncertainty = -point_sample(logits, sampled)[:, 0].abs()
    if valid is not None:
        weight = point_sample(valid, sampled, padding_mode="border")[:, 0]
        uncertainty = uncertainty.masked_fill(weight <= 0, float("-inf"))
    num_uncertain = int(importance_sample_ratio * num_points)
    idx = torch.topk(uncertainty, k=num_uncertain, dim=1)[1]
    points = sampled.gather(1, idx.unsqueeze(-1).expand(-1, -1, 2))
    if num_points - num_uncertain > 0:
        points = torch.cat([points, random_points(count, num_points - num_uncertain, extent)], dim=1)
    return points
