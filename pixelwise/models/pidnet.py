"""PIDNet: a three-branch real-time network, Proportional (detail), Integral (context), Derivative (boundary).

Xu, Xiong, Bhattacharyya, "PIDNet: A Real-time Semantic Segmentation Network Inspired by PID Controllers",
arXiv 2206.02066.

The layout follows the official code (github XuJiacong/PIDNet, models/pidnet.py and models/model_utils.py);
the body's module names are the official ones (`conv1`, `layer1`..`layer5`, `layer3_`..`layer5_`,
`layer3_d`..`layer5_d`, `compression3/4`, `pag3/4`, `diff3/4`, `spp`, `dfm`), so the official ImageNet
checkpoints (PIDNet_{S,M,L}_ImageNet.pth.tar) load into the body by key (`load_official_weights`).

Variants (the official `get_seg_model`): width c = `planes`, m / n = BasicBlocks per shallow / deep stage:
    S: c=32, m=2, n=3, PAPPM of 96, Light-Bag, head 128        M: c=64, m=2, n=3, PAPPM of 96, Light-Bag, head 128
    L: c=64, m=3, n=4, DAPPM of 112, Bag, head 256

Shapes for an input (N, C, H, W) with H and W multiples of 64 (SegmentationModel pads to that):
    stem `conv1` (two 3x3 s2 conv-BN-ReLU, with bias as the official) and `layer1` (m BasicBlocks) -> (N, c, H/4)
    `layer2` (m BasicBlocks, s2) -> (N, 2c, H/8): the P and D branches start here.
    I branch: `layer3` (n, s2) -> (N, 4c, H/16); `layer4` (n, s2) -> (N, 8c, H/32); `layer5` (2 Bottlenecks,
        s2, expansion 2) -> (N, 16c, H/64); `spp` (PAPPM for S/M, DAPPM for L: average pools 5/2, 9/4, 17/8
        with padding k // 2 and a global pool) -> (N, 4c, H/64), upsampled to H/8.
    P branch (H/8): `layer3_` (m BasicBlocks, 2c), Pag `pag3` with the I feature `compression3(layer3)`
        (1x1 conv-BN 4c -> 2c): sigma = sigmoid(sum_c f_x(p) * up(f_y(i))), p' = (1 - sigma) p + sigma up(i);
        `layer4_` (m), `pag4` with `compression4(layer4)`; `layer5_` (1 Bottleneck) -> (N, 4c, H/8).
    D branch (H/8): `layer3_d` (1 BasicBlock to c, S/M; 2c, L) + up(`diff3`(layer3)); `layer4_d` (1 Bottleneck to
        2c, S/M; 1 BasicBlock, L) + up(`diff4`(layer4)) (3x3 conv-BN, from the I branch); `layer5_d` (1 Bottleneck)
        -> (N, 4c, H/8).
    `dfm`: Light-Bag (S/M) conv_p((1 - s) i + p) + conv_i(i + s p), or Bag (L) conv3x3(BN-ReLU(s p + (1 - s) i)),
        s = sigmoid(d) -> (N, 4c, H/8).
    Seg head `final_layer` (official `segmenthead`): BN-ReLU-3x3 conv to head width, BN-ReLU-1x1 classifier
        (with bias) -> (N, num_classes, H/8, W/8), upsampled bilinearly to the input by SegmentationModel.
    Training-only heads (aux=True): P head `seghead_p` (segmenthead 2c -> head width -> num_classes) on the P
        branch after Pag 3, returned as "aux" (the semantic loss weighs its CE 0.4, as the paper's lambda_0);
        boundary head `seghead_d` (segmenthead 2c -> c -> 1) on the D branch after stage 4, returned as
        "boundary" (weighted BCE x 20 there, and the boundary-aware CE where sigmoid(boundary) > 0.8).

The body returns [P feature for the P head (N, 2c, H/8), D feature for the boundary head (N, 2c, H/8), fused
feature (N, 4c, H/8)]; the decoder picks the last, so eval mode never runs the training-only heads (they are
absent with aux=False).

Departures, each stated:
- The official forward keeps `temp_p = x_` / `temp_d = x_d` and then applies an in-place ReLU to those tensors
  before the next stage, so its P and boundary heads actually see ReLU'd features; here the ReLU is applied
  out of place and the ReLU'd features are returned for the heads: the same numbers, without in-place
  aliasing (which also keeps the body's outputs safe for the heads' autograd).
- Upsampling uses `resize` (bilinear, align_corners=False, the official `algc = False`) to the D branch's size;
  inputs are zero-padded to a multiple of 64 (the I branch's stride) and the logits cropped back, so the
  official `H // 8` sizes always agree.
- PagFM's unused options (`after_relu`, `with_channel`; PIDNet uses neither) and segmenthead's unused
  `scale_factor` are left out. The BN layers keep the official momentum 0.1 (PagFM / Bag BNs use PyTorch's
  default, also 0.1).
- Training mode needs batches of 2 or more: the PPM's global-pool branch (and, for inputs up to 64 px, the whole
  stride-64 stage) is batch-normalised over one value per sample.
- Parameter counts (19 classes): the paper's 7.6M (S) and 36.9M (L) are the inference model without the P and
  boundary heads (the official `get_pred_model`, augment=False): 7,625,715 and 36,939,571 here (with them
  7,720,935 and 37,314,311). For PIDNet-M the official configuration (m, n, C) = (2, 3, 64), PPM 96, head 128 (the
  official README and get_seg_model, also mmseg's pidnet-m config) gives 28,538,515 (28,763,111 with the heads)
  and 177.3 G multiply-adds at 1024x2048, not the paper's 34.4M / 197.4 GFLOPs; S (47.2 vs 47.6) and L (274.9 vs
  275.8) agree, so the paper's M row does not describe the released code. The code (and so the released
  checkpoints) is followed.
- Initialisation as the official: convs Kaiming normal (fan_out, ReLU), BN weight 1 / bias 0, conv biases
  PyTorch's default.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from pixelwise.constants import IMAGENET_MEAN, IMAGENET_STD
from pixelwise.errors import ModelError
from pixelwise.models.base import SegmentationModel
from pixelwise.models.blocks import resize
from pixelwise.models.body_weights import load_body_weights, load_head_weights
from pixelwise.models.encoders import check_in_chans

PAPER = ("PIDNet: A Real-time Semantic Segmentation Network Inspired by PID Controllers "
         "(arXiv 2206.02066)")

# The official get_seg_model: m, n (BasicBlocks per shallow / deep stage), planes, ppm_planes, head_planes.
VARIANTS: dict[str, dict[str, int]] = {
    "s": {"m": 2, "n": 3, "planes": 32, "ppm_planes": 96, "head_planes": 128},
    "m": {"m": 2, "n": 3, "planes": 64, "ppm_planes": 96, "head_planes": 128},
    "l": {"m": 3, "n": 4, "planes": 64, "ppm_planes": 112, "head_planes": 256},
}
STRIDE = 64  # the I branch's output stride
BN_MOMENTUM = 0.1


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN with a residual (1x1 conv-BN `downsample` when the shape changes), ReLU unless
    `no_relu`. (N, cin, H, W) -> (N, planes, H / stride, W / stride)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 no_relu: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _bn(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = _bn(planes)
        self.downsample = downsample
        self.no_relu = no_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + residual
        return out if self.no_relu else self.relu(out)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 conv-BN to 2 x planes (expansion 2) with a residual; no ReLU at the end unless
    `no_relu=False` (the official default is True). (N, cin, H, W) -> (N, 2 planes, H / stride, W / stride)."""

    expansion = 2

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 no_relu: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = _bn(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.no_relu = no_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out)) + residual
        return out if self.no_relu else self.relu(out)


def make_layer(block: type[BasicBlock] | type[Bottleneck], inplanes: int, planes: int, blocks: int,
               stride: int = 1) -> nn.Sequential:
    """The official `_make_layer`: `blocks` blocks, the first with stride and downsample, the last without ReLU
    (blocks after the first get no_relu=False except the last; the first keeps the block's default)."""
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                                   _bn(planes * block.expansion))
    layers = [block(inplanes, planes, stride, downsample)]
    inplanes = planes * block.expansion
    for i in range(1, blocks):
        layers.append(block(inplanes, planes, 1, no_relu=i == blocks - 1))
    return nn.Sequential(*layers)


def make_single_layer(block: type[BasicBlock] | type[Bottleneck], inplanes: int, planes: int,
                      stride: int = 1) -> nn.Module:
    """The official `_make_single_layer`: one block without the final ReLU."""
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                                   _bn(planes * block.expansion))
    return block(inplanes, planes, stride, downsample, no_relu=True)


class SegmentHead(nn.Module):
    """The official `segmenthead`: BN-ReLU-3x3 conv (no bias) to `interplanes`, BN-ReLU-1x1 conv (bias) to
    `outplanes`. (N, inplanes, H, W) -> (N, outplanes, H, W)."""

    def __init__(self, inplanes: int, interplanes: int, outplanes: int):
        super().__init__()
        self.bn1 = _bn(inplanes)
        self.conv1 = nn.Conv2d(inplanes, interplanes, 3, padding=1, bias=False)
        self.bn2 = _bn(interplanes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(interplanes, outplanes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.relu(self.bn1(x)))
        return self.conv2(self.relu(self.bn2(x)))


def _bn_relu_conv(cin: int, cout: int, kernel_size: int = 1, groups: int = 1) -> list[nn.Module]:
    return [_bn(cin), nn.ReLU(inplace=True),
            nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, groups=groups, bias=False)]


class _PPMScales(nn.Module):
    """The pooled branches shared by DAPPM and PAPPM: `scale0` (no pool), `scale1..3` average pools of kernel
    5/9/17, stride 2/4/8, padding 2/4/8 (count_include_pad, the official nn.AvgPool2d default) and `scale4` a
    global pool, each BN-ReLU-1x1 conv to `branch_planes`; `shortcut` BN-ReLU-1x1 conv to `outplanes`."""

    def __init__(self, inplanes: int, branch_planes: int, outplanes: int):
        super().__init__()
        pools = [nn.AvgPool2d(kernel_size=k, stride=s, padding=k // 2) for k, s in ((5, 2), (9, 4), (17, 8))]
        self.scale1, self.scale2, self.scale3 = (nn.Sequential(p, *_bn_relu_conv(inplanes, branch_planes))
                                                 for p in pools)
        self.scale4 = nn.Sequential(nn.AdaptiveAvgPool2d(1), *_bn_relu_conv(inplanes, branch_planes))
        self.scale0 = nn.Sequential(*_bn_relu_conv(inplanes, branch_planes))
        self.compression = nn.Sequential(*_bn_relu_conv(branch_planes * 5, outplanes))
        self.shortcut = nn.Sequential(*_bn_relu_conv(inplanes, outplanes))

    def pooled(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four pooled branches upsampled to x's size, each (N, branch_planes, H, W)."""
        size = x.shape[-2:]
        return [resize(scale(x), size) for scale in (self.scale1, self.scale2, self.scale3, self.scale4)]


class DAPPM(_PPMScales):
    """Deep Aggregation PPM (DDRNet's, PIDNet-L): each pooled branch plus the previous one through a BN-ReLU-3x3
    conv (`process1..4`), all five concatenated, `compression` plus `shortcut`.
    (N, inplanes, H, W) -> (N, outplanes, H, W)."""

    def __init__(self, inplanes: int, branch_planes: int, outplanes: int):
        super().__init__(inplanes, branch_planes, outplanes)
        for i in range(1, 5):
            self.add_module(f"process{i}", nn.Sequential(*_bn_relu_conv(branch_planes, branch_planes, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self.scale0(x)]
        for i, pooled in enumerate(self.pooled(x), start=1):
            outs.append(getattr(self, f"process{i}")(pooled + outs[-1]))
        return self.compression(torch.cat(outs, 1)) + self.shortcut(x)


class PAPPM(_PPMScales):
    """Parallel Aggregation PPM (PIDNet-S/M): each pooled branch plus `scale0`, the four processed together by
    one grouped (4 groups) BN-ReLU-3x3 conv `scale_process`, concatenated after `scale0`, `compression` plus
    `shortcut`. (N, inplanes, H, W) -> (N, outplanes, H, W)."""

    def __init__(self, inplanes: int, branch_planes: int, outplanes: int):
        super().__init__(inplanes, branch_planes, outplanes)
        self.scale_process = nn.Sequential(*_bn_relu_conv(branch_planes * 4, branch_planes * 4, 3, groups=4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.scale0(x)
        scale_out = self.scale_process(torch.cat([p + x0 for p in self.pooled(x)], 1))
        return self.compression(torch.cat([x0, scale_out], 1)) + self.shortcut(x)


class PagFM(nn.Module):
    """Pixel-attention-guided fusion. x: P feature (N, c, H, W), y: I feature (N, c, h, w) ->
    (1 - sigma) x + sigma up(y), sigma = sigmoid(sum over channels of f_x(x) * up(f_y(y))) (N, 1, H, W);
    f_x, f_y: 1x1 conv-BN to `mid_channels`. -> (N, c, H, W)."""

    def __init__(self, in_channels: int, mid_channels: int):
        super().__init__()
        self.f_x = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels))
        self.f_y = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        y_q = resize(self.f_y(y), size)
        sim_map = torch.sigmoid(torch.sum(self.f_x(x) * y_q, dim=1, keepdim=True))
        return (1 - sim_map) * x + sim_map * resize(y, size)


class LightBag(nn.Module):
    """Light boundary-attention-guided fusion (the official `Light_Bag`, PIDNet-S/M). p, i, d (N, c, H, W) ->
    conv_p((1 - s) i + p) + conv_i(i + s p), s = sigmoid(d), conv_*: 1x1 conv-BN -> (N, cout, H, W)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv_p = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        self.conv_i = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, p: torch.Tensor, i: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        edge_att = torch.sigmoid(d)
        return self.conv_p((1 - edge_att) * i + p) + self.conv_i(i + edge_att * p)


class Bag(nn.Module):
    """Boundary-attention-guided fusion (PIDNet-L). p, i, d (N, c, H, W) -> BN-ReLU-3x3 conv of
    s p + (1 - s) i, s = sigmoid(d) -> (N, cout, H, W)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
                                  nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False))

    def forward(self, p: torch.Tensor, i: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        edge_att = torch.sigmoid(d)
        return self.conv(edge_att * p + (1 - edge_att) * i)


class PIDNetBody(nn.Module):
    """The three branches and their fusion (the official PIDNet without its heads). (N, in_chans, H, W), H and
    W multiples of 64 -> [P feature (N, 2c, H/8, W/8), D feature (N, 2c, H/8, W/8), fused (N, 4c, H/8, W/8)].
    Attributes `channels`, `reductions`, `in_chans`, `norm`."""

    def __init__(self, m: int = 2, n: int = 3, planes: int = 64, ppm_planes: int = 96, in_chans: int = 3):
        super().__init__()
        c = planes
        # I branch
        self.conv1 = nn.Sequential(nn.Conv2d(in_chans, c, 3, stride=2, padding=1), _bn(c), nn.ReLU(inplace=True),
                                   nn.Conv2d(c, c, 3, stride=2, padding=1), _bn(c), nn.ReLU(inplace=True))
        self.relu = nn.ReLU(inplace=False)
        self.layer1 = make_layer(BasicBlock, c, c, m)
        self.layer2 = make_layer(BasicBlock, c, c * 2, m, stride=2)
        self.layer3 = make_layer(BasicBlock, c * 2, c * 4, n, stride=2)
        self.layer4 = make_layer(BasicBlock, c * 4, c * 8, n, stride=2)
        self.layer5 = make_layer(Bottleneck, c * 8, c * 8, 2, stride=2)
        # P branch
        self.compression3 = nn.Sequential(nn.Conv2d(c * 4, c * 2, 1, bias=False), _bn(c * 2))
        self.compression4 = nn.Sequential(nn.Conv2d(c * 8, c * 2, 1, bias=False), _bn(c * 2))
        self.pag3 = PagFM(c * 2, c)
        self.pag4 = PagFM(c * 2, c)
        self.layer3_ = make_layer(BasicBlock, c * 2, c * 2, m)
        self.layer4_ = make_layer(BasicBlock, c * 2, c * 2, m)
        self.layer5_ = make_layer(Bottleneck, c * 2, c * 2, 1)
        # D branch
        if m == 2:  # PIDNet-S / M
            self.layer3_d = make_single_layer(BasicBlock, c * 2, c)
            self.layer4_d = make_layer(Bottleneck, c, c, 1)
            self.diff3 = nn.Sequential(nn.Conv2d(c * 4, c, 3, padding=1, bias=False), _bn(c))
            self.diff4 = nn.Sequential(nn.Conv2d(c * 8, c * 2, 3, padding=1, bias=False), _bn(c * 2))
            self.spp = PAPPM(c * 16, ppm_planes, c * 4)
            self.dfm = LightBag(c * 4, c * 4)
        else:  # PIDNet-L
            self.layer3_d = make_single_layer(BasicBlock, c * 2, c * 2)
            self.layer4_d = make_single_layer(BasicBlock, c * 2, c * 2)
            self.diff3 = nn.Sequential(nn.Conv2d(c * 4, c * 2, 3, padding=1, bias=False), _bn(c * 2))
            self.diff4 = nn.Sequential(nn.Conv2d(c * 8, c * 2, 3, padding=1, bias=False), _bn(c * 2))
            self.spp = DAPPM(c * 16, ppm_planes, c * 4)
            self.dfm = Bag(c * 4, c * 4)
        self.layer5_d = make_layer(Bottleneck, c * 2, c * 2, 1)
        self.channels = [c * 2, c * 2, c * 4]
        self.reductions = [8, 8, 8]
        self.in_chans = in_chans
        self.norm = (IMAGENET_MEAN, IMAGENET_STD)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        relu = self.relu
        x = self.layer1(self.conv1(x))
        x = relu(self.layer2(relu(x)))                                  # (N, 2c, H/8)
        size = x.shape[-2:]
        x_ = self.layer3_(x)                                            # P
        x_d = self.layer3_d(x)                                          # D
        x = relu(self.layer3(x))                                        # I (N, 4c, H/16)
        x_ = relu(self.pag3(x_, self.compression3(x)))                  # ReLU'd: the P head's input (see docstring)
        x_d = x_d + resize(self.diff3(x), size)
        temp_p = x_
        x = relu(self.layer4(x))                                        # I (N, 8c, H/32)
        x_ = self.layer4_(x_)
        x_d = self.layer4_d(relu(x_d))
        x_ = self.pag4(x_, self.compression4(x))
        x_d = relu(x_d + resize(self.diff4(x), size))                   # ReLU'd: the boundary head's input
        temp_d = x_d
        x_ = self.layer5_(relu(x_))                                     # P (N, 4c, H/8)
        x_d = self.layer5_d(x_d)                                        # D (N, 4c, H/8)
        x = resize(self.spp(self.layer5(x)), size)                      # I (N, 16c, H/64) -> (N, 4c, H/8)
        return [temp_p, temp_d, self.dfm(x_, x, x_d)]


class PickLast(nn.Module):
    """features[-1] of the body's list: the fused feature the seg head classifies."""

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return features[-1]


class PIDNetAuxHeads(nn.Module):
    """The training-only heads: `seghead_p` on the P feature -> "aux" (N, num_classes, H/8, W/8) and
    `seghead_d` on the D feature -> "boundary" (N, 1, H/8, W/8) logits."""

    def __init__(self, planes: int, head_planes: int, num_classes: int):
        super().__init__()
        self.seghead_p = SegmentHead(planes * 2, head_planes, num_classes)
        self.seghead_d = SegmentHead(planes * 2, planes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"aux": self.seghead_p(features[0]), "boundary": self.seghead_d(features[1])}


def init_weights(module: nn.Module) -> None:
    """The official initialisation: convs Kaiming normal (fan_out, ReLU), batch norms 1 / 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def pidnet(num_classes: int, variant: str = "s", aux: bool = True, in_chans: int = 3,
           pretrained=None) -> SegmentationModel:
    """PIDNet (arXiv 2206.02066). (N, in_chans, H, W) -> logits (N, num_classes, H, W) for any H, W.

    variant: "s", "m" or "l" (PIDNet-S / M / L, the official configurations; see the module docstring).
    aux=True (default, the paper's training): the P head and the boundary head; in training mode the model
        returns {"out", "aux" (P-branch class logits), "boundary" (D-branch boundary logits, 1 channel)}, each
        at the input size. aux=False: no such heads at all. Eval mode always returns the logits tensor.
        With 19 classes: S 7.72M / 7.63M, M 28.76M / 28.54M, L 37.31M / 36.94M parameters with / without them
        (the paper's Table counts the model without them; see the module docstring on PIDNet-M).
    in_chans: input channels of the first conv.
    pretrained: None (the official initialisation) or a local weights file: the official ImageNet-pretrained
        PIDNet (`state_dict` of PIDNet_{S,M,L}_ImageNet.pth.tar), an official finetuned checkpoint (its
        `final_layer` / `seghead_p` / `seghead_d` load into the heads when their shapes fit) or a pixelwise
        pidnet's state dict (its `encoder.*`); loaded non-strictly, see `load_official_weights`.
    """
    check_in_chans("pidnet", in_chans)
    if not isinstance(variant, str) or variant.lower() not in VARIANTS:
        raise ModelError(f"pidnet: unknown variant {variant!r}; known variants: {', '.join(VARIANTS)}")
    if not isinstance(aux, bool):
        raise ModelError(f"pidnet: aux must be true or false, got {aux!r}")
    cfg = VARIANTS[variant.lower()]
    body = PIDNetBody(cfg["m"], cfg["n"], cfg["planes"], cfg["ppm_planes"], in_chans)
    head = SegmentHead(cfg["planes"] * 4, cfg["head_planes"], num_classes)
    aux_head = PIDNetAuxHeads(cfg["planes"], cfg["head_planes"], num_classes) if aux else None
    for module in (body, head, aux_head):
        if module is not None:
            init_weights(module)
    if pretrained is not None and pretrained is not False:
        load_official_weights("pidnet", body, pretrained, head=head, aux_head=aux_head)
    return SegmentationModel(body, PickLast(), head, num_classes, stride=STRIDE, aux_head=aux_head)


def load_official_weights(arch: str, body: nn.Module, pretrained: str | os.PathLike, head: nn.Module | None = None,
                          aux_head: nn.Module | None = None) -> list[str]:
    """Load a local weights file non-strictly into the body of a PIDNet or DDRNet (`arch` names it in messages)
    and into its heads where they fit; returns the body keys loaded.

    Keys are the official module names (`conv1.0.weight`, `layer3_d.conv1.weight`, ...); a pixelwise model's
    state dict gives its `encoder.*` (body), `head.*` and `aux_head.*`. The body as
    `body_weights.load_body_weights` (warnings name what did not fit; a ModelError when nothing does), the heads
    as `body_weights.load_head_weights` (the official `final_layer.*`, `seghead_p.*` / `seghead_d.*` /
    `seghead_extra.*`, when their shapes fit)."""
    loaded = load_body_weights(arch, body, pretrained)
    load_head_weights(pretrained, head, aux_head)
    return loaded
