"""Small tensor operations done the fast way on CPU.

`class_argmax`: the index of the largest class score along dim 0 of (C, H, W) (or any dim). torch's
`argmax(0)` over the outer dimension of a contiguous CPU tensor ran about 10x slower than `max(0).indices`
(33 vs 3 ms on 11 x 360 x 480 logits, 2 threads), a third of a whole CamVid prediction; both give the
first index of the maximum on ties.
"""
from __future__ import annotations

import torch


def class_argmax(scores: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """int64 indices of the maximum along `dim` (first one on ties), as `scores.argmax(dim)`."""
    return scores.max(dim).indices
