"""The semantic task: one class for every pixel (softmax over C classes, 255 = void)."""
from pixelwise.tasks.semantic.task import SemanticTask

__all__ = ["SemanticTask"]
