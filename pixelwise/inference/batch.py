"""Batch prediction over files, for every task: images decoded in DataLoader workers while the model
runs, a progress bar, resumable (an image whose outputs all exist is skipped), outputs written by the
task's writer (`Task.writer`: which files, in which formats; every file written atomically).

Refused before any work: two inputs with one file stem (their outputs would overwrite each other) and an
output file that would land on an input file.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pixelwise.errors import DataError, PixelwiseError


@dataclass
class BatchResult:
    written: list[Path] = field(default_factory=list)   # images predicted in this run
    skipped: list[Path] = field(default_factory=list)   # images whose outputs already existed
    failed: list[str] = field(default_factory=list)     # one-line messages, naming the file
    files: list[Path] = field(default_factory=list)     # files that cover the whole run (e.g. COCO JSON)


class _Images(Dataset):
    """paths -> (index, image or None, meta, error message or None); decoding errors are returned, not
    raised, so one bad file does not stop the loader. Images are uint8 RGB (a georeferenced TIFF's CRS and
    transform in meta["raster"]); with `raster`, .tif/.tiff/.npy files are read as raw bands with their
    georeferencing (a multi-band model's input)."""

    def __init__(self, paths: Sequence[Path], raster: bool = False):
        self.paths, self.raster = list(paths), raster

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from pixelwise.data.io import read_image
        from pixelwise.data.raster import georeferencing, is_raster_path, read_raster

        try:
            if self.raster and is_raster_path(self.paths[i]):
                image, raster = read_raster(self.paths[i])
                return i, image, {"raster": raster}, None
            image = read_image(self.paths[i])
            geo = georeferencing(self.paths[i])  # a GeoTIFF read as a photo keeps its CRS for --format tif
            return i, image, ({"raster": geo} if geo else {}), None
        except PixelwiseError as exc:
            return i, None, {}, str(exc)


def _identity(item):
    return item


def _check_outputs(paths: list[Path], writer) -> None:
    """No two inputs share a stem; no output lands on an input."""
    stems: dict[str, Path] = {}
    for p in paths:
        if p.stem in stems:
            raise DataError(f"{p}: same file stem as {stems[p.stem]}; their outputs would overwrite each other "
                            "(rename one, or predict them into different --out folders)")
        stems[p.stem] = p
    inputs = {p.resolve() for p in paths}
    for p in paths:
        for target in writer.paths(p.name):
            if target.resolve() in inputs:
                raise DataError(f"{target}: this output would overwrite an input image; choose another --out")


def done(writer, name: str) -> bool:
    """True when every output `writer` writes for the image file `name` exists (a resumed run skips it)."""
    return all(t.is_file() for t in writer.paths(name))


def predict_files(predictor, paths: Sequence[str | Path], out_dir: str | Path, formats: Sequence[str] = (),
                  overlay: bool = False, overwrite: bool = False, num_workers: int = 2, progress: bool = True,
                  log: Callable[[str], None] | None = None) -> BatchResult:
    """Predict every image in `paths` with `predictor`, writing the task's `formats` (default: its first)
    and, with `overlay`, colour overlays into `out_dir`.

    Images whose outputs all exist are skipped unless `overwrite`. Unreadable images are reported through
    `log` (default: tqdm.write) and collected in `result.failed`; the others go on.
    """
    paths = [Path(p) for p in paths]
    writer = predictor.task.writer(out_dir, formats, overlay)
    _check_outputs(paths, writer)
    log = log or tqdm.write
    result = BatchResult()
    todo = []
    for p in paths:
        if not overwrite and done(writer, p.name):
            result.skipped.append(p)
        else:
            todo.append(p)
    if todo:
        workers = min(num_workers, len(todo) - 1) if len(todo) > 1 else 0
        loader = DataLoader(_Images(todo, raster=not predictor.spec.is_rgb), batch_size=None, shuffle=False, num_workers=max(workers, 0),
                            collate_fn=_identity, prefetch_factor=2 if workers > 0 else None)
        bar = tqdm(loader, total=len(todo), desc="predict", disable=not progress or len(todo) < 2)
        for i, image, meta, error in bar:
            path = todo[i]
            if error is None:
                try:
                    image = predictor.check_image(image, str(path))
                except PixelwiseError as exc:  # e.g. a 3-band file for a 4-band model
                    error = str(exc)
            if error is not None:
                result.failed.append(error)
                log(f"skipped: {error}")
                continue
            writer.add(path.name, predictor.display(image), predictor.predict(image), meta)
            result.written.append(path)
    result.files = writer.close([p.name for p in paths])
    return result
