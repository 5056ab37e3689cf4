"""DDRNet: Deep Dual-Resolution Networks, a high-resolution and a low-resolution branch with bilateral fusion.

Hong, Pan, Sun, Jia, "Deep Dual-resolution Networks for Real-time and Accurate Semantic Segmentation of Road
Scenes", arXiv 2101.06085.

The layout follows the official code (github ydhongHIT/DDRNet, segmentation/DDRNet_23_slim.py and DDRNet_23.py);
module names are the official ones (`conv1`, `layer1`..`layer5`, `layer3_`..`layer5_`, `compression3/4`,
`down3/4`, `spp`, `final_layer`, `seghead_extra`), so the official ImageNet checkpoints (DDRNet23s_imagenet.pth,
DDRNet23_imagenet.pth) load into the body by key and the official Cityscapes / CamVid checkpoints into the heads
too (`pidnet.load_official_weights`). The residual blocks, the DAPPM and the seg head are PIDNet's (its code grew
out of DDRNet's and keeps them unchanged), imported from `pixelwise.models.pidnet`.

Variants (the official builders): width c = `planes`, two BasicBlocks per stage:
    23-slim: c=32, DAPPM of 128, head 64            23: c=64, DAPPM of 128, head 128

Shapes for an input (N, C, H, W) with H and W multiples of 64 (SegmentationModel pads to that):
    stem `conv1` (two 3x3 s2 conv-BN-ReLU, with bias as the official) and `layer1` -> (N, c, H/4);
    `layer2` (s2) -> (N, 2c, H/8): the high-resolution branch starts here and stays at H/8.
    Stage 3: low `layer3` (s2) -> (N, 4c, H/16), high `layer3_` -> (N, 2c, H/8); bilateral fusion: low +=
        `down3`(high) (3x3 s2 conv-BN), high += up(`compression3`(low before the fusion)) (1x1 conv-BN).
    Stage 4: low `layer4` (s2) -> (N, 8c, H/32), high `layer4_` -> (N, 2c, H/8); fusion with `down4` (two 3x3 s2
        conv-BN, ReLU between) and `compression4`.
    Stage 5: high `layer5_` (1 Bottleneck, expansion 2) -> (N, 4c, H/8); low `layer5` (1 Bottleneck, s2) ->
        (N, 16c, H/64), `spp` DAPPM (average pools 5/2, 9/4, 17/8 and a global pool, each added to the previous
        scale through a 3x3 conv, concatenated, compressed, plus a shortcut) -> (N, 4c, H/64), upsampled to H/8.
    Seg head `final_layer` (BN-ReLU-3x3 conv to head width, BN-ReLU-1x1 classifier) on low + high ->
        (N, num_classes, H/8, W/8), upsampled bilinearly to the input by SegmentationModel.
    Training-only head (aux=True, the paper's "deep supervision"): `seghead_extra` (the same head) on the high
        branch after stage 3's fusion, returned as "aux"; the semantic loss weighs its loss 0.4, the paper's
        alpha.

Departures, each stated:
- The paper trains with OHEM cross-entropy; pixelwise trains with the recipe's loss (class weights, label
  smoothing, Dice / Lovasz mixes as configured), the same for every architecture.
- Upsampling uses `resize` (bilinear, align_corners=False as the official); inputs are zero-padded to a multiple
  of 64 (the low branch's stride) and the logits cropped back, so the official `H // 8` sizes always agree.
- Training mode needs batches of 2 or more (the DAPPM's global-pool branch normalises one value per sample).
- Parameter counts (19 classes): the paper's 5.7M (23-slim) and 20.1M (23) are the model without the aux head:
  5,695,987 and 20,148,947 here (5,734,342 / 20,299,366 with it).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pixelwise.constants import IMAGENET_MEAN, IMAGENET_STD
from pixelwise.errors import ModelError
from pixelwise.models.base import SegmentationModel
from pixelwise.models.blocks import resize
from pixelwise.models.encoders import check_in_chans
from pixelwise.models.pidnet import (DAPPM, BasicBlock, Bottleneck, PickLast, SegmentHead, _bn, init_weights,
                                     load_official_weights, make_layer)

PAPER = ("Deep Dual-resolution Networks for Real-time and Accurate Semantic Segmentation of Road Scenes "
         "(arXiv 2101.06085)")

# The official builders: planes, spp_planes, head_planes (both variants: two BasicBlocks per stage).
VARIANTS: dict[str, dict[str, int]] = {
    "23-slim": {"planes": 32, "spp_planes": 128, "head_planes": 64},
    "23": {"planes": 64, "spp_planes": 128, "head_planes": 128},
}
STRIDE = 64  # the low-resolution branch's output stride


class DDRNetBody(nn.Module):
    """The two branches, their bilateral fusions and the DAPPM (the official DualResNet without its heads).
    (N, in_chans, H, W), H and W multiples of 64 -> [high branch after stage 3 (N, 2c, H/8, W/8), low + high
    (N, 4c, H/8, W/8)]. Attributes `channels`, `reductions`, `in_chans`, `norm`."""

    def __init__(self, planes: int = 32, spp_planes: int = 128, in_chans: int = 3):
        super().__init__()
        c, high = planes, planes * 2
        self.conv1 = nn.Sequential(nn.Conv2d(in_chans, c, 3, stride=2, padding=1), _bn(c), nn.ReLU(inplace=True),
                                   nn.Conv2d(c, c, 3, stride=2, padding=1), _bn(c), nn.ReLU(inplace=True))
        self.relu = nn.ReLU(inplace=False)
        self.layer1 = make_layer(BasicBlock, c, c, 2)
        self.layer2 = make_layer(BasicBlock, c, c * 2, 2, stride=2)
        self.layer3 = make_layer(BasicBlock, c * 2, c * 4, 2, stride=2)
        self.layer4 = make_layer(BasicBlock, c * 4, c * 8, 2, stride=2)
        self.compression3 = nn.Sequential(nn.Conv2d(c * 4, high, 1, bias=False), _bn(high))
        self.compression4 = nn.Sequential(nn.Conv2d(c * 8, high, 1, bias=False), _bn(high))
        self.down3 = nn.Sequential(nn.Conv2d(high, c * 4, 3, stride=2, padding=1, bias=False), _bn(c * 4))
        self.down4 = nn.Sequential(nn.Conv2d(high, c * 4, 3, stride=2, padding=1, bias=False), _bn(c * 4),
                                   nn.ReLU(inplace=True),
                                   nn.Conv2d(c * 4, c * 8, 3, stride=2, padding=1, bias=False), _bn(c * 8))
        self.layer3_ = make_layer(BasicBlock, c * 2, high, 2)
        self.layer4_ = make_layer(BasicBlock, high, high, 2)
        self.layer5_ = make_layer(Bottleneck, high, high, 1)
        self.layer5 = make_layer(Bottleneck, c * 8, c * 8, 1, stride=2)
        self.spp = DAPPM(c * 16, spp_planes, c * 4)
        self.channels = [high, c * 4]
        self.reductions = [8, 8]
        self.in_chans = in_chans
        self.norm = (IMAGENET_MEAN, IMAGENET_STD)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        relu = self.relu
        x = self.layer1(self.conv1(x))
        x2 = self.layer2(relu(x))                                      # (N, 2c, H/8)
        size = x2.shape[-2:]
        x3 = self.layer3(relu(x2))                                     # low (N, 4c, H/16)
        high = self.layer3_(relu(x2))                                  # high (N, 2c, H/8)
        low = x3 + self.down3(relu(high))
        high = high + resize(self.compression3(relu(x3)), size)
        extra = high                                                   # the aux head's input
        x4 = self.layer4(relu(low))                                    # low (N, 8c, H/32)
        high = self.layer4_(relu(high))
        low = x4 + self.down4(relu(high))
        high = high + resize(self.compression4(relu(x4)), size)
        high = self.layer5_(relu(high))                                # (N, 4c, H/8)
        low = resize(self.spp(self.layer5(relu(low))), size)           # (N, 16c, H/64) -> (N, 4c, H/8)
        return [extra, low + high]


class DDRNetAuxHead(nn.Module):
    """The training-only head `seghead_extra` on the high branch after stage 3 -> {"aux": (N, num_classes, H/8,
    W/8)} logits."""

    def __init__(self, planes: int, head_planes: int, num_classes: int):
        super().__init__()
        self.seghead_extra = SegmentHead(planes * 2, head_planes, num_classes)

    def forward(self, features: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"aux": self.seghead_extra(features[0])}


def ddrnet(num_classes: int, variant: str = "23-slim", aux: bool = True, in_chans: int = 3,
           pretrained=None) -> SegmentationModel:
    """DDRNet (arXiv 2101.06085). (N, in_chans, H, W) -> logits (N, num_classes, H, W) for any H, W.

    variant: "23-slim" or "23" (or 23; DDRNet-23-slim / DDRNet-23, the official configurations).
    aux=True (default, the paper's training): the extra seg head on the high branch; in training mode the model
        returns {"out", "aux"} at the input size. aux=False: no such head. Eval mode always returns the logits.
        With 19 classes: 23-slim 5.73M / 5.70M, 23 20.30M / 20.15M parameters with / without it.
    in_chans: input channels of the first conv.
    pretrained: None (the official initialisation: Kaiming normal convs) or a local weights file: the official
        ImageNet DDRNet (DDRNet23s_imagenet.pth / DDRNet23_imagenet.pth), an official finetuned checkpoint (its
        `final_layer` / `seghead_extra` load into the heads when their shapes fit) or a pixelwise ddrnet's state
        dict; loaded non-strictly, see `pidnet.load_official_weights`.
    """
    check_in_chans("ddrnet", in_chans)
    key = str(variant).lower()  # YAML reads `variant: 23` as an integer
    if isinstance(variant, bool) or key not in VARIANTS:
        raise ModelError(f"ddrnet: unknown variant {variant!r}; known variants: {', '.join(VARIANTS)}")
    if not isinstance(aux, bool):
        raise ModelError(f"ddrnet: aux must be true or false, got {aux!r}")
    cfg = VARIANTS[key]
    body = DDRNetBody(cfg["planes"], cfg["spp_planes"], in_chans)
    head = SegmentHead(cfg["planes"] * 4, cfg["head_planes"], num_classes)
    aux_head = DDRNetAuxHead(cfg["planes"], cfg["head_planes"], num_classes) if aux else None
    for module in (body, head, aux_head):
        if module is not None:
            init_weights(module)
    if pretrained is not None and pretrained is not False:
        load_official_weights("ddrnet", body, pretrained, head=head, aux_head=aux_head)
    return SegmentationModel(body, PickLast(), head, num_classes, stride=STRIDE, aux_head=aux_head)
