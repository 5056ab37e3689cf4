"""Score a model on a dataset, for every task through one loop: Predictor -> task.decode -> task metric.

The same loop validates during training (the module itself, fp32, `Predictor(fastpath=False)`) and runs
`pixelwise eval` (the saved model through the fast path, with tiles, TTA or the CRF when asked), so a
figure in metrics.jsonl and one from `pixelwise eval` mean the same thing: labels are always scored at
their own resolution. Under DDP each process takes images rank, rank + world, ... (no padding, no
repeats) and the metric is all-reduced, so the scores equal a one-process run.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from pixelwise.data.dataset import SegmentationDataset
from pixelwise.engine.volumes import VolumeScores
from pixelwise.errors import DataError
from pixelwise.metrics.reduce import LOCAL, Reducer


def _identity(item):
    return item


def run_evaluation(predictor, dataset: SegmentationDataset, rank: int = 0, world: int = 1, full: bool = True,
                   progress: bool = False, on_image: Callable | None = None, num_workers: int = 0,
                   reducer: Reducer = LOCAL) -> dict:
    """Predict every image of this process's share of `dataset`, score against the task's truth, reduce.

    on_image(index, sample, prediction, truth) sees each image (e.g. to keep per-image scores);
    full=False: the task's cheaper validation metric (see Task.metric). Samples are decoded in
    `num_workers` DataLoader processes while the model runs. With full=True in one process, slices of
    volumes (meta["volume"]) are also scored per volume: scores["volumes"] (pixelwise.engine.volumes)."""
    task = predictor.task
    metric = task.metric(full)
    volumes = VolumeScores(task.num_classes) if full and world == 1 else None
    indices = list(range(rank, len(dataset), world))
    loader = DataLoader(Subset(dataset, indices), batch_size=None, shuffle=False, num_workers=num_workers,
                        collate_fn=_identity)
    for index, sample in zip(indices, tqdm(loader, total=len(indices), desc="eval", disable=not progress,
                                           leave=False)):
        pred = predictor.predict(sample.image)
        truth = task.truth(sample)
        metric.update(pred, truth)
        if volumes is not None:
            volumes.update(sample, pred, truth)
        if on_image is not None:
            on_image(index, sample, pred, truth)
    metric.all_reduce(reducer)
    per_volume = volumes.compute() if volumes is not None else {}
    return {**metric.compute(), **({"volumes": per_volume} if per_volume else {})}


def evaluate(model_or_dir, dataset, split: str = "val", device: str | None = None, precision: str = "fp32",
             num_workers: int = 0, progress: bool = False, on_image: Callable | None = None, task: str | None = None,
             task_options: dict | None = None, predictor_options: dict | None = None) -> dict:
    """Score a model (directory, Predictor or nn.Module) on a dataset (SegmentationDataset or 'FORMAT:ROOT').

    task: the task to score (default: the model's own; e.g. "instance" for a panoptic model, "panoptic"
    for a semantic one). Returns the task metric's scores plus "classes"; semantic: miou, pixel_acc,
    mean_acc, per_class_iou, ... in 0..1 and "confusion"; panoptic: pq, sq, rq, things, stuff, per_class,
    miou, mask_ap, dsb_score, aji.
    """
    from pixelwise.data.formats import open_dataset

    if isinstance(dataset, str):
        dataset = open_dataset(dataset, split)
    predictor = as_predictor(model_or_dir, dataset, device, precision, task, task_options, **(predictor_options or {}))
    scores = run_evaluation(predictor, dataset, progress=progress, on_image=on_image, num_workers=num_workers)
    return {**scores, "classes": list(predictor.classes)}


def as_predictor(model_or_dir, dataset, device=None, precision: str = "fp32", task: str | None = None,
                 task_options: dict | None = None, **options):
    """A Predictor for a model directory, a Predictor or an nn.Module, checked against the dataset. Models
    saved without thing classes take the dataset's (a semantic model scored as panoptic)."""
    from pixelwise.inference.predictor import Predictor, default_device, load_for_inference

    if isinstance(model_or_dir, Predictor):
        if task is not None and task != model_or_dir.task.name:
            raise DataError(f"evaluate: the Predictor runs the {model_or_dir.task.name} task, not {task}")
        predictor = model_or_dir
    else:
        if isinstance(model_or_dir, (str, Path)):
            model, config = load_for_inference(model_or_dir)
            device = "cpu" if str(model_or_dir).endswith(".onnx") else device
        else:
            model = model_or_dir
            config = {"classes": dataset.classes, "palette": dataset.palette, "preprocessing": {}}
        config = {**config, "things": config.get("things") or dataset.things}
        predictor = Predictor(model, config, device or default_device(), precision, task=task,
                              task_options=task_options, **options)
    predictor.task.check_dataset(dataset)
    if len(dataset) == 0:
        raise DataError(f"{dataset.name}: no images to evaluate")
    return predictor
