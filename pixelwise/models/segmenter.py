"""Segmenter: a ViT encoder on patches with a linear or mask-transformer decoder.

Strudel, Garcia, Laptev, Schmid, "Segmenter: Transformer for Semantic Segmentation", arXiv 2105.05633.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import timm
import torch
import torch.nn.functional as F
from timm.models._features import FeatureGetterNet
from timm.models.vision_transformer import Block
from torch import nn

from pixelwise.errors import ModelError
from pixelwise.models.base import SegmentationModel
from pixelwise.models.encoders import check_in_chans, create_encoder

PAPER = "Segmenter: Transformer for Semantic Segmentation (arXiv 2105.05633)"


class NormedFeatureGetter(FeatureGetterNet):
    """timm's ViT feature wrapper with the final LayerNorm kept and applied: Segmenter decodes the
    encoder's normalised output tokens."""

    def __init__(self, model: nn.Module, **kwargs):
        kwargs["norm"] = True
        super().__init__(model, **kwargs)


def _tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)  # (N, D, h, w) -> (N, h*w, D)


class LinearDecoder(nn.Module):
    """Point-wise linear layer on the patch tokens. [(N, D, h, w)] -> (N, num_classes, h, w)."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        return self.head(_tokens(x)).transpose(1, 2).reshape(x.shape[0], -1, *x.shape[-2:])


class MaskTransformer(nn.Module):
    """Segmenter's mask transformer. Patch tokens (projected to d_model) and one learnable embedding per
    class go jointly through `n_layers` transformer blocks; after a LayerNorm, patch and class outputs
    are linearly projected and L2-normalised, and the masks are their scalar products, normalised over
    classes by a LayerNorm. [(N, D, h, w)] -> (N, num_classes, h, w)."""

    def __init__(self, dim: int, num_classes: int, n_layers: int = 2, d_model: int | None = None,
                 dropout: float = 0.1, drop_path: float = 0.0):
        super().__init__()
        d_model = d_model or dim
        self.num_classes = num_classes
        rates = [drop_path * i / max(n_layers - 1, 1) for i in range(n_layers)]  # stochastic depth ramp
        self.blocks = nn.ModuleList(
            Block(d_model, max(d_model // 64, 1), 4.0, qkv_bias=True, proj_drop=dropout, attn_drop=dropout,
                  drop_path=r) for r in rates)
        self.cls_emb = nn.Parameter(torch.zeros(1, num_classes, d_model))
        self.proj_dec = nn.Linear(dim, d_model)
        scale = d_model**-0.5
        self.proj_patch = nn.Parameter(scale * torch.randn(d_model, d_model))
        self.proj_classes = nn.Parameter(scale * torch.randn(d_model, d_model))
        self.decoder_norm = nn.LayerNorm(d_model)
        self.mask_norm = nn.LayerNorm(num_classes)
        for module in self.modules():  # the reference initialisation
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.cls_emb, std=0.02)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        n, _, h, w = x.shape
        tokens = torch.cat([self.proj_dec(_tokens(x)), self.cls_emb.expand(n, -1, -1)], dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.decoder_norm(tokens)
        patches = F.normalize(tokens[:, :-self.num_classes] @ self.proj_patch, dim=-1)
        classes = F.normalize(tokens[:, -self.num_classes:] @ self.proj_classes, dim=-1)
        masks = self.mask_norm(patches @ classes.transpose(1, 2))  # (N, h*w, C)
        return masks.transpose(1, 2).reshape(n, self.num_classes, h, w)


def _vit_name(encoder: str, patch_size: int | None) -> tuple[str, dict]:
    """timm name for `encoder` at `patch_size`: the sibling model when timm has one (its pretrained
    weights stay usable), else the same model with patch_size overridden (random init only)."""
    match = re.search(r"patch(\d+)", encoder)
    if patch_size is None or (match and int(match.group(1)) == patch_size):
        return encoder, {}
    if match:
        sibling = encoder.replace(match.group(0), f"patch{patch_size}")
        for candidate in (sibling, re.sub(r"_\d+$", "_224", sibling), re.sub(r"_\d+$", "_384", sibling)):
            if timm.is_model(candidate):
                return candidate, {}
    return encoder, {"patch_size": patch_size}


def segmenter(num_classes: int, encoder: str = "vit_small_patch16_384", patch_size: int | None = None,
              decoder: str = "mask", n_layers: int = 2, drop_path: float = 0.1, in_chans: int = 3,
              pretrained=None) -> SegmentationModel:
    """Segmenter (arXiv 2105.05633). (N, in_chans, H, W) -> logits (N, num_classes, H, W) for any H, W.

    Encoder: a timm ViT ("vit_tiny_patch16_384", "vit_small_patch16_384" default = Seg-S/16,
    "vit_base_patch16_384", ...); patch_size 8/16/32 picks the sibling timm model (e.g.
    vit_small_patch8_224) or, when timm has none, overrides the patch size (random init). Position
    embeddings are interpolated to each input's patch grid (timm's dynamic_img_size), so any size works;
    inputs are padded to a multiple of the patch size. Stochastic depth `drop_path` (0.1) in the encoder.
    decoder="mask": the mask transformer (`n_layers` blocks of the encoder's width, heads = width/64,
    dropout 0.1); decoder="linear": a point-wise linear layer. Patch-level scores are upsampled bilinearly.
    Seg-S/16 with the mask decoder has about 25.9M parameters for 150 classes.
    in_chans: input channels of the patch embedding (pretrained RGB weights adapted, see `create_encoder`).
    """
    check_in_chans("segmenter", in_chans)
    if decoder not in ("mask", "linear"):
        raise ModelError(f"segmenter: decoder must be 'mask' or 'linear', got {decoder!r}")
    name, extra = _vit_name(encoder, patch_size)
    enc = create_encoder(name, pretrained=pretrained, in_chans=in_chans, out_indices=(-1,), dynamic_img_size=True,
                         drop_path_rate=drop_path, feature_cls=NormedFeatureGetter, **extra)
    dim, stride = enc.channels[-1], enc.reductions[-1]
    dec = MaskTransformer(dim, num_classes, n_layers) if decoder == "mask" else LinearDecoder(dim, num_classes)
    return SegmentationModel(enc, dec, nn.Identity(), num_classes, stride=stride, encoder_name=name)
