"""Score a model on a dataset: streaming confusion matrix over the eval preset, optionally sharded."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from pixelwise.data.dataset import SegmentationDataset, TransformedDataset
from pixelwise.data.transforms import pad_collate
from pixelwise.metrics.semantic import ConfusionMatrix


def evaluate_logits_fn(logits_fn: Callable[[torch.Tensor], torch.Tensor], dataset: SegmentationDataset,
                       transform, num_classes: int, device="cpu", batch_size: int = 1, num_workers: int = 0,
                       rank: int = 0, world: int = 1, progress: bool = False,
                       on_batch: Callable | None = None) -> dict:
    """Run `logits_fn` (images (N,3,H,W) -> logits (N,C,H,W)) over the dataset and score the argmax.

    With world > 1, this process takes records rank, rank+world, ... and the confusion matrix is summed
    over processes, so the result equals a single-process run. `on_batch(images, targets, preds)` lets a
    caller keep per-image results (e.g. for a report).
    """
    indices = list(range(rank, len(dataset), world))
    data = Subset(TransformedDataset(dataset, transform), indices)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=pad_collate)
    cm = ConfusionMatrix(num_classes, device="cpu")
    for images, targets in tqdm(loader, desc="eval", disable=not progress, leave=False):
        logits = logits_fn(images.to(device))
        preds = logits.argmax(1).cpu()
        cm.update(preds, targets)
        if on_batch is not None:
            on_batch(images, targets, preds)
    cm.all_reduce()
    return cm.compute(dataset.classes)


def model_logits_fn(model: torch.nn.Module, amp_dtype: torch.dtype | None = None):
    """images -> logits for a plain model in eval mode (autocast when amp_dtype is given)."""

    @torch.inference_mode()
    def run(images: torch.Tensor) -> torch.Tensor:
        with torch.autocast(images.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = model(images)
        if isinstance(out, dict):
            out = out["out"]
        return out.float()

    return run


def evaluate(model_or_dir, dataset, split: str = "val", device: str | None = None, precision: str = "fp32",
             batch_size: int = 1, num_workers: int = 0, progress: bool = False, on_batch: Callable | None = None,
             predictor_options: dict | None = None) -> dict:
    """Score a model (directory, Predictor or nn.Module) on a dataset (SegmentationDataset or 'FORMAT:ROOT').

    Returns the dict of `scores_from_confusion` (miou, pixel_acc, mean_acc, per_class_iou, ... in 0..1)
    plus 'confusion'. Labels are scored at their own resolution.
    """
    from pixelwise.config import DataConfig
    from pixelwise.data.formats import open_dataset
    from pixelwise.data.transforms import build_transform

    if isinstance(dataset, str):
        dataset = open_dataset(dataset, split)
    predictor = _as_predictor(model_or_dir, dataset, device, precision, **(predictor_options or {}))
    transform = build_transform(DataConfig(mean=tuple(predictor.mean), std=tuple(predictor.std)), train=False)
    scores = evaluate_logits_fn(predictor.logits, dataset, transform, predictor.num_classes, predictor.device,
                                batch_size, num_workers, progress=progress, on_batch=on_batch)
    scores["classes"] = list(predictor.classes)
    return scores


def _as_predictor(model_or_dir, dataset, device, precision: str, **options):
    """A Predictor for a model directory, a Predictor or an nn.Module, checked against the dataset."""
    from pathlib import Path

    from pixelwise.errors import DataError
    from pixelwise.inference.predictor import Predictor

    if isinstance(model_or_dir, (str, Path)):
        predictor = Predictor.from_dir(model_or_dir, device=device, precision=precision, **options)
    elif isinstance(model_or_dir, Predictor):
        predictor = model_or_dir
    else:
        config = {"classes": dataset.classes, "palette": dataset.palette, "preprocessing": {}, "things": dataset.things}
        predictor = Predictor(model_or_dir, config, device or "cpu", precision)
    if predictor.num_classes != dataset.num_classes:
        raise DataError(f"{dataset.name}: dataset has {dataset.num_classes} classes but the model predicts "
                        f"{predictor.num_classes}")
    if len(dataset) == 0:
        raise DataError(f"{dataset.name}: no images to evaluate")
    return predictor


def panoptic_truth(sample, things) -> tuple:
    """(segment ids (H, W), segments) of a Sample: the reader's exact truth (`meta["panoptic"]`, COCO), else
    built from its semantic map and the instances of thing classes."""
    import numpy as np

    from pixelwise.data.panoptic_targets import instance_id_map, panoptic_from_maps

    if sample.meta.get("panoptic") is not None:
        return sample.meta["panoptic"]
    h, w = sample.semantic.shape
    inst = sample.instances
    masks = inst.masks[np.isin(inst.class_ids, list(things))] if inst is not None else np.zeros((0, h, w), bool)
    return panoptic_from_maps(sample.semantic, instance_id_map(masks, (h, w)), things)


def evaluate_panoptic(model_or_dir, dataset, split: str = "val", device: str | None = None, precision: str = "fp32",
                      method: str = "components", things=None, max_dets: int = 100, progress: bool = False,
                      **postprocess) -> dict:
    """Panoptic and instance scores of a model on a dataset (SegmentationDataset or 'FORMAT:ROOT').

    Panoptic models are post-processed as Panoptic-DeepLab (options from the model, overridden by
    `postprocess`: threshold, nms_kernel, top_k, stuff_area, min_thing_area); semantic models give
    instances by `method` ("components" or "watershed") on their label map. things: the thing classes
    (default: the model's config, else the dataset's). Returns pq, sq, rq, n, things, stuff, per_class
    (see metrics.panoptic), miou, pixel_acc, per_class_iou, mask_ap {ap, ap50, ap75, per_class_ap},
    dsb_score and aji (class-agnostic, over thing instances) and classes.
    """
    from tqdm import tqdm

    from pixelwise.data.formats import open_dataset
    from pixelwise.errors import DataError
    from pixelwise.tasks.inference import PanopticScorer, image_outputs, panoptic_prediction

    if isinstance(dataset, str):
        dataset = open_dataset(dataset, split)
    predictor = _as_predictor(model_or_dir, dataset, device, precision)
    things = list(things if things is not None else predictor.config.get("things") or dataset.things)
    if not things:
        raise DataError(f"{dataset.name}: no thing classes to find instances of (pass things=...)")
    post = {**getattr(predictor.model, "postprocess", {}), **postprocess}
    scorer = PanopticScorer(predictor.num_classes, things, list(predictor.classes), instances=True, max_dets=max_dets)
    for i in tqdm(range(len(dataset)), desc="eval", disable=not progress, leave=False):
        sample = dataset[i]
        pred = panoptic_prediction(image_outputs(predictor, sample.image), things, method=method, **post)
        scorer.update(*panoptic_truth(sample, things), sample.semantic, pred)
    return {**scorer.compute(), "classes": list(predictor.classes)}


def score_prediction_files(task: str, pred: str, spec: str, max_dets: int = 100) -> dict:
    """Score predictions made elsewhere: task "panoptic" (PRED = COCO-panoptic JSON, PNG folder beside it)
    against spec "coco-panoptic:GT_JSON", or task "instance" (PRED = COCO instance results JSON) against
    "coco-instance:GT_JSON". Returns the dict of `metrics.panoptic.pq_compute` / `coco_instance_eval`."""
    from pathlib import Path

    from pixelwise.data.formats import parse_spec
    from pixelwise.errors import DataError

    fmt, root = parse_spec(spec)
    wanted = {"panoptic": "coco-panoptic", "instance": "coco-instance"}[task]
    if fmt != wanted:
        raise DataError(f"{spec}: --task {task} --pred scores against a {wanted}:JSON ground truth")
    if not Path(pred).is_file():
        raise DataError(f"{pred}: prediction file not found")
    if task == "panoptic":
        from pixelwise.metrics.panoptic import pq_compute

        return pq_compute(root, pred)
    from pixelwise.metrics.instance import coco_instance_eval

    return coco_instance_eval(root, pred, max_dets)
