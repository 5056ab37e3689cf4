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
    from pathlib import Path

    from pixelwise.config import DataConfig
    from pixelwise.data.formats import open_dataset
    from pixelwise.data.transforms import build_transform
    from pixelwise.errors import DataError
    from pixelwise.inference.predictor import Predictor

    if isinstance(dataset, str):
        dataset = open_dataset(dataset, split)
    if isinstance(model_or_dir, (str, Path)):
        predictor = Predictor.from_dir(model_or_dir, device=device, precision=precision, **(predictor_options or {}))
    elif isinstance(model_or_dir, Predictor):
        predictor = model_or_dir
    else:
        config = {"classes": dataset.classes, "palette": dataset.palette, "preprocessing": {}}
        predictor = Predictor(model_or_dir, config, device or "cpu", precision)
    if predictor.num_classes != dataset.num_classes:
        raise DataError(f"{dataset.name}: dataset has {dataset.num_classes} classes but the model predicts "
                        f"{predictor.num_classes}")
    if len(dataset) == 0:
        raise DataError(f"{dataset.name}: no images to evaluate")
    transform = build_transform(DataConfig(mean=tuple(predictor.mean), std=tuple(predictor.std)), train=False)
    scores = evaluate_logits_fn(predictor.logits, dataset, transform, predictor.num_classes, predictor.device,
                                batch_size, num_workers, progress=progress, on_batch=on_batch)
    scores["classes"] = list(predictor.classes)
    return scores
