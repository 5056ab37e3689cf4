"""FastFCN: Joint Pyramid Upsampling (JPU) on an undilated backbone, with an ASPP or FCN head.

Wu, Zhang, Huang, Liang, Yu, "FastFCN: Rethinking Dilated Convolution in the Backbone for Semantic
Segmentation", arXiv 1903.11816.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pixelwise.errors import ModelError
from pixelwise.models.base import SegmentationModel
from pixelwise.models.blocks import ASPP, JPU, AuxHead, ConvNormAct, FCNHead
from pixelwise.models.encoders import check_in_chans, create_encoder

PAPER = "FastFCN: Rethinking Dilated Convolution in the Backbone for Semantic Segmentation (arXiv 1903.11816)"


class JPUDecoder(nn.Module):
    """Runs the JPU on the encoder features at strides 8, 16, 32 (by index). -> (N, 4*width, H/8, W/8)."""

    def __init__(self, channels: Sequence[int], indices: Sequence[int], width: int):
        super().__init__()
        self.indices = list(indices)
        self.jpu = JPU([channels[i] for i in self.indices], width)
        self.out_channels = self.jpu.out_channels

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.jpu([features[i] for i in self.indices])


def fastfcn(num_classes: int, encoder: str = "resnet50", head: str = "aspp", width: int = 512, aux: bool = True,
            in_chans: int = 3, pretrained=None) -> SegmentationModel:
    """FastFCN (arXiv 1903.11816). (N, in_chans, H, W) -> logits (N, num_classes, H, W) for any H, W.

    The backbone runs undilated (output stride 32, the speed-up the paper is about); the JPU takes its
    stride 8/16/32 features, projects each to `width` (512) channels, upsamples them to stride 8 and mixes
    them with four parallel separable convs dilated 1/2/4/8, giving 4*width channels at stride 8.
    head="aspp": the paper's DeepLabV3 head (ASPP at rates 12/24/36 to 256 channels, 3x3 conv, 1x1
    classifier); head="fcn": the FCN head (3x3 conv to a quarter of the channels, 1x1 classifier).
    aux=True (default, as in the FastFCN recipes) adds an FCN head on the stride-16 stage; in training
    mode the model returns {"out", "aux"}. Default backbone ResNet-50 (the paper's ablations; ResNet-101
    for its final results). in_chans: input channels of the backbone's first conv (pretrained RGB weights
    adapted, see `create_encoder`).
    """
    check_in_chans("fastfcn", in_chans)
    if head not in ("aspp", "fcn"):
        raise ModelError(f"fastfcn: head must be 'aspp' or 'fcn', got {head!r}")
    enc = create_encoder(encoder, pretrained=pretrained, in_chans=in_chans)
    indices = []
    for stride in (8, 16, 32):
        if stride not in enc.reductions:
            raise ModelError(f"fastfcn: encoder {encoder!r} has no stride-{stride} feature ({enc.reductions})")
        indices.append(max(i for i, r in enumerate(enc.reductions) if r == stride))
    decoder = JPUDecoder(enc.channels, indices, width)
    cin = decoder.out_channels
    if head == "aspp":
        inter = cin // 8
        head_module = nn.Sequential(ASPP(cin, inter, (12, 24, 36), dropout=0.5), ConvNormAct(inter, inter, 3),
                                    nn.Dropout(0.1), nn.Conv2d(inter, num_classes, 1))
    else:
        head_module = FCNHead(cin, num_classes)
    aux_head = AuxHead(enc.channels[indices[1]], num_classes, indices[1]) if aux else None
    return SegmentationModel(enc, decoder, head_module, num_classes, stride=32, aux_head=aux_head,
                             encoder_name=encoder)
