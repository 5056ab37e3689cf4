"""PIDNet's boundary supervision (Xu et al., "PIDNet: A Real-time Semantic Segmentation Network Inspired by
PID Controllers", arXiv 2206.02066, eq. 8-10): a class-balanced binary cross-entropy on the D branch's
boundary map, and the boundary-aware loss, the semantic loss on the main output at the pixels the boundary
head is sure of (sigmoid > 0.8).

Pure functions on tensors: labels int64 (N, H, W) with 255 = void, boundary logits (N, 1, H, W).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pixelwise.constants import IGNORE_INDEX

BCE_WEIGHT = 20.0       # lambda_2 of the paper (the official code's coeff_bce)
SURE = 0.8              # boundary probability above which the boundary-aware loss counts a pixel
EDGE_WINDOW = 5         # a pixel is on a boundary when its 5x5 window holds two labels


def boundary_targets(labels: torch.Tensor, window: int = EDGE_WINDOW) -> torch.Tensor:
    """float (N, H, W), 1 where the `window` x `window` neighbourhood of a pixel holds more than one label.

    The official code runs Canny on the label map and dilates the edges with a 4x4 kernel, a band about
    4 px wide along every label change (void included); the min/max window here gives the same band
    in torch, on the batch, without OpenCV: 4 px wide, two pixels either side of the change
    (`tests/test_boundary_loss.py` compares it with the official edges)."""
    lab = labels.unsqueeze(1).float()
    pad = window // 2
    hi = F.max_pool2d(lab, window, 1, pad)
    lo = -F.max_pool2d(-lab, window, 1, pad)
    return (hi != lo).squeeze(1).float()


def balanced_bce(boundary_logits: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """The official weighted BCE: boundary pixels weigh the share of non-boundary ones and vice versa."""
    logits = boundary_logits[:, 0].float()
    pos = edges.sum()
    neg = edges.numel() - pos
    weight = torch.where(edges > 0, neg, pos) / edges.numel()
    return F.binary_cross_entropy_with_logits(logits, edges, weight, reduction="mean")


def sure_labels(boundary_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """labels where sigmoid(boundary) > SURE, void elsewhere (no gradient into the boundary head)."""
    sure = boundary_logits[:, 0].detach().sigmoid() > SURE
    return torch.where(sure, labels, torch.full_like(labels, IGNORE_INDEX))


def boundary_loss(boundary_logits: torch.Tensor, main_logits: torch.Tensor, target: torch.Tensor, loss) -> torch.Tensor:
    """BCE_WEIGHT x balanced BCE against the label edges + `loss(main_logits, labels at sure pixels)`.

    `target` is what the semantic loss gets: labels (N, H, W), or (N, 2, H, W) [labels, weight map] under
    train.border_weight (the boundary-aware term keeps the weights). A batch without a sure pixel adds no
    boundary-aware term (a loss over no pixels would be 0/0)."""
    labels = target[:, 0] if target.ndim == 4 else target
    total = BCE_WEIGHT * balanced_bce(boundary_logits, boundary_targets(labels))
    sure = sure_labels(boundary_logits, labels)
    if (sure != IGNORE_INDEX).any():
        sure_target = torch.stack([sure, target[:, 1]], 1) if target.ndim == 4 else sure
        total = total + loss(main_logits, sure_target)
    return total
