"""Panoptic-DeepLab: a shared encoder, two ASPP + decoder branches, semantic / center / offset heads.

Its training targets, loss and post-processing (center NMS, grouping by offsets, fusion with stuff) live
in the panoptic task, pixelwise/tasks/panoptic/.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pixelwise.errors import ModelError
from pixelwise.models.base import encode_padded
from pixelwise.models.blocks import ASPP, ConvNormAct, SeparableConv, resize
from pixelwise.models.encoders import check_in_chans, create_encoder, encoder_norm

PAPER = ("Panoptic-DeepLab: A Simple, Strong, and Fast Baseline for Bottom-Up Panoptic Segmentation "
         "(arXiv 1911.10194)")


class PanopticDecoder(nn.Module):
    """ASPP on the deepest feature, then two upsample-and-fuse steps: to the stride-8 feature (projected to
    `low_channels[0]`) and to the stride-4 feature (projected to `low_channels[1]`), each fused by a 5x5
    depthwise-separable conv of `channels`. features -> (N, channels, H/4, W/4)."""

    def __init__(self, in_channels: Sequence[int], low_indices: Sequence[int], low_channels: Sequence[int],
                 aspp_channels: int, channels: int, rates: Sequence[int]):
        super().__init__()
        self.low_indices = tuple(low_indices)
        self.aspp = ASPP(in_channels[-1], aspp_channels, rates)
        self.projections = nn.ModuleList(ConvNormAct(in_channels[i], c, 1) for i, c in zip(low_indices, low_channels))
        cins = [aspp_channels + low_channels[0], channels + low_channels[1]]
        self.fuse = nn.ModuleList(SeparableConv(c, channels, 5) for c in cins)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self.aspp(features[-1])
        for index, project, fuse in zip(self.low_indices, self.projections, self.fuse):
            low = project(features[index])
            x = fuse(torch.cat([resize(x, low.shape[-2:]), low], dim=1))
        return x


def _head(cin: int, mid: int, cout: int) -> nn.Sequential:
    """5x5 depthwise-separable conv of `mid` channels, then a 1x1 prediction conv (the paper's heads)."""
    return nn.Sequential(SeparableConv(cin, mid, 5), nn.Conv2d(mid, cout, 1))


class PanopticDeepLab(nn.Module):
    """forward: x float (N, in_chans, H, W), any H and W -> dict of tensors at the input size:
    "out" semantic logits (N, num_classes, H, W), "center" heatmap (N, 1, H, W), "offset" (N, 2, H, W)
    = (dy, dx) in input pixels from each pixel to its instance centre. Same in train and eval mode.

    The heads run at stride 4; their outputs are bilinearly upsampled, the offsets also scaled by the
    upsampling factor (they are regressed in stride-4 units, as detectron2 does).
    Attributes: stride, num_classes, in_chans, encoder_name, norm, targets (options of
    `tasks.panoptic.targets.panoptic_targets` the heads are trained for: sigma, small_area, small_weight) and
    postprocess (default options of `tasks.panoptic.postprocess.panoptic_segmentation`).
    """

    def __init__(self, encoder: nn.Module, semantic_decoder: nn.Module, instance_decoder: nn.Module,
                 semantic_head: nn.Module, center_head: nn.Module, offset_head: nn.Module, num_classes: int,
                 stride: int, encoder_name: str, targets: dict, postprocess: dict):
        super().__init__()
        self.encoder = encoder
        self.semantic_decoder, self.instance_decoder = semantic_decoder, instance_decoder
        self.semantic_head, self.center_head, self.offset_head = semantic_head, center_head, offset_head
        self.num_classes, self.stride, self.encoder_name = num_classes, int(stride), encoder_name
        self.in_chans = int(getattr(encoder, "in_chans", 3))
        self.norm = encoder_norm(encoder_name)
        self.targets = dict(targets)
        self.postprocess = dict(postprocess)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features, (h, w), size = encode_padded(self.encoder, x, self.stride)
        semantic = self.semantic_head(self.semantic_decoder(features))
        instance = self.instance_decoder(features)
        center, offset = self.center_head(instance), self.offset_head(instance)
        scale = torch.tensor([size[0] / offset.shape[-2], size[1] / offset.shape[-1]], device=x.device)
        offset = resize(offset, size) * scale.to(offset.dtype).view(1, 2, 1, 1)
        crop = (..., slice(0, h), slice(0, w))
        return {"out": resize(semantic, size)[crop], "center": resize(center, size)[crop], "offset": offset[crop]}


def panoptic_deeplab(num_classes: int, encoder: str = "resnet50", output_stride: int = 16,
                     rates: Sequence[int] | None = None, aspp_channels: int = 256, decoder_channels: int = 256,
                     instance_decoder_channels: int = 128, head_channels: int = 32, center_sigma: float = 8.0,
                     center_threshold: float = 0.1, nms_kernel: int = 7, top_k: int = 200, stuff_area: int = 2048,
                     small_instance_area: int = 4096, small_instance_weight: float = 3.0,
                     in_chans: int = 3, pretrained=None) -> PanopticDeepLab:
    """Panoptic-DeepLab (Cheng et al., arXiv 1911.10194). (N, in_chans, H, W) -> {"out", "center", "offset"}.

    Encoder through timm, dilated to output_stride 16 (default) or 8; two decoders as the paper's: ASPP
    (rates (6, 12, 18) at stride 16, doubled at 8) and fusion with the stride-8 and stride-4 features
    (semantic: projected to 64 and 32 channels, decoder_channels wide; instance: 32 and 16,
    instance_decoder_channels wide). Heads: 5x5 separable conv (decoder width for semantic,
    head_channels for center / offset) and a 1x1 prediction conv. center_sigma: standard deviation in
    pixels of the Gaussian center targets; small_instance_area / small_instance_weight: pixels of instances
    smaller than the area weigh that much in the semantic loss (64 x 64 and 3 in the paper; 1 turns it
    off, e.g. where every object is small). center_threshold, nms_kernel, top_k, stuff_area: defaults of the
    post-processing (Cityscapes values of the paper) recorded with the model. in_chans: input channels of the
    backbone's first conv (pretrained RGB weights adapted, see `create_encoder`).
    """
    check_in_chans("panoptic_deeplab", in_chans)
    if output_stride not in (8, 16, 32):
        raise ModelError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
    enc = create_encoder(encoder, pretrained=pretrained, output_stride=output_stride, in_chans=in_chans)
    if 4 not in enc.reductions or 8 not in enc.reductions:
        raise ModelError(f"panoptic_deeplab: encoder {encoder!r} has no stride-4 and stride-8 features "
                         f"({enc.reductions})")
    low = [max(i for i, r in enumerate(enc.reductions) if r == s) for s in (8, 4)]
    rates = tuple(rates) if rates is not None else tuple(r * 16 // min(output_stride, 16) for r in (6, 12, 18))
    sem_dec = PanopticDecoder(enc.channels, low, (64, 32), aspp_channels, decoder_channels, rates)
    ins_dec = PanopticDecoder(enc.channels, low, (32, 16), aspp_channels, instance_decoder_channels, rates)
    post = {"threshold": center_threshold, "nms_kernel": nms_kernel, "top_k": top_k, "stuff_area": stuff_area}
    return PanopticDeepLab(enc, sem_dec, ins_dec, _head(decoder_channels, decoder_channels, num_classes),
                           _head(instance_decoder_channels, head_channels, 1),
                           _head(instance_decoder_channels, head_channels, 2), num_classes,
                           stride=max(enc.reductions), encoder_name=encoder, postprocess=post,
                           targets={"sigma": center_sigma, "small_area": small_instance_area,
                                    "small_weight": small_instance_weight})
