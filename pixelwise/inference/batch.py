"""Batch prediction over files: images decoded in DataLoader workers while the model runs, a progress bar,
resumable (an image whose outputs all exist is skipped), outputs written atomically.

Outputs per image `NAME.ext` in `out_dir` (by `formats`):
    png      NAME.png          index PNG with the model's palette
    overlay  NAME_overlay.png  colour overlay with a legend
    npy      NAME.npy          label map (uint8, int32 past 256 classes), written band by band for tiled
                               predictions (np.lib.format.open_memmap), so it never sits whole in memory
    rle      NAME.json         COCO RLE per class present: {"file", "height", "width", "classes",
                               "segments": [{"category_id", "name", "area", "segmentation": RLE}]}
A file is written under a temporary name and renamed, so a killed run never leaves a half file that a
resumed run would take for done.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pixelwise.errors import PixelwiseError

FORMATS = ("png", "overlay", "npy", "rle")
_SUFFIX = {"png": ".png", "overlay": "_overlay.png", "npy": ".npy", "rle": ".json"}


@dataclass
class BatchResult:
    written: list[Path] = field(default_factory=list)   # images predicted in this run
    skipped: list[Path] = field(default_factory=list)   # images whose outputs already existed
    failed: list[str] = field(default_factory=list)     # one-line messages, naming the file


def output_paths(path: Path, out_dir: Path, formats: Sequence[str]) -> dict[str, Path]:
    return {f: out_dir / f"{path.stem}{_SUFFIX[f]}" for f in formats}


class _Images(Dataset):
    """paths -> (index, uint8 image or None, error message or None); decoding errors are returned, not
    raised, so one bad file does not stop the loader."""

    def __init__(self, paths: Sequence[Path]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from pixelwise.data.io import read_image

        try:
            return i, read_image(self.paths[i]), None
        except PixelwiseError as exc:
            return i, None, str(exc)


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_npy_streaming(predictor, image: np.ndarray, path: Path) -> None:
    """Label map -> .npy band by band (a tiled prediction never holds the whole map)."""
    from pixelwise.inference.sliding import label_dtype

    def write(tmp: Path) -> None:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=label_dtype(predictor.num_classes),
                                        shape=image.shape[:2])
        for y0, y1, band in predictor.iter_rows(image):
            arr[y0:y1] = band
        arr.flush()
        del arr

    _atomic(path, write)


def _identity(item):
    return item


def rle_json(labels: np.ndarray, classes: list[str], name: str) -> dict:
    from pixelwise import rle

    segments = []
    for c in np.unique(labels).tolist():
        mask = labels == c
        segments.append({"category_id": int(c), "name": classes[c] if c < len(classes) else str(c),
                         "area": int(mask.sum()), "segmentation": rle.encode(mask)})
    return {"file": name, "height": int(labels.shape[0]), "width": int(labels.shape[1]),
            "classes": list(classes), "segments": segments}


def write_outputs(predictor, image: np.ndarray, name: str, targets: dict[str, Path]) -> None:
    """Predict one image and write the requested outputs."""
    from PIL import Image

    from pixelwise.data.io import write_index_png

    if set(targets) == {"npy"}:
        _write_npy_streaming(predictor, image, targets["npy"])
        return
    labels = predictor.labels(image)
    rest = targets
    if "npy" in rest:
        _atomic(rest["npy"], lambda tmp: np.save(tmp, labels))
    if "png" in rest:
        write_index_png(rest["png"], labels, predictor.palette)  # writes via a temporary file itself
    if "overlay" in rest:
        from pixelwise.inference.predictor import Prediction

        over = Prediction(labels, None, predictor.classes, predictor.palette).overlay(image)
        _atomic(rest["overlay"], lambda tmp: Image.fromarray(over).save(tmp, format="PNG"))
    if "rle" in rest:
        text = json.dumps(rle_json(labels, predictor.classes, name))
        _atomic(rest["rle"], lambda tmp: tmp.write_text(text))


def predict_files(predictor, paths: Sequence[str | Path], out_dir: str | Path,
                  formats: Sequence[str] = ("png",), overwrite: bool = False, num_workers: int = 2,
                  progress: bool = True, log: Callable[[str], None] | None = None) -> BatchResult:
    """Predict every image in `paths`, writing `formats` (see the module docstring) into `out_dir`.

    Images whose outputs all exist are skipped unless `overwrite`. Unreadable images are reported through
    `log` (default: tqdm.write) and collected in `result.failed`; the others go on.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise PixelwiseError(f"unknown output format(s) {unknown}; choose from {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    log = log or tqdm.write
    result = BatchResult()
    todo = []
    for p in map(Path, paths):
        targets = output_paths(p, out_dir, formats)
        if not overwrite and all(t.is_file() for t in targets.values()):
            result.skipped.append(p)
        else:
            todo.append(p)
    if not todo:
        return result
    workers = min(num_workers, len(todo) - 1) if len(todo) > 1 else 0
    loader = DataLoader(_Images(todo), batch_size=None, shuffle=False, num_workers=max(workers, 0),
                        collate_fn=_identity, prefetch_factor=2 if workers > 0 else None)
    bar = tqdm(loader, total=len(todo), desc="predict", disable=not progress or len(todo) < 2)
    for i, image, error in bar:
        path = todo[i]
        if error is not None:
            result.failed.append(error)
            log(f"skipped: {error}")
            continue
        write_outputs(predictor, image, path.name, output_paths(path, out_dir, formats))
        result.written.append(path)
    return result
