"""Learning-rate schedules as per-iteration multipliers: linear warmup, then poly or cosine decay.

Poly ("lr * (1 - t/T)^power") is the DeepLab schedule (Chen et al., arXiv 1606.00915); cosine follows
Loshchilov & Hutter (arXiv 1608.03983) without restarts.
"""
from __future__ import annotations

import math

import torch


def lr_factor(step: int, total: int, schedule: str = "poly", warmup: int = 0, power: float = 0.9) -> float:
    """Multiplier of the base LR at iteration `step` of `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "poly":
        return (1 - t) ** power
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    if schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule '{schedule}' (poly, cosine, constant)")


def build_scheduler(optimizer, total: int, schedule: str, warmup: int, power: float):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, schedule, warmup, power))


def build_optimizer(params, name: str, lr: float, weight_decay: float, momentum: float = 0.9):
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=False)
    raise ValueError(f"unknown optimizer '{name}' (adamw, sgd)")
