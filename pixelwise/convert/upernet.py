"""transformers' UperNetForSemanticSegmentation (ConvNeXt backbone) -> pixelwise "upernet".

    converted = from_transformers(json.load(open("config.json")), load_file("model.safetensors"))
    model = create_model(converted.arch, converted.num_classes, **converted.kwargs)
    model.load_state_dict(converted.state)                     # strict: every tensor accounted for

The checkpoints (openmmlab/upernet-convnext-{tiny,small,base,large,xlarge}) are MMSegmentation's UPerNet
(Xiao et al., arXiv 1807.10221) on ConvNeXt. transformers' `ConvNextBackbone` maps onto timm's convnext of
the same depths and widths (its `hidden_states_norms` onto the model's per-level `encoder.norms`, so the
converted model has `encoder_norms=True`); the decode and auxiliary heads map onto pixelwise's UPerHead.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch

from pixelwise.constants import IMAGENET_MEAN, IMAGENET_STD
from pixelwise.convert.base import Converted, class_names
from pixelwise.errors import ModelError
from pixelwise.models.upernet import upernet

# (depths, hidden_sizes) of transformers' ConvNextConfig -> the timm model of that shape
CONVNEXT = {
    ((3, 3, 9, 3), (96, 192, 384, 768)): "convnext_tiny",
    ((3, 3, 27, 3), (96, 192, 384, 768)): "convnext_small",
    ((3, 3, 27, 3), (128, 256, 512, 1024)): "convnext_base",
    ((3, 3, 27, 3), (192, 384, 768, 1536)): "convnext_large",
    ((3, 3, 27, 3), (256, 512, 1024, 2048)): "convnext_xlarge",
}
STAGES = ["stage1", "stage2", "stage3", "stage4"]
AUX_INDEX = 2  # transformers' UperNetFCNHead reads feature map 2 (stride 16)

_BLOCK = {"dwconv": "conv_dw", "layernorm": "norm", "pwconv1": "mlp.fc1", "pwconv2": "mlp.fc2"}  # ConvNextLayer
# transformers key (regex) -> pixelwise key; "encoder.model." keys name timm's full convnext modules and are
# matched to the features-only wrapper's flattened names ("stages.0" -> "stages_0") when the model is built.
_RULES: list[tuple[str, Callable[[re.Match], str]]] = [
    (r"backbone\.embeddings\.patch_embeddings\.(.+)", lambda m: f"encoder.model.stem.0.{m[1]}"),
    (r"backbone\.embeddings\.layernorm\.(.+)", lambda m: f"encoder.model.stem.1.{m[1]}"),
    (r"backbone\.encoder\.stages\.(\d+)\.downsampling_layer\.([01])\.(.+)",
     lambda m: f"encoder.model.stages.{m[1]}.downsample.{m[2]}.{m[3]}"),
    (r"backbone\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layer_scale_parameter",
     lambda m: f"encoder.model.stages.{m[1]}.blocks.{m[2]}.gamma"),
    (r"backbone\.encoder\.stages\.(\d+)\.layers\.(\d+)\.(dwconv|layernorm|pwconv1|pwconv2)\.(.+)",
     lambda m: f"encoder.model.stages.{m[1]}.blocks.{m[2]}.{_BLOCK[m[3]]}.{m[4]}"),
    (r"backbone\.hidden_states_norms\.stage([1-4])\.(.+)", lambda m: f"encoder.norms.{int(m[1]) - 1}.{m[2]}"),
    (r"decode_head\.psp_modules\.(\d+)\.1\.(conv|batch_norm)\.(.+)",
     lambda m: f"decoder.ppm.convs.{m[1]}.{_cbr(m[2])}.{m[3]}"),
    (r"decode_head\.(bottleneck|fpn_bottleneck)\.(conv|batch_norm)\.(.+)",
     lambda m: f"decoder.{m[1]}.{_cbr(m[2])}.{m[3]}"),
    (r"decode_head\.(lateral_convs|fpn_convs)\.(\d+)\.(conv|batch_norm)\.(.+)",
     lambda m: f"decoder.{m[1]}.{m[2]}.{_cbr(m[3])}.{m[4]}"),
    (r"decode_head\.classifier\.(weight|bias)", lambda m: f"head.1.{m[1]}"),
    (r"auxiliary_head\.convs\.(\d+)\.(conv|batch_norm)\.(.+)",
     lambda m: f"aux_head.convs.{m[1]}.{_cbr(m[2])}.{m[3]}"),
    (r"auxiliary_head\.classifier\.(weight|bias)", lambda m: f"aux_head.classifier.{m[1]}"),
]


def _cbr(part: str) -> str:
    """transformers' UperNetConvModule (conv, batch_norm) -> ConvNormAct's positions (0, 1)."""
    return "0" if part == "conv" else "1"


def from_transformers(config: dict, state: Mapping[str, torch.Tensor]) -> Converted:
    """Convert an UperNetForSemanticSegmentation checkpoint with a ConvNeXt backbone.

    config: its parsed config.json; state: its model.safetensors tensors (transformers' key names).
    Returns a Converted for `create_model("upernet", ...)` whose state loads strictly. A ModelError names the
    config field that no pixelwise model reproduces, or lists the tensors left over / missing / misshapen.
    BatchNorm `num_batches_tracked` counters a checkpoint leaves out are set to 0 (they play no part in eval).
    """
    if not isinstance(config, Mapping):
        raise ModelError(f"upernet config must be the parsed config.json (a mapping), got {type(config).__name__}")
    kind = config.get("model_type")
    if kind not in (None, "upernet"):
        raise ModelError(f"config model_type: expected 'upernet', got {kind!r}")
    encoder, in_chans, drop_path = _backbone(config.get("backbone_config"))
    num_classes = _num_classes(config)
    kwargs: dict = {"encoder": encoder, "channels": _int(config, "hidden_size", 512),
                    "pool_scales": _pool_scales(config), "encoder_norms": True, "in_chans": in_chans}
    if drop_path:
        kwargs["drop_path"] = drop_path
    aux = config.get("use_auxiliary_head", True)
    if not isinstance(aux, bool):
        raise ModelError(f"config use_auxiliary_head: expected true or false, got {aux!r:.80}")
    if aux:
        kwargs.update(aux=True, aux_channels=_int(config, "auxiliary_channels", 256))
        _check_aux(config, encoder)
    pixelwise = _rename(state)
    target = _target(num_classes, kwargs)
    full = _complete(pixelwise, target)
    notes = [f"transformers ConvNextBackbone -> timm {encoder} with per-level LayerNorms (encoder_norms=True)"]
    return Converted("upernet", num_classes, kwargs, full, class_names(config, num_classes),
                     (tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)), notes)


def _int(config: Mapping, key: str, default: int) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(f"config {key}: expected a positive integer, got {value!r:.80}")
    return value


def _num_classes(config: Mapping) -> int:
    id2label = config.get("id2label")
    if isinstance(id2label, Mapping) and id2label:
        return len(id2label)
    if "num_labels" in config:
        return _int(config, "num_labels", 2)
    raise ModelError("config id2label: missing, so the number of classes is unknown")


def _pool_scales(config: Mapping) -> list[int]:
    scales = config.get("pool_scales", [1, 2, 3, 6])
    if (not isinstance(scales, (list, tuple)) or not scales
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in scales)):
        raise ModelError(f"config pool_scales: expected a list of positive integers, got {scales!r:.80}")
    return list(scales)


def _backbone(backbone) -> tuple[str, int, float]:
    """(timm encoder name, input channels, drop path rate) of a ConvNextConfig dict."""
    if not isinstance(backbone, Mapping):
        raise ModelError("config backbone_config: missing; only a ConvNeXt backbone_config is supported")
    if backbone.get("model_type") != "convnext":
        raise ModelError(f"config backbone_config.model_type: {backbone.get('model_type')!r} is not supported "
                         f"(only 'convnext')")
    depths, sizes = backbone.get("depths", [3, 3, 9, 3]), backbone.get("hidden_sizes", [96, 192, 384, 768])
    shape = tuple(tuple(v) if isinstance(v, (list, tuple)) else () for v in (depths, sizes))
    if shape not in CONVNEXT:
        raise ModelError(f"config backbone_config.depths/hidden_sizes: {depths!r:.60} / {sizes!r:.60} match no "
                         f"timm ConvNeXt ({', '.join(CONVNEXT.values())})")
    out_features = list(backbone.get("out_features") or [])
    if out_features != STAGES:
        raise ModelError(f"config backbone_config.out_features: expected {STAGES}, got {out_features!r:.120}")
    checks = {"patch_size": 4, "hidden_act": "gelu", "num_stages": 4}
    for key, expected in checks.items():
        if backbone.get(key, expected) != expected:
            raise ModelError(f"config backbone_config.{key}: expected {expected!r}, got {backbone[key]!r:.80}")
    scale = backbone.get("layer_scale_init_value", 1e-6)
    if not isinstance(scale, (int, float)) or scale <= 0:
        raise ModelError(f"config backbone_config.layer_scale_init_value: {scale!r} (no layer scale) is not "
                         f"supported; timm's ConvNeXt has it")
    in_chans = backbone.get("num_channels", 3)
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        raise ModelError(f"config backbone_config.num_channels: expected a positive integer, got {in_chans!r:.80}")
    drop_path = backbone.get("drop_path_rate", 0.0)
    if isinstance(drop_path, bool) or not isinstance(drop_path, (int, float)) or not 0 <= drop_path < 1:
        raise ModelError(f"config backbone_config.drop_path_rate: expected a number in [0, 1), got {drop_path!r:.80}")
    return CONVNEXT[shape], in_chans, float(drop_path)


def _check_aux(config: Mapping, encoder: str) -> None:
    """The auxiliary head pixelwise builds: one 3x3 conv on the stride-16 level, no input concat."""
    if config.get("auxiliary_num_convs", 1) != 1:
        raise ModelError(f"config auxiliary_num_convs: {config['auxiliary_num_convs']!r} is not supported (only 1)")
    if config.get("auxiliary_concat_input", False) is not False:
        raise ModelError("config auxiliary_concat_input: true is not supported (only false)")
    width = next(sizes for (_, sizes), name in CONVNEXT.items() if name == encoder)[AUX_INDEX]
    if config.get("auxiliary_in_channels") not in (None, width):
        raise ModelError(f"config auxiliary_in_channels: {config['auxiliary_in_channels']!r} does not match the "
                         f"backbone's stride-16 width {width}")


def _rename(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[str, torch.Tensor]]:
    """{pixelwise key (timm's full-model names under encoder.model.): (transformers key, tensor)}; a tensor no
    rule places is an error."""
    renamed, leftover = {}, []
    for key, tensor in state.items():
        for pattern, name in _RULES:
            match = re.fullmatch(pattern, key)
            if match:
                renamed[name(match)] = (key, tensor)
                break
        else:
            leftover.append(key)
    if leftover:
        raise ModelError(f"upernet checkpoint: {len(leftover)} tensors have no place in the pixelwise model: "
                         f"{', '.join(leftover[:8])}")
    return renamed


def _target(num_classes: int, kwargs: dict) -> dict[str, torch.Tensor]:
    """The pixelwise model's state dict (names and shapes), built on the meta device: nothing allocated."""
    with torch.device("meta"):
        return upernet(num_classes, **kwargs).state_dict()


def _flat(key: str) -> str:
    # timm's FeatureListNet flattens "stages.0" to "stages_0"; compare the names with dots made underscores
    return key.replace(".", "_")


def _complete(renamed: dict[str, tuple[str, torch.Tensor]], target: dict[str, torch.Tensor]
              ) -> dict[str, torch.Tensor]:
    """`renamed` under the target's exact keys, every target tensor present and shaped as the target's;
    unexpected tensors are named by their transformers keys, missing ones by the pixelwise keys."""
    index = {_flat(k): k for k in target}
    out, unknown, bad_shape = {}, [], []
    for key, (source, tensor) in renamed.items():
        name = index.get(_flat(key))
        if name is None:
            unknown.append(source)
            continue
        if tuple(tensor.shape) != tuple(target[name].shape):
            bad_shape.append(f"{name} {tuple(tensor.shape)} vs {tuple(target[name].shape)}")
            continue
        out[name] = tensor
    for key, tensor in target.items():
        if key not in out and key.endswith("num_batches_tracked") and not bad_shape:
            out[key] = torch.zeros((), dtype=torch.long)
    missing = [k for k in target if k not in out]
    if unknown or bad_shape or missing:
        raise ModelError(f"upernet checkpoint does not fit the pixelwise model: unexpected {unknown[:5]}, "
                         f"shape mismatches {bad_shape[:3]}, missing {missing[:5]} "
                         f"({len(unknown)} / {len(bad_shape)} / {len(missing)})")
    return out
