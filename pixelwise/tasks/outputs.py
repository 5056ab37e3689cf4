"""What `pixelwise predict --task panoptic` writes: colour overlays and COCO panoptic / instance JSON.

Overlays give each thing instance its own shade of its class colour and draw every segment's contour;
stuff keeps the class colour. `PanopticWriter` collects one image at a time and writes, into OUT:

    NAME_panoptic.png        the overlay (image blended with the colours, contours, legend)
    panoptic/NAME.png        COCO-panoptic PNG (segment id = R + 256 G + 256^2 B, 0 = void)
    panoptic.json            COCO-panoptic annotations for those PNGs (the folder beside it, same stem)
    instances.json           COCO instance results (RLE masks with scores) of the thing segments

COCO category ids are class index + 1 unless the model's config lists "category_ids".
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage.segmentation import find_boundaries

from pixelwise.data.formats.coco import id2rgb, instance_results, write_coco_instances, write_coco_panoptic
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
    """Collects per-image panoptic predictions and writes the files listed in the module docstring."""

    def __init__(self, out_dir, classes: list[str], things, palette, category_ids: list[int] | None = None):
        self.out = Path(out_dir)
        self.classes, self.things, self.palette = list(classes), {int(t) for t in things}, palette
        self.category_ids = list(category_ids or range(1, len(classes) + 1))
        self.images, self.annotations, self.results = [], [], []

    def add(self, name: str, image: np.ndarray, pred) -> None:
        """pred: a tasks.inference.PanopticPrediction for `image` (uint8 (H, W, 3))."""
        image_id = len(self.images) + 1
        h, w = pred.ids.shape
        self.images.append({"id": image_id, "file_name": name, "height": h, "width": w})
        infos = [{"id": s["id"], "category_id": self.category_ids[s["category_id"]], "iscrowd": 0,
                  "area": s["area"], "score": s.get("score", 1.0)} for s in pred.segments]
        self.annotations.append({"image_id": image_id, "file_name": f"{Path(name).stem}.png", "segments_info": infos})
        save_png(self.out / "panoptic" / f"{Path(name).stem}.png", id2rgb(pred.ids))
        labels, class_ids, scores = pred.instances()
        self.results += instance_results(image_id, labels, class_ids, scores, self.category_ids)
        overlay = panoptic_overlay(image, pred.ids, pred.segments, self.palette, classes=self.classes)
        save_png(self.out / f"{Path(name).stem}_panoptic.png", overlay)

    def close(self) -> tuple[Path, Path]:
        """Write panoptic.json (+ PNG folder) and instances.json; returns their paths."""
        cats = [{"id": cid, "name": name, "isthing": int(i in self.things), "color": list(self.palette[i])}
                for i, (cid, name) in enumerate(zip(self.category_ids, self.classes))]
        pan = write_coco_panoptic(self.out / "panoptic.json", self.annotations, cats, self.images)
        inst = write_coco_instances(self.out / "instances.json", self.results)
        return pan, inst
