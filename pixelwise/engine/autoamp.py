"""`train.amp: auto` on a CPU, measured: the training form that runs this model's step fastest here.

A CPU flag says whether bf16 instructions exist, not whether a training step in bf16 is faster: on one
kind of CPU here bf16 autocast trained faster than fp32, on another slower, and the same model's
depthwise convolutions ran 5-10x slower backward in bf16 than in fp32. So "auto" times real steps.

- Forms: "fp32"; "bf16" (bf16 autocast, weights and optimizer state fp32); "bf16+fp32dw" (bf16 autocast with
  the depthwise convolutions in fp32, `pixelwise.engine.depthwise`; only for models that have them). bf16
  forms are timed where oneDNN can run bf16 on this CPU (`cpu_has_fast_bf16`; elsewhere it is emulated).
- Agreement: from the same weights and batch, a low-precision form's loss must lie within MAX_LOSS_DIFF
  (relative) of fp32's and its gradient point the same way (cosine >= MIN_GRAD_COSINE); a form that does
  not agree is not chosen, whatever its speed.
- Timing: on a copy of the model and a fresh optimizer (the run's own weights and optimizer state are
  left as they were; the trainer restores its random state after), one warm-up step, then the median of REPEATS full steps (forward, loss,
  backward, optimizer step) on the run's first batch. A low form must beat fp32 by MIN_GAIN.
- Cache: the decision and its timings, keyed by (architecture record, batch shape, channels_last,
  optimizer, CPU model, torch version, threads) through `pixelwise.measured`.
On CUDA "auto" is bf16 (fp16 where the GPU lacks bf16), as before: tensor cores always pay there.
"""
from __future__ import annotations

import copy
import logging
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from pixelwise import measured
from pixelwise.engine.depthwise import count_depthwise, float32_depthwise

REPEATS = 3
MIN_GAIN = 0.05
MAX_LOSS_DIFF = 0.02
MIN_GRAD_COSINE = 0.99
FORMS: dict[str, tuple[torch.dtype | None, bool]] = {
    "fp32": (None, False), "bf16": (torch.bfloat16, False), "bf16+fp32dw": (torch.bfloat16, True)}
log = logging.getLogger("pixelwise.train")


def candidates(model: nn.Module) -> list[str]:
    """The training forms worth timing for `model` on this CPU."""
    from pixelwise.hardware import cpu_has_fast_bf16

    if not cpu_has_fast_bf16():
        return ["fp32"]
    return ["fp32", "bf16"] + (["bf16+fp32dw"] if count_depthwise(model) else [])


def apply(model: nn.Module, form: str) -> torch.dtype | None:
    """Put `model` (in place) in a training form; returns the autocast dtype (None: no autocast)."""
    dtype, fp32_depthwise = FORMS[form]
    if fp32_depthwise:
        float32_depthwise(model)
    return dtype


def step_loss(model, criterion, images, targets, dtype) -> torch.Tensor:
    """The training loss of one batch, the forward under autocast in `dtype` (None: fp32)."""
    with torch.autocast(images.device.type, dtype=dtype, enabled=dtype is not None):
        out = model(images)
    return criterion(out, targets)


AGREEMENT_SEED = 0  # every form's check pass draws the same dropout / drop-path masks and point samples


def _gradient(model, criterion, images, targets, dtype) -> tuple[float, torch.Tensor]:
    """(loss, flat gradient) of one pass, under a fixed seed: a model with dropout (SegFormer's, UPerNet's
    head) or a loss that samples (Mask2Former's points) would otherwise differ from fp32 by its random draws
    alone, and a low precision that agrees would be refused."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(AGREEMENT_SEED)
        loss = step_loss(model, criterion, images, targets, dtype)
    loss.backward()
    grads = [p.grad.flatten().double() for p in model.parameters() if p.grad is not None]
    return loss.item(), torch.cat(grads)


def agreement(model, criterion, images, targets, form: str, reference: tuple[float, torch.Tensor]) -> dict:
    """{"loss_diff": relative, "grad_cosine", "ok"} of one form against fp32's (loss, gradient)."""
    m = copy.deepcopy(model).train()
    loss, grad = _gradient(m, criterion, images, targets, apply(m, form))
    ref_loss, ref_grad = reference
    diff = abs(loss - ref_loss) / max(abs(ref_loss), 1e-8)
    cosine = torch.nn.functional.cosine_similarity(grad, ref_grad, dim=0).item() if grad.numel() else 1.0
    return {"loss_diff": round(diff, 5), "grad_cosine": round(cosine, 5),
            "ok": diff <= MAX_LOSS_DIFF and cosine >= MIN_GRAD_COSINE}


def time_steps(model, make_optimizer, criterion, images, targets, form: str, repeats: int = REPEATS) -> float:
    """Median milliseconds of one training step in `form`, on a copy of `model`, after one warm-up."""
    m = copy.deepcopy(model).train()
    dtype = apply(m, form)
    optimizer = make_optimizer(m)
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        loss = step_loss(m, criterion, images, targets, dtype)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i:
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def choose(timings: dict[str, float], agreed: dict[str, dict]) -> str:
    """The fastest form that agrees with fp32; a low form only when it beats fp32 by MIN_GAIN."""
    ok = {k: v for k, v in timings.items() if k == "fp32" or agreed.get(k, {}).get("ok")}
    best = min(ok, key=ok.get)
    return "fp32" if best != "fp32" and ok[best] > timings["fp32"] * (1 - MIN_GAIN) else best


def measure(model: nn.Module, make_optimizer: Callable[[nn.Module], torch.optim.Optimizer], criterion,
            images: torch.Tensor, targets, channels_last: bool, optimizer_name: str) -> dict:
    """{"chosen", "ms": {form: ms}, "agreement": {form: {...}}, "cached", "seconds"} for one training setup
    (`images`, `targets`: a batch as the loader gives it, on the training device)."""
    names = candidates(model)
    if names == ["fp32"]:
        return {"chosen": "fp32", "ms": {}, "agreement": {}, "cached": False,
                "why": "no bf16 instructions on this CPU"}
    key = measured.key(what="train.amp", arch=getattr(model, "pixelwise_arch", None), batch=list(images.shape),
                       channels_last=channels_last, optimizer=optimizer_name, check="seeded")  # not the unseeded check's
    hit = measured.lookup(key)
    if hit is not None and hit.get("chosen") in names:
        return {**hit, "cached": True}
    start = time.perf_counter()
    reference = _gradient(copy.deepcopy(model).train(), criterion, images, targets, None)
    agreed = {form: agreement(model, criterion, images, targets, form, reference) for form in names[1:]}
    timings = {form: round(time_steps(model, make_optimizer, criterion, images, targets, form), 1) for form in names}
    decision = {"chosen": choose(timings, agreed), "ms": timings, "agreement": agreed,
                "seconds": round(time.perf_counter() - start, 1)}
    log.info("train.amp auto: %s (%s ms per step)", decision["chosen"],
             ", ".join(f"{k} {v:g}" for k, v in timings.items()))
    measured.store(key, decision)
    return {**decision, "cached": False}


def describe(decision: dict) -> str:
    """One line for the training log: the form chosen and what it was chosen over."""
    if not decision.get("ms"):
        return f"train.amp auto: {decision['chosen']} ({decision.get('why', 'not measured')})"
    timed = ", ".join(f"{k} {v:g} ms" for k, v in decision["ms"].items())
    bad = [k for k, a in decision.get("agreement", {}).items() if not a.get("ok")]
    note = f"; {', '.join(bad)} disagreed with fp32" if bad else ""
    return (f"train.amp auto: {decision['chosen']} ({timed} per step{note}"
            f"{', cached' if decision.get('cached') else ''})")
