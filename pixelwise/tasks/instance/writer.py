"""What `pixelwise predict --task instance` writes, per image NAME.ext, into OUT:

    coco     .parts/NAME.json     this image's COCO instance results (what a resumed run reuses)
    overlay  NAME_overlay.png     every instance in its own shade of its class colour, contours drawn
and for the whole run: instances.json, the COCO instance results (RLE masks with scores) of every image
listed, with image ids 1..N in that order. COCO category ids are class index + 1 unless the task option
`category_ids` lists them.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pixelwise.data.formats.coco import instance_results, write_coco_instances
from pixelwise.data.io import write_atomic
from pixelwise.viz import save_png


class InstanceWriter:
    def __init__(self, task, out_dir: str | Path, formats: list[str], overlay: bool = False):
        self.task, self.out = task, Path(out_dir)
        self.formats = list(formats) + (["overlay"] if overlay else [])
        self.category_ids = task.options.coco_ids(task.num_classes)

    def _files(self, stem: str) -> dict[str, Path]:
        return {"coco": self.out / ".parts" / f"{stem}.instances.json", "overlay": self.out / f"{stem}_overlay.png"}

    def paths(self, name: str) -> list[Path]:
        files = self._files(Path(name).stem)
        return [files[f] for f in self.formats]

    def add(self, name: str, image: np.ndarray, pred, meta: dict | None = None) -> None:
        files = self._files(Path(name).stem)
        if "overlay" in self.formats:
            save_png(files["overlay"], pred.overlay(image))
        if "coco" in self.formats:
            labels, class_ids, scores = pred.instances
            part = {"file_name": name, "instances": instance_results(0, labels, class_ids, scores, self.category_ids)}
            write_atomic(files["coco"], json.dumps(part).encode())

    def close(self, names: list[str]) -> list[Path]:
        if "coco" not in self.formats:
            return []
        results = []
        for image_id, name in enumerate(names, start=1):
            path = self._files(Path(name).stem)["coco"]
            if path.is_file():
                results += [{**r, "image_id": image_id} for r in json.loads(path.read_text())["instances"]]
        return [write_coco_instances(self.out / "instances.json", results)]
