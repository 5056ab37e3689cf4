"""SegmentationModel: encoder -> decoder -> head, logits at the input size, for any input size."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.errors import ModelError
from pixelwise.models.blocks import resize
from pixelwise.models.encoders import encoder_norm

# Deepest encoder a plain U-Net / SegNet-Basic may ask for: stride 2**10 = 1024 px already pads a
# 1024-px tile to one position at the bottleneck. A config asking for more is refused before the
# builder loops over `depth` levels (10**6 levels would run for minutes, even on the meta device).
MAX_DEPTH = 10


def check_depth(model: str, depth) -> int:
    """`depth` if it is an integer in 1..MAX_DEPTH, else a ModelError naming `model`."""
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
        raise ModelError(f"{model}: depth must be an integer in 1..{MAX_DEPTH}, got {depth!r}")
    return depth


def pad_to_stride(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Zero-pad (N,C,H,W) at the right and bottom to multiples of `stride` (callers crop back to H, W)."""
    pad_h, pad_w = -x.shape[-2] % stride, -x.shape[-1] % stride
    return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x


def encode_padded(encoder: nn.Module, x: torch.Tensor, stride: int):
    """Check that x is (N, C, H, W), pad it to a multiple of `stride` and run the encoder.
    Returns (features, (H, W) of the input, padded size) so heads can resize to the padded size and crop."""
    if x.ndim != 4:
        raise ValueError(f"expected an (N, C, H, W) batch, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    x = pad_to_stride(x, stride)
    return encoder(x), (h, w), x.shape[-2:]


class SegmentationModel(nn.Module):
    """The one model class every architecture builds.

    forward: x float (N, in_chans, H, W), any H and W ->
        logits (N, num_classes, H, W), or {"out": logits, "aux": aux_logits} in training mode when the
        model has an auxiliary head (deep supervision); eval mode always gives the tensor. An aux head may
        return several named maps instead (a dict: "aux", "aux2", ... class logits (N, num_classes, h, w);
        "boundary" a boundary logit map (N, 1, h, w), as PIDNet's D branch); each is resized and cropped alike.

    The input is zero-padded on the right and bottom to a multiple of `stride` (the factor the
    encoder-decoder needs for its feature maps to line up), run through
    `head(decoder(encoder(x)))`, bilinearly resized to the padded size when the head's output is
    coarser, and cropped back to (H, W). The encoder returns whatever its decoder consumes (a list of
    feature maps, shallow to deep); `aux_head`, when given, takes that same list.

    Attributes: `stride`, `num_classes`, `in_chans` (the encoder's input channels), `encoder_name` (timm
    name or None), `norm` = (mean, std) the encoder's pretrained weights expect (RGB statistics, whatever
    `in_chans` is).
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, head: nn.Module, num_classes: int, stride: int,
                 aux_head: nn.Module | None = None, encoder_name: str | None = None):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.head = head
        self.aux_head = aux_head
        self.num_classes = num_classes
        self.stride = int(stride)
        self.in_chans = int(getattr(encoder, "in_chans", 3))
        self.encoder_name = encoder_name
        self.norm = getattr(encoder, "norm", None) or encoder_norm(encoder_name)  # what its weights expect

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        features, (h, w), size = encode_padded(self.encoder, x, self.stride)
        logits = resize(self.head(self.decoder(features)), size)[..., :h, :w]
        if self.aux_head is not None and self.training:
            aux = self.aux_head(features)
            named = aux if isinstance(aux, dict) else {"aux": aux}
            return {"out": logits, **{k: resize(v, size)[..., :h, :w] for k, v in named.items()}}
        return logits
