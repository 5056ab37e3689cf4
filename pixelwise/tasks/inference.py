"""Panoptic and instance answers from any model, and the scorer that grades them.

- Panoptic models (outputs "out", "center", "offset"): Panoptic-DeepLab post-processing
  (pixelwise.postprocess.panoptic).
- Semantic models: stuff classes from the label map, thing instances by connected components or marker
  watershed (pixelwise.postprocess.instances).

Both give a `PanopticPrediction`: segment ids int32 (H, W) with 0 = void, segments [{"id", "category_id"
(class index), "isthing", "iscrowd", "area", "score"}] and the semantic map int64 (H, W).
`PanopticScorer` accumulates PQ, mIoU and optionally mask AP and the DSB nuclei scores over images.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pixelwise.metrics.instance import MaskAP, aggregated_jaccard, dsb_score
from pixelwise.metrics.panoptic import PanopticQuality
from pixelwise.metrics.semantic import ConfusionMatrix
from pixelwise.postprocess.instances import instances_from_semantic
from pixelwise.postprocess.panoptic import merge_semantic_and_instance, panoptic_segmentation, panoptic_segments


@dataclass
class PanopticPrediction:
    ids: np.ndarray
    segments: list[dict]
    semantic: np.ndarray

    def instances(self):
        """Thing instances as (label map int32 (H, W), class ids (K,), scores (K,))."""
        return thing_labels(self.ids, self.segments)


def thing_labels(ids: np.ndarray, segments: list[dict], things=None, crowd: bool = False):
    """Thing segments (non-crowd, or crowd only when `crowd`) of a segment-id map as a label map 1..K,
    with their class ids and scores. Things: the classes in `things`, else the segments marked "isthing"."""
    things = None if things is None else {int(t) for t in things}
    picked = [s for s in segments if (s["category_id"] in things if things is not None else s.get("isthing", False))
              and bool(s.get("iscrowd", 0)) == crowd]
    lut = np.zeros(int(ids.max(initial=0)) + 1, np.int32)
    for k, seg in enumerate(picked):
        lut[seg["id"]] = k + 1
    return (lut[ids], np.array([s["category_id"] for s in picked], np.int64),
            np.array([s.get("score", 1.0) for s in picked], np.float32))


@torch.inference_mode()
def run_model(model: torch.nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """fp32 forward of a batch; a plain logits tensor comes back as {"out": logits}."""
    out = model(images)
    out = out if isinstance(out, dict) else {"out": out}
    return {k: v.float() for k, v in out.items()}


def panoptic_prediction(out: dict[str, torch.Tensor], things, threshold: float = 0.1, nms_kernel: int = 7,
                        top_k: int | None = 200, stuff_area: int = 2048, min_thing_area: int = 1,
                        method: str = "components") -> PanopticPrediction:
    """One image's outputs {"out" (C, H, W)[, "center" (1, H, W), "offset" (2, H, W)]} -> PanopticPrediction.

    With center and offset: Panoptic-DeepLab grouping; without (a semantic model): instances by `method`
    ("components" or "watershed") on the argmax. Scores: see `panoptic_segments` / `instance_scores`.
    """
    things = [int(t) for t in things]
    probs = out["out"].softmax(0)
    semantic = probs.argmax(0)
    if "center" in out and "offset" in out:
        pan = panoptic_segmentation(out["out"], out["center"], out["offset"], things, threshold, nms_kernel, top_k,
                                    stuff_area, min_thing_area)
        ids, segments = panoptic_segments(pan, things, probs, out["center"])
    else:
        labels, _, _ = instances_from_semantic(semantic.cpu().numpy(), things, method, min_area=min_thing_area)
        pan = merge_semantic_and_instance(semantic, torch.from_numpy(labels.astype(np.int64)).to(semantic.device),
                                          things, stuff_area=stuff_area, min_thing_area=min_thing_area)
        ids, segments = panoptic_segments(pan, things, probs)  # score: mean class probability of each instance
    return PanopticPrediction(ids.cpu().numpy(), segments, semantic.cpu().numpy())


class PanopticScorer:
    """PQ (per class, things / stuff) and mIoU of the semantic map; with `instances`, also mask AP over the
    thing classes (pycocotools) and the DSB 2018 score and AJI (class-agnostic, over thing instances)."""

    def __init__(self, num_classes: int, things, class_names=None, instances: bool = False, max_dets: int = 100):
        self.things = [int(t) for t in things]
        self.pq = PanopticQuality(num_classes, self.things, class_names)
        self.cm = ConfusionMatrix(num_classes)
        self.ap = MaskAP(self.things, class_names, max_dets) if instances else None
        self.nuclei = torch.zeros(3, dtype=torch.float64)  # sum of DSB scores, sum of AJI, images
        self.class_names = class_names

    def update(self, gt_ids: np.ndarray, gt_segments: list[dict], gt_semantic: np.ndarray,
               pred: PanopticPrediction) -> None:
        gt_ids = np.asarray(gt_ids)
        self.pq.update(gt_ids, gt_segments, pred.ids, pred.segments)
        self.cm.update(torch.from_numpy(pred.semantic), torch.from_numpy(np.asarray(gt_semantic)))
        if self.ap is None:
            return
        gl, gc, _ = thing_labels(gt_ids, gt_segments, self.things)
        crowd = thing_labels(gt_ids, gt_segments, self.things, crowd=True)[0] > 0
        pl, pc, ps = thing_labels(pred.ids, pred.segments, self.things)
        self.ap.update(gl, gc, pl, pc, ps, crowd)
        self.nuclei += torch.tensor([dsb_score(gl, pl), aggregated_jaccard(gl, pl), 1.0], dtype=torch.float64)

    def all_reduce(self) -> None:
        self.pq.all_reduce()
        self.cm.all_reduce()
        if self.ap is not None:
            self.ap.all_reduce()
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(self.nuclei)

    def compute(self) -> dict:
        sem = self.cm.compute(self.class_names)
        out = {**self.pq.compute(), "miou": sem["miou"], "pixel_acc": sem["pixel_acc"],
               "per_class_iou": sem["per_class_iou"]}
        if self.ap is not None:
            n = max(1.0, float(self.nuclei[2]))
            out |= {"mask_ap": self.ap.compute(), "dsb_score": float(self.nuclei[0]) / n,
                    "aji": float(self.nuclei[1]) / n}
        return out


def image_outputs(predictor, image: np.ndarray) -> dict[str, torch.Tensor]:
    """A Predictor's model on one uint8 (H, W, 3) image -> {"out" (C, H, W), ...} at the image size, with
    the model's preprocessing (mean / std, shorter side resized); offsets rescaled with the maps."""
    from pixelwise.data.transforms import normalize_image
    from pixelwise.inference.predictor import as_rgb

    image = as_rgb(image)
    h, w = image.shape[:2]
    x = normalize_image(image, predictor.mean, predictor.std).to(predictor.device, predictor.dtype)
    if predictor.resize:
        s = predictor.resize / min(h, w)
        x = F.interpolate(x, size=(round(h * s), round(w * s)), mode="bilinear", align_corners=False)
    out = run_model(predictor.model, x)
    result = {}
    for key, value in out.items():
        if value.shape[-2:] != (h, w):
            scale = torch.tensor([h / value.shape[-2], w / value.shape[-1]], device=value.device).view(1, 2, 1, 1)
            value = F.interpolate(value, size=(h, w), mode="bilinear", align_corners=False)
            value = value * scale if key == "offset" else value
        result[key] = value[0]
    return result
