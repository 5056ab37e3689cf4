"""The contract of a converter from another library's checkpoint to a pixelwise model.

A converter module (one per architecture family, e.g. `pixelwise.convert.segformer`) exposes
`from_transformers(config: dict, state: Mapping[str, torch.Tensor]) -> Converted`: `config` is the parsed
`config.json` of a transformers model directory, `state` its `model.safetensors` tensors under transformers'
own key names. It reads plain tensors only (transformers itself is not needed to convert), and raises
ModelError naming the key when the checkpoint is not one it understands.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Converted:
    """A pixelwise model description and its weights.

    arch:        the `MODELS` key ("segformer", "upernet", "mask2former")
    num_classes: output classes of the pixelwise model
    kwargs:      builder options, so `create_model(arch, num_classes, **kwargs)` builds the model
    state:       its state dict under pixelwise key names, complete: `load_state_dict(state, strict=True)` works
    classes:     class names in index order (transformers' id2label; "class_K" where a label is missing)
    norm:        (mean, std) on 0..1 RGB the checkpoint's preprocessing uses (ImageNet's when not stated)
    """

    arch: str
    num_classes: int
    kwargs: dict
    state: dict[str, torch.Tensor]
    classes: list[str]
    norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    notes: list[str] = field(default_factory=list)


def class_names(config: dict, num_classes: int) -> list[str]:
    """transformers' id2label (keys are strings in config.json) as a list of num_classes names."""
    id2label = {int(k): str(v) for k, v in (config.get("id2label") or {}).items()}
    return [id2label.get(i, f"class_{i}") for i in range(num_classes)]
