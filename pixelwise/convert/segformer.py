"""transformers' SegformerForSemanticSegmentation checkpoints -> pixelwise's `segformer` model.

The model: Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation with Transformers",
arXiv 2105.15203 (`pixelwise.models.segformer`).

`from_transformers(config, state)`: `config` is the parsed config.json, `state` the model.safetensors
tensors. The config must be one of the paper's variants B0..B5 (stage widths, depths, heads, sequence
reduction ratios, patch sizes and strides, MLP ratios and decoder width as in the table); the keys may be
the hub's (transformers v4 names, which save_pretrained still writes) or transformers v5's module names.
The two layouts agree tensor for tensor (separate q, k, v linears; the classifier is a 1x1 conv), so
converting is renaming; a missing `num_batches_tracked` is filled with 0.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from pixelwise.constants import IMAGENET_MEAN, IMAGENET_STD
from pixelwise.convert.base import Converted, class_names
from pixelwise.errors import ModelError
from pixelwise.models.segformer import (HEADS, MLP_RATIO, PATCH_SIZES, PATCH_STRIDES, SR_RATIOS, VARIANTS, mit_key,
                                        segformer)

ARCH = "segformer"
# transformers' SegformerConfig defaults, for fields a config.json leaves out (they are the B0 values).
_DEFAULTS = {"hidden_sizes": [32, 64, 160, 256], "depths": [2, 2, 2, 2], "num_attention_heads": list(HEADS),
             "sr_ratios": list(SR_RATIOS), "patch_sizes": list(PATCH_SIZES), "strides": list(PATCH_STRIDES),
             "mlp_ratios": [MLP_RATIO] * 4, "decoder_hidden_size": 256, "num_encoder_blocks": 4,
             "num_channels": 3, "drop_path_rate": 0.1, "classifier_dropout_prob": 0.1, "hidden_act": "gelu"}
_SHARED = {"num_encoder_blocks": 4, "num_attention_heads": list(HEADS), "sr_ratios": list(SR_RATIOS),
           "patch_sizes": list(PATCH_SIZES), "strides": list(PATCH_STRIDES), "mlp_ratios": [MLP_RATIO] * 4,
           "hidden_act": "gelu"}
_HEAD_KEYS = [  # decode head, transformers v4 / v5 names -> pixelwise
    (re.compile(r"decode_head\.(?:linear_c|linear_projections)\.(\d+)\.proj\.(\w+)"), r"decoder.linear.\1.\2"),
    (re.compile(r"decode_head\.linear_fuse\.(\w+)"), r"decoder.fuse.\1"),
    (re.compile(r"decode_head\.batch_norm\.(\w+)"), r"decoder.bn.\1"),
    (re.compile(r"decode_head\.classifier\.(\w+)"), r"head.\1"),
]


def _field(config: Mapping, name: str):
    value = config.get(name, _DEFAULTS[name])
    return list(value) if isinstance(value, (list, tuple)) else value


def _number(config: Mapping, name: str) -> int | float:
    value = _field(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ModelError(f"segformer config: {name} must be a number, got {value!r:.80}")
    return value


def variant_of(config: Mapping) -> str:
    """The VARIANTS key whose table matches `config`; ModelError naming the first field that matches none."""
    for name, expected in _SHARED.items():
        if _field(config, name) != expected:
            raise ModelError(f"segformer config: {name} is {_field(config, name)!r}, every SegFormer variant "
                             f"B0..B5 has {expected!r}")
    widths, depths = _field(config, "hidden_sizes"), _field(config, "depths")
    by_width = {k: v for k, v in VARIANTS.items() if list(v["widths"]) == widths}
    if not by_width:
        known = sorted({str(list(v["widths"])) for v in VARIANTS.values()})
        raise ModelError(f"segformer config: hidden_sizes {widths!r} match no SegFormer variant B0..B5 "
                         f"(known: {', '.join(known)})")
    match = [k for k, v in by_width.items() if list(v["depths"]) == depths]
    if not match:
        known = ", ".join(f"{k}: {list(v['depths'])}" for k, v in by_width.items())
        raise ModelError(f"segformer config: depths {depths!r} with hidden_sizes {widths!r} match no SegFormer "
                         f"variant ({known})")
    variant = match[0]
    decoder = _field(config, "decoder_hidden_size")
    if decoder != VARIANTS[variant]["decoder_dim"]:
        raise ModelError(f"segformer config: decoder_hidden_size {decoder!r} is not {variant.upper()}'s "
                         f"{VARIANTS[variant]['decoder_dim']}")
    return variant


def _num_classes(config: Mapping, state: Mapping[str, torch.Tensor]) -> int:
    weight = state.get("decode_head.classifier.weight")
    if weight is None:
        raise ModelError("segformer checkpoint: no decode_head.classifier.weight (is it a "
                         "SegformerForSemanticSegmentation checkpoint?)")
    n = int(weight.shape[0])
    stated = len(config["id2label"]) if config.get("id2label") else config.get("num_labels")
    if stated is not None and int(stated) != n:
        raise ModelError(f"segformer config: id2label/num_labels gives {stated} classes but "
                         f"decode_head.classifier.weight has {n}")
    return n


def _rename(key: str) -> str | None:
    if key.startswith("segformer."):
        rest = key[len("segformer."):]
        rest = rest[len("encoder."):] if rest.startswith("encoder.") else rest
        target = mit_key(rest)
        return None if target is None else "encoder." + target
    for pattern, replacement in _HEAD_KEYS:
        if pattern.fullmatch(key):
            return pattern.sub(replacement, key)
    return None


def from_transformers(config: dict, state: Mapping[str, torch.Tensor]) -> Converted:
    """A SegformerForSemanticSegmentation checkpoint (config.json dict, state dict under transformers'
    names) as a pixelwise `segformer` model: arch, num_classes, kwargs (variant, drop_path, dropout,
    in_chans), a complete state dict (strict load), class names and normalisation.

    ModelError, one line: an architecture other than SegformerForSemanticSegmentation, a config field no
    variant B0..B5 has (named), leftover or missing keys (listed), or a tensor of the wrong shape."""
    if not isinstance(config, Mapping):
        raise ModelError(f"segformer config must be a dict (parsed config.json), got {type(config).__name__}")
    if config.get("model_type", "segformer") != "segformer":
        raise ModelError(f"segformer config: model_type is {config['model_type']!r}, not 'segformer'")
    architectures = config.get("architectures") or ["SegformerForSemanticSegmentation"]
    if "SegformerForSemanticSegmentation" not in architectures:
        raise ModelError(f"segformer config: architectures {architectures!r} is not SegformerForSemanticSegmentation "
                         f"(an encoder-only MiT checkpoint loads through segformer(pretrained=FILE))")
    variant = variant_of(config)
    num_classes = _num_classes(config, state)
    kwargs = {"variant": variant, "drop_path": float(_number(config, "drop_path_rate")),
              "dropout": float(_number(config, "classifier_dropout_prob")),
              "in_chans": int(_number(config, "num_channels"))}
    with torch.device("meta"):
        expected = segformer(num_classes, **kwargs).state_dict()
    out, leftover = {}, []
    for key, value in state.items():
        target = _rename(key)
        if target is None or target not in expected:
            leftover.append(key)
        else:
            out[target] = value
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in out:
            out[key] = torch.tensor(0, dtype=torch.long)
    missing = [k for k in expected if k not in out]
    if leftover or missing:
        raise ModelError(f"segformer checkpoint ({variant}): {len(leftover)} keys not converted "
                         f"{leftover[:8]}, {len(missing)} pixelwise keys missing {missing[:8]}")
    bad = [f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in out.items()
           if v.shape != expected[k].shape]
    if bad:
        raise ModelError(f"segformer checkpoint ({variant}): tensors of the wrong shape: {bad[:5]}")
    notes = [f"SegFormer-{variant.upper()} from transformers; inputs are padded to a multiple of 32, where "
             f"transformers runs the unpadded size (identical logits at sizes divisible by 32)"]
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if float(config.get(name) or 0.0) != 0.0:
            notes.append(f"{name}={config[name]} is not used (pixelwise's SegFormer has no such dropout)")
    mean, std = config.get("image_mean"), config.get("image_std")
    norm = ((tuple(float(v) for v in mean), tuple(float(v) for v in std)) if mean and std
            else (IMAGENET_MEAN, IMAGENET_STD))  # SegformerImageProcessor's default
    return Converted(arch=ARCH, num_classes=num_classes, kwargs=kwargs, state=out,
                     classes=class_names(dict(config), num_classes), norm=norm, notes=notes)

