"""The one precision resolver, for inference (`precision`) and for training (`train.amp`).

Names: "fp32" (also spelled "off", the training spelling), "bf16", "fp16", and "auto". "auto" means
bf16 on CUDA (fp16 where the GPU has no bf16), bf16 on CPUs whose bf16 matrix work runs natively
(`pixelwise.hardware.cpu_has_fast_bf16`), fp32 elsewhere. The callers check a low-precision choice
against fp32 before they trust it (the Predictor's calibration, the trainer's validation in fp32). On a CPU
the Predictor does not stop at the flag: it times the candidates (`pixelwise.inference.autoprecision`).
"""
from __future__ import annotations

import torch

from pixelwise.errors import ConfigError

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
ALIASES = {"off": "fp32"}
CHOICES = ("auto", "off", *DTYPES)


def resolve_precision(value: str, device: str | torch.device, what: str = "precision") -> str:
    """'auto' | 'off' | 'fp32' | 'bf16' | 'fp16' on `device` -> 'fp32' | 'bf16' | 'fp16'.

    `what` names the setting in errors (e.g. "config key 'train.amp'"); a bad value or fp16 without CUDA
    is a ConfigError naming it."""
    device = torch.device(device)
    name = ALIASES.get(value, value) if isinstance(value, str) else value
    if name == "int8":
        raise ConfigError(f"{what}: int8 runs as a quantized ONNX graph: write it into the model directory with "
                          "`pixelwise export MODEL_DIR --int8` (then precision int8 or auto finds it), or to a "
                          "file with --onnx model.int8.onnx and predict with that file")
    if name != "auto" and name not in DTYPES:
        raise ConfigError(f"{what}: unknown value {value!r} (expected one of {', '.join(CHOICES)})")
    if name == "fp16" and device.type != "cuda":
        raise ConfigError(f"{what}: fp16 needs a CUDA device; use bf16 or fp32 on {device.type}")
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu":
        from pixelwise.hardware import cpu_has_fast_bf16

        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def autocast_dtype(value: str, device: str | torch.device, what: str = "config key 'train.amp'") -> torch.dtype | None:
    """The training autocast dtype of a precision name: None for fp32 (no autocast), else bf16 / fp16.
    Weights and optimizer state stay fp32 either way."""
    name = resolve_precision(value, device, what)
    return None if name == "fp32" else DTYPES[name]
