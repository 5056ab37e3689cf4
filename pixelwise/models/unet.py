"""U-Net: the paper's plain encoder-decoder, and a timm-encoder variant with the same decoder.

Ronneberger, Fischer, Brox, "U-Net: Convolutional Networks for Biomedical Image Segmentation",
arXiv 1505.04597.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.errors import ModelError
from pixelwise.models.base import SegmentationModel, check_depth
from pixelwise.models.blocks import DoubleConv, resize
from pixelwise.models.encoders import check_in_chans, create_encoder

PAPER = "U-Net: Convolutional Networks for Biomedical Image Segmentation (arXiv 1505.04597)"


class PlainEncoder(nn.Module):
    """The paper's contracting path: a DoubleConv per level with a 2x2 max-pool before every level but
    the first; the first conv takes `in_chans` channels.
    (N, in_chans, H, W) -> [(N, widths[i], H / 2**i, W / 2**i) for each level]."""

    def __init__(self, widths: Sequence[int], in_chans: int = 3):
        super().__init__()
        self.in_chans = in_chans
        self.stages = nn.ModuleList(DoubleConv(cin, cout) for cin, cout in zip([in_chans, *widths[:-1]], widths))
        self.channels = list(widths)
        self.reductions = [2**i for i in range(len(widths))]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i, stage in enumerate(self.stages):
            x = stage(F.max_pool2d(x, 2) if i else x)
            features.append(x)
        return features


class UpBlock(nn.Module):
    """Upsample x`factor`, concatenate the skip feature (if any), DoubleConv.

    bilinear=False: a `factor` x `factor` transposed conv (stride `factor`) to `cout` channels, the paper's
    "up-convolution" that halves the channels; bilinear=True: bilinear interpolation, channels unchanged.
    (N, cin, h, w) + skip (N, cskip, h*f, w*f) -> (N, cout, h*f, w*f).
    """

    def __init__(self, cin: int, cskip: int, cout: int, factor: int = 2, bilinear: bool = False):
        super().__init__()
        self.factor = factor
        self.up = None if bilinear else nn.ConvTranspose2d(cin, cout, factor, stride=factor)
        self.conv = DoubleConv((cin if bilinear else cout) + cskip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.up is not None:
            x = self.up(x)
        else:
            size = skip.shape[-2:] if skip is not None else [s * self.factor for s in x.shape[-2:]]
            x = resize(x, size)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv(x)


class UNetDecoder(nn.Module):
    """Expanding path over encoder features (shallow to deep, with their channels and reductions): from the
    deepest map, one UpBlock per shallower feature (its skip), then UpBlocks without skip until stride 1
    when the shallowest feature is coarser (timm encoders start at stride 2).
    list of features -> (N, decoder_channels[-1], H, W)."""

    def __init__(self, channels: Sequence[int], reductions: Sequence[int], decoder_channels: Sequence[int],
                 bilinear: bool = False):
        super().__init__()
        plan = [(c, reductions[i + 1] // reductions[i]) for i, c in enumerate(channels[:-1])][::-1]
        r = reductions[0]
        while r > 1:  # no skip left: keep doubling to full resolution
            plan.append((0, 2))
            r //= 2
        if len(decoder_channels) != len(plan):
            raise ModelError(f"unet: {len(plan)} decoder blocks need {len(plan)} decoder channels, "
                             f"got {list(decoder_channels)}")
        blocks, cin = [], channels[-1]
        for (cskip, factor), cout in zip(plan, decoder_channels):
            blocks.append(UpBlock(cin, cskip, cout, factor, bilinear))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = cin

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        skips = list(features[:-1])[::-1]
        x = features[-1]
        for i, block in enumerate(self.blocks):
            x = block(x, skips[i] if i < len(skips) else None)
        return x


def unet(num_classes: int, encoder: str | None = None, base_channels: int = 64, depth: int | None = None,
         bilinear: bool = False, in_chans: int = 3, pretrained=None) -> SegmentationModel:
    """U-Net (arXiv 1505.04597). (N, in_chans, H, W) -> logits (N, num_classes, H, W) for any H, W.

    encoder=None: the paper's network. Contracting path of `depth` (default 4) levels of two 3x3
    conv + ReLU and a 2x2 max-pool, widths base_channels * 2**i (64 ... 1024); expanding path of 2x2
    up-convolutions halving the channels, concatenation with the matching contracting feature, two 3x3
    convs; a 1x1 conv to the classes. About 31M parameters at 64 base channels.
    Departures from the paper, and why:
      - 'same' padding instead of unpadded ('valid') convs: output = input size with no crop of the skip
        maps and no overlap-tile strategy, so tiles and whole images use one code path;
      - batch norm after every conv (the paper predates it): trains reliably from scratch at the
        learning rates the other models use;
      - bilinear=True replaces the up-convolution by bilinear upsampling (the popular variant).
    encoder="resnet34" (any timm name): that backbone's features feed the same expanding path, as in
    segmentation_models.pytorch; decoder widths 4*base_channels halving per block (256 ... 16 at the
    default), extra blocks without skip reach full resolution. depth (default: all levels) keeps the
    encoder features up to stride 2**depth. pretrained: see `create_encoder`.
    in_chans: input channels (1..64, e.g. multispectral bands); the first conv takes them (a timm encoder's
    pretrained RGB stem is adapted, see `create_encoder`).
    """
    check_in_chans("unet", in_chans)
    if base_channels < 1:
        raise ModelError(f"unet: base_channels must be positive, got {base_channels}")
    if encoder is None:
        depth = check_depth("unet", 4 if depth is None else depth)
        if pretrained not in (None, False):
            raise ModelError("unet: pretrained weights need a timm encoder (encoder='resnet34', ...)")
        widths = [base_channels * 2**i for i in range(depth + 1)]
        enc = PlainEncoder(widths, in_chans)
        decoder_channels = widths[:-1][::-1]
    else:
        keep = None
        if depth is not None:
            check_depth("unet", depth)
            with torch.device("meta"):  # reductions only: no memory, no init cost
                reductions = create_encoder(encoder).reductions
            keep = [i for i, r in enumerate(reductions) if r <= 2**depth]
            if not keep or depth < 1:
                raise ModelError(f"unet: depth={depth} keeps no feature of encoder {encoder!r} "
                                 f"(reductions {reductions})")
        enc = create_encoder(encoder, pretrained=pretrained, in_chans=in_chans, out_indices=keep)
        n_blocks = len(enc.channels) - 1 + (enc.reductions[0].bit_length() - 1)
        decoder_channels = [max(base_channels * 4 >> i, 1) for i in range(n_blocks)]
    decoder = UNetDecoder(enc.channels, enc.reductions, decoder_channels, bilinear)
    head = nn.Conv2d(decoder.out_channels, num_classes, 1)
    return SegmentationModel(enc, decoder, head, num_classes, stride=max(enc.reductions), encoder_name=encoder)
