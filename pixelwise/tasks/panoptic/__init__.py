"""The panoptic task: a class for every pixel and an identity for every counted thing (Panoptic-DeepLab)."""
from pixelwise.tasks.panoptic.task import PanopticTask

__all__ = ["PanopticTask"]
