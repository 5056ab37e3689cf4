"""Colour jitter as one affine colour map: brightness, contrast, saturation and hue in one pass.

torchvision's ColorJitter applies its four adjustments one after another in a random order, each a pass
over the image, and shifts hue through an RGB -> HSV -> RGB round trip, which is most of the cost of the
training augmentation on a CPU (about 5 ms of a 224 x 224 crop's 6, measured by
`benchmarks/train_throughput.py --augment`). Each adjustment is itself an affine map of the RGB vector, so
their product is one too: a 3 x 3 matrix and an offset applied once.

    brightness b:  x -> b x
    contrast c:    x -> c x + (1 - c) mean(gray(x))      (the image's mean grey level, as torchvision)
    saturation s:  x -> s x + (1 - s) gray(x)             (gray = 0.299 R + 0.587 G + 0.114 B)
    hue h:         a rotation by 2 pi h about the grey axis in YIQ space (luma kept)

Departures from torchvision, on purpose: the order is fixed (brightness, contrast, saturation, hue), the
values are clamped once at the end instead of after each step, and the hue shift is the YIQ rotation (the
one image libraries use for a linear hue shift) rather than HSV's piecewise one. The factors are drawn as
torchvision draws them: b, c, s uniform in [1 - strength, 1 + strength], h uniform in [-hue, hue].
"""
from __future__ import annotations

import math
import random

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

GRAY = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64)


def hue_matrix(h: float) -> torch.Tensor:
    """(3, 3) RGB -> RGB rotation of the hue by h turns (YIQ rotation, luma unchanged), turning the way
    torchvision's adjust_hue turns for the same h."""
    a = -2 * math.pi * h
    rot = torch.tensor([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]], dtype=torch.float64)
    return torch.linalg.inv(_YIQ) @ rot @ _YIQ


def colour_map(image: torch.Tensor, b: float, c: float, s: float, h: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(matrix (3, 3), offset (3,)) of the adjustments on a (3, H, W) image in [0, 1] units: y = M x + o."""
    eye = torch.eye(3, dtype=torch.float64)
    gray_mean = float((GRAY.to(image.dtype) @ image.reshape(3, -1).mean(1)).item()) * b
    m = b * c * eye
    o = torch.full((3,), (1 - c) * gray_mean, dtype=torch.float64)
    sat = s * eye + (1 - s) * torch.ones(3, 1, dtype=torch.float64) * GRAY[None, :]
    m, o = sat @ m, sat @ o
    if h:
        hue = hue_matrix(h)
        m, o = hue @ m, hue @ o
    return m, o


def apply_colour(image: torch.Tensor, b: float, c: float, s: float, h: float) -> torch.Tensor:
    """A (3, H, W) uint8 or float [0, 1] image with the adjustments applied, same dtype."""
    integer = not image.is_floating_point()
    x = image.float().div_(255) if integer else image.float()
    m, o = colour_map(x, b, c, s, h)
    y = torch.einsum("ij,jhw->ihw", m.float(), x).add_(o.float().view(3, 1, 1)).clamp_(0, 1)
    return y.mul_(255).round_().to(image.dtype) if integer else y.to(image.dtype)


class AffineColorJitter(v2.Transform):
    """Random brightness, contrast, saturation (each in [1 - strength, 1 + strength]) and hue (in
    [-hue, hue] turns) as one affine colour map on images; masks pass through."""

    def __init__(self, strength: float, hue: float = 0.0):
        super().__init__()
        self.strength, self.hue = float(strength), float(hue)

    def make_params(self, flat_inputs):
        lo, hi = max(0.0, 1 - self.strength), 1 + self.strength
        return {"b": random.uniform(lo, hi), "c": random.uniform(lo, hi), "s": random.uniform(lo, hi),
                "h": random.uniform(-self.hue, self.hue) if self.hue else 0.0}

    def transform(self, inpt, params):
        if isinstance(inpt, tv_tensors.Image) or (type(inpt) is torch.Tensor and inpt.ndim == 3):
            out = apply_colour(inpt.as_subclass(torch.Tensor), params["b"], params["c"], params["s"], params["h"])
            return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.Image) else out
        return inpt
