"""Parameter and FLOP counts of a model, without running real compute.

FLOPs are counted with `torch.utils.flop_counter.FlopCounterMode` on the meta device (shapes only), so a
512x512 forward of a 100-GFLOP model costs milliseconds.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all of them, or only those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_gflops(model: nn.Module, size: int | tuple[int, int] = 512, in_chans: int | None = None) -> float:
    """GFLOPs of one eval-mode forward of a (1, in_chans, H, W) input, size = H = W or (H, W); in_chans
    None: the model's own (`model.in_chans`, 3 for a model without one).

    Counted as multiply-accumulates: one multiply-add is one FLOP, the convention of the segmentation
    papers' tables, fvcore and mmsegmentation's get_flops. FlopCounterMode counts two FLOPs per
    multiply-add, so its total is halved. Only the matmul / convolution family is counted (no
    elementwise ops, norms or pooling), as fvcore does.
    """
    h, w = (size, size) if isinstance(size, int) else size
    in_chans = getattr(model, "in_chans", 3) if in_chans is None else in_chans
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.zeros(1, in_chans, h, w, device=device)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 2 / 1e9
