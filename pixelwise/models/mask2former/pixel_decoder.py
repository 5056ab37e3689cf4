"""Mask2Former's pixel decoder: multi-scale deformable attention over the 1/32, 1/16, 1/8 maps, then an FPN step to 1/4.

Cheng, Misra, Schwing, Kirillov, Girdhar, "Masked-attention Mask Transformer for Universal Image
Segmentation", arXiv 2112.01527 (section 3.2 / 4: the MSDeformAttn pixel decoder); the deformable attention is
Zhu et al., "Deformable DETR", arXiv 2010.04159. Multi-scale deformable attention runs in plain torch with
`F.grid_sample` (the reference's pure-PyTorch `ms_deform_attn_core_pytorch`, not its CUDA kernel), so it
runs on any device without a compiled extension.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

NUM_LEVELS = 3  # the deformable encoder sees the 1/32, 1/16 and 1/8 maps
NUM_POINTS = 4  # sampling points per head and level


def sine_position_embedding(x: torch.Tensor, num_feats: int, temperature: float = 10000.0) -> torch.Tensor:
    """DETR's normalised sine position embedding of a (N, C, h, w) map -> (1, 2 * num_feats, h, w) (y half first).

    Row and column indices 1..h, 1..w are scaled to (0, 2 pi]; channel pairs are (sin, cos) at
    temperature ** (2 i / num_feats). Computed in float32, returned in x's dtype."""
    h, w = x.shape[-2:]
    eps, scale = 1e-6, 2 * math.pi
    y = torch.arange(1, h + 1, dtype=torch.float32, device=x.device)
    xs = torch.arange(1, w + 1, dtype=torch.float32, device=x.device)
    y = (y / (y[-1:] + eps) * scale)[:, None].expand(h, w)
    xs = (xs / (xs[-1:] + eps) * scale)[None, :].expand(h, w)
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=x.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)

    def embed(v: torch.Tensor) -> torch.Tensor:  # (h, w) -> (h, w, num_feats), interleaved sin / cos
        v = v[..., None] / dim_t
        return torch.stack((v[..., 0::2].sin(), v[..., 1::2].cos()), dim=-1).flatten(-2)

    return torch.cat((embed(y), embed(xs)), dim=-1).permute(2, 0, 1)[None].to(x.dtype)


def ms_deform_attn(value: torch.Tensor, shapes: Sequence[tuple[int, int]], locations: torch.Tensor,
                   weights: torch.Tensor) -> torch.Tensor:
    """Multi-scale deformable attention, the reference's pure-PyTorch form.

    value (N, S, heads, d) over the flattened levels `shapes` [(h, w) ...] (S = sum h * w);
    locations (N, Q, heads, levels, points, 2) as (x, y) in [0, 1]; weights (N, Q, heads, levels, points)
    -> (N, Q, heads * d). Bilinear sampling with zeros outside, align_corners=False.
    """
    n, _, heads, d = value.shape
    _, q, _, levels, points, _ = locations.shape
    values = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * locations - 1
    sampled = []
    for level, (h, w) in enumerate(shapes):
        v = values[level].flatten(2).transpose(1, 2).reshape(n * heads, d, h, w)
        g = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)  # (N * heads, Q, points, 2)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    weights = weights.transpose(1, 2).reshape(n * heads, 1, q, levels * points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)  # (N * heads, d, Q)
    return out.view(n, heads * d, q).transpose(1, 2)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable self-attention over the flattened levels. Each query predicts, per head,
    NUM_POINTS offsets and weights per level around its reference point.

    forward: query (N, S, C) with position embedding added, reference (N, S, levels, 2), value input
    (N, S, C), shapes [(h, w)] -> (N, S, C).
    """

    def __init__(self, dim: int, heads: int, levels: int = NUM_LEVELS, points: int = NUM_POINTS):
        super().__init__()
        if dim % heads:
            raise ValueError(f"pixel decoder width {dim} is not divisible by {heads} heads")
        self.heads, self.levels, self.points = heads, levels, points
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference initialisation: offsets start on a ring of `points` radii, one direction per head."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.heads, dtype=torch.float32) * (2.0 * math.pi / self.heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.heads, 1, 1, 2)
        grid = grid.repeat(1, self.levels, self.points, 1) * torch.arange(1, self.points + 1).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for linear in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, query: torch.Tensor, reference: torch.Tensor, value: torch.Tensor,
                shapes: Sequence[tuple[int, int]]) -> torch.Tensor:
        n, s, c = query.shape
        value = self.value_proj(value).view(n, value.shape[1], self.heads, c // self.heads)
        offsets = self.sampling_offsets(query).view(n, s, self.heads, self.levels, self.points, 2)
        weights = self.attention_weights(query).view(n, s, self.heads, self.levels * self.points)
        weights = weights.softmax(-1).view(n, s, self.heads, self.levels, self.points)
        normalizer = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)
        locations = reference[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        return self.output_proj(ms_deform_attn(value, shapes, locations, weights))


class DeformableEncoderLayer(nn.Module):
    """Post-norm encoder layer: x = norm1(x + MSDeformAttn(x + pos)); x = norm2(x + FFN(x)). (N, S, C) -> (N, S, C)."""

    def __init__(self, dim: int, heads: int, dim_feedforward: int):
        super().__init__()
        self.self_attn = MSDeformAttn(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, reference: torch.Tensor,
                shapes: Sequence[tuple[int, int]]) -> torch.Tensor:
        x = self.norm1(x + self.self_attn(x + pos, reference, x, shapes))
        return self.norm2(x + self.linear2(F.relu(self.linear1(x))))


def reference_points(shapes: Sequence[tuple[int, int]], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Pixel centres of every level, normalised to [0, 1] as (x, y): (1, S, levels, 2) (no padding masks:
    every position of the padded input is valid, as in the reference with full-image valid ratios)."""
    points = []
    for h, w in shapes:
        ys, xs = torch.meshgrid(torch.linspace(0.5, h - 0.5, h, dtype=dtype, device=device) / h,
                                torch.linspace(0.5, w - 0.5, w, dtype=dtype, device=device) / w, indexing="ij")
        points.append(torch.stack((xs.reshape(-1), ys.reshape(-1)), -1))
    return torch.cat(points, 0)[None, :, None].expand(-1, -1, len(shapes), -1)


def _conv_gn(cin: int, cout: int, kernel_size: int, bias: bool, relu: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=bias),
                               nn.GroupNorm(32, cout)]
    return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)


class PixelDecoder(nn.Module):
    """MSDeformAttn pixel decoder.

    forward: [f4, f8, f16, f32] backbone maps (N, channels[i], H/s, W/s) ->
        (mask_features (N, mask_dim, H/4, W/4), [m32, m16, m8] each (N, dim, H/s, W/s), coarse to fine).

    The three coarse maps are projected to `dim` (1x1 conv + GroupNorm(32)), flattened with sine position
    plus level embeddings, and refined by `layers` deformable encoder layers; the 1/4 map is a lateral
    1x1 conv + GN of f4 plus the refined 1/8 map upsampled bilinearly (as the reference code does), then a
    3x3 conv + GN + ReLU, and a 1x1 conv gives the mask features.
    """

    def __init__(self, channels: Sequence[int], dim: int = 256, mask_dim: int = 256, heads: int = 8,
                 layers: int = 6, dim_feedforward: int = 1024):
        super().__init__()
        if dim % 32:
            raise ValueError(f"pixel decoder width {dim} is not a multiple of 32 (GroupNorm(32) groups)")
        self.dim = dim
        self.input_proj = nn.ModuleList(_conv_gn(c, dim, 1, bias=True) for c in list(channels)[::-1][:NUM_LEVELS])
        self.level_embed = nn.Parameter(torch.empty(NUM_LEVELS, dim))
        self.encoder = nn.ModuleList(DeformableEncoderLayer(dim, heads, dim_feedforward) for _ in range(layers))
        self.lateral = _conv_gn(channels[0], dim, 1, bias=False)
        self.output = _conv_gn(dim, dim, 3, bias=False, relu=True)
        self.mask_features = nn.Conv2d(dim, mask_dim, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform projections with zero bias (reference c2_xavier_fill), N(0, 1) level embeddings."""
        nn.init.normal_(self.level_embed)
        for conv in [p[0] for p in self.input_proj] + [self.mask_features]:
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        coarse = list(features)[::-1][:NUM_LEVELS]  # f32, f16, f8
        shapes = [(int(f.shape[-2]), int(f.shape[-1])) for f in coarse]
        src, pos = [], []
        for level, f in enumerate(coarse):
            src.append(self.input_proj[level](f).flatten(2).transpose(1, 2))
            embed = sine_position_embedding(f, self.dim // 2).flatten(2).transpose(1, 2)
            pos.append(embed + self.level_embed[level].view(1, 1, -1))
        x, pos = torch.cat(src, 1), torch.cat(pos, 1)
        reference = reference_points(shapes, x.device, x.dtype)
        for layer in self.encoder:
            x = layer(x, pos, reference, shapes)
        n = x.shape[0]
        refined = [t.transpose(1, 2).reshape(n, -1, h, w) for t, (h, w) in zip(x.split([h * w for h, w in shapes], 1),
                                                                                  shapes)]
        fine = self.lateral(features[0])
        fine = fine + F.interpolate(refined[-1], size=fine.shape[-2:], mode="bilinear", align_corners=False)
        return self.mask_features(self.output(fine)), refined
