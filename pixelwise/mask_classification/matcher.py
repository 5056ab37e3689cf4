"""Hungarian matching of predicted (class, mask) pairs to target segments.

Cheng et al., "Masked-attention Mask Transformer for Universal Image Segmentation" (arXiv 2112.01527), section
3.3 and appendix: the matching cost of query q and target k is
    class_weight * (-p_q(c_k)) + mask_weight * BCE(m_q, y_k) + dice_weight * Dice(m_q, y_k),
with the mask terms on `num_points` (12544) points drawn uniformly at random, the same points for every
prediction and target of an image; one-to-one assignment by `scipy.optimize.linear_sum_assignment`. As
transformers' `Mask2FormerHungarianMatcher`, but void and padding are excluded from the mask costs (see
`pixelwise.mask_classification.points`); with neither, the costs are the reference's to the last bit.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from pixelwise.mask_classification.points import PointTargets, point_sample, random_points, sample_labels


def pairwise_sigmoid_ce(logits: torch.Tensor, labels: torch.Tensor,
                        weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean binary cross-entropy of every prediction against every target, over points.

    logits: (Q, P); labels: (K, P) in [0, 1]; weights: (1, P) or None (all 1). -> (Q, K), the weighted mean."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    if weights is None:
        scale = logits.shape[1]
        return (pos / scale) @ labels.T + (neg / scale) @ (1 - labels).T
    w = weights / weights.sum().clamp_min(1e-6)
    return (pos * w) @ labels.T + (neg * w) @ (1 - labels).T


def pairwise_dice(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """1 - (2 sum w p y + 1) / (sum w p + sum w y + 1) for every (prediction, target) pair.

    logits: (Q, P); labels: (K, P); weights: (1, P) or None. -> (Q, K)."""
    probs = logits.sigmoid()
    if weights is not None:
        probs, labels_w = probs * weights, labels * weights
    else:
        labels_w = labels
    numerator = 2 * (probs @ labels.T)
    denominator = probs.sum(-1)[:, None] + labels_w.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


class HungarianMatcher(nn.Module):
    """Assign each target segment of an image one query (queries left over are "no object").

    forward(pred_logits (N, Q, C+1), pred_masks (N, Q, h, w), targets: list of N `PointTargets`,
    points: optional list of N (1, P, 2) point sets) -> list of N (query_idx int64 (K',), target_idx int64 (K',))
    with K' = min(Q, K), target_idx sorted as scipy returns it.

    Points: where `points` is None each image draws `torch.rand(1, num_points, 2)` (scaled to its un-padded
    extent; with cap_points at most h * w points, see `loss.MaskClassificationLoss`), the reference's call in its order, so seeding torch identically reproduces transformers'
    matcher; or the caller passes them.
    """

    def __init__(self, class_weight: float = 2.0, mask_weight: float = 5.0, dice_weight: float = 5.0,
                 num_points: int = 12544, cap_points: bool = False):
        super().__init__()
        self.class_weight, self.mask_weight, self.dice_weight = class_weight, mask_weight, dice_weight
        self.num_points, self.cap_points = num_points, cap_points

    @torch.no_grad()
    def forward(self, pred_logits: torch.Tensor, pred_masks: torch.Tensor, targets: list[PointTargets],
                points: list[torch.Tensor] | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for i, t in enumerate(targets):
            if len(t.labels) == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                out.append((empty, empty))
                continue
            probs = pred_logits[i].float().softmax(-1)
            cost_class = -probs[:, t.labels]
            k = min(self.num_points, pred_masks.shape[-2] * pred_masks.shape[-1]) if self.cap_points else self.num_points
            pts = points[i] if points is not None else random_points(1, k, t.extent)
            masks = pred_masks[i].float()[:, None]
            pred = point_sample(masks, pts.expand(len(masks), -1, -1))[:, 0]
            labels, weights = sample_labels(t.masks, t.valid, pts.expand(len(t.masks), -1, -1))
            cost = (self.mask_weight * pairwise_sigmoid_ce(pred, labels, weights)
                    + self.class_weight * cost_class
                    + self.dice_weight * pairwise_dice(pred, labels, weights))
            big = torch.finfo(cost.dtype).max
            cost = torch.nan_to_num(cost, nan=big, posinf=big, neginf=big)
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            out.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return out
