"""`train.compile`: torch.compile on the training forward, where it pays within the budget.

- "off" (the default): eager.
- "on": compiled, whatever the compile costs.
- "auto": measured. A run shorter than SHORTEST_PAYING_S (its eager steps timed: the time budget or, sooner,
  epochs x steps x t_eager) stays eager without compiling: cold compiles here took 48-63 s for a 7-15%
  faster step, which takes several minutes to win back. Otherwise the compile is timed (the compiled model's first forward + backward on the run's first
  batch) and so are REPEATS more compiled steps, against eager steps on a copy; it is kept when the steps it
  leaves in the budget beat eager's: (B - compile_s) / t_compiled > B / t_eager, B the shorter of the time
  budget (train.time_limit_min) and the eager time of the whole run (epochs x steps x t_eager). The
  decision is cached with the other measured ones (`pixelwise.measured`): a cached "pays" compiles without
  timing (inductor's own cache makes the second compile of a model fast), a cached "does not pay" stays
  eager. Only the forward is compiled; the optimizer step, timed once in eager, is the same in both forms.
The model's weights, buffers (batch-norm statistics) and gradients are as they were after measuring.
One process only: under DDP, "on" and "auto" are refused in one line.
"""
from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from pixelwise import measured
from pixelwise.engine.autoamp import step_loss

REPEATS = 3
SHORTEST_PAYING_S = 300.0


def _forward_backward(model, criterion, images, targets, dtype) -> None:
    step_loss(model, criterion, images, targets, dtype).backward()


def _timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _eager_ms(model, make_optimizer, criterion, images, targets, dtype) -> tuple[float, float]:
    """(forward + backward ms, optimizer step ms) in eager mode, on a copy of the model."""
    eager = copy.deepcopy(model).train()
    optimizer = make_optimizer(eager)
    step = lambda: _forward_backward(eager, criterion, images, targets, dtype)  # noqa: E731
    step()
    return _timed(step, REPEATS), _timed(optimizer.step, REPEATS)


def pays(compile_s: float, eager_ms: float, compiled_ms: float, budget_s: float) -> bool:
    """Whether compiling leaves more steps in `budget_s` seconds than eager does."""
    if compiled_ms <= 0 or eager_ms <= 0:
        return False
    return (budget_s - compile_s) / compiled_ms > budget_s / eager_ms


def measure(model: nn.Module, make_optimizer: Callable[[nn.Module], torch.optim.Optimizer], criterion,
            images: torch.Tensor, targets, dtype: torch.dtype | None, budget_s: float | None,
            total_steps: int) -> tuple[nn.Module, dict]:
    """(the module to train with, the decision {"compiled", "compile_s", "eager_ms", "compiled_ms", "budget_s",
    "cached"}) for compile "auto"."""
    key = measured.key(what="train.compile", arch=getattr(model, "pixelwise_arch", None), batch=list(images.shape),
                       dtype=str(dtype), budget_s=budget_s, steps=total_steps)
    hit = measured.lookup(key)
    if hit is not None and "compiled" in hit:
        return (torch.compile(model) if hit["compiled"] else model), {**hit, "cached": True}
    eager_fb, optimizer_ms = _eager_ms(model, make_optimizer, criterion, images, targets, dtype)
    eager_ms = eager_fb + optimizer_ms
    budget = min(budget_s or float("inf"), eager_ms / 1000 * total_steps)
    if budget < SHORTEST_PAYING_S:
        return model, {"compiled": False, "eager_ms": round(eager_ms, 1), "budget_s": round(budget, 1),
                       "why": f"a {budget:.0f} s run is too short to pay a compile", "cached": False}
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    compiled = torch.compile(model)
    t0 = time.perf_counter()
    _forward_backward(compiled, criterion, images, targets, dtype)
    compile_s = time.perf_counter() - t0
    compiled_fb = _timed(lambda: _forward_backward(compiled, criterion, images, targets, dtype), REPEATS)
    with torch.no_grad():  # the timed steps ran batch norm in training mode: its statistics go back
        for k, v in model.state_dict().items():
            v.copy_(saved[k])
    model.zero_grad(set_to_none=True)
    compiled_ms = compiled_fb + optimizer_ms
    keep = pays(compile_s, eager_ms, compiled_ms, budget)
    decision = {"compiled": keep, "compile_s": round(compile_s, 1), "eager_ms": round(eager_ms, 1),
                "compiled_ms": round(compiled_ms, 1), "budget_s": round(budget, 1)}
    measured.store(key, decision)
    return (compiled if keep else model), {**decision, "cached": False}


def describe(decision: dict) -> str:
    if not decision.get("asked") or decision["asked"] == "off":
        return "train.compile off"
    if decision["asked"] == "on":
        return "train.compile on"
    if "why" in decision:
        return f"train.compile auto: eager ({decision['why']})"
    if "compile_s" not in decision:
        return f"train.compile auto: {'compiled' if decision['compiled'] else 'eager'}"
    return (f"train.compile auto: {'compiled' if decision['compiled'] else 'eager'} (compile {decision['compile_s']:g} s, "
            f"{decision['compiled_ms']:g} vs {decision['eager_ms']:g} ms per step eager, budget "
            f"{decision['budget_s']:g} s{', cached' if decision.get('cached') else ''})")
