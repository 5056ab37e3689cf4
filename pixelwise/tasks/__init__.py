"""Tasks: what a model is asked and how its answer is scored, written and served.

TASKS maps a task name to its class (a plain dict). Each task is one folder here and one line in TASKS;
the contract every task keeps is `pixelwise.tasks.base.Task`. Generic code asks for a task with
`build_task` (a label set and options) or `task_for_model` (a saved model's config.json), never by
importing a task's module.
"""
from __future__ import annotations

from pixelwise.errors import ConfigError
from pixelwise.tasks.base import INFERENCE_OPTIONS, Metric, Prediction, Task, TaskBase, Training, Writer
from pixelwise.tasks.instance import InstanceTask
from pixelwise.tasks.multilabel import MultiLabelTask
from pixelwise.tasks.panoptic import PanopticTask
from pixelwise.tasks.semantic import SemanticTask

TASKS: dict[str, type[TaskBase]] = {
    "semantic": SemanticTask,
    "panoptic": PanopticTask,
    "instance": InstanceTask,
    "multilabel": MultiLabelTask,
}

__all__ = ["INFERENCE_OPTIONS", "Metric", "Prediction", "TASKS", "Task", "Training", "Writer", "build_task",
           "model_task", "task_class", "task_for_model"]


def task_class(name: str, where: str = "task") -> type[TaskBase]:
    if name not in TASKS:
        raise ConfigError(f"{where}: '{name}' is not a task (known: {', '.join(TASKS)})")
    return TASKS[name]


def native_task(model_name: str) -> str:
    """The task an architecture is built for: the task listing it in `native_models`, else semantic."""
    return next((name for name, cls in TASKS.items() if model_name in cls.native_models), "semantic")


def build_task(name: str, classes, palette=None, things=(), options: dict | None = None,
               where: str = "config key 'task.name'", defaults: dict | None = None) -> TaskBase:
    """A task object for a label set (class names, palette, thing class ids) and its options, over
    `defaults` (e.g. a panoptic model's own post-processing; keys the task has no option for are dropped)."""
    cls = task_class(name, where)
    return cls(classes, palette, things, {**_known(cls, defaults), **(options or {})})


def _known(cls: type[TaskBase], values: dict | None) -> dict:
    fields = set(getattr(cls.Options, "__dataclass_fields__", {}))
    return {k: v for k, v in (values or {}).items() if k in fields}


def model_task(config: dict) -> str:
    """The task a saved model was trained for (config.json "task"; models saved without one: the
    architecture's own task)."""
    return config.get("task") or native_task(config.get("arch", {}).get("name", ""))


def task_for_model(config: dict, name: str | None = None, options: dict | None = None,
                   defaults: dict | None = None) -> TaskBase:
    """The task that reads a saved model's outputs: `name` (default: the model's own task), with options
    `defaults` (e.g. a panoptic model's post-processing), then the saved "task_options", then `options`.
    Defaults the task has no field for are dropped; `options` must all be the task's."""
    own = model_task(config)
    cls = task_class(name or own, "--task")
    merged = _known(cls, {**(defaults or {}), **(config.get("task_options") or {})})
    task = cls(config["classes"], config.get("palette"), config.get("things") or (), {**merged, **(options or {})})
    task.check_reads(own, f"--task {task.name}")
    return task
