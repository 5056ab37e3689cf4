"""Saved models: a directory with `config.json` and `model.safetensors`, written atomically.

    pw.save_model(model, "my_model", classes=[...], palette=[...])
    model = pw.load_model("my_model")          # an nn.Module in eval mode
    model.pixelwise_config                      # the saved config.json (classes, palette, preprocessing, task)
    pw.read_model_config("my_model")            # the JSON alone, nothing built

config.json holds the architecture record (`arch`: name, num_classes, kwargs), the class names and
palette, the preprocessing (mean, std, optional shorter-side resize) and what the trainer adds (task,
things, recipe, scores). Weights are safetensors only: no pickle is ever loaded from a model directory.

A save writes into a temporary sibling directory and swaps it in with renames, so a kill at any moment
leaves the previous model or the new one. `resolve_model_dir` finds the model after a kill between the two
renames (its `.old` twin) and accepts a training run directory (its `best/`).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pixelwise.constants import IMAGENET_MEAN, IMAGENET_STD
from pixelwise.errors import ModelError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_TAG = "pixelwise-model"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel (or similar) wrapper."""
    return model.module if hasattr(model, "module") else model


def save_model(model: torch.nn.Module, directory: str | Path, classes: list[str], palette=None,
               preprocessing: dict | None = None, extra: dict | None = None,
               files: dict[str, Callable[[Path], None]] | None = None) -> Path:
    """Write `directory/` = config.json + model.safetensors, atomically; `files` = {name: write(path)}
    adds files written into the same temporary directory before the swap (e.g. training state).

    The model must come from `pixelwise.create_model` (it carries `pixelwise_arch`).
    """
    from pixelwise.data.classes import default_palette

    model = unwrap(model)
    arch = getattr(model, "pixelwise_arch", None)
    if arch is None:
        raise ModelError("save_model: the model was not built by pixelwise.create_model (no architecture record)")
    directory = Path(directory)
    config = {
        "format": FORMAT_TAG,
        "version": 1,
        "arch": arch,
        "classes": list(classes),
        "palette": [list(c) for c in (palette or default_palette(len(classes)))],
        "preprocessing": preprocessing or {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        **(extra or {}),
    }
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_NAME))
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2))
        for name, write in (files or {}).items():
            write(tmp / name)
        _swap_in(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def _swap_in(tmp: Path, directory: Path) -> None:
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def resolve_model_dir(directory: str | Path) -> Path:
    """The model directory, or its `.old` twin if a kill landed between the two renames of a save, or the
    `best/` model of a training run directory."""
    directory = Path(directory)
    if not (directory / CONFIG_NAME).is_file():
        old = directory.with_name(directory.name + ".old")
        if (old / CONFIG_NAME).is_file():
            return old
        if directory.is_dir() and (directory / "best" / CONFIG_NAME).is_file():
            return directory / "best"  # a run directory: use its best model
        raise ModelError(f"{directory}: not a pixelwise model directory (no {CONFIG_NAME})")
    return directory


def read_model_config(directory: str | Path) -> dict:
    """The config.json of a model directory (or run directory), checked to be a pixelwise model's."""
    directory = resolve_model_dir(directory)
    path = directory / CONFIG_NAME
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT_TAG or "arch" not in config:
        raise ModelError(f"{path}: not a pixelwise model config")
    return config


def read_weights(directory: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a model directory's model.safetensors."""
    path = resolve_model_dir(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise ModelError(f"{path}: weights file missing")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ModelError(f"{path}: unreadable weights ({exc})") from None


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the model from config.json and load model.safetensors: the model, in eval mode, on
    `device`, with the saved configuration as `model.pixelwise_config` (a dict)."""
    from pixelwise.models import create_model

    directory = resolve_model_dir(directory)
    config = read_model_config(directory)
    arch = config["arch"]
    kwargs = dict(arch.get("kwargs", {}))
    kwargs.pop("pretrained", None)  # weights come from the file, not from a hub
    model = create_model(arch["name"], arch["num_classes"], **kwargs)
    state = read_weights(directory)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelError(f"{directory / WEIGHTS_NAME}: weights do not match architecture '{arch['name']}' "
                         f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
    model.pixelwise_arch = arch
    model.pixelwise_config = config
    return model.to(device).eval()
