"""precision="auto" on a CPU, measured: which precision runs this model fastest here, at this input size.

A CPU flag says whether bf16 instructions exist, not whether they pay: on the same recipe bf16 has been
faster than fp32 on one kind of CPU here and slower on another. So "auto" times the fast-path model in each
candidate precision and keeps the fastest; the Predictor then checks a low-precision winner against fp32 on
its check images (the training set's, else a synthetic scene) and falls back when it disagrees.

- Candidates: fp32 always; bf16 where the CPU has bf16 instructions (`cpu_has_fast_bf16`; elsewhere bf16 is
  emulated in software and is not worth the timing); int8 where the model directory holds the int8 graph
  of `pixelwise export MODEL_DIR --int8` (`pixelwise.modeldir.INT8_NAME`, run by onnxruntime; its argmax
  agreement with fp32 was checked on held-out training images when it was written). The environment
  variable PIXELWISE_AUTO_CANDIDATES (e.g. "fp32,int8") narrows the list: a CPU without bf16 simulated on
  one that has it, for benchmarks.
- Timing: a (1, C, S, S) input, S the tile size when one is set (what every call will see, up to the
  Predictor's TIMING_SIZE_MAX) else CALIBRATION_SIZE; one warm-up call, then the median of REPEATS calls. bf16 must beat fp32 by MIN_GAIN to
  be chosen (within the noise, fp32 is exact and wins).
- Cache: the decision and its timings, keyed by (architecture record, input channels, size, CPU model,
  torch version, threads), in the measured-decisions file of `pixelwise.measured`, so a second run does
  not pay again. An explicit precision ("fp32", "bf16") skips all of this.
"""
from __future__ import annotations

import logging
import os
import statistics
import time

import torch

from pixelwise import measured
from pixelwise.precision import DTYPES

REPEATS = 3
MIN_GAIN = 0.05  # a low precision must be at least 5% faster than fp32 to be chosen
log = logging.getLogger("pixelwise.inference")


def candidates(int8: bool = False) -> list[str]:
    """The precisions worth timing on this CPU (int8: an int8 graph is at hand), narrowed by
    PIXELWISE_AUTO_CANDIDATES when it is set (fp32 always stays: it is the reference)."""
    from pixelwise.hardware import cpu_has_fast_bf16

    names = ["fp32"] + (["bf16"] if cpu_has_fast_bf16() else []) + (["int8"] if int8 else [])
    forced = os.environ.get("PIXELWISE_AUTO_CANDIDATES")
    if forced:
        allowed = {n.strip() for n in forced.split(",")}
        names = [n for n in names if n == "fp32" or n in allowed]
    return names


def time_model(model, x: torch.Tensor, repeats: int = REPEATS) -> float:
    """Median milliseconds of `model(x)` over `repeats` calls, after one warm-up call."""
    with torch.inference_mode():
        model(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def choose(timings: dict[str, float]) -> str:
    """The fastest precision of {name: ms}; a low one only when it beats fp32 by MIN_GAIN."""
    best = min(timings, key=timings.get)
    if best != "fp32" and timings[best] > timings["fp32"] * (1 - MIN_GAIN):
        return "fp32"
    return best


def cache_key(arch: dict | None, channels: int, size: int, names: list[str] | None = None,
              int8_id: str | None = None) -> str:
    extra = {"candidates": names, "int8_graph": int8_id} if names and "int8" in names else {}
    return measured.key(arch=arch, channels=channels, size=size, **extra)


def measure(prepare, arch: dict | None, channels: int, size: int, device: torch.device, int8=None) -> dict:
    """{"chosen", "ms": {precision: ms}, "size", "cached"}: `prepare(dtype)` builds the fast-path model in a
    precision; `int8`, when given, is the int8 graph (an OnnxModel: called on normalised float32 tensors,
    its `version` part of the cache key). The decision comes from the cache when it holds this key."""
    names = candidates(int8 is not None)
    if names == ["fp32"]:
        return {"chosen": "fp32", "ms": {}, "size": size, "cached": False,
                "why": "no bf16 instructions on this CPU and no int8 graph"}
    key = cache_key(arch, channels, size, names, int8.version if int8 is not None else None)
    hit = measured.lookup(key)
    if hit is not None and hit.get("chosen") in names:
        return {**hit, "cached": True}
    x = torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(0))
    timings = {}
    for name in names:
        if name == "int8":
            model, xin = int8, x.to(device)
        else:
            model = prepare(DTYPES[name])
            xin = x.to(device, DTYPES[name]).contiguous(memory_format=torch.channels_last)
        timings[name] = round(time_model(model, xin), 3)
        del model
    decision = {"chosen": choose(timings), "ms": timings, "size": size}
    log.info("precision auto: %s (%s ms at %dx%d)", decision["chosen"],
             ", ".join(f"{k} {v:g}" for k, v in timings.items()), size, size)
    measured.store(key, decision)
    return {**decision, "cached": False}
