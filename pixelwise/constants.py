"""Values every layer of pixelwise shares, written down once.

IGNORE_INDEX: the one void label inside the library; every dataset format maps its own void value to it
when it loads (CamVid 11 -> 255, ADE20K 0 -> 255), losses skip it and metrics leave it out.
IMAGENET_MEAN / IMAGENET_STD: the per-channel normalisation of torchvision's and timm's ImageNet weights
(RGB, images scaled to 0..1), the default where a model's own weights say nothing else.
"""
from __future__ import annotations

IGNORE_INDEX = 255
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
