"""Saved models: a directory with `config.json`, `model.safetensors` and `README.md`, written atomically.

    pw.save_model(model, "my_model", classes=[...], palette=[...])
    model = pw.load_model("my_model")          # an nn.Module in eval mode
    model.pixelwise_config                      # the saved config.json (classes, palette, preprocessing, task)
    pw.read_model_config("my_model")            # the JSON alone, nothing built

config.json holds the architecture record (`arch`: name, num_classes, kwargs), the class names and
palette, the preprocessing (mean, std, optional shorter-side resize) and what the trainer adds (task,
things, recipe, scores). Weights are safetensors only: no pickle is ever loaded from a model directory.
README.md is the model card (`pixelwise.modelcard`), generated from config.json whenever config.json is written
(a save, a stored inference setting), so it always says what the directory holds.

A save replaces the directory crash-safely (pixelwise.atomicdir: write a complete copy beside it, swap it
in with renames), so a kill at any moment leaves the previous model or the new one. `resolve_model_dir`
finds the newest complete copy after a kill anywhere in a save, and accepts a training run directory (its
`best/`, found the same way).
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pixelwise import atomicdir
from pixelwise.constants import IMAGENET_MEAN, IMAGENET_STD
from pixelwise.data.bands import BandSpec
from pixelwise.errors import DataError, ModelError
from pixelwise.modelcard import LICENSE_PATTERN, model_card

CONFIG_NAME = atomicdir.CONFIG_NAME
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"  # the model card, written from config.json (pixelwise.modelcard)
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
        "preprocessing": preprocessing or default_preprocessing(arch.get("kwargs", {}).get("in_chans", 3)),
        **(extra or {}),
    }
    check_model_config(config, directory / CONFIG_NAME)  # never write a directory that would not load
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}

    def write(folder: Path) -> None:
        save_file(state, str(folder / WEIGHTS_NAME))
        (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2))
        (folder / CARD_NAME).write_text(model_card(config), encoding="utf-8")
        for name, write_file in (files or {}).items():
            write_file(folder / name)

    return atomicdir.replace(directory, write)


def default_preprocessing(channels: int = 3) -> dict:
    """What a model saved without preprocessing reads: RGB with ImageNet's statistics; a model of another
    number of input channels, raw float bands as they are (scale 1, mean 0, std 1)."""
    if channels == 3:
        return {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    return {"mean": [0.0] * channels, "std": [1.0] * channels,
            "bands": BandSpec.build(None, channels, "float32").to_dict()}


def resolve_model_dir(directory: str | Path) -> Path:
    """The model in `directory`: the directory itself, or after a kill in the middle of a save its newest
    complete copy (`.old` twin, finished temporary copy); for a training run directory, its `best/` model
    found the same way. Reads only: nothing is moved."""
    directory = Path(directory)
    if (directory / CONFIG_NAME).is_file():
        return directory
    for candidate in (directory, directory / "best"):
        found = atomicdir.newest(candidate)
        if found is not None:
            return found
    raise ModelError(f"{directory}: not a pixelwise model directory (no {CONFIG_NAME})")


INT8_NAME = "model.int8.onnx"  # a model directory's own int8 graph (`pixelwise export MODEL_DIR --int8`)


def int8_graph_path(directory: str | Path) -> Path:
    """Where a model directory's own int8 graph lives (for a run directory: in its best/ model); precision
    "auto" times it when it is there."""
    return resolve_model_dir(directory) / INT8_NAME


def training_set(config: dict) -> tuple[str, str] | None:
    """(dataset spec, train split) of the set a model was trained on, from its config.json ("dataset" and the
    recipe's data.train_split), or None when it names none."""
    spec = config.get("dataset")
    if not isinstance(spec, str) or ":" not in spec:
        return None
    return spec, ((config.get("recipe") or {}).get("data") or {}).get("train_split", "train")


MAX_CLASSES = 65536  # label maps are written as 8- or 16-bit PNGs
MAX_SIDE = 16384    # the largest shorter side a saved preprocessing may resize to


def read_model_config(directory: str | Path) -> dict:
    """The config.json of a model directory (or run directory), checked against its schema
    (`check_model_config`) before anything is built from it."""
    directory = resolve_model_dir(directory)
    path = directory / CONFIG_NAME
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from None
    check_model_config(config, path)
    return config


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_model_config(config, path) -> None:
    """Raise a ModelError naming `path` and the key unless `config` is a pixelwise model config: format tag;
    arch {name: str, num_classes: 1..MAX_CLASSES, kwargs: mapping}; classes: num_classes names; palette:
    [r, g, b] colours 0..255; preprocessing: mean / std of 3 finite numbers, std > 0, resize None or
    8..MAX_SIDE; things: class ids; task: a name."""
    def bad(key: str, problem: str):
        raise ModelError(f"{path}: key '{key}' {problem}")

    if not isinstance(config, dict) or config.get("format") != FORMAT_TAG:
        raise ModelError(f"{path}: not a pixelwise model config (no \"format\": \"{FORMAT_TAG}\")")
    arch = config.get("arch")
    if not isinstance(arch, dict):
        bad("arch", f"must be a mapping with name, num_classes and kwargs, got {type(arch).__name__}")
    if not isinstance(arch.get("name"), str):
        bad("arch.name", "must be an architecture name")
    n = arch.get("num_classes")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CLASSES:
        bad("arch.num_classes", f"must be an integer in 1..{MAX_CLASSES}, got {n!r}")
    if not isinstance(arch.get("kwargs", {}), dict):
        bad("arch.kwargs", "must be a mapping")
    classes = config.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        bad("classes", "must be a list of class names")
    if len(classes) != n:
        bad("classes", f"lists {len(classes)} names for arch.num_classes = {n}")
    palette = config.get("palette", [])
    if not isinstance(palette, list) or not all(
            isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and not isinstance(v, bool)
                                                      and 0 <= v <= 255 for v in c) for c in palette):
        bad("palette", "must be a list of [r, g, b] colours with values 0..255")
    pre = config.get("preprocessing", {})
    if not isinstance(pre, dict):
        bad("preprocessing", "must be a mapping")
    channels = 3
    if pre.get("bands") is not None:
        try:
            channels = BandSpec.from_dict(pre["bands"]).channels
        except DataError as exc:
            raise ModelError(f"{path}: key {exc}") from None
    kw_chans = (arch.get("kwargs") or {}).get("in_chans", 3)
    if kw_chans != channels:
        bad("arch.kwargs.in_chans", f"is {kw_chans!r}, but the preprocessing gives {channels} input channels")
    for key in ("mean", "std"):
        value = pre.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or len(value) != channels or not all(_number(v) for v in value):
            bad(f"preprocessing.{key}", f"must be {channels} finite numbers (one per input channel), got {value!r}")
        if key == "std" and min(value) <= 0:
            bad("preprocessing.std", f"must be positive (it divides every pixel), got {value}")
    resize = pre.get("resize")
    if resize is not None and (isinstance(resize, bool) or not isinstance(resize, int) or not 8 <= resize <= MAX_SIDE):
        bad("preprocessing.resize", f"must be null or a shorter side in 8..{MAX_SIDE} pixels, got {resize!r}")
    things = config.get("things", [])
    if not isinstance(things, list) or not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < n
                                               for t in things):
        bad("things", f"must be a list of class ids in 0..{n - 1}")
    if not isinstance(config.get("task", ""), (str, type(None))):
        bad("task", "must be a task name")
    if not isinstance(config.get("task_options", {}), (dict, type(None))):
        bad("task_options", "must be a mapping")
    inference = config.get("inference", {})
    if not isinstance(inference, (dict, type(None))):
        bad("inference", "must be a mapping with tta and crf")
    for key in ("tta", "crf"):
        if not isinstance((inference or {}).get(key), (str, type(None))):
            bad(f"inference.{key}", f"must be a spelling such as 'flip' or 'none', got {(inference or {})[key]!r}")
    licence = config.get("license")
    if licence is not None and not (isinstance(licence, str) and LICENSE_PATTERN.match(licence)):
        bad("license", f"must be a licence id such as 'mit', 'apache-2.0', 'cc-by-4.0' or 'other', got {licence!r}")


def store_inference(directory: str | Path, setting: dict) -> Path:
    """Write `setting` ({"tta": spelling, "crf": preset or "none", "tuned": the scores it was chosen by}) as
    config.json "inference" of a model directory, atomically (a new file swapped in: a kill leaves the old
    config or the new one, never half of one), then the model card from it (a kill between the two leaves
    the previous card; `write_card` renews it). The Predictor uses it when it is not told otherwise."""
    from pixelwise.data.io import write_atomic

    directory = resolve_model_dir(directory)
    path = directory / CONFIG_NAME
    config = read_model_config(directory)
    config["inference"] = setting
    check_model_config(config, path)
    written = write_atomic(path, json.dumps(config, indent=2).encode())
    write_card(directory)
    return written


def write_card(directory: str | Path) -> Path:
    """(Re)write a model directory's README.md from its config.json, atomically; returns its path (for a
    directory saved before model cards, or after config.json changed)."""
    from pixelwise.data.io import write_atomic

    directory = resolve_model_dir(directory)
    return write_atomic(directory / CARD_NAME, model_card(read_model_config(directory)).encode("utf-8"))


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
    try:
        model = create_model(arch["name"], arch["num_classes"], kwargs=kwargs)
    except ModelError as exc:  # an unknown architecture, an option it lacks, a size past the limit
        raise ModelError(f"{directory / CONFIG_NAME}: {exc}") from None
    state = read_weights(directory)
    path = directory / WEIGHTS_NAME
    own = model.state_dict()
    for key, tensor in state.items():
        if key in own and tuple(own[key].shape) != tuple(tensor.shape):
            raise ModelError(f"{path}: tensor {key} has shape {tuple(tensor.shape)} but {CONFIG_NAME}'s architecture "
                             f"needs {tuple(own[key].shape)} (does arch.num_classes or arch.kwargs match the weights?)")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ModelError(f"{path}: tensor {key} holds NaN or Inf values; these weights cannot predict")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelError(f"{path}: weights do not match architecture '{arch['name']}' "
                         f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
    model.pixelwise_arch = arch
    model.pixelwise_config = config
    return model.to(device).eval()
