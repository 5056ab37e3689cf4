"""Panoptic scores of Predictions: PQ per class (things / stuff), mIoU of the semantic map and, in full,
the instance scores of the thing segments (mask AP, DSB score, AJI)."""
from __future__ import annotations

from pixelwise.metrics.panoptic import PanopticQuality
from pixelwise.metrics.reduce import Reducer
from pixelwise.tasks.instance.metric import InstanceMetric
from pixelwise.tasks.semantic.metric import SemanticMetric


class PanopticMetric:
    """PQ/SQ/RQ of `pred.panoptic` against `truth.panoptic`, mIoU of the semantic maps, and with
    `instances` the InstanceMetric of their thing instances."""

    def __init__(self, classes: list[str], things, instances: bool = True, max_dets: int = 100):
        self.pq = PanopticQuality(len(classes), things, list(classes))
        self.semantic = SemanticMetric(classes)
        self.instances = InstanceMetric(things, list(classes), max_dets) if instances else None

    def update(self, pred, truth) -> None:
        self.pq.update(*truth.panoptic, *pred.panoptic)
        self.semantic.update(pred, truth)
        if self.instances is not None:
            self.instances.update(pred, truth)

    def all_reduce(self, reducer: Reducer) -> None:
        self.pq.all_reduce(reducer)
        self.semantic.all_reduce(reducer)
        if self.instances is not None:
            self.instances.all_reduce(reducer)

    def compute(self) -> dict:
        sem = self.semantic.compute()
        out = {**self.pq.compute(), "miou": sem["miou"], "pixel_acc": sem["pixel_acc"],
               "per_class_iou": sem["per_class_iou"]}
        if self.instances is not None:
            out |= self.instances.compute()
        return out
