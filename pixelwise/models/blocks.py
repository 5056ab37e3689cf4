"""Building blocks shared by the architectures: conv-norm-act, separable convs, bilinear-initialised
transposed convs, ASPP, pyramid pooling and JPU.

Every block maps (N, C_in, H, W) -> (N, C_out, H', W'); shapes are given per block.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of (N, C, H, W) to `size` (no-op when it already has that size)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class ConvNormAct(nn.Sequential):
    """Conv2d -> BatchNorm2d -> ReLU, 'same' padding for odd kernels. (N, cin, H, W) -> (N, cout, H/s, W/s).

    `norm=False` gives a biased conv; `act=False` leaves out the ReLU.
    """

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1,
                 groups: int = 1, norm: bool = True, act: bool = True):
        padding = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel_size, stride, padding, dilation, groups, bias=not norm)]
        if norm:
            layers.append(nn.BatchNorm2d(cout))
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class SeparableConv(nn.Sequential):
    """Depthwise-separable conv: depthwise k x k (dilated) -> BN [-> ReLU] -> pointwise 1x1 -> BN -> ReLU.

    With `mid_act=True` (default) it is DeepLabV3+'s `split_separable_conv2d` (arXiv 1802.02611); FastFCN's
    JPU has no ReLU between the two convs (`mid_act=False`). (N, cin, H, W) -> (N, cout, H, W).
    """

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, dilation: int = 1, mid_act: bool = True):
        super().__init__(
            ConvNormAct(cin, cin, kernel_size, dilation=dilation, groups=cin, act=mid_act),
            ConvNormAct(cin, cout, 1),
        )


class DoubleConv(nn.Sequential):
    """Two 3x3 ConvNormAct, the U-Net stage (arXiv 1505.04597). (N, cin, H, W) -> (N, cout, H, W)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(ConvNormAct(cin, cout), ConvNormAct(cout, cout))


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """Weights (channels, channels, k, k) of a per-channel bilinear upsampler, as FCN initialises its
    deconvolutions (the `upsample_filt` of the FCN reference code, arXiv 1411.4038)."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = torch.arange(kernel_size, dtype=torch.float32)
    filt1d = 1 - (og - center).abs() / factor
    filt = filt1d[:, None] * filt1d[None, :]
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = filt
    return weight


class BilinearConvTranspose(nn.ConvTranspose2d):
    """Learnable transposed conv (no bias) upsampling by `factor`, initialised to bilinear interpolation.

    Kernel 2*factor, padding factor/2, so (N, C, H, W) -> (N, C, H*factor, W*factor) exactly.
    """

    def __init__(self, channels: int, factor: int):
        super().__init__(channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.copy_(bilinear_kernel(self.in_channels, self.kernel_size[0]))


class ASPPPooling(nn.Module):
    """Image-level branch of ASPP: global average pool -> 1x1 ConvNormAct -> broadcast to (H, W)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = ConvNormAct(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(F.adaptive_avg_pool2d(x, 1))
        return y.expand(-1, -1, *x.shape[-2:])


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling of DeepLabV3 (arXiv 1706.05587) with batch norm and image pooling:
    1x1 branch, one 3x3 branch per rate, image pooling; concatenated and projected by a 1x1 conv.

    `separable=True` uses depthwise-separable 3x3 branches as in DeepLabV3+ (arXiv 1802.02611).
    (N, cin, H, W) -> (N, cout, H, W).
    """

    def __init__(self, cin: int, cout: int = 256, rates: Sequence[int] = (6, 12, 18),
                 separable: bool = False, dropout: float = 0.1):
        super().__init__()
        branches: list[nn.Module] = [ConvNormAct(cin, cout, 1)]
        for rate in rates:
            branches.append(SeparableConv(cin, cout, 3, rate) if separable else ConvNormAct(cin, cout, 3, dilation=rate))
        branches.append(ASPPPooling(cin, cout))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(ConvNormAct(len(branches) * cout, cout, 1), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class PyramidPooling(nn.Module):
    """Pyramid pooling module of PSPNet (arXiv 1612.01105): average-pool to each bin size, 1x1
    ConvNormAct to cin/len(bins) channels, upsample, concatenate with the input.
    (N, cin, H, W) -> (N, 2 * cin, H, W) for the default 4 bins."""

    def __init__(self, cin: int, bins: Sequence[int] = (1, 2, 3, 6)):
        super().__init__()
        self.bins = tuple(bins)
        self.convs = nn.ModuleList(ConvNormAct(cin, cin // len(self.bins), 1) for _ in self.bins)
        self.out_channels = cin + len(self.bins) * (cin // len(self.bins))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [resize(conv(F.adaptive_avg_pool2d(x, b)), size) for b, conv in zip(self.bins, self.convs)]
        return torch.cat([x, *pooled], dim=1)


class JPU(nn.Module):
    """Joint Pyramid Upsampling of FastFCN (arXiv 1903.11816, its `JPU` module).

    Takes the stride-8/16/32 features of an undilated backbone, projects each to `width` channels
    (3x3 ConvNormAct), upsamples to stride 8, concatenates, and runs four parallel dilated (1, 2, 4, 8)
    separable convs whose outputs are concatenated: (N, 4*width, H/8, W/8).
    """

    def __init__(self, in_channels: Sequence[int], width: int = 512, dilations: Sequence[int] = (1, 2, 4, 8)):
        super().__init__()
        self.projections = nn.ModuleList(ConvNormAct(c, width, 3) for c in in_channels)
        cat = len(in_channels) * width
        self.dilated = nn.ModuleList(SeparableConv(cat, width, 3, d, mid_act=False) for d in dilations)
        self.out_channels = len(dilations) * width

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[-2:]
        feats = [resize(proj(f), size) for proj, f in zip(self.projections, features)]
        x = torch.cat(feats, dim=1)
        return torch.cat([conv(x) for conv in self.dilated], dim=1)


class FCNHead(nn.Sequential):
    """3x3 ConvNormAct to cin/4 -> dropout 0.1 -> 1x1 classifier, the auxiliary / FCN head of PSPNet,
    EncNet and FastFCN. (N, cin, H, W) -> (N, num_classes, H, W)."""

    def __init__(self, cin: int, num_classes: int, dropout: float = 0.1):
        mid = max(cin // 4, 1)
        super().__init__(ConvNormAct(cin, mid, 3), nn.Dropout(dropout), nn.Conv2d(mid, num_classes, 1))


class AuxHead(nn.Module):
    """Deep-supervision head: picks `features[index]` from the encoder's feature list and classifies it with
    an FCNHead. (list of (N, C_i, H_i, W_i)) -> (N, num_classes, H_index, W_index)."""

    def __init__(self, cin: int, num_classes: int, index: int):
        super().__init__()
        self.index = index
        self.head = FCNHead(cin, num_classes)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.head(features[self.index])
