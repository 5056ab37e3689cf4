"""Metrics: semantic (confusion matrix); panoptic and instance metrics live beside it."""
from pixelwise.metrics.semantic import ConfusionMatrix, scores_from_confusion

__all__ = ["ConfusionMatrix", "scores_from_confusion"]
