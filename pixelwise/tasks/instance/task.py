"""The instance task: each counted object apart, scored by COCO mask AP (and the DSB 2018 nuclei scores).

pixelwise has no instance-only architecture: this task reads panoptic models (the thing segments of
Panoptic-DeepLab's grouping) and semantic models (thing instances by connected components or marker
watershed, `method`), so it evaluates and predicts; training goes through the panoptic task. Prediction:
`semantic` int64 (H, W) and `instances` (labels int32 (H, W), class ids (K,), scores (K,)).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pixelwise.errors import ConfigError
from pixelwise.rle import encode_each
from pixelwise.tasks.base import Prediction, TaskBase, Training, prediction_files
from pixelwise.tasks.instance.metric import InstanceMetric
from pixelwise.tasks.instance.writer import InstanceWriter
from pixelwise.tasks.panoptic.decode import panoptic_decode, thing_labels
from pixelwise.tasks.panoptic.task import PanopticOptions, truth_instances
from pixelwise.tasks.panoptic.writer import panoptic_overlay
from pixelwise.tasks.semantic.task import class_table


def _as_segments(labels: np.ndarray, class_ids: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """Instance label map -> (segment ids, thing segments) for drawing."""
    return labels, [{"id": k + 1, "category_id": int(c), "isthing": True} for k, c in enumerate(class_ids)]


class InstanceTask(TaskBase):
    """Instance segmentation of the thing classes; validated by mask AP."""

    name = "instance"
    best_key = "ap"
    record_keys = ("ap", "ap50", "ap75", "dsb_score", "aji")
    reads = ("panoptic", "semantic")
    applies = frozenset({"tile", "tta", "crf"})
    formats = ("coco",)
    trainable = False
    Options = PanopticOptions
    needs_things = True
    reads_queries = True

    def training(self, data_cfg, train_cfg, model) -> Training:
        raise ConfigError("config key 'task.name': the instance task is not trained on its own; train a panoptic "
                          "model (task.name=panoptic) and evaluate or predict it with --task instance")

    def decode(self, outputs: dict[str, torch.Tensor], probs: bool = False) -> Prediction:
        semantic, ids, segments = panoptic_decode(outputs, self.things, **self.options.postprocess())
        return Prediction(self, semantic=semantic, instances=thing_labels(ids, segments, self.things),
                          probs=outputs["out"].float().softmax(0).cpu().numpy() if probs else None)

    def truth(self, sample) -> Prediction:
        instances, crowd, _ = truth_instances(sample, self.things)
        return Prediction(self, semantic=None if sample.semantic is None else np.asarray(sample.semantic, np.int64),
                          instances=instances, crowd=crowd)

    def metric(self, full: bool = True) -> "_FlatInstanceMetric":
        return _FlatInstanceMetric(self.things, self.classes, self.options.max_dets)

    def image_score(self, pred: Prediction, truth: Prediction) -> float:
        from pixelwise.metrics.instance import dsb_score

        return dsb_score(truth.instances[0], pred.instances[0])

    def overlay(self, pred: Prediction, image: np.ndarray, alpha: float = 0.5, legend: bool = True) -> np.ndarray:
        ids, segments = _as_segments(*pred.instances[:2])
        return panoptic_overlay(image, ids, segments, self.palette, alpha, self.classes if legend else None)

    def writer(self, out_dir, formats, overlay: bool = False) -> InstanceWriter:
        return InstanceWriter(self, out_dir, self.check_formats(formats), overlay)

    def answer(self, pred: Prediction, fmt: str) -> dict:
        labels, class_ids, scores = pred.instances
        lut = np.concatenate([[self.num_classes], class_ids]).astype(np.int64)  # label k -> its class
        table = class_table(lut[labels], self.classes, self.palette)
        counts = np.bincount(class_ids, minlength=self.num_classes)
        for row in table:
            row["instances"] = int(counts[row["id"]])
        masks = encode_each(labels, range(1, len(class_ids) + 1))
        areas = np.bincount(labels.ravel(), minlength=len(class_ids) + 1)
        return {"classes": table,
                "segments": [{"id": k + 1, "class": int(c), "name": self.classes[int(c)], "isthing": True,
                              "area": int(areas[k + 1]), "score": float(s), "rle": masks[k + 1]}
                             for k, (c, s) in enumerate(zip(class_ids, scores))]}

    def summary(self, scores: dict) -> str:
        return f"val mask AP {scores['ap']:.4f}  AP50 {scores['ap50']:.4f}  DSB {scores['dsb_score']:.4f}"

    @staticmethod
    def table(scores: dict) -> str:
        from pixelwise.metrics.instance import ap_table

        text = ap_table(scores)
        if "dsb_score" in scores:
            text += f"\n{'DSB score / AJI':<24} {scores['dsb_score']:.4f} / {scores['aji']:.4f}"
        return text

    def report(self, scores: dict, out_dir: Path) -> list[str]:
        lines = ["| metric | value |", "|---|---|", f"| mask AP | {scores['ap']:.4f} |",
                 f"| mask AP50 | {scores['ap50']:.4f} |", f"| mask AP75 | {scores['ap75']:.4f} |",
                 f"| DSB score | {scores['dsb_score']:.4f} |", f"| AJI | {scores['aji']:.4f} |"]
        return lines

    @classmethod
    def score_files(cls, pred: str, spec: str) -> dict:
        from pixelwise.tasks.instance.files import coco_instance_eval

        return coco_instance_eval(prediction_files(pred, spec, "coco-instance", cls.name), pred)


class _FlatInstanceMetric(InstanceMetric):
    """InstanceMetric whose scores also stand at the top level (ap, ap50, ap75, per_class), as the best
    checkpoint and the tables read them."""

    def compute(self) -> dict:
        out = super().compute()
        ap = out["mask_ap"]
        per_class = dict(zip(ap.get("ap_classes", []), ap["per_class_ap"]))
        return {**out, "ap": ap["ap"], "ap50": ap["ap50"], "ap75": ap["ap75"], "per_class": per_class}
