"""DeepLab v1, v2, v3 and v3+: atrous (dilated) backbones, atrous spatial pyramid pooling, a decoder.

Papers in PAPERS; the dense CRF that v1/v2 pair with lives in pixelwise.postprocess.crf.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pixelwise.errors import ModelError
from pixelwise.models.base import SegmentationModel
from pixelwise.models.blocks import ASPP, AuxHead, ConvNormAct, SeparableConv, resize
from pixelwise.models.encoders import Encoder, check_in_chans, create_encoder, pretrained_full_state

PAPERS = {
    "deeplabv1": "Semantic Image Segmentation with Deep Convolutional Nets and Fully Connected CRFs "
                 "(arXiv 1412.7062)",
    "deeplabv2": "DeepLab: Semantic Image Segmentation with Deep Convolutional Nets, Atrous Convolution, and "
                 "Fully Connected CRFs (arXiv 1606.00915)",
    "deeplabv3": "Rethinking Atrous Convolution for Semantic Image Segmentation (arXiv 1706.05587)",
    "deeplabv3plus": "Encoder-Decoder with Atrous Separable Convolution for Semantic Image Segmentation "
                     "(arXiv 1802.02611)",
}


class Last(nn.Module):
    """Decoder of the single-map DeepLabs: the deepest encoder feature, unchanged."""

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return features[-1]


def atrous_vgg(name: str = "vgg16", pretrained=None, in_chans: int = 3) -> Encoder:
    """DeepLab v1/v2's VGG at output stride 8: pools 1-3 become 3x3 stride 2, pools 4-5 3x3 stride 1 (all
    padded 1, as in the reference Caffe model), conv5 dilated by 2. (N, in_chans, H, W) -> [pool5] only
    (512 ch, stride 8)."""
    if not name.split(".")[0].startswith("vgg"):
        raise ModelError(f"atrous VGG needs a VGG encoder, got {name!r}")
    enc = create_encoder(name, pretrained=pretrained, in_chans=in_chans, out_indices=(5,))
    pools = 0
    for module in enc.model.modules():  # modules() walks in forward order for timm's flattened VGG
        if isinstance(module, nn.MaxPool2d):
            module.kernel_size, module.stride, module.padding = 3, (2 if pools < 3 else 1), 1
            pools += 1
        elif isinstance(module, nn.Conv2d) and pools == 4:
            module.dilation, module.padding = (2, 2), (2, 2)
    enc.reductions = [8]
    return enc


def _fc_branch(cin: int, num_classes: int, rate: int, width: int = 1024) -> nn.Sequential:
    """fc6 (3x3, dilated `rate`) -> fc7 (1x1) -> fc8 classifier, ReLU + dropout 0.5 between: DeepLab's VGG head."""
    return nn.Sequential(
        nn.Conv2d(cin, width, 3, padding=rate, dilation=rate), nn.ReLU(inplace=True), nn.Dropout2d(0.5),
        nn.Conv2d(width, width, 1), nn.ReLU(inplace=True), nn.Dropout2d(0.5),
        nn.Conv2d(width, num_classes, 1),
    )


def _init_fc_from_vgg(branches: Sequence[nn.Sequential], encoder: str, pretrained) -> None:
    """fc6/fc7 from the VGG classifier, decimated as DeepLab v1 does: every 4th unit, fc6's 7x7 kernel
    subsampled to 3x3 (taps 0, 3, 6)."""
    state = pretrained_full_state(encoder, pretrained)
    w6, b6 = state.get("pre_logits.fc1.weight"), state.get("pre_logits.fc1.bias")
    w7, b7 = state.get("pre_logits.fc2.weight"), state.get("pre_logits.fc2.bias")
    if w6 is None or w7 is None or w6.shape[-1] != 7:
        return
    with torch.no_grad():
        for branch in branches:
            fc6, fc7 = branch[0], branch[3]
            if fc6.weight.shape != (w6.shape[0] // 4, w6.shape[1], 3, 3) or fc7.weight.shape[0] != w7.shape[0] // 4:
                return
            fc6.weight.copy_(w6[::4, :, ::3, ::3])
            fc6.bias.copy_(b6[::4])
            fc7.weight.copy_(w7[::4, ::4])
            fc7.bias.copy_(b7[::4])


class SumBranches(nn.Module):
    """DeepLab v2's ASPP: parallel branches on the deepest feature, their class scores summed."""

    def __init__(self, branches: Sequence[nn.Module]):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(branch(x) for branch in self.branches)


def deeplabv1(num_classes: int, encoder: str = "vgg16", in_chans: int = 3, pretrained=None) -> SegmentationModel:
    """DeepLab v1, the LargeFOV model (arXiv 1412.7062). (N, in_chans, H, W) -> logits (N, num_classes, H, W).

    Atrous VGG16 at output stride 8 (see `atrous_vgg`), fc6 as a 3x3 conv of 1024 channels dilated 12,
    fc7 1x1 1024, fc8 classifier; scores bilinearly upsampled x8. About 20.5M parameters, as the paper's
    Table 2. With `pretrained`, fc6/fc7 start from the decimated VGG classifier, as in the paper.
    The fully connected CRF is separate: pixelwise.postprocess.crf.
    in_chans: input channels of VGG's first conv (pretrained RGB weights adapted, see `create_encoder`).
    """
    check_in_chans("deeplabv1", in_chans)
    enc = atrous_vgg(encoder, pretrained, in_chans)
    head = _fc_branch(512, num_classes, 12)
    if pretrained not in (None, False):
        _init_fc_from_vgg([head], encoder, pretrained)
    return SegmentationModel(enc, Last(), head, num_classes, stride=8, encoder_name=encoder)


def deeplabv2(num_classes: int, encoder: str = "resnet101", rates: Sequence[int] = (6, 12, 18, 24),
              in_chans: int = 3, pretrained=None) -> SegmentationModel:
    """DeepLab v2 (arXiv 1606.00915): ASPP-L on a dilated backbone at output stride 8.
    (N, in_chans, H, W) -> logits (N, num_classes, H, W).

    ResNet (default ResNet-101): one 3x3 conv per rate (6, 12, 18, 24) straight to class scores, summed.
    VGG ("vgg16"): the atrous VGG and, per rate, an fc6 (3x3 dilated, 1024) -> fc7 -> fc8 branch, summed.
    Departure: the multi-scale input fusion (MSC: scales 1, 0.75, 0.5 with max fusion) is left to
    test-time augmentation (pixelwise.inference.tta) instead of living inside the model.
    in_chans: input channels of the backbone's first conv (pretrained RGB weights adapted).
    """
    check_in_chans("deeplabv2", in_chans)
    if encoder.split(".")[0].startswith("vgg"):
        enc = atrous_vgg(encoder, pretrained, in_chans)
        branches = [_fc_branch(512, num_classes, r) for r in rates]
        if pretrained not in (None, False):
            _init_fc_from_vgg(branches, encoder, pretrained)
    else:
        enc = create_encoder(encoder, pretrained=pretrained, output_stride=8, in_chans=in_chans, out_indices=(-1,))
        branches = [nn.Conv2d(enc.channels[-1], num_classes, 3, padding=r, dilation=r) for r in rates]
        for conv in branches:  # the reference model initialises the classifiers with N(0, 0.01)
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
    return SegmentationModel(enc, Last(), SumBranches(branches), num_classes, stride=8, encoder_name=encoder)


def _multi_grid(enc: Encoder, grid: Sequence[int] | None, output_stride: int, default: Sequence[int]) -> None:
    """Set the dilations of the last ResNet stage's 3x3 convs to rate * grid[i] (DeepLabV3's multi-grid)."""
    stage = getattr(enc.model, "layer4", None)
    resnet = stage is not None and all(hasattr(block, "conv2") for block in stage)
    if grid is None:
        if not resnet:
            return
        grid = default
    if not resnet:
        raise ModelError(f"multi_grid needs a ResNet-like encoder (a layer4 of blocks), got {enc.name!r}")
    rate = 32 // output_stride
    for i, block in enumerate(stage):
        d = rate * grid[i % len(grid)]
        block.conv2.dilation, block.conv2.padding = (d, d), (d, d)


def _atrous_encoder(encoder: str, pretrained, output_stride: int, in_chans: int) -> Encoder:
    if output_stride not in (8, 16):
        raise ModelError(f"output_stride must be 8 or 16, got {output_stride!r}")
    return create_encoder(encoder, pretrained=pretrained, output_stride=output_stride, in_chans=in_chans)


def _rates(rates, output_stride: int) -> tuple[int, ...]:
    return tuple(rates) if rates is not None else ((6, 12, 18) if output_stride == 16 else (12, 24, 36))


def deeplabv3(num_classes: int, encoder: str = "resnet101", output_stride: int = 16,
              multi_grid: Sequence[int] | None = None, rates: Sequence[int] | None = None, aux: bool = False,
              in_chans: int = 3, pretrained=None) -> SegmentationModel:
    """DeepLabV3 (arXiv 1706.05587). (N, in_chans, H, W) -> logits (N, num_classes, H, W).

    Backbone dilated to output_stride 16 (default) or 8; multi-grid (1, 2, 4) in the last ResNet stage
    (default for ResNets; its unit rates are (1, 2, 4) x the stage's rate). ASPP with batch norm: 1x1,
    three 3x3 atrous branches at rates (6, 12, 18) (doubled at stride 8), image pooling; 1x1 projection
    to 256; 1x1 classifier; bilinear upsampling to the input.
    aux=True adds an FCN head on the stride-16 stage (deep supervision, as torchvision's recipe); in
    training mode the model then returns {"out", "aux"}. in_chans: input channels of the backbone's first
    conv (pretrained RGB weights adapted, see `create_encoder`).
    """
    check_in_chans("deeplabv3", in_chans)
    enc = _atrous_encoder(encoder, pretrained, output_stride, in_chans)
    _multi_grid(enc, multi_grid, output_stride, default=(1, 2, 4))
    head = nn.Sequential(ASPP(enc.channels[-1], 256, _rates(rates, output_stride)), nn.Conv2d(256, num_classes, 1))
    aux_head = AuxHead(enc.channels[-2], num_classes, -2) if aux else None
    return SegmentationModel(enc, Last(), head, num_classes, stride=max(enc.reductions), aux_head=aux_head,
                             encoder_name=encoder)


class DeepLabV3PlusDecoder(nn.Module):
    """ASPP on the deepest feature, upsampled to the stride-4 feature, concatenated with that feature
    reduced to 48 channels (1x1), refined by two 3x3 convs of 256 (separable or not).
    features -> (N, 256, H/4, W/4)."""

    def __init__(self, channels: Sequence[int], low_index: int, rates: Sequence[int], separable: bool):
        super().__init__()
        self.low_index = low_index
        self.aspp = ASPP(channels[-1], 256, rates, separable=separable)
        self.reduce = ConvNormAct(channels[low_index], 48, 1)
        conv = SeparableConv if separable else ConvNormAct
        self.refine = nn.Sequential(conv(256 + 48, 256, 3), conv(256, 256, 3))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        low = self.reduce(features[self.low_index])
        x = resize(self.aspp(features[-1]), low.shape[-2:])
        return self.refine(torch.cat([x, low], dim=1))


def deeplabv3plus(num_classes: int, encoder: str = "resnet101", output_stride: int = 16,
                  multi_grid: Sequence[int] | None = None, rates: Sequence[int] | None = None,
                  separable: bool = True, aux: bool = False, in_chans: int = 3, pretrained=None) -> SegmentationModel:
    """DeepLabV3+ (arXiv 1802.02611). (N, in_chans, H, W) -> logits (N, num_classes, H, W).

    DeepLabV3's encoder (ASPP with image pooling at output stride 16 or 8) plus a decoder: ASPP output
    upsampled x4 and joined with the stride-4 backbone feature (1x1 to 48 channels), two 3x3 convs of
    256, 1x1 classifier, upsampled x4. separable=True (default, the paper's final model) makes the ASPP
    and decoder 3x3 convs depthwise-separable. Encoders through timm: "resnet101" (default),
    "xception65" (the aligned Xception), "mobilenetv2_100", ... multi_grid: None (default, none) or
    e.g. (1, 2, 4) on a ResNet. aux, in_chans: as in deeplabv3.
    """
    check_in_chans("deeplabv3plus", in_chans)
    enc = _atrous_encoder(encoder, pretrained, output_stride, in_chans)
    _multi_grid(enc, multi_grid, output_stride, default=(1, 1, 1))
    if 4 not in enc.reductions:
        raise ModelError(f"deeplabv3plus: encoder {encoder!r} has no stride-4 feature ({enc.reductions})")
    low_index = max(i for i, r in enumerate(enc.reductions) if r == 4)
    decoder = DeepLabV3PlusDecoder(enc.channels, low_index, _rates(rates, output_stride), separable)
    aux_head = AuxHead(enc.channels[-2], num_classes, -2) if aux else None
    return SegmentationModel(enc, decoder, nn.Conv2d(256, num_classes, 1), num_classes,
                             stride=max(enc.reductions), aux_head=aux_head, encoder_name=encoder)
