"""What `pixelwise classic` and `pixelwise eval --classic` call: segment files, score a dataset.

Plain functions; the click commands only parse arguments and print. Errors are `PixelwiseError`s that name
the file at fault; `run_classic` skips an image it cannot read or segment and reports it in its result.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from pixelwise.classical import METHODS, _lookup, method_params, segment, to_semantic
from pixelwise.classical._util import remove_small
from pixelwise.classical.watershed import split_touching
from pixelwise.data.classes import default_palette
from pixelwise.data.io import read_image, write_index_png
from pixelwise.constants import IGNORE_INDEX
from pixelwise.data.sample import Sample
from pixelwise.errors import ConfigError, DataError, PixelwiseError
from pixelwise.metrics.panoptic import instance_pq, instance_stats
from pixelwise.metrics.semantic import confusion, scores_from_confusion

# Options of the scoring step, taken out of `params` before the rest goes to the method.
EVAL_OPTIONS = {"rule": "auto", "threshold": None, "split_h": 2.0, "min_size": 10, "foreground_class": 1}


def _check_params(method: str, params: dict, extra: tuple[str, ...] = ()) -> None:
    _lookup(method)
    allowed = set(method_params(method)) | set(extra)
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(f"{method}: unknown parameter(s) {', '.join(unknown)} (its parameters: "
                          f"{', '.join(sorted(allowed))})")


def write_labels(path: Path, labels: np.ndarray) -> None:
    """An index PNG: palette PNG when labels fit in 0..255, else 16-bit greyscale (both read back by `read_mask`)."""
    top = int(labels.max(initial=0))
    if top > 65535:
        raise DataError(f"{path}: {top + 1} labels do not fit in a 16-bit PNG")
    write_index_png(path, labels, default_palette(min(top + 1, 256)))


def overlay_image(image: np.ndarray, labels: np.ndarray, objects: bool, alpha: float = 0.35) -> np.ndarray:
    """uint8 (H, W, 3): regions tinted with distinct colours and their boundaries drawn in yellow."""
    from skimage.color import label2rgb
    from skimage.segmentation import mark_boundaries

    tinted = label2rgb(labels, image, alpha=alpha, bg_label=0 if objects else -1, image_alpha=1.0, kind="overlay")
    drawn = mark_boundaries(tinted, labels, color=(1.0, 1.0, 0.0), mode="inner")
    return (np.clip(drawn, 0, 1) * 255).round().astype(np.uint8)


def _is_objects(method: str, params: dict) -> bool:
    return METHODS[method].kind == "objects" or (method == "watershed" and params.get("surface") == "distance")


@dataclass
class ClassicResult:
    written: list[Path] = field(default_factory=list)  # files written (label maps, overlays), in input order
    images: list[Path] = field(default_factory=list)   # input images segmented
    failed: list[str] = field(default_factory=list)    # one-line messages, each naming the file skipped


def _read(name) -> np.ndarray:
    """read_image, with PIL's decompression-bomb refusal (raised by Image.open, not an OSError) turned into
    a one-line DataError naming the file."""
    try:
        return read_image(name)
    except Image.DecompressionBombError as exc:
        raise DataError(f"{name}: refused, possible decompression bomb ({exc})") from None


def run_classic(method: str, images: list[str], out_dir, overlay: bool = False,
                params: dict | None = None, log: Callable[[str], None] | None = None) -> ClassicResult:
    """Segment each image file with `method` and write OUT/<stem>.png (label map; palette PNG, or 16-bit
    greyscale when there are more than 256 labels) and, with `overlay`, OUT/<stem>_overlay.png.

    Refused before any work (`PixelwiseError`): unknown method or parameters, no images, a named file that
    does not exist, two inputs with one file stem. An image that cannot be read (truncated, not an image, a
    decompression bomb) or that the method refuses as data (`DataError`) is skipped: its one-line message,
    naming the file, goes to `result.failed` and to `log` (when given); the others go on. A `ConfigError`
    (a parameter value the method refuses) still stops the run.
    """
    params = dict(params or {})
    _check_params(method, params)
    if not images:
        raise DataError("no input images given")
    stems: dict[str, str] = {}
    for name in images:
        if not Path(name).is_file():
            raise DataError(f"{name}: file not found")
        stem = Path(name).stem
        if stem in stems:
            raise DataError(f"{name}: same file name as {stems[stem]}; outputs would overwrite each other")
        stems[stem] = str(name)
    out = Path(out_dir)
    result = ClassicResult()

    def skip(name, exc: Exception) -> None:
        message = " ".join(str(exc).split())  # one line
        if str(name) not in message:
            message = f"{name}: {message}"
        result.failed.append(message)
        if log is not None:
            log(f"skipped: {message}")

    for name in images:
        try:
            image = _read(name)
        except PixelwiseError as exc:  # any refusal of the reader: DataError today
            skip(name, exc)
            continue
        try:
            labels = segment(image, method, **params)
        except DataError as exc:
            skip(name, exc)
            continue
        except PixelwiseError as exc:
            raise type(exc)(f"{name}: {exc}") from None
        target = out / f"{Path(name).stem}.png"
        write_labels(target, labels)
        result.written.append(target)
        if overlay:
            target = out / f"{Path(name).stem}_overlay.png"
            Image.fromarray(overlay_image(image, labels, _is_objects(method, params))).save(target)
            result.written.append(target)
        result.images.append(Path(name))
    return result


def _binary_truth(sample: Sample, fg_class: int) -> np.ndarray:
    """int64 (H, W) truth in the dataset's class ids: 0 / 1, 255 = void (instances: foreground = fg_class)."""
    if sample.semantic is not None:
        sem = np.asarray(sample.semantic, dtype=np.int64)
        bad = np.setdiff1d(np.unique(sem), [0, 1, IGNORE_INDEX])
        if bad.size:
            raise DataError(f"{sample.meta.get('path', sample.name)}: label values {bad.tolist()} in a binary task")
        return sem
    if sample.instances is not None:
        masks = sample.instances.masks
        fg = masks.any(0) if len(masks) else np.zeros(sample.image.shape[:2], bool)
        return (fg if fg_class == 1 else ~fg).astype(np.int64)
    raise DataError(f"{sample.meta.get('path', sample.name)}: sample has neither semantic nor instance truth")


def _instance_truth(sample: Sample) -> np.ndarray:
    truth = np.zeros(sample.image.shape[:2], np.int32)
    for k, mask in enumerate(sample.instances.masks, start=1):
        truth[mask] = k
    return truth


def evaluate_classic(method: str, dataset, params: dict | None = None, split: str = "val") -> dict:
    """Score a classical method on a binary dataset as a 2-class semantic task (and PQ when it has instances).

    dataset: a `SegmentationDataset` or a FORMAT:ROOT spec (opened with `split`). Its truth is binary:
    a semantic map with classes 0 = background, 1 = foreground (or `foreground_class` = 0 to swap), 255 = void,
    or instances (foreground = any instance). params: the method's parameters plus scoring options
    `rule` / `threshold` (see `to_semantic`), `split_h` (h of the distance-transform watershed that splits
    the foreground into instances when the method's labels are not already objects) and `min_size` (instances
    are made from the foreground without specks under this many pixels; as benchmarks/classical_scores.py).
    Returns miou, pixel_acc, mean_acc, per_class_iou, fg_iou (classes in the dataset's order), images,
    seconds (per image), and pq, sq, rq, tp, fp, fn when the dataset has instances.
    """
    params = dict(params or {})
    _check_params(method, params, tuple(EVAL_OPTIONS))
    opts = {key: params.pop(key, default) for key, default in EVAL_OPTIONS.items()}
    if opts["foreground_class"] not in (0, 1):
        raise ConfigError(f"foreground_class must be 0 or 1, got {opts['foreground_class']!r}")
    if isinstance(dataset, str):
        from pixelwise.data.formats import open_dataset
        dataset = open_dataset(dataset, split)
    if dataset.num_classes > 2 and not dataset.things:
        raise ConfigError(f"{dataset.name}: classical evaluation is for binary tasks, this dataset has "
                          f"{dataset.num_classes} classes")
    if len(dataset) == 0:
        raise DataError(f"{dataset.name}: no images")
    fg_class = opts["foreground_class"]
    cm = np.zeros((2, 2), np.int64)
    stats, has_instances, seconds = np.zeros((2, 4)), False, 0.0
    for i in range(len(dataset)):
        sample = dataset[i]
        where = sample.meta.get("path", sample.name or f"{dataset.name} #{i}")
        start = time.perf_counter()
        try:
            labels = segment(sample.image, method, **params)
            fg = to_semantic(labels, sample.image, opts["rule"], opts["threshold"])
        except PixelwiseError as exc:
            raise type(exc)(f"{where}: {exc}") from None
        seconds += time.perf_counter() - start
        truth = _binary_truth(sample, fg_class)
        pred = fg if fg_class == 1 else 1 - fg
        cm += confusion(pred, truth, 2)
        if sample.instances is not None:
            has_instances = True
            kept = remove_small(fg, opts["min_size"])
            instances = labels * kept if _is_objects(method, params) else split_touching(kept, opts["split_h"])
            stats += instance_stats(instances, _instance_truth(sample))
    sem = scores_from_confusion(cm)
    result = {k: sem[k] for k in ("miou", "pixel_acc", "mean_acc", "per_class_iou")}
    fg_iou = sem["per_class_iou"][fg_class]
    result["fg_iou"] = float("nan") if fg_iou is None else fg_iou
    result.update(images=len(dataset), seconds=seconds / len(dataset))
    if has_instances:
        result.update(instance_pq(stats))
    return result
