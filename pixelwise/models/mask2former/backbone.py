"""Mask2Former's backbone adapter: a timm encoder as the four NCHW feature maps at strides 4, 8, 16, 32.

Swin encoders (timm's `swin_transformer` family) are built for any input size (timm's `dynamic_img_size`,
attention masks made per forward) with full windows at every stage (`always_partition`), and their blocks
pad each feature map to a multiple of the window BEFORE the cyclic shift, as the original Swin code, the
Mask2Former reference (its D2SwinTransformer) and transformers' SwinBackbone do. timm 1.0 shifts first and
pads after; the two agree only where every stage's map is a multiple of the window (224 px inputs, not the
sizes segmentation sees), and Mask2Former checkpoints were trained with the pad-first order.
"""
from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from timm.models.swin_transformer import SwinTransformerBlock, window_partition, window_reverse
from torch import nn

from pixelwise.errors import ModelError
from pixelwise.models.encoders import Encoder

STRIDES = (4, 8, 16, 32)


def is_swin(name: str) -> bool:
    """Whether timm model `name` is a (v1) Swin Transformer, the family that needs the options above."""
    try:
        return timm.models.model_entrypoint(name.split(".")[0]).__module__ == "timm.models.swin_transformer"
    except RuntimeError:  # unknown name: create_encoder reports it
        return False


class PadFirstSwinBlock(SwinTransformerBlock):
    """timm's Swin block with the reference order of window attention: pad to whole windows, shift,
    attend (shift mask over the padded map), unshift, crop. (N, H, W, C) -> (N, H, W, C)."""

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        _, h, w, c = x.shape
        wh, ww = self.window_size
        x = F.pad(x, (0, 0, 0, -w % ww, 0, -h % wh))
        hp, wp = x.shape[1:3]
        shifted = any(self.shift_size)
        if shifted:
            x = torch.roll(x, shifts=(-self.shift_size[0], -self.shift_size[1]), dims=(1, 2))
        mask = self.get_attn_mask(x) if self.dynamic_mask else self.attn_mask
        windows = self.attn(window_partition(x, self.window_size).view(-1, self.window_area, c), mask=mask)
        x = window_reverse(windows.view(-1, wh, ww, c), self.window_size, hp, wp)
        if shifted:
            x = torch.roll(x, shifts=self.shift_size, dims=(1, 2))
        return x[:, :h, :w].contiguous()


def use_pad_first_windows(model: nn.Module) -> int:
    """Turn every timm SwinTransformerBlock in `model` into a PadFirstSwinBlock (same weights); returns the count."""
    count = 0
    for module in model.modules():
        if type(module) is SwinTransformerBlock:
            module.__class__ = PadFirstSwinBlock
            count += 1
    return count


class Backbone(nn.Module):
    """The encoder's feature maps at strides 4, 8, 16, 32, as NCHW, each optionally LayerNorm'd over its channels.

    forward: (N, in_chans, H, W), H and W multiples of 32 -> [(N, channels[i], H / s, W / s) for s in 4, 8, 16, 32].
    `output_norms`: one LayerNorm per level on the encoder's outputs, as the reference Swin backbone
    (D2SwinTransformer's norm{i}, transformers' hidden_states_norms) has. Levels at other strides (ResNet's
    and EfficientNet's stride-2 map) are dropped; NHWC outputs (timm's Swin) are permuted to NCHW.
    """

    def __init__(self, encoder: Encoder, output_norms: bool):
        super().__init__()
        missing = [s for s in STRIDES if s not in encoder.reductions]
        if missing:
            raise ModelError(f"mask2former: encoder {encoder.name!r} has no feature maps at strides {missing} "
                             f"(it has {encoder.reductions}); Mask2Former needs strides 4, 8, 16 and 32")
        self.encoder = encoder
        self.levels = [encoder.reductions.index(s) for s in STRIDES]
        self.channels = [encoder.channels[i] for i in self.levels]
        self.channels_last = str(getattr(encoder.model, "output_fmt", "NCHW")).endswith("NHWC")
        self.norms = nn.ModuleList(nn.LayerNorm(c) for c in self.channels) if output_norms else None

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.encoder(x)
        out = []
        for k, i in enumerate(self.levels):
            f = features[i]
            if self.norms is not None:
                f = self.norms[k](f if self.channels_last else f.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            elif self.channels_last:
                f = f.permute(0, 3, 1, 2)
            out.append(f.contiguous())
        return out
