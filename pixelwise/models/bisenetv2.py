"""BiSeNet V2: a wide, shallow Detail branch and a narrow, deep Semantic branch, fused by guided aggregation.

Yu, Gao, Wang, Yu, Shen, Sang, "BiSeNet V2: Bilateral Network with Guided Aggregation for Real-time Semantic
Segmentation", arXiv 2004.02147.

The layout is mmsegmentation's `BiSeNetV2` backbone with the heads of its
`bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024` config (a port of CoinCheung/BiSeNet); the module names are
mmseg's, so the backbone of an mmseg checkpoint loads into the body (`body_weights.load_body_weights`). Shapes for an input
(N, C, H, W) with H and W multiples of 32 (SegmentationModel pads to that):

Detail branch: three stages of 3x3 ConvBNReLU (2, 3 and 3 convs, the first of each with stride 2; 64, 64, 128
    channels) -> (N, 128, H/8, W/8).
Semantic branch (lambda = 1/4 of the Detail widths, 16, 32, 64, 128):
    stem: 3x3 s2 ConvBNReLU to 16, then [1x1 to 8 -> 3x3 s2 to 16] beside a 3x3 s2 max pool, concatenated,
        3x3 ConvBNReLU -> (N, 16, H/4, W/4);
    stages 2 and 3: a stride-2 Gather-and-Expansion layer and a stride-1 one (expansion 6) -> (N, 32, H/8, W/8),
        (N, 64, H/16, W/16); stage 4: a stride-2 GE layer and three stride-1 ones -> (N, 128, H/32, W/32);
    Context Embedding: global average pool -> BN -> 1x1 ConvBNReLU, added to its input, 3x3 ConvBNReLU
        -> (N, 128, H/32, W/32).
    GE layer: 3x3 ConvBNReLU, a depthwise 3x3 expanding to 6x the channels (stride 2: a strided depthwise conv
    without ReLU, then a depthwise 3x3 with it), a 1x1 projection with BN, plus the input (stride 2: a
    depthwise-separable 3x3 s2 shortcut), ReLU.
Bilateral Guided Aggregation: detail' = dwsep(detail) * sigmoid(up4(conv3x3(semantic))), semantic' =
    up4(avgpool(conv3x3 s2(detail)) * sigmoid(dwsep(semantic))), 3x3 ConvBNReLU of their sum
    -> (N, 128, H/8, W/8).
Seg head: 3x3 ConvBNReLU to 1024, dropout 0.1, 1x1 classifier -> (N, num_classes, H/8, W/8), then bilinear
    upsampling to the input.
Booster heads (training only, aux=True): FCN heads (two 3x3 ConvBNReLU of 16, 64, 256, 1024 channels,
    dropout 0.1, 1x1 classifier) on the stem (stride 4) and stages 2, 3, 4 (strides 8, 16, 32; stage 4 before
    the CE block), mmseg's `auxiliary_head` list; returned as "aux", "aux2", "aux3", "aux4".

The body (`BiSeNetV2Body`) returns [aggregated (stride 8, 128), stem (4, 16), stage 2 (8, 32), stage 3 (16, 64),
stage 4 (32, 128)], mmseg's `out_indices=(0, 1, 2, 3, 4)`; the decoder picks the first, the booster heads the
rest. Initialisation as mmseg: convs Kaiming normal (fan_out, ReLU) with zero bias, norms 1 / 0, classifiers
normal(0, 0.01).

Departures, each stated:
- Booster loss weight: the paper (its total loss, alpha = 1) and mmseg (`loss_weight=1.0` on every auxiliary head)
  weigh each booster 1.0; pixelwise's semantic loss adds its common AUX_WEIGHT 0.4 x CE for every aux key
  (`SemanticLoss(loss, aux_weight=1.0)` gives the paper's weighting).
- As in mmseg and CoinCheung's code (not as drawn in the paper's GE figure): ReLU after the GE layers' expanding
  depthwise convs, and BN + ReLU after the CE block's last 3x3 conv (a plain conv in the paper); kept for
  parity with those checkpoints.
- The booster heads are mmseg's (16 / 64 / 256 / 1024 wide, two convs each); the stride-32 one alone holds
  10.6M parameters (a 1024 -> 1024 3x3 conv), so the training model has 14.8M parameters and the eval model
  3.36M (19 classes). They never run in eval mode or in an exported graph.
- Compute: 24.6 G multiply-adds at 512x1024 (98.4 G at 1024x2048), of which the 1024-wide seg head at
  stride 8 takes 9.8 G; the paper gives 21.15 GFLOPs at 512x1024 without stating its head width or counting
  rule. Training mode needs batches of 2 or more: the CE block's batch norm follows a global pool.
- Inputs are zero-padded to a multiple of 32 and the logits cropped back (every pixelwise model does so), so
  the Detail and Semantic maps always line up at strides 8 and 32.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pixelwise.constants import IMAGENET_MEAN, IMAGENET_STD
from pixelwise.errors import ModelError
from pixelwise.models.base import SegmentationModel
from pixelwise.models.blocks import ConvNormAct, resize
from pixelwise.models.body_weights import load_body_weights
from pixelwise.models.encoders import check_in_chans

PAPER = ("BiSeNet V2: Bilateral Network with Guided Aggregation for Real-time Semantic Segmentation "
         "(arXiv 2004.02147)")

DETAIL_CHANNELS = (64, 64, 128)
SEMANTIC_CHANNELS = (16, 32, 64, 128)  # lambda = 1/4 of the Detail widths
EXPANSION = 6
HEAD_CHANNELS = 1024
# (output key, body feature index, width) of mmseg's auxiliary FCN heads; two 3x3 convs each
BOOSTERS = (("aux", 1, 16), ("aux2", 2, 64), ("aux3", 3, 256), ("aux4", 4, 1024))
STRIDE = 32


class DepthwiseSeparableConv(nn.Module):
    """Depthwise k x k (stride, dilation) with BN [and `dw_act` ReLU] -> pointwise 1x1 [BN] [ReLU].
    Named as mmcv's DepthwiseSeparableConvModule (`depthwise_conv`, `pointwise_conv`); a pointwise conv
    without norm has a bias. (N, cin, H, W) -> (N, cout, H / stride, W / stride)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1,
                 dw_act: bool = False, pw_norm: bool = True, pw_act: bool = True):
        super().__init__()
        self.depthwise_conv = ConvNormAct(cin, cin, kernel_size, stride, dilation, groups=cin, act=dw_act)
        self.pointwise_conv = ConvNormAct(cin, cout, 1, norm=pw_norm, act=pw_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class DetailBranch(nn.Module):
    """Three stages of 3x3 ConvBNReLU, each starting with stride 2. (N, cin, H, W) -> (N, channels[-1], H/8, W/8)."""

    def __init__(self, channels: Sequence[int] = DETAIL_CHANNELS, cin: int = 3):
        super().__init__()
        stages = []
        for i, c in enumerate(channels):
            prev = cin if i == 0 else channels[i - 1]
            convs = [ConvNormAct(prev, c, 3, stride=2)] + [ConvNormAct(c, c, 3) for _ in range(1 if i == 0 else 2)]
            stages.append(nn.Sequential(*convs))
        self.detail_branch = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.detail_branch:
            x = stage(x)
        return x


class StemBlock(nn.Module):
    """3x3 s2 conv, then a conv path (1x1 to cout/2, 3x3 s2) beside a 3x3 s2 max pool, concatenated and fused
    by a 3x3 conv. (N, cin, H, W) -> (N, cout, H/4, W/4)."""

    def __init__(self, cin: int = 3, cout: int = 16):
        super().__init__()
        self.conv_first = ConvNormAct(cin, cout, 3, stride=2)
        self.convs = nn.Sequential(ConvNormAct(cout, cout // 2, 1), ConvNormAct(cout // 2, cout, 3, stride=2))
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.fuse_last = ConvNormAct(2 * cout, cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_first(x)
        return self.fuse_last(torch.cat([self.convs(x), self.pool(x)], dim=1))


class GELayer(nn.Module):
    """Gather-and-Expansion layer, stride 1 or 2 (the paper's GE figure).
    (N, cin, H, W) -> (N, cout, H / stride, W / stride)."""

    def __init__(self, cin: int, cout: int, expansion: int = EXPANSION, stride: int = 1):
        super().__init__()
        mid = cin * expansion
        self.conv1 = ConvNormAct(cin, cin, 3)
        if stride == 1:
            if cin != cout:
                raise ModelError(f"bisenetv2: a stride-1 GE layer keeps its width, got {cin} -> {cout}")
            self.dwconv = nn.Sequential(ConvNormAct(cin, mid, 3, groups=cin))
            self.shortcut = None
        else:
            self.dwconv = nn.Sequential(ConvNormAct(cin, mid, 3, stride=stride, groups=cin, act=False),
                                        ConvNormAct(mid, mid, 3, groups=mid))
            self.shortcut = nn.Sequential(DepthwiseSeparableConv(cin, cout, 3, stride=stride, pw_act=False))
        self.conv2 = nn.Sequential(ConvNormAct(mid, cout, 1, act=False))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.act(self.conv2(self.dwconv(self.conv1(x))) + identity)


class CEBlock(nn.Module):
    """Context Embedding: global average pool -> BN -> 1x1 ConvBNReLU, broadcast-added to the input,
    3x3 ConvBNReLU. (N, c, H, W) -> (N, c, H, W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.gap = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.BatchNorm2d(channels))
        self.conv_gap = ConvNormAct(channels, channels, 1)
        self.conv_last = ConvNormAct(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_last(x + self.conv_gap(self.gap(x)))


class SemanticBranch(nn.Module):
    """Stem, GE stages and the CE block. (N, cin, H, W) -> [stem (N, c0, H/4), stage 2 (N, c1, H/8),
    stage 3 (N, c2, H/16), stage 4 (N, c3, H/32), CE (N, c3, H/32)]."""

    def __init__(self, channels: Sequence[int] = SEMANTIC_CHANNELS, cin: int = 3, expansion: int = EXPANSION):
        super().__init__()
        self.stage_names = []
        for i, c in enumerate(channels):
            name = f"stage{i + 1}"
            if i == 0:
                stage = StemBlock(cin, c)
            else:
                repeats = 3 if i == len(channels) - 1 else 1
                stage = nn.Sequential(GELayer(channels[i - 1], c, expansion, 2),
                                      *(GELayer(c, c, expansion, 1) for _ in range(repeats)))
            self.add_module(name, stage)
            self.stage_names.append(name)
        name = f"stage{len(channels)}_CEBlock"
        self.add_module(name, CEBlock(channels[-1]))
        self.stage_names.append(name)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for name in self.stage_names:
            x = getattr(self, name)(x)
            outs.append(x)
        return outs


class BGALayer(nn.Module):
    """Bilateral Guided Aggregation. detail (N, c, H/8, W/8), semantic (N, c, H/32, W/32) -> (N, c, H/8, W/8)."""

    def __init__(self, channels: int = 128):
        super().__init__()
        c = channels
        self.detail_dwconv = nn.Sequential(DepthwiseSeparableConv(c, c, 3, pw_norm=False, pw_act=False))
        self.detail_down = nn.Sequential(ConvNormAct(c, c, 3, stride=2, act=False),
                                         nn.AvgPool2d(kernel_size=3, stride=2, padding=1))
        self.semantic_conv = nn.Sequential(ConvNormAct(c, c, 3, act=False))
        self.semantic_dwconv = nn.Sequential(DepthwiseSeparableConv(c, c, 3, pw_norm=False, pw_act=False))
        self.conv = ConvNormAct(c, c, 3)

    def forward(self, detail: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        size = detail.shape[-2:]
        fuse_1 = self.detail_dwconv(detail) * torch.sigmoid(resize(self.semantic_conv(semantic), size))
        fuse_2 = self.detail_down(detail) * torch.sigmoid(self.semantic_dwconv(semantic))
        return self.conv(fuse_1 + resize(fuse_2, size))


class BiSeNetV2Body(nn.Module):
    """Detail branch, Semantic branch and BGA (mmseg's BiSeNetV2 backbone). (N, in_chans, H, W), H and W
    multiples of 32 -> [(N, 128, H/8, W/8) aggregated, (N, 16, H/4) stem, (N, 32, H/8), (N, 64, H/16),
    (N, 128, H/32) semantic stages]. Attributes `channels`, `reductions`, `in_chans`, `norm`."""

    def __init__(self, in_chans: int = 3):
        super().__init__()
        self.detail = DetailBranch(DETAIL_CHANNELS, in_chans)
        self.semantic = SemanticBranch(SEMANTIC_CHANNELS, in_chans, EXPANSION)
        self.bga = BGALayer(DETAIL_CHANNELS[-1])
        self.channels = [DETAIL_CHANNELS[-1], *SEMANTIC_CHANNELS]
        self.reductions = [8, 4, 8, 16, 32]
        self.in_chans = in_chans
        self.norm = (IMAGENET_MEAN, IMAGENET_STD)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        semantic = self.semantic(x)
        return [self.bga(self.detail(x), semantic[-1]), *semantic[:-1]]


class Pick(nn.Module):
    """features[index] of the body's list."""

    def __init__(self, index: int):
        super().__init__()
        self.index = index

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return features[self.index]


class FCNHead(nn.Sequential):
    """mmseg's FCNHead without concat: `num_convs` 3x3 ConvBNReLU (cin -> channels -> channels ...), Dropout2d,
    1x1 classifier with bias. (N, cin, H, W) -> (N, num_classes, H, W)."""

    def __init__(self, cin: int, channels: int, num_classes: int, num_convs: int = 1, dropout: float = 0.1):
        convs = [ConvNormAct(cin if i == 0 else channels, channels, 3) for i in range(num_convs)]
        super().__init__(*convs, nn.Dropout2d(dropout), nn.Conv2d(channels, num_classes, 1))


class NamedAuxHeads(nn.Module):
    """Several auxiliary heads over the body's feature list. heads: {key: (feature index, head)} ->
    forward(features) = {key: head(features[index])}, each (N, num_classes, h_index, w_index)."""

    def __init__(self, heads: dict[str, tuple[int, nn.Module]]):
        super().__init__()
        self.indices = {key: index for key, (index, _) in heads.items()}
        self.heads = nn.ModuleDict({key: head for key, (_, head) in heads.items()})

    def forward(self, features: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {key: head(features[self.indices[key]]) for key, head in self.heads.items()}


def init_weights(module: nn.Module) -> None:
    """mmseg's initialisation: convs Kaiming normal (fan_out, ReLU) with zero bias, batch norms 1 / 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_classifier(conv: nn.Conv2d) -> None:
    """A decode head's 1x1 classifier: normal(0, 0.01), zero bias (mmseg's `conv_seg` init)."""
    nn.init.normal_(conv.weight, 0.0, 0.01)
    nn.init.zeros_(conv.bias)


def bisenetv2(num_classes: int, aux: bool = True, in_chans: int = 3, pretrained=None) -> SegmentationModel:
    """BiSeNet V2 (arXiv 2004.02147). (N, in_chans, H, W) -> logits (N, num_classes, H, W) for any H, W.

    aux=True (default, the paper's booster training): four FCN heads on the Semantic branch at strides 4, 8,
        16, 32; in training mode the model returns {"out", "aux", "aux2", "aux3", "aux4"} (pixelwise weighs
        each 0.4, the paper and mmseg 1.0; see the module docstring). With 19 classes: 3.36M parameters
        without them (mmseg's BiSeNetV2 backbone + FCN decode head: 3,358,883), 14.80M with them.
    in_chans: input channels of the two first convs (Detail and Semantic branch).
    pretrained: None (mmseg's initialisation) or a local weights file of the body: an mmseg BiSeNetV2
        checkpoint (its `backbone.*` tensors, mmcv ConvModule names `conv` / `bn` mapped), a pixelwise
        bisenetv2 model (its `encoder.*`) or a body state dict; loaded non-strictly, see `body_weights.load_body_weights`.
    """
    check_in_chans("bisenetv2", in_chans)
    if not isinstance(aux, bool):
        raise ModelError(f"bisenetv2: aux must be true or false, got {aux!r}")
    body = BiSeNetV2Body(in_chans)
    head = FCNHead(DETAIL_CHANNELS[-1], HEAD_CHANNELS, num_classes, num_convs=1)
    aux_head = None
    if aux:
        aux_head = NamedAuxHeads({key: (index, FCNHead(body.channels[index], width, num_classes, num_convs=2))
                                  for key, index, width in BOOSTERS})
    for module in (body, head, aux_head):
        if module is not None:
            init_weights(module)
    init_classifier(head[-1])
    if aux_head is not None:
        for booster in aux_head.heads.values():
            init_classifier(booster[-1])
    if pretrained is not None and pretrained is not False:
        load_body_weights("bisenetv2", body, pretrained)
    return SegmentationModel(body, Pick(0), head, num_classes, stride=STRIDE, aux_head=aux_head)
