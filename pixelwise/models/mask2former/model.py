"""Mask2Former: a timm backbone, the MSDeformAttn pixel decoder and the masked-attention transformer decoder.

Cheng, Misra, Schwing, Kirillov, Girdhar, "Masked-attention Mask Transformer for Universal Image
Segmentation", arXiv 2112.01527. A mask-classification model: it predicts `num_queries` (class, mask) pairs,
not per-pixel logits; `semantic_scores` turns them into per-class maps (the paper's semantic inference).
"""
from __future__ import annotations

import torch
from torch import nn

from pixelwise.errors import ModelError
from pixelwise.models.base import pad_to_stride
from pixelwise.models.blocks import resize
from pixelwise.models.encoders import check_in_chans, create_encoder
from pixelwise.models.mask2former.backbone import Backbone, is_swin, use_pad_first_windows
from pixelwise.models.mask2former.pixel_decoder import PixelDecoder
from pixelwise.models.mask2former.transformer_decoder import TransformerDecoder

PAPER = "Masked-attention Mask Transformer for Universal Image Segmentation (arXiv 2112.01527)"
PAD_TO = 32  # inputs are zero-padded (right, bottom) to a multiple of the deepest stride
MAX_LAYERS = 64  # more decoder or encoder layers than this is a config error, refused before building
MAX_QUERIES = 10_000
SCORE_FLOOR = 1e-6  # semantic scores are clamped here before the log: a class no query claims is not -inf
SWIN_DROP_PATH = 0.3  # the paper's stochastic depth for every Swin backbone


class Mask2Former(nn.Module):
    """x float (N, in_chans, H, W), any H, W (zero-padded inside, right and bottom, to a multiple of `pad_to`).

    `queries(x)` -> dict, in either mode:
        "pred_logits": (N, Q, num_classes + 1) class logits of the last decoder layer (last class: "no object"),
        "pred_masks":  (N, Q, Hp / 4, Wp / 4) mask logits of the last layer, at 1/4 of the PADDED input
                       (Hp, Wp = H, W rounded up to a multiple of `pad_to`); `masks_at_input(pred_masks, (H, W))`
                       upsamples and crops them to the input,
        and in training mode "aux_outputs": [{"pred_logits", "pred_masks"}] of every earlier prediction
        (the queries' own before the first layer, then one per layer but the last), for deep supervision.

    forward: in training mode `queries(x)` (what the set criterion reads); in eval mode the maps every pixelwise
    model gives, at the input size: "out" (N, num_classes, H, W) = log of the paper's semantic scores (sum over
    queries of P(class) x sigmoid(mask), the masks upsampled to the input first, as the reference's semantic
    inference), so argmax is the paper's semantic answer and softmax its normalised scores; with
    `query_outputs` set (a task that decodes queries sets it, see `pixelwise.tasks.base.QUERY_KEYS`) also
    "query_logits" (N, Q, num_classes + 1) and "query_masks" (N, Q, H, W) mask logits at the input size.

    Attributes: mask_classification = True, query_outputs (False), num_classes, num_queries, stride = pad_to
    = 32, in_chans, encoder_name, norm = (mean, std) the encoder's pretrained weights expect, postprocess (the
    panoptic decoding defaults: Mask2Former's thresholds, no area limits).
    """

    mask_classification = True
    # the deformable attention's reference points and level shapes are traced as constants of one input size
    onnx_unsupported = ("the deformable attention's sampling grid depends on the input size, which the ONNX "
                        "tracer fixes at one size; run it with pixelwise predict / serve instead")

    def __init__(self, backbone: Backbone, pixel_decoder: PixelDecoder, transformer_decoder: TransformerDecoder,
                 num_classes: int, num_queries: int, encoder_name: str):
        super().__init__()
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.transformer_decoder = transformer_decoder
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.stride = self.pad_to = PAD_TO
        self.in_chans = int(backbone.encoder.in_chans)
        self.encoder_name = encoder_name
        self.norm = backbone.encoder.norm
        self.query_outputs = False
        self.postprocess = {"object_mask_threshold": 0.8, "overlap_threshold": 0.8, "stuff_area": 0,
                            "min_thing_area": 1}

    def queries(self, x: torch.Tensor) -> dict:
        if x.ndim != 4:
            raise ValueError(f"expected an (N, C, H, W) batch, got shape {tuple(x.shape)}")
        mask_features, multi_scale = self.pixel_decoder(self.backbone(pad_to_stride(x, self.pad_to)))
        predictions = self.transformer_decoder(multi_scale, mask_features)
        logits, masks = predictions[-1]
        out = {"pred_logits": logits, "pred_masks": masks}
        if self.training:
            out["aux_outputs"] = [{"pred_logits": lg, "pred_masks": m} for lg, m in predictions[:-1]]
        return out

    def forward(self, x: torch.Tensor) -> dict:
        out = self.queries(x)
        if self.training:
            return out
        masks = masks_at_input(out["pred_masks"], tuple(x.shape[-2:]))
        result = {"out": semantic_scores(out["pred_logits"].float(), masks.float()).clamp_min(SCORE_FLOOR).log()
                  .to(masks.dtype)}
        if self.query_outputs:
            result.update(query_logits=out["pred_logits"], query_masks=masks)
        return result


def semantic_scores(pred_logits: torch.Tensor, pred_masks: torch.Tensor) -> torch.Tensor:
    """The paper's semantic inference: (N, Q, K + 1) class logits, (N, Q, h, w) mask logits -> (N, K, h, w)
    scores, sum over queries of P(class | query) (no-object dropped) times sigmoid(mask)."""
    probs = pred_logits.softmax(-1)[..., :-1]
    return torch.einsum("nqc,nqhw->nchw", probs, pred_masks.sigmoid())


def masks_at_input(pred_masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, Q, Hp / 4, Wp / 4) mask logits of the padded input -> (N, Q, H, W) at the input size `size` = (H, W):
    bilinear upsampling to the padded size, then the padding cropped off (right and bottom)."""
    h4, w4 = pred_masks.shape[-2:]
    return resize(pred_masks, (4 * h4, 4 * w4))[..., :size[0], :size[1]]


def _count(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ModelError(f"mask2former: {name} must be an integer in {low}..{high}, got {value!r}")
    return value


def mask2former(num_classes: int, encoder: str = "swin_tiny_patch4_window7_224", num_queries: int = 100,
                hidden_dim: int = 256, decoder_layers: int = 9, encoder_layers: int = 6, num_heads: int = 8,
                dim_feedforward: int = 2048, mask_dim: int = 256, pixel_dim: int | None = None,
                encoder_feedforward_dim: int = 1024, enforce_input_projection: bool = False,
                output_norms: bool | None = None, drop_path: float | None = None, in_chans: int = 3,
                pretrained=None) -> Mask2Former:
    """Mask2Former (arXiv 2112.01527). (N, in_chans, H, W) -> {"pred_logits", "pred_masks"[, "aux_outputs"]}
    for any H, W (padded to a multiple of 32 inside; see `Mask2Former`).

    encoder: a timm model with feature maps at strides 4, 8, 16, 32 (Swin "swin_tiny_patch4_window7_224"
        default = the paper's Swin-T, "swin_small/base/large_...", ResNets "resnet50", EfficientNets
        "tf_efficientnet_lite0", ...). timm Swins run at any size (multiples of 32 after padding; their
        window attention pads each map to whole windows, in the reference's order, see `backbone`).
    num_queries, hidden_dim (decoder width), num_heads (decoder and pixel-decoder heads), dim_feedforward
        (decoder FFN), mask_dim (mask feature channels): the paper's 100, 256, 8, 2048, 256.
    decoder_layers: masked-attention layers, the paper's L = 9 (3 rounds over the 3 scales). Predictions:
        decoder_layers + 1 (the queries' own first). transformers' Mask2FormerConfig.decoder_layers counts
        those predictions (its 10 is our 9): its decoder builds `config.decoder_layers - 1` layers.
    encoder_layers, encoder_feedforward_dim: the pixel decoder's deformable encoder, 6 layers of FFN 1024.
    pixel_dim: the pixel decoder's width (transformers' feature_size), default hidden_dim; the decoder projects
        it to hidden_dim with 1x1 convs when they differ or when `enforce_input_projection`.
    output_norms: a LayerNorm on each backbone output, as the reference Swin backbone; None = for Swin only.
    drop_path: the encoder's stochastic depth (timm drop_path_rate); None = 0.3 for Swin (the paper's), the
        timm default otherwise.
    in_chans, pretrained: the encoder's input channels and weights (see `create_encoder`).
    Swin-T with 133 classes (COCO panoptic) has about 47M parameters, the paper's Table 1 figure.
    """
    check_in_chans("mask2former", in_chans)
    _count("num_queries", num_queries, 1, MAX_QUERIES)
    _count("decoder_layers", decoder_layers, 1, MAX_LAYERS)
    _count("encoder_layers", encoder_layers, 0, MAX_LAYERS)
    for name, value in (("hidden_dim", hidden_dim), ("num_heads", num_heads), ("dim_feedforward", dim_feedforward),
                        ("mask_dim", mask_dim), ("encoder_feedforward_dim", encoder_feedforward_dim)):
        _count(name, value, 1, 65536)
    pixel_dim = hidden_dim if pixel_dim is None else _count("pixel_dim", pixel_dim, 1, 65536)
    if hidden_dim % num_heads or pixel_dim % num_heads:
        raise ModelError(f"mask2former: hidden_dim ({hidden_dim}) and pixel_dim ({pixel_dim}) must be multiples "
                         f"of num_heads ({num_heads})")
    if pixel_dim % 32:
        raise ModelError(f"mask2former: pixel_dim (default hidden_dim) must be a multiple of 32 for the pixel "
                         f"decoder's GroupNorm(32), got {pixel_dim}")
    swin = is_swin(encoder) if isinstance(encoder, str) else False
    options: dict = dict(dynamic_img_size=True, always_partition=True) if swin else {}
    drop_path = SWIN_DROP_PATH if drop_path is None and swin else drop_path
    if drop_path is not None:
        if isinstance(drop_path, bool) or not isinstance(drop_path, (int, float)) or not 0 <= drop_path < 1:
            raise ModelError(f"mask2former: drop_path must be a number in [0, 1), got {drop_path!r}")
        options["drop_path_rate"] = float(drop_path)
    enc = create_encoder(encoder, pretrained=pretrained, in_chans=in_chans, **options)
    if swin:
        use_pad_first_windows(enc.model)
    backbone = Backbone(enc, swin if output_norms is None else bool(output_norms))
    pixel_decoder = PixelDecoder(backbone.channels, pixel_dim, mask_dim, num_heads, encoder_layers,
                                 encoder_feedforward_dim)
    transformer_decoder = TransformerDecoder(num_classes, pixel_dim, hidden_dim, num_queries, num_heads,
                                             dim_feedforward, decoder_layers, mask_dim, bool(enforce_input_projection))
    return Mask2Former(backbone, pixel_decoder, transformer_decoder, num_classes, num_queries, encoder)
