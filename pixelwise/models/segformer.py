"""SegFormer: the Mix Transformer (MiT) encoder and the all-MLP decoder.

Xie, Wang, Yu, Anandkumar, Alvarez, Luo, "SegFormer: Simple and Efficient Design for Semantic Segmentation
with Transformers", arXiv 2105.15203.

Encoder (four stages, strides 4, 8, 16, 32): an overlapping patch embedding (a conv of 7x7 stride 4, then
3x3 stride 2, padding k // 2, and a LayerNorm) and `depth` transformer blocks, each
`x + drop_path(attention(norm1(x)))`, `x + drop_path(mix_ffn(norm2(x)))`, then a LayerNorm. The efficient
self-attention reduces the keys and values by a conv of kernel and stride R (sequence reduction ratios
8, 4, 2, 1) and a LayerNorm; the Mix-FFN is fc1 -> 3x3 depthwise conv -> GELU -> fc2 (hidden width 4 C).
Decoder: a linear layer per stage to the decoder width, bilinear upsampling to 1/4, concatenation (deepest
stage first, as the reference code), a 1x1 fuse conv + BN + ReLU, dropout and a 1x1 classifier.

Departures, each for parity with the transformers checkpoints `pixelwise.convert.segformer` reads: the
LayerNorms use PyTorch's eps 1e-5 as transformers' SegFormer does (the reference code uses 1e-6; the
difference is far below float32 noise of a trained model's activations); the attention runs through
`F.scaled_dot_product_attention` (transformers' default "sdpa" path, exported to ONNX as MatMul/Softmax).
Inputs are zero-padded to a multiple of 32 and the logits cropped back (every pixelwise model does so);
transformers runs unpadded sizes, so outputs agree exactly at sizes divisible by 32.

Tensor layout: token sequences are (N, L, C) with L = h * w in row-major order, feature maps (N, C, h, w);
the two are converted by flatten/transpose/reshape only (ONNX opset 17).
"""
from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models import adapt_input_conv
from torch import nn

from pixelwise.constants import IMAGENET_MEAN, IMAGENET_STD
from pixelwise.errors import ModelError
from pixelwise.models.base import SegmentationModel
from pixelwise.models.blocks import resize
from pixelwise.models.encoders import check_in_chans, read_weights

PAPER = "SegFormer: Simple and Efficient Design for Semantic Segmentation with Transformers (arXiv 2105.15203)"

# The paper's Table 6 / transformers' nvidia/mit-b* configs: stage widths, blocks per stage, decoder width.
VARIANTS: dict[str, dict[str, tuple[int, ...] | int]] = {
    "b0": {"widths": (32, 64, 160, 256), "depths": (2, 2, 2, 2), "decoder_dim": 256},
    "b1": {"widths": (64, 128, 320, 512), "depths": (2, 2, 2, 2), "decoder_dim": 256},
    "b2": {"widths": (64, 128, 320, 512), "depths": (3, 4, 6, 3), "decoder_dim": 768},
    "b3": {"widths": (64, 128, 320, 512), "depths": (3, 4, 18, 3), "decoder_dim": 768},
    "b4": {"widths": (64, 128, 320, 512), "depths": (3, 8, 27, 3), "decoder_dim": 768},
    "b5": {"widths": (64, 128, 320, 512), "depths": (3, 6, 40, 3), "decoder_dim": 768},
}
# Shared by every variant.
HEADS = (1, 2, 5, 8)
SR_RATIOS = (8, 4, 2, 1)
PATCH_SIZES = (7, 3, 3, 3)
PATCH_STRIDES = (4, 2, 2, 2)
MLP_RATIO = 4
STRIDE = 32  # product of the patch strides: inputs are padded to a multiple of it

INPUT_CONV = "stages.0.embed.proj.weight"  # the encoder's first conv, adapted to in_chans


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) -> (N, h*w, C)."""
    return x.flatten(2).transpose(1, 2)


def _map(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(N, h*w, C) -> (N, C, h, w)."""
    return x.transpose(1, 2).reshape(x.shape[0], -1, h, w)


class OverlapPatchEmbed(nn.Module):
    """Conv k x k, stride s, padding k // 2, then LayerNorm. (N, cin, H, W) -> tokens (N, h*w, dim), h, w."""

    def __init__(self, cin: int, dim: int, patch_size: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, patch_size, stride, patch_size // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[-2], x.shape[-1]
        return self.norm(_tokens(x)), h, w


class EfficientAttention(nn.Module):
    """Multi-head self-attention whose keys and values come from the tokens reduced by a conv of kernel
    and stride `sr_ratio` and a LayerNorm (none when sr_ratio is 1). (N, h*w, C), h, w -> (N, h*w, C)."""

    def __init__(self, dim: int, heads: int, sr_ratio: int):
        super().__init__()
        self.heads, self.head_dim, self.sr_ratio = heads, dim // heads, sr_ratio
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.sr_norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1, self.heads, self.head_dim).transpose(1, 2)  # (N, heads, L, d)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        kv = x
        if self.sr_ratio > 1:
            kv = self.sr_norm(_tokens(self.sr(_map(x, h, w))))
        out = F.scaled_dot_product_attention(self._split(self.q(x)), self._split(self.k(kv)), self._split(self.v(kv)))
        return self.proj(out.transpose(1, 2).reshape(x.shape[0], -1, self.heads * self.head_dim))


class MixFFN(nn.Module):
    """fc1 -> 3x3 depthwise conv (the positional information) -> GELU -> fc2. (N, h*w, C), h, w -> same."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.fc2(self.act(_tokens(self.dwconv(_map(self.fc1(x), h, w)))))


class MiTBlock(nn.Module):
    """Pre-norm transformer block with stochastic depth on both branches. (N, h*w, C), h, w -> same."""

    def __init__(self, dim: int, heads: int, sr_ratio: int, mlp_ratio: int, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = EfficientAttention(dim, heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MixFFN(dim, dim * mlp_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class MiTStage(nn.Module):
    """Patch embedding, one block per drop-path rate, LayerNorm. (N, cin, H, W) -> (N, dim, H / s, W / s)."""

    def __init__(self, cin: int, dim: int, stage: int, drop_paths: Sequence[float]):
        super().__init__()
        self.embed = OverlapPatchEmbed(cin, dim, PATCH_SIZES[stage], PATCH_STRIDES[stage])
        self.blocks = nn.ModuleList(MiTBlock(dim, HEADS[stage], SR_RATIOS[stage], MLP_RATIO, p) for p in drop_paths)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, h, w = self.embed(x)
        for block in self.blocks:
            x = block(x, h, w)
        return _map(self.norm(x), h, w)


class MixTransformer(nn.Module):
    """The MiT encoder. (N, in_chans, H, W), H and W multiples of 32 ->
    [(N, widths[i], H / 4 / 2**i, W / 4 / 2**i) for i in 0..3].

    Stochastic depth rises linearly from 0 to `drop_path` over all blocks. Attributes: `channels`,
    `reductions` (4, 8, 16, 32), `in_chans`, `norm` (ImageNet mean/std, what the MiT weights expect).
    """

    def __init__(self, widths: Sequence[int], depths: Sequence[int], drop_path: float = 0.1, in_chans: int = 3):
        super().__init__()
        total = sum(depths)
        rates = [drop_path * i / max(total - 1, 1) for i in range(total)]
        starts = [sum(depths[:i]) for i in range(len(depths))]
        cins = [in_chans, *widths[:-1]]
        self.stages = nn.ModuleList(
            MiTStage(cins[i], widths[i], i, rates[starts[i]:starts[i] + depths[i]])
            for i in range(len(widths)))
        self.channels = list(widths)
        self.reductions = [4, 8, 16, 32]
        self.in_chans = in_chans
        self.norm = (IMAGENET_MEAN, IMAGENET_STD)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class AllMLPDecoder(nn.Module):
    """Per-stage linear layers to `dim`, upsampled to the first (1/4) map, concatenated deepest first,
    fused by 1x1 conv + BN + ReLU, then dropout. [(N, channels[i], h_i, w_i)] -> (N, dim, h_0, w_0).

    Dropout2d (whole channels) as the reference code's decode head; transformers uses element-wise Dropout;
    both are the identity in eval mode."""

    def __init__(self, channels: Sequence[int], dim: int, dropout: float = 0.1):
        super().__init__()
        self.linear = nn.ModuleList(nn.Linear(c, dim) for c in channels)
        self.fuse = nn.Conv2d(dim * len(channels), dim, 1, bias=False)
        self.bn = nn.BatchNorm2d(dim)
        self.act = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[-2:]
        maps = [resize(_map(linear(_tokens(x)), x.shape[-2], x.shape[-1]), size)
                for x, linear in zip(features, self.linear)]
        return self.dropout(self.act(self.bn(self.fuse(torch.cat(maps[::-1], dim=1)))))


def init_weights(module: nn.Module) -> None:
    """The reference initialisation: linears trunc_normal(0.02) with zero bias, norms to 1/0, convs
    normal(0, sqrt(2 / fan_out)) with fan_out = k*k*out/groups and zero bias."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def segformer(num_classes: int, variant: str = "b0", drop_path: float = 0.1, dropout: float = 0.1, in_chans: int = 3,
              pretrained=None) -> SegmentationModel:
    """SegFormer (arXiv 2105.15203). (N, in_chans, H, W) -> logits (N, num_classes, H, W) for any H, W.

    variant: "b0" .. "b5" (see VARIANTS); with 150 classes B0 has 3.75M parameters, B1 13.7M, B2 27.5M,
        B3 47.3M, B4 64.1M, B5 84.7M, as the paper and transformers.
    drop_path: the encoder's largest stochastic depth rate (0.1); dropout: before the classifier (0.1).
    in_chans: input channels of the first patch embedding.
    pretrained: None (the reference initialisation) or a local file of MiT encoder weights, under pixelwise
        names (an encoder or whole-model state dict) or transformers' (`segformer.encoder.patch_embeddings.0.
        proj.weight` ..., v4 hub names or v5 module names; nvidia/mit-b* or a SegformerForSemanticSegmentation
        checkpoint, whose decode head is ignored). Its RGB first conv is adapted to in_chans as timm's
        adapt_input_conv does, with a warning. The logits come from the 1/4 map, upsampled bilinearly.
    """
    if variant not in VARIANTS:
        raise ModelError(f"segformer: variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    check_in_chans("segformer", in_chans)
    for name, value in (("drop_path", drop_path), ("dropout", dropout)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ModelError(f"segformer: {name} must be a number in [0, 1), got {value!r}")
    spec = VARIANTS[variant]
    encoder = MixTransformer(spec["widths"], spec["depths"], float(drop_path), in_chans)
    decoder = AllMLPDecoder(encoder.channels, spec["decoder_dim"], float(dropout))
    head = nn.Conv2d(spec["decoder_dim"], num_classes, 1)
    init_weights(encoder)
    init_weights(decoder)
    nn.init.normal_(head.weight, 0.0, 0.01)  # the reference decode head's classifier init
    nn.init.zeros_(head.bias)
    if pretrained is not None and pretrained is not False:
        load_mit_weights(encoder, pretrained)
    return SegmentationModel(encoder, decoder, head, num_classes, stride=STRIDE, encoder_name=None)


# --- MiT weights under transformers' names --------------------------------------------------------------

# Module paths inside a block: transformers v4 (hub checkpoints, what save_pretrained writes), transformers
# v5 (its modules' own names) and pixelwise's own, to pixelwise's.
_BLOCK_NAMES = {
    "layer_norm_1": "norm1", "layernorm_before": "norm1",
    "attention.self.query": "attn.q", "attention.q_proj": "attn.q",
    "attention.self.key": "attn.k", "attention.k_proj": "attn.k",
    "attention.self.value": "attn.v", "attention.v_proj": "attn.v",
    "attention.self.sr": "attn.sr", "attention.sequence_reduction.sequence_reduction": "attn.sr",
    "attention.self.layer_norm": "attn.sr_norm", "attention.sequence_reduction.layer_norm": "attn.sr_norm",
    "attention.output.dense": "attn.proj", "attention.o_proj": "attn.proj",
    "layer_norm_2": "norm2", "layernorm_after": "norm2",
    "mlp.dense1": "mlp.fc1", "mlp.dwconv.dwconv": "mlp.dwconv", "mlp.dense2": "mlp.fc2",
}
_BLOCK_NAMES |= {v: v for v in set(_BLOCK_NAMES.values())}  # pixelwise names map to themselves
_EMBED_NAMES = {"proj": "proj", "layer_norm": "norm", "norm": "norm"}
_KEY_PATTERNS = [  # (regex on an encoder key, kind); groups: stage, [block], module path, parameter
    (re.compile(r"patch_embeddings\.(\d+)\.(.+)\.(\w+)"), "embed"),  # v4
    (re.compile(r"block\.(\d+)\.(\d+)\.(.+)\.(\w+)"), "block"),
    (re.compile(r"layer_norm\.(\d+)\.(\w+)"), "norm"),
    (re.compile(r"stages\.(\d+)\.(?:patch_embeddings|embed)\.(.+)\.(\w+)"), "embed"),  # v5 and pixelwise
    (re.compile(r"stages\.(\d+)\.blocks\.(\d+)\.(.+)\.(\w+)"), "block"),
    (re.compile(r"stages\.(\d+)\.(?:layer_norm|norm)\.(\w+)"), "norm"),
]


def mit_key(key: str) -> str | None:
    """pixelwise MixTransformer key for a MiT encoder key under transformers' names (v4 hub names such as
    `block.0.1.attention.self.query.weight`, v5 names such as `stages.0.blocks.1.attention.q_proj.weight`,
    without the `segformer.encoder.` prefix) or pixelwise's own; None when it is not a MiT key."""
    for pattern, kind in _KEY_PATTERNS:
        match = pattern.fullmatch(key)
        if match is None:
            continue
        if kind == "norm":
            stage, param = match.groups()
            return f"stages.{stage}.norm.{param}"
        if kind == "embed":
            stage, path, param = match.groups()
            return f"stages.{stage}.embed.{_EMBED_NAMES[path]}.{param}" if path in _EMBED_NAMES else None
        stage, block, path, param = match.groups()
        return f"stages.{stage}.blocks.{block}.{_BLOCK_NAMES[path]}.{param}" if path in _BLOCK_NAMES else None
    return None


def encoder_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The MiT encoder part of a checkpoint under pixelwise names, and the keys that are neither encoder
    nor a known head (decode head, classifier, pixelwise decoder/head). Prefixes `segformer.`, `encoder.`
    are dropped first."""
    out, unknown = {}, []
    for key, value in state.items():
        rest = key
        for prefix in ("segformer.", "encoder."):
            rest = rest[len(prefix):] if rest.startswith(prefix) else rest
        if key.startswith(("decode_head.", "classifier.", "decoder.", "head.", "aux_head.")):
            continue
        target = mit_key(rest)
        if target is None:
            unknown.append(key)
        else:
            out[target] = value
    return out, unknown


def load_mit_weights(encoder: MixTransformer, pretrained: str | os.PathLike) -> None:
    """Load a local MiT weights file (see `segformer`) into `encoder`, adapting an RGB first conv to the
    encoder's in_chans. ModelError when the file is not a path, holds unknown keys, lacks encoder tensors,
    or a shape disagrees."""
    if not isinstance(pretrained, (str, os.PathLike)):
        raise ModelError(f"segformer: pretrained must be a local weights file of a MiT encoder (no download), "
                         f"got {pretrained!r:.80}")
    source = str(Path(pretrained))
    state, unknown = encoder_state(read_weights(pretrained))
    target = encoder.state_dict()
    if unknown:
        raise ModelError(f"segformer: weights {source} hold {len(unknown)} keys that are not MiT encoder "
                         f"weights, e.g. {unknown[:5]}")
    weight = state.get(INPUT_CONV)
    if weight is not None and weight.shape != target[INPUT_CONV].shape and weight.ndim == 4 \
            and weight.shape[1] == 3 and weight.shape[0] == target[INPUT_CONV].shape[0]:
        state[INPUT_CONV] = adapt_input_conv(encoder.in_chans, weight)
        warnings.warn(f"{source}: input conv {INPUT_CONV} adapted from 3 to {encoder.in_chans} input channels "
                      f"(timm's adapt_input_conv)", stacklevel=3)
    missing = [k for k in target if k not in state]
    extra = [k for k in state if k not in target]
    bad = [f"{k} {tuple(state[k].shape)} vs {tuple(t.shape)}" for k, t in target.items()
           if k in state and state[k].shape != t.shape]
    if missing or extra or bad:
        raise ModelError(f"segformer: weights {source} do not fit this MiT encoder: missing {missing[:5]}, "
                         f"unexpected {extra[:5]}, shape mismatches {bad[:3]} (is it the same variant?)")
    encoder.load_state_dict(state, strict=True)
