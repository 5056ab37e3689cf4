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


class BudgetScheduler:
    """Per-iteration LR schedule whose progress is steps done / total steps or, when a time budget is set,
    whichever is further along: steps or seconds spent / budget. A recipe can then say "20 minutes on this
    machine" and still end with the LR decayed to zero, whatever the machine's speed.

    `step(elapsed)` takes the training seconds spent so far (the caller keeps the clock, so a resumed run
    continues its budget); `done` turns True when the time budget is spent.
    """

    def __init__(self, optimizer, total: int, schedule: str = "poly", warmup: int = 0, power: float = 0.9,
                 budget_s: float | None = None):
        self.optimizer = optimizer
        self.total, self.schedule, self.warmup, self.power, self.budget_s = total, schedule, warmup, power, budget_s
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.steps = 0
        self.elapsed = 0.0
        self._apply()

    @property
    def done(self) -> bool:
        return self.budget_s is not None and self.elapsed >= self.budget_s

    def progress_step(self) -> int:
        """The step count the LR factor is evaluated at (time-based progress mapped onto steps)."""
        if self.budget_s is None:
            return self.steps
        by_time = int(self.total * min(1.0, self.elapsed / self.budget_s))
        return max(self.steps, by_time) if self.steps >= self.warmup else self.steps

    def _apply(self) -> None:
        f = lr_factor(self.progress_step(), self.total, self.schedule, self.warmup, self.power)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * f

    def step(self, elapsed: float | None = None) -> None:
        self.steps += 1
        if elapsed is not None:
            self.elapsed = elapsed
        self._apply()

    def state_dict(self) -> dict:
        return {"steps": self.steps, "elapsed": self.elapsed, "base_lrs": self.base_lrs}

    def load_state_dict(self, state: dict) -> None:
        self.steps, self.elapsed, self.base_lrs = state["steps"], state["elapsed"], list(state["base_lrs"])
        self._apply()


def build_scheduler(optimizer, total: int, schedule: str, warmup: int, power: float,
                    budget_s: float | None = None) -> BudgetScheduler:
    return BudgetScheduler(optimizer, total, schedule, warmup, power, budget_s)


def build_optimizer(params, name: str, lr: float, weight_decay: float, momentum: float = 0.9):
    """AdamW or SGD with momentum, as one fused kernel per step where torch has one for the parameters'
    device (CPU and CUDA: the same update as the per-tensor loop, in fewer passes over memory)."""
    if name == "adamw":
        make = lambda **fast: torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **fast)  # noqa: E731
    elif name == "sgd":
        make = lambda **fast: torch.optim.SGD(params, lr=lr, weight_decay=weight_decay,  # noqa: E731
                                              momentum=momentum, nesterov=False, **fast)
    else:
        raise ValueError(f"unknown optimizer '{name}' (adamw, sgd)")
    params = list(params)
    try:
        return make(fused=True)
    except (RuntimeError, ValueError, TypeError):  # a device or dtype without a fused kernel
        return make()
