"""Depthwise convolutions kept in float32 under bf16 autocast (a training form `train.amp: auto` times).

On CPU, oneDNN's bf16 depthwise convolution is fast forward but slow backward: the weight and input
gradients of a 5x5 depthwise layer of EfficientNet-Lite ran 5-10x slower in bf16 than in fp32
channels_last (`benchmarks/train_throughput.py --depthwise` measures it). A depthwise layer does little
arithmetic, so it gains nothing from bf16 anyway; run in fp32, it takes its input in fp32 and hands fp32
on, and the next layer's autocast casts back to bf16. This changes no weights and no state-dict keys:
each depthwise module's class becomes a subclass of its own class (timm's `Conv2dSame` keeps its padding)
whose forward runs with autocast off.
"""
from __future__ import annotations

import torch
from torch import nn

_CLASSES: dict[type, type] = {}


class Float32Depthwise:
    """Mixin: the module's own forward, in float32 with autocast off."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


def is_depthwise(module: nn.Module) -> bool:
    """A 2-D convolution with one filter per input channel (groups == in == out channels > 1)."""
    return (isinstance(module, nn.Conv2d) and not isinstance(module, Float32Depthwise)
            and module.groups > 1 and module.groups == module.in_channels == module.out_channels)


def _float32_class(cls: type) -> type:
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"Float32{cls.__name__}", (Float32Depthwise, cls), {"__module__": __name__})
    return _CLASSES[cls]


def count_depthwise(model: nn.Module) -> int:
    return sum(is_depthwise(m) for m in model.modules())


def float32_depthwise(model: nn.Module) -> int:
    """Make every depthwise convolution of `model` (in place) run in float32 under autocast; returns how
    many were changed."""
    n = 0
    for module in model.modules():
        if is_depthwise(module):
            module.__class__ = _float32_class(type(module))
            n += 1
    return n
