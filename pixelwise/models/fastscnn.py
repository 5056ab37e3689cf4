"""Fast-SCNN: a shared learning-to-downsample stem feeding a spatial skip and a low-resolution global branch.

Poudel, Liwicki, Cipolla, "Fast-SCNN: Fast Semantic Segmentation Network", arXiv 1902.04502.

The paper's Table 1-3 layout, with the module names of mmsegmentation's `FastSCNN` backbone (so its
checkpoints' tensors of equal shape load into the body, `body_weights.load_body_weights`). Shapes for an input
(N, C, H, W) with H and W multiples of 32 (SegmentationModel pads to that):

Learning to downsample: 3x3 s2 ConvBNReLU to 32, then two depthwise-separable convs with stride 2 (depthwise
    3x3 + BN, pointwise 1x1 + BN + ReLU; no nonlinearity between them, paper Sec. 3.2.1) to 48 and 64
    -> (N, 64, H/8, W/8).
Global feature extractor: MobileNetV2 bottleneck residual blocks (1x1 expansion x6 + BN + ReLU, depthwise 3x3
    + BN + ReLU, linear 1x1 projection + BN; a residual where the shapes agree), 3 blocks each of 64 (first
    stride 2), 96 (first stride 2) and 128 channels -> (N, 128, H/32, W/32); a pyramid pooling module (average
    pools to 1, 2, 3, 6 bins, 1x1 ConvBNReLU to 32 each, upsampled and concatenated with the input, 256
    channels) and a 1x1 ConvBNReLU back to 128 -> (N, 128, H/32, W/32).
Feature fusion (Table 3): low-resolution branch upsampled x4, a depthwise 3x3 conv dilated 4 + BN + ReLU and a
    1x1 conv + BN; high-resolution branch a 1x1 conv + BN; added, ReLU -> (N, 128, H/8, W/8).
Classifier: two depthwise-separable convs (128) as above, dropout 0.1 (the only dropout, before the softmax),
    a 1x1 conv -> (N, num_classes, H/8, W/8), upsampled bilinearly to the input.
Auxiliary heads (training only, aux=True; the paper's Sec. 4.1 losses "at the end of learning to downsample and
    the global feature extraction modules", weight 0.4, pixelwise's AUX_WEIGHT): mmseg's FCN heads (3x3
    ConvBNReLU to 32, dropout 0.1, 1x1 classifier) on the stride-8 learning-to-downsample output ("aux") and
    the stride-32 global features ("aux2").

The body (`FastSCNNBody`) returns [learning to downsample (stride 8, 64), global features (32, 128), fused
(8, 128)], mmseg's `out_indices=(0, 1, 2)`; the decoder picks the fused map. ReLU throughout: the paper found it
trains faster than ReLU6 (Sec. 4.1). Initialisation as mmseg: convs Kaiming normal (fan_out, ReLU), norms
1 / 0, classifiers normal(0, 0.01).

Departures and choices, each stated:
- The pyramid pooling module pools with `pixelwise.models.upernet.adaptive_avg_pool`: F.adaptive_avg_pool2d
  in eager mode (any size, also a 2x2 map pooled to 6 bins); under ONNX export the same bins as averaging
  matrices computed from the traced shape, since the exporter cannot express adaptive pooling to bins that do
  not divide the map (a 1x3x192x256 input gives a 6x8 map).
- First conv padded 1 (mmseg's current code; Tramac/Fast-SCNN-pytorch pads 0), so the maps are exactly
  H/2, H/4, H/8.
- Where mmseg's Fast-SCNN differs from the paper this follows the paper: mmseg's current code has a 3x3
  global-feature output conv (262k more parameters) and an undilated fusion depthwise conv; its older code a
  1x1 conv in place of that depthwise conv, ReLU6 in the bottlenecks, a ReLU between the depthwise and
  pointwise convs and an unpadded first conv. Its checkpoints load where shapes agree (a warning names the
  tensors that do not, such as the 3x3 output conv).
- Training mode needs batches of 2 or more: the 1-bin pooling branch ends in a batch norm over N values.
- Parameters: 1,137,795 with 19 classes and no aux heads (Tramac's PyTorch port: 1,138,051, its 1x1 fusion
  convs carry a bias); the paper states 1.11M, which is this count less the batch norms' 23,680 scale and
  shift parameters (1,114,115). The aux heads add 56,678 (19 classes) and are not in the paper's count.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.constants import IMAGENET_MEAN, IMAGENET_STD
from pixelwise.errors import ModelError
from pixelwise.models.base import SegmentationModel
from pixelwise.models.bisenetv2 import (DepthwiseSeparableConv, FCNHead, NamedAuxHeads, Pick, init_classifier,
                                        init_weights)
from pixelwise.models.body_weights import load_body_weights
from pixelwise.models.blocks import ConvNormAct, resize
from pixelwise.models.encoders import check_in_chans
from pixelwise.models.upernet import adaptive_avg_pool

PAPER = "Fast-SCNN: Fast Semantic Segmentation Network (arXiv 1902.04502)"

DOWNSAMPLE_CHANNELS = (32, 48, 64)
BLOCK_CHANNELS = (64, 96, 128)
BLOCK_STRIDES = (2, 2, 1)
BLOCKS = (3, 3, 3)
EXPANSION = 6
POOL_BINS = (1, 2, 3, 6)
FUSION_CHANNELS = 128
FUSION_DILATION = 4  # Table 3: the depthwise conv is dilated by the upsampling factor X = 4
# (output key, body feature index, width) of the auxiliary FCN heads, one 3x3 conv each (mmseg's config)
AUX_HEADS = (("aux", 0, 32), ("aux2", 1, 32))
STRIDE = 32


class LearningToDownsample(nn.Module):
    """3x3 s2 conv, two stride-2 depthwise-separable convs. (N, cin, H, W) -> (N, channels[-1], H/8, W/8)."""

    def __init__(self, cin: int = 3, channels: Sequence[int] = DOWNSAMPLE_CHANNELS):
        super().__init__()
        c1, c2, c3 = channels
        self.conv = ConvNormAct(cin, c1, 3, stride=2)
        self.dsconv1 = DepthwiseSeparableConv(c1, c2, 3, stride=2)
        self.dsconv2 = DepthwiseSeparableConv(c2, c3, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dsconv2(self.dsconv1(self.conv(x)))


class InvertedResidual(nn.Module):
    """MobileNetV2 bottleneck (paper Table 2) with ReLU. (N, cin, H, W) -> (N, cout, H / stride, W / stride)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, expansion: int = EXPANSION):
        super().__init__()
        hidden = cin * expansion
        self.use_res_connect = stride == 1 and cin == cout
        self.conv = nn.Sequential(ConvNormAct(cin, hidden, 1), ConvNormAct(hidden, hidden, 3, stride, groups=hidden),
                                  ConvNormAct(hidden, cout, 1, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class AdaptivePool(nn.Module):
    """Average pool to bins x bins, exportable at every size (`upernet.adaptive_avg_pool`)."""

    def __init__(self, bins: int):
        super().__init__()
        self.bins = bins

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return adaptive_avg_pool(x, self.bins)


class PPM(nn.ModuleList):
    """PSPNet's pyramid pooling branches (arXiv 1612.01105), as mmseg's PPM: per bin an average pool and a 1x1
    ConvBNReLU to `channels`, upsampled back. (N, cin, H, W) -> [(N, channels, H, W)] per bin."""

    def __init__(self, cin: int, channels: int, bins: Sequence[int] = POOL_BINS):
        super().__init__(nn.Sequential(AdaptivePool(b), ConvNormAct(cin, channels, 1)) for b in bins)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # F.interpolate, not blocks.resize: a pooled map can have the input's size at one traced size (6x6
        # bins of a 6x6 map) and resize's same-size shortcut would then leave the upsampling out of the graph.
        size = tuple(x.shape[-2:])
        return [F.interpolate(branch(x), size=size, mode="bilinear", align_corners=False) for branch in self]


class GlobalFeatureExtractor(nn.Module):
    """Bottleneck stages, PPM, 1x1 ConvBNReLU. (N, cin, H/8, W/8) -> (N, cout, H/32, W/32)."""

    def __init__(self, cin: int = DOWNSAMPLE_CHANNELS[-1], channels: Sequence[int] = BLOCK_CHANNELS,
                 cout: int = FUSION_CHANNELS, blocks: Sequence[int] = BLOCKS, strides: Sequence[int] = BLOCK_STRIDES,
                 expansion: int = EXPANSION):
        super().__init__()
        prev = cin
        for i, (c, n, s) in enumerate(zip(channels, blocks, strides)):
            layers = [InvertedResidual(prev, c, s, expansion)] + [InvertedResidual(c, c, 1, expansion)
                                                                  for _ in range(n - 1)]
            self.add_module(f"bottleneck{i + 1}", nn.Sequential(*layers))
            prev = c
        self.num_stages = len(channels)
        self.ppm = PPM(prev, prev // len(POOL_BINS), POOL_BINS)
        self.out = ConvNormAct(prev + len(POOL_BINS) * (prev // len(POOL_BINS)), cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.num_stages):
            x = getattr(self, f"bottleneck{i + 1}")(x)
        return self.out(torch.cat([x, *self.ppm(x)], dim=1))


class FeatureFusionModule(nn.Module):
    """Paper Table 3. higher (N, ch, H/8, W/8), lower (N, cl, H/32, W/32) -> (N, cout, H/8, W/8)."""

    def __init__(self, higher_channels: int, lower_channels: int, cout: int, dilation: int = FUSION_DILATION):
        super().__init__()
        if lower_channels != cout:
            raise ModelError(f"fastscnn: the fusion depthwise conv keeps its width, got {lower_channels} -> {cout}")
        self.dwconv = ConvNormAct(lower_channels, cout, 3, dilation=dilation, groups=cout)
        self.conv_lower_res = ConvNormAct(cout, cout, 1, act=False)
        self.conv_higher_res = ConvNormAct(higher_channels, cout, 1, act=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, higher: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
        lower = self.conv_lower_res(self.dwconv(resize(lower, higher.shape[-2:])))
        return self.relu(self.conv_higher_res(higher) + lower)


class FastSCNNBody(nn.Module):
    """Learning to downsample, global feature extractor and feature fusion (mmseg's FastSCNN backbone).
    (N, in_chans, H, W), H and W multiples of 32 -> [(N, 64, H/8, W/8), (N, 128, H/32, W/32), (N, 128, H/8, W/8)].
    Attributes `channels`, `reductions`, `in_chans`, `norm`."""

    def __init__(self, in_chans: int = 3):
        super().__init__()
        self.learning_to_downsample = LearningToDownsample(in_chans, DOWNSAMPLE_CHANNELS)
        self.global_feature_extractor = GlobalFeatureExtractor(DOWNSAMPLE_CHANNELS[-1], BLOCK_CHANNELS,
                                                               FUSION_CHANNELS)
        self.feature_fusion = FeatureFusionModule(DOWNSAMPLE_CHANNELS[-1], FUSION_CHANNELS, FUSION_CHANNELS)
        self.channels = [DOWNSAMPLE_CHANNELS[-1], FUSION_CHANNELS, FUSION_CHANNELS]
        self.reductions = [8, 32, 8]
        self.in_chans = in_chans
        self.norm = (IMAGENET_MEAN, IMAGENET_STD)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        higher = self.learning_to_downsample(x)
        lower = self.global_feature_extractor(higher)
        return [higher, lower, self.feature_fusion(higher, lower)]


class Classifier(nn.Sequential):
    """Two depthwise-separable convs, Dropout2d, 1x1 classifier. (N, c, H, W) -> (N, num_classes, H, W)."""

    def __init__(self, channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__(DepthwiseSeparableConv(channels, channels, 3), DepthwiseSeparableConv(channels, channels, 3),
                         nn.Dropout2d(dropout), nn.Conv2d(channels, num_classes, 1))


def fastscnn(num_classes: int, aux: bool = True, in_chans: int = 3, pretrained=None) -> SegmentationModel:
    """Fast-SCNN (arXiv 1902.04502). (N, in_chans, H, W) -> logits (N, num_classes, H, W) for any H, W.

    aux=True (default, the paper's training): FCN heads on the learning-to-downsample output (stride 8) and the
        global features (stride 32); in training mode the model returns {"out", "aux", "aux2"}, each weighed 0.4
        by pixelwise's semantic loss, as in the paper. With 19 classes: 1.14M parameters without them (the
        paper's 1.11M is the same count without the batch norms' affine parameters), 1.19M with them.
    in_chans: input channels of the first conv.
    pretrained: None (mmseg's initialisation) or a local weights file of the body: an mmseg FastSCNN checkpoint
        (its `backbone.*`; tensors of another shape are skipped with a warning), a pixelwise fastscnn model (its
        `encoder.*`) or a body state dict; loaded non-strictly (`body_weights.load_body_weights`).
    """
    check_in_chans("fastscnn", in_chans)
    if not isinstance(aux, bool):
        raise ModelError(f"fastscnn: aux must be true or false, got {aux!r}")
    body = FastSCNNBody(in_chans)
    head = Classifier(FUSION_CHANNELS, num_classes)
    aux_head = None
    if aux:
        aux_head = NamedAuxHeads({key: (index, FCNHead(body.channels[index], width, num_classes, num_convs=1))
                                  for key, index, width in AUX_HEADS})
    for module in (body, head, aux_head):
        if module is not None:
            init_weights(module)
    init_classifier(head[-1])
    if aux_head is not None:
        for aux_fcn in aux_head.heads.values():
            init_classifier(aux_fcn[-1])
    if pretrained is not None and pretrained is not False:
        load_body_weights("fastscnn", body, pretrained)
    return SegmentationModel(body, Pick(2), head, num_classes, stride=STRIDE, aux_head=aux_head)
