"""What `pixelwise predict` writes for the panoptic task, and its colour overlays.

Per image NAME.ext, into OUT (by format):
    coco     panoptic/NAME.png     COCO-panoptic PNG (segment id = R + 256 G + 256^2 B, 0 = void)
             .parts/NAME.json      this image's segments and instance results (what a resumed run reuses)
    png      NAME.png              the semantic map as an index PNG
    overlay  NAME_overlay.png      each thing instance in its own shade of its class colour, every segment's
                                   contour drawn, stuff in the class colour, a legend (with --overlay)
and for the whole run (coco), from the parts of every image listed, resumed ones included:
    panoptic.json    COCO-panoptic annotations for the PNGs in panoptic/ (the folder beside it, same stem)
    instances.json   COCO instance results (RLE masks with scores) of the thing segments

COCO category ids are class index + 1 unless the task option `category_ids` lists them.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from skimage.segmentation import find_boundaries

from pixelwise.data.formats.coco import id2rgb, instance_results, write_coco_instances, write_coco_panoptic
from pixelwise.data.io import png_bytes, write_atomic, write_index_png
from pixelwise.viz import add_legend, save_png


def segment_colors(segments: list[dict], palette) -> dict[int, tuple[int, int, int]]:
    """Segment id -> RGB: the class colour for stuff; for the n-th instance of a class, that colour made
    lighter or darker by a step that differs between neighbours in the sequence (golden-ratio spacing)."""
    colors, seen = {}, {}
    for seg in segments:
        base = np.asarray(palette[seg["category_id"] % len(palette)], np.float32)
        if not seg.get("isthing"):
            colors[seg["id"]] = tuple(int(c) for c in base)
            continue
        n = seen[seg["category_id"]] = seen.get(seg["category_id"], -1) + 1
        t = ((n * 0.618034) % 1.0) * 2 - 1  # in [-1, 1)
        shaded = base + t * 0.45 * (255 - base) if t > 0 else base * (1 + 0.55 * t)
        colors[seg["id"]] = tuple(int(c) for c in np.clip(shaded, 0, 255))
    return colors


def panoptic_overlay(image: np.ndarray, ids: np.ndarray, segments: list[dict], palette, alpha: float = 0.5,
                     classes: list[str] | None = None) -> np.ndarray:
    """uint8 (H, W, 3) image + segment ids (H, W) -> uint8 overlay with contours (and a legend of the
    classes present when `classes` is given). Void pixels keep the image."""
    lut = np.zeros((int(ids.max(initial=0)) + 1, 3), np.float32)
    for sid, color in segment_colors(segments, palette).items():
        lut[sid] = color
    out = image.astype(np.float32)
    keep = (ids > 0)[..., None]
    out = np.where(keep, (1 - alpha) * out + alpha * lut[ids], out)
    edges = find_boundaries(ids, mode="inner") & (ids > 0)
    out[edges] = 0.35 * lut[ids][edges]  # the segment's own colour, darkened
    out = out.clip(0, 255).astype(np.uint8)
    if classes is not None:
        present = sorted({s["category_id"] for s in segments})
        out = add_legend(out, classes, palette, np.asarray(present, np.int64))
    return out


class PanopticWriter:
    """Writes the files listed in the module docstring; `close` assembles the run's JSON files."""

    def __init__(self, task, out_dir: str | Path, formats: list[str], overlay: bool = False):
        self.task, self.out = task, Path(out_dir)
        self.formats = list(formats) + (["overlay"] if overlay else [])
        self.category_ids = task.options.coco_ids(task.num_classes)

    def _files(self, stem: str) -> dict[str, list[Path]]:
        return {"coco": [self.out / "panoptic" / f"{stem}.png", self.out / ".parts" / f"{stem}.json"],
                "png": [self.out / f"{stem}.png"], "overlay": [self.out / f"{stem}_overlay.png"]}

    def paths(self, name: str) -> list[Path]:
        files = self._files(Path(name).stem)
        return [p for f in self.formats for p in files[f]]

    def add(self, name: str, image: np.ndarray, pred, meta: dict | None = None) -> None:
        stem = Path(name).stem
        files = self._files(stem)
        ids, segments = pred.panoptic
        if "png" in self.formats:
            write_index_png(files["png"][0], pred.semantic, self.task.palette)
        if "overlay" in self.formats:
            save_png(files["overlay"][0], pred.overlay(image))
        if "coco" in self.formats:
            write_atomic(files["coco"][0], png_bytes(id2rgb(ids)))
            labels, class_ids, scores = pred.instances
            h, w = ids.shape
            part = {"file_name": name, "height": int(h), "width": int(w), "png": f"{stem}.png",
                    "segments_info": [{"id": s["id"], "category_id": self.category_ids[s["category_id"]],
                                       "iscrowd": 0, "area": s["area"], "score": s.get("score", 1.0)}
                                      for s in segments],
                    "instances": instance_results(0, labels, class_ids, scores, self.category_ids)}
            write_atomic(files["coco"][1], json.dumps(part).encode())

    def close(self, names: list[str]) -> list[Path]:
        """panoptic.json (+ PNG folder) and instances.json over every listed image's parts."""
        if "coco" not in self.formats:
            return []
        images, annotations, results = [], [], []
        for image_id, name in enumerate(names, start=1):
            path = self._files(Path(name).stem)["coco"][1]
            if not path.is_file():
                continue  # an image that failed to read: it has no outputs
            part = json.loads(path.read_text())
            images.append({"id": image_id, "file_name": part["file_name"], "height": part["height"],
                           "width": part["width"]})
            annotations.append({"image_id": image_id, "file_name": part["png"], "segments_info": part["segments_info"]})
            results += [{**r, "image_id": image_id} for r in part["instances"]]
        cats = [{"id": cid, "name": name, "isthing": int(i in self.task.things), "color": list(self.task.palette[i])}
                for i, (cid, name) in enumerate(zip(self.category_ids, self.task.classes))]
        return [write_coco_panoptic(self.out / "panoptic.json", annotations, cats, images),
                write_coco_instances(self.out / "instances.json", results)]
