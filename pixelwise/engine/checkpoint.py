"""Model directories and training state, written atomically.

A saved model is a directory holding `config.json` (architecture, classes, palette, preprocessing) and
`model.safetensors` (weights only: no pickle is ever loaded from a model directory). A training run's
`last/` directory also holds `train_state.pt` (optimizer, scheduler, epoch, RNG states) for resuming; it is
read with `torch.load(weights_only=True)`, which refuses arbitrary objects.

Writes go to a temporary sibling directory first and are swapped in with renames, so killing the process
at any moment leaves either the previous checkpoint or the new one, never a half-written one.
"""
from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from pixelwise.errors import ModelError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
STATE_NAME = "train_state.pt"
FORMAT_TAG = "pixelwise-model"


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def save_model(model: torch.nn.Module, directory: str | Path, classes: list[str], palette=None,
               preprocessing: dict | None = None, extra: dict | None = None,
               train_state: dict | None = None) -> Path:
    """Write `directory/` = config.json + model.safetensors (+ train_state.pt), atomically.

    The model must come from `pixelwise.create_model` (it carries `pixelwise_arch`).
    """
    from pixelwise.data.classes import default_palette

    model = _unwrap(model)
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
        "preprocessing": preprocessing or {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        **(extra or {}),
    }
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_NAME))
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2))
        if train_state is not None:
            torch.save(train_state, tmp / STATE_NAME)
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
    """The model directory, or its `.old` twin if a kill landed between the two renames of a save."""
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
    directory = resolve_model_dir(directory)
    path = directory / CONFIG_NAME
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from None
    if config.get("format") != FORMAT_TAG or "arch" not in config:
        raise ModelError(f"{path}: not a pixelwise model config")
    return config


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the model from config.json and load model.safetensors. Returns (model in eval mode, config)."""
    from pixelwise.models import create_model

    directory = resolve_model_dir(directory)
    config = read_model_config(directory)
    arch = config["arch"]
    kwargs = dict(arch.get("kwargs", {}))
    kwargs.pop("pretrained", None)  # weights come from the file, not from a hub
    model = create_model(arch["name"], arch["num_classes"], **kwargs)
    path = directory / WEIGHTS_NAME
    if not path.is_file():
        raise ModelError(f"{path}: weights file missing")
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ModelError(f"{path}: unreadable weights ({exc})") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelError(f"{path}: weights do not match architecture '{arch['name']}' "
                         f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
    model.pixelwise_arch = arch
    return model.to(device).eval(), config


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "python_pos": random.getstate()[2],
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))


def load_train_state(directory: str | Path) -> dict:
    path = Path(directory) / STATE_NAME
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{path}: unreadable training state ({exc})") from None


def load_file_state(directory: str | Path) -> dict:
    """The weights of a model directory as a state dict (for resuming)."""
    return load_file(str(Path(directory) / WEIGHTS_NAME))
