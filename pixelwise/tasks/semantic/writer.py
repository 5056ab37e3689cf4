"""What `pixelwise predict` writes for the semantic task, per image NAME.ext, into OUT:

    png      NAME.png          index PNG with the model's palette (16-bit greyscale past 256 classes)
    npy      NAME.npy          label map, uint8 (int32 past 256 classes)
    rle      NAME.json         {"file": NAME.ext, **pixelwise.rle.per_class}: COCO RLE per class present
    tif      NAME.tif          label map as a GeoTIFF with the source raster's CRS and transform (a plain
                               TIFF when the source has none); needs rasterio ('pixelwise[geo]')
    overlay  NAME_overlay.png  colour overlay with a legend (with --overlay)

Every file is written under a temporary name and renamed, so a killed run never leaves a half file that a
resumed run would take for done.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from pixelwise import rle
from pixelwise.data.io import label_dtype, write_atomic, write_index_png
from pixelwise.viz import save_png

SUFFIXES = {"png": ".png", "npy": ".npy", "rle": ".json", "tif": ".tif", "overlay": "_overlay.png"}


class SemanticWriter:
    def __init__(self, task, out_dir: str | Path, formats: list[str], overlay: bool = False):
        self.task, self.out = task, Path(out_dir)
        self.formats = list(formats) + (["overlay"] if overlay else [])

    def _path(self, name: str, fmt: str) -> Path:
        return self.out / f"{Path(name).stem}{SUFFIXES[fmt]}"

    def paths(self, name: str) -> list[Path]:
        return [self._path(name, f) for f in self.formats]

    def add(self, name: str, image: np.ndarray, pred, meta: dict | None = None) -> None:
        labels = np.asarray(pred.semantic)
        for fmt in self.formats:
            path = self._path(name, fmt)
            if fmt == "png":
                write_index_png(path, labels, self.task.palette)
            elif fmt == "npy":
                buf = io.BytesIO()
                np.save(buf, labels.astype(label_dtype(self.task.num_classes), copy=False))
                write_atomic(path, buf.getvalue())
            elif fmt == "rle":
                doc = {"file": name, **rle.per_class(labels, self.task.classes)}
                write_atomic(path, json.dumps(doc).encode())
            elif fmt == "tif":
                from pixelwise.data.raster import write_geotiff

                source = (meta or {}).get("raster") or {}  # its georeferencing, not its band names
                write_geotiff(path, labels.astype(label_dtype(self.task.num_classes), copy=False),
                              {"crs": source.get("crs"), "transform": source.get("transform"),
                               "band_names": ["class"]})
            else:
                save_png(path, pred.overlay(image))

    def close(self, names: list[str]) -> list[Path]:
        return []
