"""What `pixelwise predict` writes for the multi-label task, per image NAME.ext, into OUT:

    png      CLASS/NAME.png    one binary mask per class (0 = absent, 255 = present): the layout of the
                               folder format's multi-label masks/ folder (OUT as ROOT/masks beside
                               ROOT/images reads the predictions back as a dataset)
    npy      NAME.npy          bool (C, H, W)
    rle      NAME.json         {"file": NAME.ext, **pixelwise.rle.per_class}: one COCO RLE per class present
    overlay  NAME_overlay.png  each pixel tinted with the mean colour of its classes, every class's outline
                               in its own colour, a legend (with --overlay)
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from skimage.segmentation import find_boundaries

from pixelwise import rle
from pixelwise.data.io import png_bytes, write_atomic
from pixelwise.viz import add_legend, save_png

SUFFIXES = {"npy": ".npy", "rle": ".json", "overlay": "_overlay.png"}


def multilabel_overlay(image: np.ndarray, masks: np.ndarray, classes: list[str], palette, alpha: float = 0.5,
                       legend: bool = True) -> np.ndarray:
    """uint8 (H, W, 3) + masks (C, H, W) (bool, or uint8 truth with 255 = void) -> uint8 overlay."""
    present = np.asarray(masks) == 1 if np.asarray(masks).dtype != bool else np.asarray(masks)
    colors = np.asarray(palette, np.float32)[:len(present)]
    n = present.sum(0)
    mean = np.tensordot(present.astype(np.float32), colors, axes=(0, 0)) / np.maximum(n, 1)[..., None]
    out = image.astype(np.float32)
    keep = (n > 0)[..., None]
    out = np.where(keep, (1 - alpha) * out + alpha * mean, out)
    for c in np.flatnonzero(present.reshape(len(present), -1).any(1)):
        out[find_boundaries(present[c], mode="inner")] = colors[c]
    out = out.clip(0, 255).astype(np.uint8)
    if legend:
        out = add_legend(out, classes, palette, np.flatnonzero(present.reshape(len(present), -1).any(1)))
    return out


class MultiLabelWriter:
    def __init__(self, task, out_dir: str | Path, formats: list[str], overlay: bool = False):
        self.task, self.out = task, Path(out_dir)
        self.formats = list(formats) + (["overlay"] if overlay else [])

    def _paths(self, name: str, fmt: str) -> list[Path]:
        stem = Path(name).stem
        if fmt == "png":
            return [self.out / cls / f"{stem}.png" for cls in self.task.classes]
        return [self.out / f"{stem}{SUFFIXES[fmt]}"]

    def paths(self, name: str) -> list[Path]:
        return [p for f in self.formats for p in self._paths(name, f)]

    def add(self, name: str, image: np.ndarray, pred, meta: dict | None = None) -> None:
        masks = np.asarray(pred.masks, bool)
        for fmt in self.formats:
            paths = self._paths(name, fmt)
            if fmt == "png":
                for path, mask in zip(paths, masks):
                    write_atomic(path, png_bytes(mask.astype(np.uint8) * 255))
            elif fmt == "npy":
                buf = io.BytesIO()
                np.save(buf, masks)
                write_atomic(paths[0], buf.getvalue())
            elif fmt == "rle":
                doc = {"file": name, **rle.per_class(masks, self.task.classes)}
                write_atomic(paths[0], json.dumps(doc).encode())
            else:
                save_png(paths[0], pred.overlay(image))

    def close(self, names: list[str]) -> list[Path]:
        return []
