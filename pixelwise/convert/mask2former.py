"""transformers' Mask2FormerForUniversalSegmentation checkpoints -> pixelwise's `mask2former`.

`from_transformers(config, state)`: `config` the parsed config.json, `state` the model.safetensors tensors
under transformers' names (the Hub's legacy names, e.g. `attention.self.query`, and transformers 5's own,
e.g. `attention.q_proj`, are both read). Backbones: a SwinBackbone (`backbone_config.model_type` "swin")
becomes the timm Swin of the same embed_dim / depths / num_heads / window_size with its per-stage output
LayerNorms (`hidden_states_norms`); a ResNetBackbone ("resnet") becomes the timm ResNet of the same depths.
Query/key/value projections are fused into timm's `qkv` and torch's `in_proj_weight` (order q, k, v).

transformers' `decoder_layers` counts predictions (layers + 1); pixelwise's counts layers (see the builder).
`num_labels` excludes "no object": the class head has num_labels + 1 outputs, pixelwise's num_classes = num_labels.
Not converted (no pixelwise counterpart, not used by inference): the loss's `criterion.empty_weight`, the
Swin model's final `layernorm` (a backbone does not apply it) and stored relative-position indices.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch

from pixelwise.convert.base import Converted, class_names
from pixelwise.errors import ModelError
from pixelwise.models.mask2former import mask2former

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # Mask2Former's pixel mean / std (on 0..255: 123.675 ...)

# timm Swin name -> (embed_dim, depths, num_heads, window_size), as timm's model entrypoints define them
SWINS: dict[str, tuple[int, tuple[int, ...], tuple[int, ...], int]] = {
    "swin_tiny_patch4_window7_224": (96, (2, 2, 6, 2), (3, 6, 12, 24), 7),
    "swin_small_patch4_window7_224": (96, (2, 2, 18, 2), (3, 6, 12, 24), 7),
    "swin_base_patch4_window7_224": (128, (2, 2, 18, 2), (4, 8, 16, 32), 7),
    "swin_base_patch4_window12_384": (128, (2, 2, 18, 2), (4, 8, 16, 32), 12),
    "swin_large_patch4_window7_224": (192, (2, 2, 18, 2), (6, 12, 24, 48), 7),
    "swin_large_patch4_window12_384": (192, (2, 2, 18, 2), (6, 12, 24, 48), 12),
}
SWIN_FIELDS = ("embed_dim", "depths", "num_heads", "window_size")
# (layer_type, depths) -> timm ResNet (stem of 64 channels, stride in the 3x3 conv, torchvision widths)
RESNETS = {
    ("basic", (2, 2, 2, 2)): "resnet18", ("basic", (3, 4, 6, 3)): "resnet34",
    ("bottleneck", (3, 4, 6, 3)): "resnet50", ("bottleneck", (3, 4, 23, 3)): "resnet101",
    ("bottleneck", (3, 8, 36, 3)): "resnet152",
}
RESNET_WIDTHS = {"basic": [64, 128, 256, 512], "bottleneck": [256, 512, 1024, 2048]}
STAGES = ["stage1", "stage2", "stage3", "stage4"]

BACKBONE = "model.pixel_level_module.encoder."
PIXEL = "model.pixel_level_module.decoder."
DECODER = "model.transformer_module."
TIMM = "backbone.encoder.model."  # where pixelwise keeps the timm encoder's own keys
SKIP = re.compile(r"^criterion\.|^model\.pixel_level_module\.encoder\.(swin\.)?layernorm\.|relative_position_index$"
                  r"|attn_mask$")

Rule = tuple[re.Pattern, Callable[[re.Match], str]]


def _rules(table: list[tuple[str, Callable[[re.Match], str] | str]], prefix: str = "") -> list[Rule]:
    """Compile (regex, target) pairs; a str target is a re.Match.expand template; targets get `prefix`.
    A target ending in '#q' / '#k' / '#v' is one slice of a fused q, k, v tensor."""
    def make(target):
        if callable(target):
            return lambda m: prefix + target(m)
        return lambda m: prefix + m.expand(target)

    return [(re.compile(p), make(t)) for p, t in table]


_QKV = {"query": "q", "key": "k", "value": "v", "q_proj": "q", "k_proj": "k", "v_proj": "v"}
_SWIN_BLOCK = r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\."
SWIN_RULES = _rules([
    (r"^embeddings\.patch_embeddings\.projection\.(weight|bias)$", r"patch_embed.proj.\1"),
    (r"^embeddings\.norm\.(weight|bias)$", r"patch_embed.norm.\1"),
    (_SWIN_BLOCK + r"layernorm_before\.(weight|bias)$", r"layers_\1.blocks.\2.norm1.\3"),
    (_SWIN_BLOCK + r"layernorm_after\.(weight|bias)$", r"layers_\1.blocks.\2.norm2.\3"),
    (_SWIN_BLOCK + r"attention\.(self\.|relative_position_bias\.)relative_position_bias_table$",
     r"layers_\1.blocks.\2.attn.relative_position_bias_table"),
    (_SWIN_BLOCK + r"attention\.(?:self\.)?(query|key|value|q_proj|k_proj|v_proj)\.(weight|bias)$",
     lambda m: f"layers_{m[1]}.blocks.{m[2]}.attn.qkv.{m[4]}#{_QKV[m[3]]}"),
    (_SWIN_BLOCK + r"attention\.(?:output\.dense|o_proj)\.(weight|bias)$", r"layers_\1.blocks.\2.attn.proj.\3"),
    (_SWIN_BLOCK + r"(?:intermediate\.dense|mlp\.fc1)\.(weight|bias)$", r"layers_\1.blocks.\2.mlp.fc1.\3"),
    (_SWIN_BLOCK + r"(?:output\.dense|mlp\.fc2)\.(weight|bias)$", r"layers_\1.blocks.\2.mlp.fc2.\3"),
    # transformers downsamples at the end of stage i, timm at the start of stage i + 1
    (r"^encoder\.layers\.(\d+)\.downsample\.(norm\.weight|norm\.bias|reduction\.weight)$",
     lambda m: f"layers_{int(m[1]) + 1}.downsample.{m[2]}"),
], prefix=TIMM)
_RESNET_BLOCK = r"^encoder\.stages\.(\d+)\.layers\.(\d+)\."
_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)$"
RESNET_RULES = _rules([
    (r"^embedder\.embedder\.convolution\.weight$", "conv1.weight"),
    (r"^embedder\.embedder\.normalization\." + _BN, r"bn1.\1"),
    (_RESNET_BLOCK + r"layer\.(\d+)\.convolution\.weight$",
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.conv{int(m[3]) + 1}.weight"),
    (_RESNET_BLOCK + r"layer\.(\d+)\.normalization\." + _BN,
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.bn{int(m[3]) + 1}.{m[4]}"),
    (_RESNET_BLOCK + r"shortcut\.convolution\.weight$", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.0.weight"),
    (_RESNET_BLOCK + r"shortcut\.normalization\." + _BN,
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.1.{m[3]}"),
], prefix=TIMM)
NORM_RULES = _rules([(r"^hidden_states_norms\.stage(\d)\.(weight|bias)$",
                      lambda m: f"backbone.norms.{int(m[1]) - 1}.{m[2]}")])
PIXEL_RULES = _rules([
    (r"^input_projections\.(\d)\.([01])\.(weight|bias)$", r"pixel_decoder.input_proj.\1.\2.\3"),
    (r"^level_embed$", "pixel_decoder.level_embed"),
    (r"^encoder\.layers\.(\d+)\.self_attn\.(sampling_offsets|attention_weights|value_proj|output_proj)\.(weight|bias)$",
     r"pixel_decoder.encoder.\1.self_attn.\2.\3"),
    (r"^encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)$", r"pixel_decoder.encoder.\1.norm1.\2"),
    (r"^encoder\.layers\.(\d+)\.(?:mlp\.)?fc1\.(weight|bias)$", r"pixel_decoder.encoder.\1.linear1.\2"),
    (r"^encoder\.layers\.(\d+)\.(?:mlp\.)?fc2\.(weight|bias)$", r"pixel_decoder.encoder.\1.linear2.\2"),
    (r"^encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)$", r"pixel_decoder.encoder.\1.norm2.\2"),
    (r"^adapter_1\.([01])\.(weight|bias)$", r"pixel_decoder.lateral.\1.\2"),
    (r"^layer_1\.([01])\.(weight|bias)$", r"pixel_decoder.output.\1.\2"),
    (r"^mask_projection\.(weight|bias)$", r"pixel_decoder.mask_features.\1"),
])
HEAD_RULES = _rules([(r"^class_predictor\.(weight|bias)$", r"transformer_decoder.class_embed.\1")])
_LAYER = r"^decoder\.layers\.(\d+)\."
DECODER_RULES = _rules([
    (r"^queries_features\.weight$", "transformer_decoder.query_feat.weight"),
    (r"^queries_embedder\.weight$", "transformer_decoder.query_embed.weight"),
    (r"^level_embed\.weight$", "transformer_decoder.level_embed.weight"),
    (r"^input_projections\.(\d)\.(weight|bias)$", r"transformer_decoder.input_proj.\1.\2"),
    (r"^decoder\.layernorm\.(weight|bias)$", r"transformer_decoder.decoder_norm.\1"),
    (r"^decoder\.mask_predictor\.mask_embedder\.(\d)\.0\.(weight|bias)$",
     lambda m: f"transformer_decoder.mask_embed.{2 * int(m[1])}.{m[2]}"),
    (_LAYER + r"cross_attn\.(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)$",
     r"transformer_decoder.layers.\1.cross_attn.\2"),
    (_LAYER + r"cross_attn_layer_norm\.(weight|bias)$", r"transformer_decoder.layers.\1.norm_cross.\2"),
    (_LAYER + r"self_attn\.(q|k|v)_proj\.(weight|bias)$",
     lambda m: f"transformer_decoder.layers.{m[1]}.self_attn.in_proj_{m[3]}#{m[2]}"),
    (_LAYER + r"self_attn\.(?:out_proj|o_proj)\.(weight|bias)$",
     r"transformer_decoder.layers.\1.self_attn.out_proj.\2"),
    (_LAYER + r"self_attn_layer_norm\.(weight|bias)$", r"transformer_decoder.layers.\1.norm_self.\2"),
    (_LAYER + r"(?:mlp\.)?fc1\.(weight|bias)$", r"transformer_decoder.layers.\1.linear1.\2"),
    (_LAYER + r"(?:mlp\.)?fc2\.(weight|bias)$", r"transformer_decoder.layers.\1.linear2.\2"),
    (_LAYER + r"final_layer_norm\.(weight|bias)$", r"transformer_decoder.layers.\1.norm_ffn.\2"),
])


def _require(config: Mapping, key: str, expected, where: str = "") -> None:
    value = config.get(key, expected)
    if isinstance(expected, (list, tuple)):
        value = list(value) if isinstance(value, (list, tuple)) else value
        expected = list(expected)
    if value != expected:
        raise ModelError(f"mask2former config: {where}{key}={value!r} is not supported (pixelwise needs {expected!r})")


def swin_encoder(backbone: Mapping) -> str:
    """The timm Swin whose shapes `backbone` (a SwinConfig dict) has; ModelError naming the first field
    that matches none."""
    for key, expected in (("patch_size", 4), ("mlp_ratio", 4.0), ("qkv_bias", True), ("hidden_act", "gelu"),
                          ("use_absolute_embeddings", False), ("layer_norm_eps", 1e-5)):
        _require(backbone, key, expected, "backbone_config.")
    candidates = dict(SWINS)
    for i, field in enumerate(SWIN_FIELDS):
        value = backbone.get(field)
        value = tuple(value) if isinstance(value, list) else value
        candidates = {name: spec for name, spec in candidates.items() if spec[i] == value}
        if not candidates:
            raise ModelError(f"mask2former config: backbone_config.{field}={backbone.get(field)!r} matches no timm "
                             f"Swin (known: {', '.join(f'{n} {s}' for n, s in SWINS.items())}, as "
                             f"{'/'.join(SWIN_FIELDS)})")
    return next(iter(candidates))


def resnet_encoder(backbone: Mapping) -> str:
    """The timm ResNet a ResNetConfig dict `backbone` describes; ModelError naming the field that does not fit."""
    for key, expected in (("embedding_size", 64), ("hidden_act", "relu"), ("downsample_in_first_stage", False),
                          ("downsample_in_bottleneck", False)):
        _require(backbone, key, expected, "backbone_config.")
    layer_type = backbone.get("layer_type", "bottleneck")
    if layer_type not in RESNET_WIDTHS:
        raise ModelError(f"mask2former config: backbone_config.layer_type={layer_type!r} is not 'basic' or "
                         f"'bottleneck'")
    _require(backbone, "hidden_sizes", RESNET_WIDTHS[layer_type], "backbone_config.")
    depths = tuple(backbone.get("depths") or ())
    if (layer_type, depths) not in RESNETS:
        raise ModelError(f"mask2former config: backbone_config.depths={list(depths)} with layer_type {layer_type!r} "
                         f"matches no timm ResNet (known: {sorted(set(RESNETS.values()))})")
    return RESNETS[layer_type, depths]


def _backbone(config: Mapping) -> tuple[str, Mapping, list[Rule], bool]:
    backbone = config.get("backbone_config")
    if config.get("use_timm_backbone") or not isinstance(backbone, Mapping):
        raise ModelError(f"mask2former config: backbone_config must be a Swin or ResNet config, got "
                         f"{backbone!r:.80} (use_timm_backbone={config.get('use_timm_backbone')!r})")
    kind = backbone.get("model_type")
    out = backbone.get("out_features")
    if out is not None and list(out) != STAGES:
        raise ModelError(f"mask2former config: backbone_config.out_features={out!r} must be {STAGES}")
    if kind == "swin":
        return swin_encoder(backbone), backbone, SWIN_RULES + NORM_RULES, True
    if kind == "resnet":
        return resnet_encoder(backbone), backbone, RESNET_RULES, False
    raise ModelError(f"mask2former config: backbone_config.model_type={kind!r} is not 'swin' or 'resnet'")


def _int(config: Mapping, key: str, default: int) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelError(f"mask2former config: {key} must be an integer, got {value!r}")
    return value


def builder_kwargs(config: Mapping) -> tuple[dict, list[Rule]]:
    """(pixelwise builder options, backbone key rules) for a Mask2FormerConfig dict."""
    if config.get("model_type", "mask2former") != "mask2former":
        raise ModelError(f"mask2former config: model_type={config.get('model_type')!r} is not 'mask2former'")
    _require(config, "pre_norm", False)
    _require(config, "activation_function", "relu")
    _require(config, "common_stride", 4)
    _require(config, "feature_strides", [4, 8, 16, 32])
    encoder, backbone, rules, swin = _backbone(config)
    decoder_layers = _int(config, "decoder_layers", 10)
    if decoder_layers < 2:
        raise ModelError(f"mask2former config: decoder_layers={decoder_layers} builds no decoder layer (it counts "
                         f"layers + 1)")
    kwargs = {
        "encoder": encoder,
        "num_queries": _int(config, "num_queries", 100),
        "hidden_dim": _int(config, "hidden_dim", 256),
        "decoder_layers": decoder_layers - 1,
        "encoder_layers": _int(config, "encoder_layers", 6),
        "num_heads": _int(config, "num_attention_heads", 8),
        "dim_feedforward": _int(config, "dim_feedforward", 2048),
        "mask_dim": _int(config, "mask_feature_size", 256),
        "pixel_dim": _int(config, "feature_size", 256),
        "encoder_feedforward_dim": _int(config, "encoder_feedforward_dim", 1024),
        "enforce_input_projection": bool(config.get("enforce_input_projection", False)),
        "output_norms": swin,
        "in_chans": _int(backbone, "num_channels", 3),
    }
    if swin:
        kwargs["drop_path"] = float(backbone.get("drop_path_rate", 0.1))
    return kwargs, rules


def rename(state: Mapping[str, torch.Tensor], backbone_rules: list[Rule]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(pixelwise state dict, transformers keys no rule understood). q, k, v slices are concatenated."""
    sections = [(BACKBONE, backbone_rules), (PIXEL, PIXEL_RULES), (DECODER, DECODER_RULES), ("", HEAD_RULES)]
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    leftovers = []
    for key, tensor in state.items():
        if SKIP.search(key):
            continue
        target = _target(key, sections)
        if target is None:
            leftovers.append(key)
        elif "#" in target:
            name, slot = target.split("#")
            fused.setdefault(name, {})[slot] = tensor
        else:
            out[target] = tensor
    for name, parts in fused.items():
        if set(parts) != {"q", "k", "v"}:
            leftovers.append(f"{name} (only {'/'.join(sorted(parts))} of q/k/v)")
            continue
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]], 0)
    return out, leftovers


def _target(key: str, sections) -> str | None:
    for prefix, rules in sections:
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix):]
        if prefix == BACKBONE and rest.startswith("swin."):
            rest = rest[len("swin."):]  # transformers 5 nests SwinBackbone's modules under swin.
        for pattern, target in rules:
            match = pattern.match(rest)
            if match:
                return target(match)
        return None
    return None


def from_transformers(config: dict, state: Mapping[str, torch.Tensor]) -> Converted:
    """A transformers Mask2FormerForUniversalSegmentation (config.json dict, safetensors tensors) as a
    pixelwise `mask2former`: the builder options and a complete state dict (strict load).

    ModelError: a config field pixelwise cannot build (named), checkpoint tensors no rule maps, pixelwise
    tensors the checkpoint lacks, or shapes that disagree (listed)."""
    kwargs, rules = builder_kwargs(config)
    head = state.get("class_predictor.weight")
    if head is None or head.ndim != 2 or head.shape[0] < 2:
        raise ModelError("mask2former checkpoint: class_predictor.weight (num_labels + 1, hidden_dim) is missing")
    num_classes = int(head.shape[0]) - 1
    converted, leftovers = rename(state, rules)
    if leftovers:
        raise ModelError(f"mask2former checkpoint: {len(leftovers)} tensors not understood: {leftovers[:8]}")
    with torch.device("meta"):  # the expected keys and shapes, nothing allocated
        expected = {k: tuple(v.shape) for k, v in mask2former(num_classes, **kwargs).state_dict().items()}
    missing = [k for k in expected if k not in converted]
    unexpected = [k for k in converted if k not in expected]
    bad = [f"{k} {tuple(converted[k].shape)} vs {expected[k]}" for k in expected
           if k in converted and tuple(converted[k].shape) != expected[k]]
    if missing or unexpected or bad:
        raise ModelError(f"mask2former checkpoint does not fit the pixelwise model {kwargs}: missing {missing[:6]}, "
                         f"unexpected {unexpected[:6]}, shape mismatches {bad[:4]}")
    notes = [f"decoder_layers {kwargs['decoder_layers'] + 1} (transformers, predictions) -> "
             f"{kwargs['decoder_layers']} layers; backbone {kwargs['encoder']}"]
    return Converted("mask2former", num_classes, kwargs, {k: converted[k] for k in expected},
                     class_names(config, num_classes), IMAGENET, notes)
