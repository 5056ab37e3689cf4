"""SegNet and SegNet-Basic: decoders that upsample with the encoder's max-pooling indices.

Badrinarayanan, Kendall, Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder Architecture for Image
Segmentation", arXiv 1511.00561.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.errors import ModelError
from pixelwise.models.base import SegmentationModel, check_depth
from pixelwise.models.blocks import ConvNormAct
from pixelwise.models.encoders import check_in_chans, create_encoder

PAPER = ("SegNet: A Deep Convolutional Encoder-Decoder Architecture for Image Segmentation "
         "(arXiv 1511.00561)")

# 3x3 convs per stage of the VGG configurations (timm names vgg11 ... vgg19, with or without _bn).
_VGG_CONVS = {"vgg11": (1, 1, 2, 2, 2), "vgg13": (2, 2, 2, 2, 2), "vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}


class SegNetDecoder(nn.Module):
    """Mirror of a VGG encoder. Takes the five pre-pooling maps (strides 1 ... 16); pools each 2x2 to get the
    pooling indices the encoder used (max-pooling is deterministic, so they are the encoder's), then from
    pool5: unpool with the stage's indices (`max_unpool2d`: values to their argmax, zeros elsewhere), and
    the stage's convs in reverse, the last one stepping down to the next shallower stage's channels
    (the shallowest stage ends one conv short: the classifier head takes its place).
    No skip features: only indices cross from encoder to decoder. -> (N, channels[0], H, W).
    """

    def __init__(self, channels: Sequence[int], convs: Sequence[int]):
        super().__init__()
        stages = []
        for i in reversed(range(len(channels))):
            layers = [ConvNormAct(channels[i], channels[i]) for _ in range(convs[i] - 1)]
            if i:  # the first stage's last conv is the classifier (the model's head)
                layers.append(ConvNormAct(channels[i], channels[i - 1]))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        pooled = [F.max_pool2d(f, 2, return_indices=True) for f in features]
        x = pooled[-1][0]
        for stage, feat, (_, idx) in zip(self.stages, reversed(features), reversed(pooled)):
            x = stage(F.max_unpool2d(x, idx, 2, output_size=feat.shape[-2:]))
        return x


def segnet(num_classes: int, encoder: str = "vgg16_bn", in_chans: int = 3, pretrained=None) -> SegmentationModel:
    """SegNet (arXiv 1511.00561). (N, in_chans, H, W) -> logits (N, num_classes, H, W) for any H, W.

    Encoder: the 13 conv layers of VGG16 with batch norm (timm "vgg16_bn"; other VGGs work too), five
    2x2 max-pools whose indices are kept. Decoder: for each stage, deepest first, max-unpooling with those
    indices followed by the mirrored 3x3 conv + BN + ReLU layers; a 3x3 conv classifier on the last
    64-channel map, as in the reference Caffe model. About 29.4M parameters (the paper: 29.5M).
    Departure: none in the layers; the paper's median-frequency class balancing belongs to the loss.
    in_chans: input channels of VGG's first conv (pretrained RGB weights adapted, see `create_encoder`).
    """
    check_in_chans("segnet", in_chans)
    base = encoder.split(".")[0].removesuffix("_bn")
    if base not in _VGG_CONVS:
        raise ModelError(f"segnet: encoder must be a VGG (vgg11/13/16/19, with _bn), got {encoder!r}")
    enc = create_encoder(encoder, pretrained=pretrained, in_chans=in_chans, out_indices=(0, 1, 2, 3, 4))
    decoder = SegNetDecoder(enc.channels, _VGG_CONVS[base])
    head = nn.Conv2d(enc.channels[0], num_classes, 3, padding=1)
    return SegmentationModel(enc, decoder, head, num_classes, stride=32, encoder_name=encoder)


class BasicEncoder(nn.Module):
    """SegNet-Basic's encoder: `depth` x (7x7 conv 64 + BN + ReLU, 2x2 max-pool keeping indices), the first
    conv on `in_chans` channels. (N, in_chans, H, W) -> [(pooled map, indices, pre-pool size) per layer]."""

    def __init__(self, width: int = 64, depth: int = 4, in_chans: int = 3):
        super().__init__()
        self.in_chans = in_chans
        self.layers = nn.ModuleList(ConvNormAct(in_chans if i == 0 else width, width, 7) for i in range(depth))
        self.channels = [width] * depth
        self.reductions = [2**i for i in range(depth)]

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for layer in self.layers:
            x = layer(x)
            size = x.shape[-2:]
            x, idx = F.max_pool2d(x, 2, return_indices=True)
            out.append((x, idx, size))
        return out


class BasicDecoder(nn.Module):
    """SegNet-Basic's decoder: per layer, deepest first, max-unpool with the encoder's indices and a 7x7
    conv + BN, with no ReLU (the paper's choice for the basic model). -> (N, width, H, W)."""

    def __init__(self, width: int = 64, depth: int = 4):
        super().__init__()
        self.layers = nn.ModuleList(ConvNormAct(width, width, 7, act=False) for _ in range(depth))

    def forward(self, encoded: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Size]]) -> torch.Tensor:
        x = encoded[-1][0]
        for layer, (_, idx, size) in zip(self.layers, reversed(encoded)):
            x = layer(F.max_unpool2d(x, idx, 2, output_size=size))
        return x


def segnet_basic(num_classes: int, width: int = 64, depth: int = 4, in_chans: int = 3) -> SegmentationModel:
    """SegNet-Basic (arXiv 1511.00561, the smaller model of its CamVid analysis).
    (N, in_chans, H, W) -> logits (N, num_classes, H, W) for any H, W.

    Four encoders (7x7 conv, 64 features, BN, ReLU, 2x2 max-pool) and four decoders (max-unpool with the
    encoder's indices, 7x7 conv, BN, no ReLU), then a 1x1 conv classifier. About 1.4M parameters.
    Departure: the local contrast normalisation layer on the input is left out (inputs are normalised
    by the data pipeline). in_chans: input channels of the first conv (1..64, e.g. multispectral bands).
    """
    check_depth("segnet_basic", depth)
    check_in_chans("segnet_basic", in_chans)
    if width < 1:
        raise ModelError(f"segnet_basic: width must be positive, got {width}")
    head = nn.Conv2d(width, num_classes, 1)
    return SegmentationModel(BasicEncoder(width, depth, in_chans), BasicDecoder(width, depth), head, num_classes,
                             stride=2**depth)
