"""FCN-32s, FCN-16s and FCN-8s.

Long, Shelhamer, Darrell, "Fully Convolutional Networks for Semantic Segmentation", arXiv 1411.4038.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.errors import ModelError
from pixelwise.models.base import SegmentationModel
from pixelwise.models.blocks import BilinearConvTranspose
from pixelwise.models.encoders import check_in_chans, create_encoder, pretrained_full_state

PAPER = "Fully Convolutional Networks for Semantic Segmentation (arXiv 1411.4038)"


class FCNDecoder(nn.Module):
    """Score the stride-32 features, upsample with bilinear-initialised transposed convs, fuse skips.

    features: [pool3 (stride 8), pool4 (16), pool5 (32)] for FCN-8s, the last two for 16s, the last for 32s.
    Entries flagged in `pool_first` are the encoder's pre-pooling map (VGG's conv3_3 / conv4_3 at half the
    stride): a 2x2 max-pool turns them into exactly the paper's pool3 / pool4.
    -> logits (N, num_classes, H, W) at the padded input size.
    """

    def __init__(self, channels: list[int], pool_first: list[bool], num_classes: int, fc_channels: int | None):
        super().__init__()
        self.pool_first = pool_first
        deep = channels[-1]
        if fc_channels:  # VGG's fc6 / fc7 "convolutionalized": 7x7 and 1x1 convs
            self.fc = nn.Sequential(
                nn.Conv2d(deep, fc_channels, 7, padding=3), nn.ReLU(inplace=True), nn.Dropout2d(0.5),
                nn.Conv2d(fc_channels, fc_channels, 1), nn.ReLU(inplace=True), nn.Dropout2d(0.5),
            )
            deep = fc_channels
        else:
            self.fc = nn.Identity()
        self.score_fr = nn.Conv2d(deep, num_classes, 1)
        self.score_skips = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in channels[:-1][::-1])  # pool4, pool3
        self.up2 = nn.ModuleList(BilinearConvTranspose(num_classes, 2) for _ in self.score_skips)
        self.up_final = BilinearConvTranspose(num_classes, 32 >> len(self.score_skips))
        for conv in [self.score_fr, *self.score_skips]:  # the paper zero-initialises the class scorers
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        feats = [F.max_pool2d(f, 2) if p else f for f, p in zip(features, self.pool_first)]
        score = self.score_fr(self.fc(feats[-1]))
        for skip, scorer, up in zip(feats[:-1][::-1], self.score_skips, self.up2):
            score = up(score) + scorer(skip)
        return self.up_final(score)


def _fcn(num_classes: int, n_skips: int, encoder: str, fc_channels: int, pretrained,
         in_chans: int = 3) -> SegmentationModel:
    check_in_chans(("fcn32s", "fcn16s", "fcn8s")[n_skips], in_chans)
    with torch.device("meta"):  # reductions only
        reductions = create_encoder(encoder).reductions
    if max(reductions) != 32:
        raise ModelError(f"fcn: encoder {encoder!r} must reach stride 32, its features reach {max(reductions)}")
    indices, pool_first = [], []
    for stride in (8, 16, 32)[2 - n_skips:]:
        if stride in reductions:  # the last feature at this stride
            indices.append(max(i for i, r in enumerate(reductions) if r == stride))
            pool_first.append(False)
        elif stride // 2 in reductions:  # VGG: the map before the pool
            indices.append(max(i for i, r in enumerate(reductions) if r == stride // 2))
            pool_first.append(True)
        else:
            raise ModelError(f"fcn: encoder {encoder!r} has no feature at stride {stride} ({reductions})")
    enc = create_encoder(encoder, pretrained=pretrained, in_chans=in_chans, out_indices=indices)
    is_vgg = encoder.split(".")[0].startswith("vgg")
    decoder = FCNDecoder(enc.channels, pool_first, num_classes, fc_channels if is_vgg else None)
    if is_vgg and pretrained not in (None, False):
        _load_vgg_fc(decoder.fc, encoder, pretrained)
    return SegmentationModel(enc, decoder, nn.Identity(), num_classes, stride=32, encoder_name=encoder)


def _load_vgg_fc(fc: nn.Sequential, encoder: str, pretrained) -> None:
    """Initialise fc6 / fc7 from the VGG classifier's first two layers, as the paper does."""
    state = pretrained_full_state(encoder, pretrained)
    for conv, key in ((fc[0], "pre_logits.fc1"), (fc[3], "pre_logits.fc2")):
        w, b = state.get(key + ".weight"), state.get(key + ".bias")
        if w is not None and b is not None and w.shape == conv.weight.shape:
            with torch.no_grad():
                conv.weight.copy_(w)
                conv.bias.copy_(b)


_DOC = """{name} (arXiv 1411.4038). (N, in_chans, H, W) -> logits (N, num_classes, H, W) for any H, W.

    {what}

    encoder: "vgg16" (the paper) or a ResNet ("resnet50", any timm backbone reaching stride 32).
    With VGG, fc6 / fc7 become a 7x7 and a 1x1 conv of `fc_channels` (4096 in the paper; smaller
    values make light models) with ReLU and dropout 0.5, initialised from the pretrained classifier when
    `pretrained` is given and fc_channels=4096. ResNets have no fully connected layers to convolutionalize:
    their last stage is scored directly and fc_channels is unused. Skips use pool3 / pool4 (VGG) or the
    stride-8 / stride-16 stages (ResNet). Class scorers start at zero, transposed convs at bilinear
    interpolation (all learnable; the paper froze the final 8x/16x/32x one).
    Departures, and why: inputs are zero-padded to a multiple of 32 and cropped back instead of the paper's
    100-pixel padding of conv1_1 and crop layers (same result shape for any size, no wasted compute);
    skip scores are fused without the "at-once" variant's 0.01 / 0.0001 scale layers (the skip scorers
    start at zero, so the skips enter training gradually anyway). fc_channels=0 scores pool5 directly.
    in_chans: input channels of the encoder's first conv (pretrained RGB weights adapted, see `create_encoder`).
    """


def fcn32s(num_classes: int, encoder: str = "vgg16", fc_channels: int = 4096, in_chans: int = 3,
           pretrained=None) -> SegmentationModel:
    return _fcn(num_classes, 0, encoder, fc_channels, pretrained, in_chans)


def fcn16s(num_classes: int, encoder: str = "vgg16", fc_channels: int = 4096, in_chans: int = 3,
           pretrained=None) -> SegmentationModel:
    return _fcn(num_classes, 1, encoder, fc_channels, pretrained, in_chans)


def fcn8s(num_classes: int, encoder: str = "vgg16", fc_channels: int = 4096, in_chans: int = 3,
          pretrained=None) -> SegmentationModel:
    return _fcn(num_classes, 2, encoder, fc_channels, pretrained, in_chans)


fcn32s.__doc__ = _DOC.format(name="FCN-32s", what="Stride-32 class scores upsampled 32x in one step.")
fcn16s.__doc__ = _DOC.format(name="FCN-16s", what="Scores upsampled 2x and summed with pool4's scores, then 16x.")
fcn8s.__doc__ = _DOC.format(name="FCN-8s", what="As FCN-16s, then 2x and pool3's scores, then 8x (about 134M "
                            "parameters with VGG16 and 21 classes).")
