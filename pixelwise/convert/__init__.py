"""Checkpoints of other libraries as pixelwise model directories.

`convert_transformers(DIR, OUT)` reads a transformers model directory (config.json + model.safetensors, as
`save_pretrained` writes it and as the hub serves it), picks the converter of its architecture (config.json
"architectures"), renames the tensors onto the pixelwise model and writes OUT as a pixelwise model directory
(config.json + model.safetensors) that `predict`, `eval`, `serve`, `export` and fine-tuning read like any other.
Only plain tensors are read; transformers itself is not needed to convert.

`CONVERTERS` maps the transformers class name to the module's `from_transformers(config, state) -> Converted`.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file

from pixelwise.convert import mask2former, segformer, upernet
from pixelwise.convert.base import Converted
from pixelwise.errors import ModelError

CONVERTERS: dict[str, Callable[[dict, dict], Converted]] = {
    "SegformerForSemanticSegmentation": segformer.from_transformers,
    "UperNetForSemanticSegmentation": upernet.from_transformers,
    "Mask2FormerForUniversalSegmentation": mask2former.from_transformers,
}
SOURCES = ("transformers",)

__all__ = ["CONVERTERS", "Converted", "convert", "convert_transformers", "read_transformers_dir"]


def read_transformers_dir(directory: str | Path) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """(config.json, the tensors of model.safetensors, preprocessor_config.json or {}) of a transformers
    model directory; ModelError naming the file when one is missing or unreadable. Sharded checkpoints
    (model.safetensors.index.json) are read shard by shard."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelError(f"{directory}: not a directory (a transformers model directory holds config.json and "
                         "model.safetensors)")
    config = _json(directory / "config.json")
    index = directory / "model.safetensors.index.json"
    if (directory / "model.safetensors").is_file():
        files = [directory / "model.safetensors"]
    elif index.is_file():
        weight_map = _json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ModelError(f"{index}: key 'weight_map' must map tensor names to shard files")
        files = [directory / name for name in sorted(set(weight_map.values()))]
    elif any(directory.glob("*.bin")):
        raise ModelError(f"{directory}: holds only pickled weights (*.bin); pixelwise reads model.safetensors "
                         "(save the model with save_pretrained(..., safe_serialization=True))")
    else:
        raise ModelError(f"{directory}: no model.safetensors")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            state.update(load_file(str(file)))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for corrupt headers
            raise ModelError(f"{file}: unreadable safetensors file ({' '.join(str(exc).split())[:200]})") from None
    pre = directory / "preprocessor_config.json"
    return config, state, (_json(pre) if pre.is_file() else {})


def _json(path: Path) -> dict:
    if not path.is_file():
        raise ModelError(f"{path}: missing")
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ModelError(f"{path}: must hold a JSON object, got {type(value).__name__}")
    return value


def convert(config: dict, state: dict[str, torch.Tensor], where: str = "config.json") -> Converted:
    """The Converted model of a transformers checkpoint (its config.json and tensors)."""
    names = config.get("architectures")
    if not isinstance(names, list) or not names:
        raise ModelError(f"{where}: key 'architectures' must name the transformers class, e.g. "
                         f"[\"{next(iter(CONVERTERS))}\"]")
    name = names[0]
    if name not in CONVERTERS:
        raise ModelError(f"{where}: key 'architectures' is {name!r}; pixelwise converts {', '.join(CONVERTERS)}")
    return CONVERTERS[name](config, state)


def _preprocessing(pre: dict, norm, where: Path) -> dict:
    """pixelwise preprocessing (mean / std on 0..1 RGB) from preprocessor_config.json, else the converter's."""
    mean, std = pre.get("image_mean"), pre.get("image_std")
    if mean is None and std is None:
        if norm is None:
            return {}
        mean, std = norm
    for key, value in (("image_mean", mean), ("image_std", std)):
        if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(isinstance(v, (int, float))
                                                                              for v in value):
            raise ModelError(f"{where}: key '{key}' must be 3 numbers (RGB on 0..1), got {value!r}")
    if pre.get("do_normalize") is False:
        mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}


def convert_transformers(directory: str | Path, out: str | Path, task: str | None = None,
                         things: Sequence[int] | None = None) -> dict:
    """Convert the transformers model directory `directory` into the pixelwise model directory `out`.

    task: the task the saved model answers by default ("semantic", or "panoptic" for a Mask2Former trained so,
    which the instance task reads too; default semantic); things: class ids of the countable classes (a
    panoptic model needs them; transformers' config does not record them). The weights are loaded strictly
    (every tensor used, none missing) and the written directory is read back before this returns.
    Returns {"path", "arch", "kwargs", "num_classes", "classes", "task", "params"}.
    """
    from pixelwise.modeldir import load_model, save_model
    from pixelwise.models import count_params, create_model

    directory = Path(directory)
    config, state, pre = read_transformers_dir(directory)
    converted = convert(config, state, where=str(directory / "config.json"))
    task = task or "semantic"
    things = sorted({int(t) for t in (things or [])})
    if task not in ("semantic", "panoptic"):
        raise ModelError(f"task: a converted model answers the semantic or the panoptic task, not {task!r}")
    if task == "panoptic" and not things:
        raise ModelError(f"{directory}: a {task} model needs its thing classes (--things), which transformers' "
                         "config does not record")
    if task == "panoptic" and converted.arch != "mask2former":
        raise ModelError(f"{directory}: a {converted.arch} model answers the semantic task, not {task!r}")
    bad = [t for t in things if not 0 <= t < converted.num_classes]
    if bad:
        raise ModelError(f"--things: class ids {bad} outside 0..{converted.num_classes - 1}")
    model = create_model(converted.arch, converted.num_classes, **converted.kwargs)
    missing, unexpected = model.load_state_dict(converted.state, strict=False)
    if missing or unexpected:
        raise ModelError(f"{directory}: the converted weights do not fit the pixelwise {converted.arch} "
                         f"(missing {list(missing)[:4]}, unexpected {list(unexpected)[:4]})")
    extra = {"task": task, "source": {"library": "transformers", "architecture": config["architectures"][0],
                                      "directory": directory.name}}
    if things:
        extra["things"] = things
    save_model(model, out, converted.classes,
               preprocessing=_preprocessing(pre, converted.norm, directory / "preprocessor_config.json") or None,
               extra=extra)
    load_model(out)  # what was written loads
    return {"path": str(out), "arch": converted.arch, "kwargs": converted.kwargs, "num_classes": converted.num_classes,
            "classes": converted.classes, "task": task, "params": count_params(model), "notes": converted.notes}
