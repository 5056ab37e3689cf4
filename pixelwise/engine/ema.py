"""Exponential moving average of the weights (Polyak averaging), as timm and the DeepLab/ConvNeXt recipes use.

After every optimizer step `update(model)` moves each floating-point tensor of the averaged copy towards the
live one: ema = d * ema + (1 - d) * w, with the decay warmed up as d_t = min(decay, (1 + t) / (10 + t)) so
the early average is not dominated by the random initialisation (timm's ModelEmaV3 does the same).
BatchNorm running statistics are averaged like the weights; integer buffers (num_batches_tracked) are copied.
The averaged copy is what validation scores and what `best/` holds when `train.ema` > 0.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """An averaged copy of `model` (same device and dtype, eval mode, no gradients)."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        self.updates += 1
        ema_floats, live_floats = [], []
        for e, v in zip(self.module.state_dict().values(), model.state_dict().values()):
            if e.is_floating_point():
                ema_floats.append(e)
                live_floats.append(v.detach())
            else:
                e.copy_(v)
        if ema_floats:
            torch._foreach_lerp_(ema_floats, live_floats, 1.0 - d)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "decay": self.decay,
                "weights": {k: v.detach().cpu() for k, v in self.module.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["weights"])
