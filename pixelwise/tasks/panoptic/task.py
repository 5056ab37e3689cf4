"""The panoptic task (Panoptic-DeepLab, arXiv 1911.10194): stuff and counted things in one map.

Training: targets of `PanopticTransform` (semantic map, center heatmap, offsets and their weights), the
paper's loss (`PanopticLoss`). Decoding: Panoptic-DeepLab grouping of a panoptic model's "out", "center"
and "offset", or, for a semantic model, thing instances by connected components or marker watershed
(`method`). Prediction: `semantic` int64 (H, W), `panoptic` (segment ids int32 (H, W), segments) and
`instances` (the thing segments as a label map). Scored by PQ (best checkpoint), mIoU and, in full, mask AP.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pixelwise.errors import ConfigError
from pixelwise.rle import encode_each
from pixelwise.tasks.base import Prediction, TaskBase, Training, prediction_files
from pixelwise.tasks.panoptic.decode import panoptic_decode, thing_labels
from pixelwise.tasks.panoptic.loss import PanopticLoss, PanopticMaskLoss
from pixelwise.tasks.panoptic.metric import PanopticMetric
from pixelwise.tasks.panoptic.targets import PanopticTransform, panoptic_collate, panoptic_truth
from pixelwise.tasks.panoptic.writer import PanopticWriter, panoptic_overlay
from pixelwise.tasks.semantic.task import b64, check_mask_classification, class_table, draw_semantic

PANOPTIC_MODELS = frozenset({"panoptic_deeplab"})


@dataclass
class PanopticOptions:
    """Post-processing (Panoptic-DeepLab's defaults; a panoptic model's own settings override them):
    threshold / nms_kernel / top_k of the center heatmap, stuff regions under stuff_area pixels and thing
    instances under min_thing_area become void. method: how a semantic model's label map becomes
    instances (components | watershed). object_mask_threshold / overlap_threshold: a mask-classification
    model's queries kept (class probability above it) and segments kept (share of a query's mask it wins),
    Mask2Former's 0.8 / 0.8. category_ids: COCO ids of the classes in written JSON. max_dets:
    instances per image kept for mask AP (COCO's 100; crowded images such as nuclei need more)."""

    threshold: float = 0.1
    nms_kernel: int = 7
    top_k: int | None = 200
    stuff_area: int = 2048
    min_thing_area: int = 1
    method: str = "components"
    object_mask_threshold: float = 0.8
    overlap_threshold: float = 0.8
    category_ids: list[int] | None = None
    max_dets: int = 100

    def __post_init__(self):
        if self.method not in ("components", "watershed"):
            raise ConfigError(f"task.options.method: '{self.method}' is not one of components, watershed")
        if self.nms_kernel < 1 or self.nms_kernel % 2 == 0:
            raise ConfigError(f"task.options.nms_kernel: expected an odd positive size, got {self.nms_kernel}")

    def coco_ids(self, num_classes: int) -> list[int]:
        """COCO category ids of the classes: category_ids, else class index + 1."""
        ids = list(self.category_ids or range(1, num_classes + 1))
        if len(ids) != num_classes:
            raise ConfigError(f"task.options.category_ids: {len(ids)} ids for {num_classes} classes")
        return ids

    def postprocess(self) -> dict:
        return {k: getattr(self, k) for k in ("threshold", "nms_kernel", "top_k", "stuff_area", "min_thing_area",
                                              "method", "object_mask_threshold", "overlap_threshold")}


def truth_instances(sample, things) -> tuple[tuple, np.ndarray, tuple]:
    """(thing instances (labels, class ids, scores), crowd mask, panoptic truth) of a Sample."""
    ids, segments = panoptic_truth(sample, things)
    crowd = thing_labels(ids, segments, things, crowd=True)[0] > 0
    return thing_labels(ids, segments, things), crowd, (ids, segments)


class PanopticTask(TaskBase):
    """Panoptic segmentation; validated by PQ (and mIoU)."""

    name = "panoptic"
    best_key = "pq"
    record_keys = ("pq", "sq", "rq", "things", "stuff", "miou", "pixel_acc", "per_class_iou")
    reads = ("panoptic", "semantic")
    native_models = PANOPTIC_MODELS
    applies = frozenset({"tile", "tta", "crf"})
    formats = ("coco", "png")
    Options = PanopticOptions
    reads_queries = True
    needs_things = True

    def training(self, data_cfg, train_cfg, model) -> Training:
        self.refuse_border_weight(train_cfg)
        model = getattr(model, "module", model)
        name = getattr(model, "pixelwise_arch", {}).get("name")
        if getattr(model, "mask_classification", False):
            check_mask_classification(train_cfg, self.name)
            return Training(PanopticTransform(data_cfg, self.things, segments=True), panoptic_collate,
                            PanopticMaskLoss(self.num_classes, self.things))
        if name not in PANOPTIC_MODELS:
            raise ConfigError(f"config key 'task.name': the panoptic task trains a panoptic model "
                              f"({', '.join(sorted(PANOPTIC_MODELS))}) or a mask-classification one (mask2former), "
                              f"got '{name}'")
        if train_cfg.loss is not None:
            raise ConfigError("config key 'train.loss': the panoptic task trains with Panoptic-DeepLab's own loss "
                              "(semantic + center + offset); leave train.loss unset")
        transform = PanopticTransform(data_cfg, self.things, dict(getattr(model, "targets", {})))
        return Training(transform, panoptic_collate, PanopticLoss(class_weights=train_cfg.class_weights))

    def decode(self, outputs: dict[str, torch.Tensor], probs: bool = False) -> Prediction:
        semantic, ids, segments = panoptic_decode(outputs, self.things, **self.options.postprocess())
        return Prediction(self, semantic=semantic, panoptic=(ids, segments),
                          instances=thing_labels(ids, segments, self.things),
                          probs=outputs["out"].float().softmax(0).cpu().numpy() if probs else None)

    def truth(self, sample) -> Prediction:
        instances, crowd, panoptic = truth_instances(sample, self.things)
        return Prediction(self, semantic=np.asarray(sample.semantic, np.int64), panoptic=panoptic,
                          instances=instances, crowd=crowd)

    def metric(self, full: bool = True) -> PanopticMetric:
        return PanopticMetric(self.classes, self.things, instances=full, max_dets=self.options.max_dets)

    def image_score(self, pred: Prediction, truth: Prediction) -> float:
        metric = self.metric(full=False)
        metric.update(pred, truth)
        return metric.compute()["pq"]

    def overlay(self, pred: Prediction, image: np.ndarray, alpha: float = 0.5, legend: bool = True) -> np.ndarray:
        if pred.panoptic is None:  # e.g. truth without instance information
            return draw_semantic(pred.semantic, image, self.classes, self.palette, alpha, legend)
        ids, segments = pred.panoptic
        return panoptic_overlay(image, ids, segments, self.palette, alpha, self.classes if legend else None)

    def writer(self, out_dir, formats, overlay: bool = False) -> PanopticWriter:
        return PanopticWriter(self, out_dir, self.check_formats(formats), overlay)

    def answer(self, pred: Prediction, fmt: str) -> dict:
        """classes (pixels and instances per class, counted on the segments), the segments (id, class,
        name, area, score, RLE); with fmt "png" also "mask", each segment's class per pixel (255 where no
        segment), and "segment_map", the segment ids (0 = void), as index PNGs."""
        from pixelwise.data.io import index_png_bytes

        ids, segments = pred.panoptic
        lut = np.full(int(ids.max(initial=0)) + 1, 255, np.int64)
        for s in segments:
            lut[s["id"]] = s["category_id"]
        classes = lut[ids]  # the class of each pixel's segment: what the segments say, void where none
        table = class_table(classes, self.classes, self.palette)
        counts = np.bincount([s["category_id"] for s in segments if s.get("isthing")], minlength=self.num_classes)
        for row in table:
            row["instances"] = int(counts[row["id"]]) if row["id"] in self.things else None
        masks = encode_each(ids, [s["id"] for s in segments])
        body = {"classes": table,
                "segments": [{"id": int(s["id"]), "class": int(s["category_id"]), "name": self.classes[s["category_id"]],
                              "isthing": bool(s.get("isthing")), "area": int(s["area"]),
                              "score": float(s.get("score", 1.0)), "rle": masks[s["id"]]} for s in segments]}
        if fmt == "png":
            body["mask"] = {"format": "png", "encoding": "index", "data": b64(index_png_bytes(classes, self.palette))}
            body["segment_map"] = {"format": "png", "encoding": "index", "data": b64(index_png_bytes(ids))}
        return body

    def summary(self, scores: dict) -> str:
        return f"val PQ {scores['pq']:.4f}  SQ {scores['sq']:.4f}  RQ {scores['rq']:.4f}  mIoU {scores['miou']:.4f}"

    @staticmethod
    def table(scores: dict) -> str:
        from pixelwise.metrics.panoptic import pq_table

        lines = [pq_table(scores)]
        if "miou" in scores:
            lines.append(f"{'mIoU':<24} {100 * scores['miou']:>6.1f}")
        if "mask_ap" in scores:
            ap = scores["mask_ap"]
            lines += [f"{'mask AP / AP50 / AP75':<24} {100 * ap['ap']:.1f} / {100 * ap['ap50']:.1f} / {100 * ap['ap75']:.1f}",
                      f"{'DSB score / AJI':<24} {scores['dsb_score']:.4f} / {scores['aji']:.4f}"]
        return "\n".join(lines)

    def report(self, scores: dict, out_dir: Path) -> list[str]:
        fmt = (lambda v: "n/a" if v is None else f"{v:.4f}")
        lines = ["| metric | all | things | stuff |", "|---|---|---|---|"]
        for key in ("pq", "sq", "rq"):
            lines.append(f"| {key.upper()} | {scores[key]:.4f} | {scores['things'][key]:.4f} | {scores['stuff'][key]:.4f} |")
        lines += ["", f"mIoU of the semantic map: {scores['miou']:.4f}"]
        if "mask_ap" in scores:
            ap = scores["mask_ap"]
            lines.append(f"Mask AP / AP50 / AP75: {ap['ap']:.4f} / {ap['ap50']:.4f} / {ap['ap75']:.4f}; "
                         f"DSB score {scores['dsb_score']:.4f}, AJI {scores['aji']:.4f}")
        lines += ["", "## Per-class PQ", "", "| class | PQ | SQ | RQ | TP | FP | FN |", "|---|---|---|---|---|---|---|"]
        for name, c in scores["per_class"].items():
            lines.append(f"| {name} | {fmt(c['pq'])} | {fmt(c['sq'])} | {fmt(c['rq'])} | {c['tp']} | {c['fp']} | {c['fn']} |")
        return lines

    @classmethod
    def score_files(cls, pred: str, spec: str) -> dict:
        from pixelwise.tasks.panoptic.files import pq_compute

        return pq_compute(prediction_files(pred, spec, "coco-panoptic", cls.name), pred)
