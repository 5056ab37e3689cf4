"""Batch prediction on Ray Data, for every task: `pixelwise predict --ray` spread over a pool of Ray actors on
one machine or a cluster, each actor holding one Predictor. What is written, and how, is `inference/batch.py`'s:
the task's writer (`Task.writer`), the same checks, the same resumable skipping, the same `BatchResult`.

    driver  inputs (local paths, globs, URIs pyarrow.fs reads: s3://bucket/prefix/*.png, gs://, hdfs://, file://)
            -> refused before any work: two inputs with one file stem, an output that lands on a local input
            -> images whose outputs all exist are skipped, before Ray starts
            -> ray.data.from_items(rows) -> map_batches(_Worker, ActorPoolStrategy(size=num_workers))
            -> iter_rows: one (name, error) row per image -> written / failed; writer.close(names) for the
               files that cover the whole run (COCO JSON), built from every image's outputs, as batch.py does
    actor   __init__: ONE Predictor from the model directory, and its task's writer
            __call__: read each image (a local path, or the URI's bytes through pyarrow.fs), decode, predict,
            write; a bad image becomes its row's error message, the others go on

Images are read inside the actors rather than by Ray Data read tasks (`read_binary_files`): a read task needs a
CPU of its own, and a pool holding every CPU (2 one-CPU actors on a 2-CPU cluster) waited for one forever
(Ray 2.60). The output folder must be one filesystem every node writes and the driver reads (NFS, a cluster
filesystem): the actors write there, the driver checks it for finished images and assembles the run files.
Local inputs must be readable at the same path on every node; otherwise give URIs.
"""
from __future__ import annotations

import fnmatch
import glob
import math
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from tqdm import tqdm

from pixelwise.errors import DataError, PixelwiseError
from pixelwise.inference.batch import BatchResult, _check_outputs, _Images, done

RAY_EXTRA = "pip install 'pixelwise[ray]'"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_GLOB = "*?["


def is_uri(item: str | Path) -> bool:
    """True for 'scheme://...' (s3://, gs://, hdfs://, file://), read through pyarrow.fs."""
    return bool(_SCHEME.match(str(item)))


def import_ray():
    """The ray module with Ray Data, or one line naming the extra."""
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is a separate install inside ray
    except ImportError:
        raise PixelwiseError(f"prediction on Ray needs Ray Data: {RAY_EXTRA}") from None
    return ray


def _filesystem(uri: str):
    """(pyarrow FileSystem, path inside it) of a URI; one line naming it when pyarrow cannot open it."""
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError... by filesystem
        raise DataError(f"{uri}: pyarrow.fs cannot open this URI ({' '.join(str(exc).split())[:200]})") from None


def _uri_of(root: str, path: str) -> str:
    """The URI of `path`, a path inside the filesystem of the URI `root` (s3: 'bucket/key'; file, hdfs: '/...')."""
    scheme, netloc = urlsplit(root)[:2]
    return f"{scheme}://{netloc}{path}" if path.startswith("/") else f"{scheme}://{path}"


def _expand_uri(uri: str) -> list[tuple[str, str, str]]:
    """A URI, a folder URI (its images) or a glob URI -> sorted (uri, root, path-in-filesystem) per file."""
    import pyarrow.fs as pafs

    from pixelwise.data.io import DATASET_SUFFIXES

    fs, path = _filesystem(uri)
    if not any(ch in path for ch in _GLOB):
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            return [(uri, uri, path)]
        if info.type != pafs.FileType.Directory:
            raise DataError(f"{uri}: not found")
        infos = fs.get_file_info(pafs.FileSelector(path))
        paths = [i.path for i in infos
                 if i.type == pafs.FileType.File and Path(i.path).suffix.lower() in DATASET_SUFFIXES]
    else:
        head = path[:min(path.index(ch) for ch in _GLOB if ch in path)]
        base = head.rsplit("/", 1)[0] if "/" in head else ""
        recursive = "/" in path[len(base) + 1:] or "**" in path
        infos = fs.get_file_info(pafs.FileSelector(base or "/", recursive=recursive, allow_not_found=True))
        paths = [i.path for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatchcase(i.path, path)]
    return [(_uri_of(uri, p), uri, p) for p in sorted(paths)]


def expand_inputs(items: Sequence[str | Path]) -> list[dict]:
    """Local files, folders, globs and URIs -> one row per image, in order, duplicates dropped:
    {"source": the path or URI (what messages and results name), "name": its file name, "root": the URI
    whose filesystem reads it ("" for a local file), "path": the absolute local path (the actors' working
    folder is not the driver's) or the path in that filesystem}."""
    from pixelwise.data.io import DATASET_SUFFIXES

    rows: dict[str, dict] = {}
    for item in map(str, items):
        if is_uri(item):
            found = [{"source": u, "name": Path(p).name, "root": root, "path": p} for u, root, p in _expand_uri(item)]
        elif any(ch in item for ch in _GLOB):
            found = [{"source": p, "name": Path(p).name, "root": "", "path": os.path.abspath(p)}
                     for p in sorted(glob.glob(item, recursive=True)) if Path(p).is_file()]
        elif Path(item).is_dir():
            found = [{"source": str(p), "name": p.name, "root": "", "path": os.path.abspath(p)}
                     for p in sorted(Path(item).iterdir())
                     if p.suffix.lower() in DATASET_SUFFIXES]
        else:
            found = [{"source": item, "name": Path(item).name, "root": "", "path": os.path.abspath(item)}]
        rows.update((r["source"], r) for r in found if r["source"] not in rows)
    return list(rows.values())


def _check_stems(rows: list[dict]) -> None:
    """No two inputs (local or remote) share a file stem: their outputs would overwrite each other."""
    stems: dict[str, str] = {}
    for row in rows:
        stem = Path(row["name"]).stem
        if stem in stems:
            raise DataError(f"{row['source']}: same file stem as {stems[stem]}; their outputs would overwrite each "
                            "other (rename one, or predict them into different --out folders)")
        stems[stem] = row["source"]


class _Worker:
    """One Ray actor: one Predictor (built once, in __init__) and its task's writer. __call__ takes a batch
    of rows (numpy columns source, name, root, path) and answers {"name", "error"} ("" when written)."""

    def __init__(self, model_dir: str, out_dir: str, formats: list[str], overlay: bool, options: dict,
                 device: str, threads: int):
        import torch

        from pixelwise.inference.predictor import Predictor

        torch.set_num_threads(threads)
        self.predictor = Predictor.from_dir(model_dir, device=device, **options)
        self.writer = self.predictor.task.writer(out_dir, formats, overlay)
        self.raster = not self.predictor.spec.is_rgb
        self.filesystems: dict[str, object] = {}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names, errors = [], []
        for source, name, root, path in zip(batch["source"], batch["name"], batch["root"], batch["path"], strict=True):
            names.append(str(name))
            errors.append(self._one(str(source), str(name), str(root), str(path)))
        return {"name": np.array(names, dtype=object), "error": np.array(errors, dtype=object)}

    def _one(self, source: str, name: str, root: str, path: str) -> str:
        try:
            image, meta = self._read(source, root, path)
            image = self.predictor.check_image(image, source)
            self.writer.add(name, self.predictor.display(image), self.predictor.predict(image), meta)
        except PixelwiseError as exc:
            return str(exc)
        return ""

    def _read(self, source: str, root: str, path: str) -> tuple[np.ndarray, dict]:
        """(image, meta) as batch.py's loader reads them: uint8 RGB, or a raster's raw bands and its
        georeferencing for a multi-band model."""
        from pixelwise.data.io import decode_image
        from pixelwise.data.raster import is_raster_path

        if not root:
            _, image, meta, error = _Images([Path(path)], raster=self.raster)[0]
            if error is not None:
                raise DataError(error)
            return image, meta
        if root not in self.filesystems:
            self.filesystems[root] = _filesystem(root)[0]
        try:
            with self.filesystems[root].open_input_file(path) as f:
                data = f.read()
        except Exception as exc:  # noqa: BLE001 - pyarrow's errors differ by filesystem
            raise DataError(f"{source}: cannot be read ({' '.join(str(exc).split())[:200]})") from None
        if not (self.raster and is_raster_path(path)):
            return decode_image(data, where=source), {}
        with tempfile.TemporaryDirectory() as tmp:  # rasterio reads a file: keeps the georeferencing
            local = Path(tmp) / Path(path).name
            local.write_bytes(data)
            _, image, meta, error = _Images([local], raster=True)[0]
        if error is not None:
            raise DataError(error.replace(str(local), source))
        return image, meta


def _check_predictor(model_dir: str | Path, options: dict):
    """The Predictor the driver builds once, on the CPU, to refuse bad options in one line before Ray starts
    and to give the writer (skipping, the run files). fp32 (nothing timed or calibrated), except int8,
    which names the model directory's own graph."""
    from pixelwise.inference.predictor import Predictor

    precision = "int8" if options.get("precision") == "int8" else "fp32"
    return Predictor.from_dir(model_dir, device="cpu", **{**options, "precision": precision})


def _worker_failure(exc: BaseException) -> PixelwiseError | None:
    """The PixelwiseError that stopped a Ray worker (somewhere in the exception's chain), as one line."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, PixelwiseError):
            return PixelwiseError(f"a Ray worker stopped: {str(exc).strip().splitlines()[-1]}")
        exc = getattr(exc, "cause", None) or exc.__cause__
    return None


def predict_ray(model_dir: str | Path, inputs: Sequence[str | Path], out_dir: str | Path, formats: Sequence[str] = (),
                overlay: bool = False, overwrite: bool = False, address: str | None = None, num_workers: int = 2,
                num_cpus_per_worker: float = 1.0, num_gpus_per_worker: float = 0.0, batch_size: int = 8,
                options: dict | None = None, progress: bool = True,
                log: Callable[[str], None] | None = None) -> BatchResult:
    """Predict every image of `inputs` (local paths, folders, globs, URIs) on a pool of `num_workers` Ray actors
    (each `num_cpus_per_worker` CPUs, torch threads as many, and `num_gpus_per_worker` GPUs: on the GPU when
    > 0), writing the task's `formats` (and overlays) into `out_dir`, which every node must share.

    address: None starts a local Ray (as many CPUs as the pool needs) and shuts it down after; "auto" joins the
    cluster this node is part of (`ray start`), "ray://HOST:10001" one through Ray Client. A Ray already
    initialised in this process is used as it is. options: `Predictor.from_dir` keyword arguments (precision,
    tile, overlap, tta, crf, task, task_options). Returns batch.py's BatchResult (URIs as strings, local
    inputs as Paths); unreadable images are in `failed`, named, and logged through `log`.
    """
    options = dict(options or {})
    if num_workers < 1 or batch_size < 1 or num_cpus_per_worker <= 0 or num_gpus_per_worker < 0:
        raise PixelwiseError("num_workers and batch_size must be >= 1, num_cpus_per_worker > 0, "
                             "num_gpus_per_worker >= 0")
    log = log or tqdm.write
    rows = expand_inputs(inputs)
    if not rows:
        raise DataError(f"no images found in {' '.join(map(str, inputs))}")
    ray = import_ray()
    writer = _check_predictor(model_dir, options).task.writer(out_dir, formats, overlay)
    _check_stems(rows)
    _check_outputs([Path(r["path"]) for r in rows if not r["root"]], writer)
    result = BatchResult()
    todo = []
    for row in rows:
        (result.skipped if not overwrite and done(writer, row["name"]) else todo).append(row)
    result.skipped = [r["source"] if r["root"] else Path(r["source"]) for r in result.skipped]
    if todo:
        started = not ray.is_initialized()
        if started:
            if address:
                ray.init(address=address, logging_level="warning")
            else:
                ray.init(num_cpus=math.ceil(num_workers * num_cpus_per_worker), include_dashboard=False,
                         logging_level="warning")
        try:
            statuses = _run(ray, todo, model_dir, out_dir, formats, overlay, options, num_workers,
                            num_cpus_per_worker, num_gpus_per_worker, batch_size, progress)
        finally:
            if started:
                ray.shutdown()
        by_name = {r["name"]: r for r in todo}
        for name, error in statuses:
            row = by_name[name]
            if error:
                result.failed.append(error)
                log(f"skipped: {error}")
            else:
                result.written.append(row["source"] if row["root"] else Path(row["source"]))
    result.files = writer.close([r["name"] for r in rows])
    return result


def _run(ray, todo: list[dict], model_dir, out_dir, formats, overlay: bool, options: dict, num_workers: int,
         num_cpus: float, num_gpus: float, batch_size: int, progress: bool) -> list[tuple[str, str]]:
    """The Ray Data pipeline: rows -> the actor pool -> (name, error) per image."""
    from ray.data import ActorPoolStrategy, DataContext

    DataContext.get_current().enable_progress_bars = progress
    workers = min(num_workers, len(todo))
    device = "cuda" if num_gpus > 0 else "cpu"
    model = Path(model_dir).resolve() if Path(model_dir).exists() else model_dir  # the actors' cwd is not ours
    ds = ray.data.from_items(todo).map_batches(
        _Worker, batch_size=batch_size, batch_format="numpy", compute=ActorPoolStrategy(size=workers),
        num_cpus=num_cpus, num_gpus=num_gpus or None,
        fn_constructor_kwargs={"model_dir": str(model),
                               "out_dir": str(Path(out_dir).resolve()), "formats": list(formats), "overlay": overlay,
                               "options": options, "device": device, "threads": max(1, int(num_cpus))})
    try:
        return [(str(r["name"]), str(r["error"])) for r in ds.iter_rows()]
    except Exception as exc:
        failure = _worker_failure(exc)
        if failure is not None:
            raise failure from None
        raise
