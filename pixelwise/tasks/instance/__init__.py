"""The instance task: each counted object apart (from panoptic models, or semantic models' components)."""
from pixelwise.tasks.instance.task import InstanceTask

__all__ = ["InstanceTask"]
