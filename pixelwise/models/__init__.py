"""Architectures: `MODELS` maps a name to a builder `builder(num_classes, **kwargs) -> nn.Module`.

Adding an architecture is one file in this package and one line in `MODELS`; the parametrized model
test picks it up. Every model maps (N, in_chans, H, W) floats to logits (N, num_classes, H, W) for any H, W;
every builder takes `in_chans` (default 3, up to 64 for multispectral imagery), and pretrained RGB weights
of the first convolution are adapted to it (see `pixelwise.models.encoders`).
"""
from __future__ import annotations

import inspect
import json
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from pixelwise.errors import ModelError
from pixelwise.models import (bisenetv2, ddrnet, deeplab, fastfcn, fastscnn, fcn, lraspp, mask2former, panoptic_deeplab,
                              pidnet, segformer, segmenter, segnet, unet, upernet)
from pixelwise.models.base import SegmentationModel
from pixelwise.models.encoders import create_encoder, encoder_norm
from pixelwise.models.flops import count_gflops, count_params

MAX_PARAMS = 10**9  # a model larger than this (4 GB of fp32 weights) is refused before it is allocated

MODELS: dict[str, Callable[..., nn.Module]] = {
    "unet": unet.unet,
    "fcn32s": fcn.fcn32s,
    "fcn16s": fcn.fcn16s,
    "fcn8s": fcn.fcn8s,
    "segnet": segnet.segnet,
    "segnet_basic": segnet.segnet_basic,
    "deeplabv1": deeplab.deeplabv1,
    "deeplabv2": deeplab.deeplabv2,
    "deeplabv3": deeplab.deeplabv3,
    "deeplabv3plus": deeplab.deeplabv3plus,
    "fastfcn": fastfcn.fastfcn,
    "segmenter": segmenter.segmenter,
    "panoptic_deeplab": panoptic_deeplab.panoptic_deeplab,
    "segformer": segformer.segformer,
    "upernet": upernet.upernet,
    "mask2former": mask2former.mask2former,
    "lraspp": lraspp.lraspp,
    "fastscnn": fastscnn.fastscnn,
    "bisenetv2": bisenetv2.bisenetv2,
    "ddrnet": ddrnet.ddrnet,
    "pidnet": pidnet.pidnet,
}

__all__ = ["MODELS", "SegmentationModel", "count_gflops", "count_params", "create_encoder", "create_model",
           "encoder_norm", "list_models", "model_info", "model_paper"]


def list_models() -> list[str]:
    """Registered architecture names, in the order they entered the field's history (MODELS order)."""
    return list(MODELS)


def create_model(name: str, num_classes: int, kwargs: Mapping[str, Any] | None = None, **options: Any) -> nn.Module:
    """Build architecture `name` with `num_classes` output channels; options go to its builder.

    The model gets `pixelwise_arch = {"name", "num_classes", "kwargs"}` (JSON-serialisable), so
    `create_model(**model.pixelwise_arch)` rebuilds the same architecture for loading a saved state dict.
    `pretrained` is left out of the recorded kwargs: a rebuilt model gets its weights from the saved file.
    Unknown names and options raise ModelError.
    """
    if not isinstance(name, str) or name not in MODELS:
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ModelError(f"model {name!r}: num_classes must be a positive integer, got {num_classes!r}")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise ModelError(f"model {name!r}: kwargs must be a mapping of option names to values, got {kwargs!r:.80}")
    options = {**dict(kwargs or {}), **options}
    builder = MODELS[name]
    params = inspect.signature(builder).parameters
    allowed = [p for p in params if p != "num_classes"]
    for key in options:
        if key not in allowed:
            raise ModelError(f"model {name!r} has no option {key!r}; its options: {', '.join(allowed)}")
    try:
        if torch.empty(0).device.type != "meta":  # size first, on the meta device: nothing allocated
            with torch.device("meta"):
                probe = builder(num_classes, **{k: v for k, v in options.items() if k != "pretrained"})
            if count_params(probe) > MAX_PARAMS:
                raise ModelError(f"model {name!r} with {options}: {count_params(probe) / 1e6:.0f}M parameters, over "
                                 f"the limit of {MAX_PARAMS / 1e6:.0f}M ({4 * MAX_PARAMS / 2**30:.1f} GiB of weights)")
        model = builder(num_classes, **options)
    except ModelError:
        raise
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ModelError(f"model {name!r} with {options}: {' '.join(str(exc).split())[:300]}") from None
    recorded = {k: _jsonable(v) for k, v in options.items() if k != "pretrained"}
    try:
        json.dumps(recorded)
    except TypeError as exc:
        raise ModelError(f"model {name!r}: options must be plain values (numbers, strings, lists): {exc}") from exc
    model.pixelwise_arch = {"name": name, "num_classes": num_classes, "kwargs": recorded}
    return model


def model_paper(name: str) -> str:
    """Title and arXiv id of the paper architecture `name` follows (its module's PAPERS / PAPER)."""
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    builder = MODELS[name]
    module = sys.modules[builder.__module__]
    return getattr(module, "PAPERS", {}).get(builder.__name__) or getattr(module, "PAPER", "")


def model_info(name: str, num_classes: int = 21, size: int = 512, **options: Any) -> dict[str, Any]:
    """{"name", "params", "inference_params", "gflops", "paper"} of architecture `name` with its defaults (or
    `options`). params counts every parameter; inference_params leaves out the training-only heads (`aux_head`:
    deep supervision, booster and boundary heads), the model eval mode runs and the papers' tables count.

    gflops: one forward of a 1 x in_chans x size x size input (in_chans from `options`, default 3), in
    multiply-accumulates (1 multiply-add = 1 FLOP, the papers' and fvcore's convention; see `count_gflops`).
    Built on the meta device: no weights are allocated, so even the 134M-parameter FCN-8s costs milliseconds.
    """
    with torch.device("meta"):
        model = create_model(name, num_classes, **options)
    gflops = count_gflops(model, size, in_chans=options.get("in_chans", 3))
    params = count_params(model)
    aux = getattr(model, "aux_head", None)
    inference = params - (count_params(aux) if isinstance(aux, nn.Module) else 0)
    return {"name": name, "params": params, "inference_params": inference, "gflops": round(gflops, 2),
            "paper": model_paper(name)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value
