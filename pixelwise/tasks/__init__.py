"""Training tasks: what differs between training a semantic and a panoptic model.

A task gives the trainer five things, and the trainer nothing else:

    transform(train)  Sample -> (image float32 (3, H, W), target)      the train / eval preset
    collate(items)    -> (images (N, 3, H, W), targets)                 batches of different sizes
    criterion()       nn.Module: (model outputs, targets) -> scalar loss
    validate(...)     model + dataset -> scores dict, sharded over DDP ranks and all-reduced
    best_key          the score that picks the best checkpoint ("miou" or "pq")

The task comes from the config key `data.task` (semantic | panoptic), or when that is unset from the
model: panoptic models (PANOPTIC_MODELS) train the panoptic task, every other model the semantic one.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from pixelwise.errors import ConfigError

PANOPTIC_MODELS = {"panoptic_deeplab"}
TASK_NAMES = ("semantic", "panoptic")


def task_name(cfg) -> str:
    """'semantic' or 'panoptic' for a Config (data.task, else derived from model.name)."""
    name = getattr(cfg.data, "task", None) or ("panoptic" if cfg.model.name in PANOPTIC_MODELS else "semantic")
    if name not in TASK_NAMES:
        raise ConfigError(f"config key 'data.task': '{name}' is not one of {', '.join(TASK_NAMES)}")
    if name == "panoptic" and cfg.model.name not in PANOPTIC_MODELS:
        raise ConfigError(f"config key 'data.task': the panoptic task needs a panoptic model "
                          f"({', '.join(sorted(PANOPTIC_MODELS))}), got '{cfg.model.name}'")
    return name


def build_task(cfg, num_classes: int, things, model: torch.nn.Module):
    """The task object for a Config, the class count, the dataset's thing classes and the model."""
    from pixelwise.tasks.panoptic import PanopticTask
    from pixelwise.tasks.semantic import SemanticTask

    if task_name(cfg) == "panoptic":
        if not things:
            raise ConfigError("the panoptic task needs a dataset with thing classes (instances); this one has none")
        return PanopticTask(cfg, num_classes, things, model)
    return SemanticTask(cfg, num_classes)


def to_device(targets, device, non_blocking: bool = True):
    """A target tensor, or a dict of them (other values left as they are), moved to `device`."""
    if isinstance(targets, torch.Tensor):
        return targets.to(device, non_blocking=non_blocking)
    if isinstance(targets, Mapping):
        return {k: to_device(v, device, non_blocking) for k, v in targets.items()}
    return targets
