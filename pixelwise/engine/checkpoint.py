"""Training checkpoints: a model directory (pixelwise.modeldir) plus the state needed to resume.

A run's `last/` directory holds the model files and `train_state.pt` (optimizer, scheduler, epoch, RNG
states), read with `torch.load(weights_only=True)`, which refuses arbitrary objects. Both are written into
one temporary directory and swapped in together, so a checkpoint is always whole.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from pixelwise.errors import ModelError
from pixelwise.modeldir import read_weights, save_model

STATE_NAME = "train_state.pt"


def save_checkpoint(model: torch.nn.Module, directory: str | Path, classes: list[str], palette, preprocessing: dict,
                    extra: dict, train_state: dict | None = None) -> Path:
    """save_model, with train_state.pt beside the weights when `train_state` is given."""
    files = {STATE_NAME: lambda path: torch.save(train_state, path)} if train_state is not None else None
    return save_model(model, directory, classes, palette, preprocessing, extra, files=files)


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
    return read_weights(directory)
