"""Experiment tracking: what a training run logs, sent to TensorBoard and/or MLflow (`train.log_to`).

Logged, from rank 0 only (the other processes hold an empty `Trackers`):
- every `train.log_every` optimizer steps: `train/step_loss` (rank 0's batch), `train/step_lr` and
  `train/step_images_per_s` (all processes' images since the last point, over the wall time);
- every epoch, the record metrics.jsonl gets: `train/loss` (mean over processes), `train/lr`,
  `train/images_per_s`, `train/epoch_seconds`, `epoch`, and every validation score under `val/NAME`
  (per-class lists as `val/NAME/CLASS`);
- once, the resolved recipe flattened to dotted keys (`train.lr`): TensorBoard hparams, MLflow params;
- per validation, `train.tracking_images` val images spread over the split (the same ones every time):
  image | truth | prediction, drawn by the task's own `overlay`;
- at the end: `best/KEY` (the best validation score), and in MLflow the model directory `best/` as the
  artifact `model/` (config.json, model.safetensors) with config.yaml, metrics.jsonl, training_curves.png.

Every point is at the global optimizer step (epoch * steps per epoch + step), so a resumed run continues
the same axis. TensorBoard: `torch.utils.tensorboard.SummaryWriter` into RUN/tb (a resume purges the events
a killed session wrote past its checkpoint). MLflow: `mlflow.tracking.MlflowClient` (explicit run id, no
global active run) at `train.tracking_uri`, else MLFLOW_TRACKING_URI, else a SQLite store
RUN/mlruns/mlflow.db with artifacts in RUN/mlruns/artifacts (MLflow 3 refuses new file stores by default).
The run id is kept in the training state, so `train --resume` continues the same MLflow run when the store
still has it.

A backend's packages missing when asked is a one-line ConfigError before training starts. A backend that
fails later (a server gone, a full disk) warns once and is off for the rest of the run: training goes on.
"""
from __future__ import annotations

import atexit
import json
import math
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from pixelwise.errors import ConfigError

NAMES = ("tensorboard", "mlflow")
INSTALL = "pip install 'pixelwise[track]'"
TB_DIR, MLFLOW_DIR = "tb", "mlruns"
RUN_FILES = ("config.yaml", "metrics.jsonl", "training_curves.png")  # logged beside the model artifact
OVERLAY_SIDE = 320  # the longest side of each panel of a logged overlay (pixels)
_KEY = re.compile(r"[^0-9A-Za-z_\-. /]")  # what MLflow accepts in metric and param names


def check_available(names: list[str]) -> None:
    """Import the packages the asked backends need; a missing one is a one-line ConfigError."""
    for name in dict.fromkeys(names):
        try:
            if name == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter  # noqa: F401 - raises without tensorboard
            elif name == "mlflow":
                import mlflow  # noqa: F401
            else:
                raise ConfigError(f"config key 'train.log_to': {name!r} is not one of {', '.join(NAMES)}")
        except ImportError:
            raise ConfigError(f"config key 'train.log_to': {name} needs the {name} package: {INSTALL}") from None


class Tracker(Protocol):
    """One backend. `step` is the global optimizer step; images are uint8 (H, W, 3)."""

    name: str

    def scalars(self, values: dict[str, float], step: int) -> None: ...

    def image(self, tag: str, image: np.ndarray, step: int) -> None: ...

    def hparams(self, params: dict[str, Any], metrics: list[str]) -> None: ...

    def files(self, out: Path) -> None: ...

    def state(self) -> dict: ...

    def close(self, ok: bool = True) -> None: ...


class TensorBoard:
    """SummaryWriter into `logdir`; `purge_step`: events at or past it from an earlier session are dropped."""

    name = "tensorboard"

    def __init__(self, logdir: Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(logdir), purge_step=purge_step)
        atexit.register(self.writer.close)  # a crashed run still flushes what it logged

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        self.writer.add_image(tag, image, step, dataformats="HWC")

    def hparams(self, params: dict[str, Any], metrics: list[str]) -> None:
        """The HParams dashboard's record, in this run's own event file (SummaryWriter.add_hparams would
        open a second run beside it)."""
        from torch.utils.tensorboard.summary import hparams

        for summary in hparams(params, {m: 0.0 for m in metrics}):
            self.writer.file_writer.add_summary(summary)

    def files(self, out: Path) -> None:
        pass  # the model directory is beside the event files already

    def state(self) -> dict:
        return {}

    def close(self, ok: bool = True) -> None:
        self.writer.close()
        atexit.unregister(self.writer.close)


class MLflow:
    """One MLflow run through MlflowClient: a new one in `experiment`, or `run_id`'s when the store has it."""

    name = "mlflow"

    def __init__(self, uri: str, experiment: str, run_name: str, run_id: str | None, artifacts: str | None,
                 say: Callable[[str], None]):
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(uri)
        self.uri, self.resumed, self.logged = uri, False, {}
        if run_id:
            try:
                run = self.client.get_run(run_id)
                self.client.update_run(run_id, status="RUNNING")
                self.run_id, self.resumed, self.logged = run_id, True, dict(run.data.params)
                say(f"mlflow: continuing run {run_id} at {uri}")
            except MlflowException:
                say(f"mlflow: run {run_id} is not in {uri}; this session starts a new run")
                run_id = None
        if not run_id:
            found = self.client.get_experiment_by_name(experiment)
            exp_id = found.experiment_id if found else self.client.create_experiment(experiment, artifacts)
            self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
        atexit.register(self._abandoned)

    def scalars(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        self.client.log_image(self.run_id, image, artifact_file=f"{tag}/step_{step:08d}.png")

    def hparams(self, params: dict[str, Any], metrics: list[str]) -> None:
        """MLflow params are fixed once logged: a resumed run logs only the new keys, and names the ones
        whose value changed in the tag pixelwise.changed_on_resume."""
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        values = {k: str(v)[:MAX_PARAM_VAL_LENGTH] for k, v in params.items()}
        changed = sorted(k for k, v in values.items() if k in self.logged and self.logged[k] != v)
        fresh = [Param(k, v) for k, v in values.items() if k not in self.logged]
        for i in range(0, len(fresh), 100):  # the per-request limit of log_batch
            self.client.log_batch(self.run_id, params=fresh[i:i + 100])
        if changed:
            self.client.set_tag(self.run_id, "pixelwise.changed_on_resume", ", ".join(changed)[:5000])

    def files(self, out: Path) -> None:
        self.client.log_artifacts(self.run_id, str(out / "best"), artifact_path="model")
        for name in RUN_FILES:
            if (out / name).is_file():
                self.client.log_artifact(self.run_id, str(out / name))

    def state(self) -> dict:
        return {"mlflow_run_id": self.run_id, "mlflow_uri": self.uri}

    def close(self, ok: bool = True) -> None:
        atexit.unregister(self._abandoned)
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")

    def _abandoned(self) -> None:
        """At exit without close (the training raised): the run is FAILED, not left RUNNING (unless a resumed
        session in this process has since continued and finished it)."""
        try:
            if self.client.get_run(self.run_id).info.status == "RUNNING":
                self.client.set_terminated(self.run_id, "FAILED")
        except Exception:
            pass


def mlflow_uri(cfg_uri: str | None, out: Path) -> tuple[str, str | None]:
    """(tracking URI, artifact location for a new experiment): the recipe's, MLFLOW_TRACKING_URI, or the
    run's own SQLite store with its artifacts beside it."""
    uri = cfg_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri, None
    root = (out / MLFLOW_DIR).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """Nested plain data -> {"section.key": int | float | bool | str}; lists and None as JSON text."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = _KEY.sub("_", f"{prefix}{key}")
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, default=str)
    return flat


def _numbers(values: dict, prefix: str, classes: list[str]) -> dict[str, float]:
    """The numeric scores of a record as tags: NAME, and a per-class list as NAME/CLASS."""
    out: dict[str, float] = {}
    for key, value in values.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[f"{prefix}{key}"] = float(value)
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
            names = classes if len(classes) == len(value) else [str(i) for i in range(len(value))]
            out.update({_KEY.sub("_", f"{prefix}{key}/{n}"): float(v) for n, v in zip(names, value)})
    return out


def _shrink(image: np.ndarray, side: int) -> np.ndarray:
    """uint8 (H, W, 3) with its longest side at most `side` (PIL bilinear)."""
    h, w = image.shape[:2]
    if max(h, w) <= side:
        return image
    from PIL import Image

    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


class Trackers:
    """What the trainer calls: the asked backends together (none: every call does nothing). A backend that
    raises is warned about once and dropped; the training goes on."""

    def __init__(self, backends: list | None = None, steps: int = 1, classes: list[str] | None = None,
                 log_every: int = 10, images: int = 0):
        self.backends = list(backends or [])
        self.steps, self.classes, self.log_every, self.images = max(1, steps), list(classes or []), log_every, images
        self.epoch, self._seen, self._t0 = 0, 0, time.time()

    def _each(self, what: str, call: Callable[[Any], None]) -> None:
        for backend in list(self.backends):
            try:
                call(backend)
            except Exception as exc:  # a tracking failure must not cost the training
                self.backends.remove(backend)
                warnings.warn(f"{backend.name} tracking failed while {what} ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:300]}); it is off for the rest of this run, training "
                              "goes on", RuntimeWarning, stacklevel=3)

    def begin_epoch(self, epoch: int) -> None:
        self.epoch, self._seen, self._t0 = epoch, 0, time.time()

    def train_step(self, step: int, loss, lr: float, images: int) -> None:
        """Called after every optimizer step of the epoch (`loss` a tensor or float: read only when logged)."""
        if not self.backends:
            return
        self._seen += images
        if step % self.log_every:
            return
        now = time.time()
        values = {"train/step_loss": float(getattr(loss, "detach", lambda: loss)()), "train/step_lr": float(lr),
                  "train/step_images_per_s": self._seen / max(1e-6, now - self._t0)}
        self._seen, self._t0 = 0, now
        at = self.epoch * self.steps + step + 1
        self._each("logging a step", lambda b: b.scalars(values, at))

    def epoch_end(self, record: dict) -> None:
        """The epoch's record as metrics.jsonl holds it ("epoch" counts from 1, "val" when validated)."""
        if not self.backends:
            return
        values = {"epoch": float(record["epoch"])}
        for key, tag in (("train_loss", "train/loss"), ("lr", "train/lr"), ("images_per_s", "train/images_per_s"),
                         ("seconds", "train/epoch_seconds")):
            if isinstance(record.get(key), (int, float)):
                values[tag] = float(record[key])
        values.update(_numbers(record.get("val") or {}, "val/", self.classes))
        values = {k: v for k, v in values.items() if math.isfinite(v)}
        self._each("logging an epoch", lambda b: b.scalars(values, record["epoch"] * self.steps))

    def validation(self, predictor, dataset, epoch: int) -> None:
        """Image | truth | prediction for `self.images` val images, through the predictor's task."""
        if not self.backends or not self.images or dataset is None or len(dataset) == 0:
            return
        task, at = predictor.task, (epoch + 1) * self.steps
        picks = sorted(set(np.linspace(0, len(dataset) - 1, min(self.images, len(dataset))).round().astype(int)))
        rows = []
        try:
            for index in picks:
                sample = dataset[int(index)]
                picture = predictor.display(sample.image)
                pred = predictor.predict(sample.image)
                row = np.concatenate([picture, task.overlay(task.truth(sample), picture, 0.6, legend=False),
                                      task.overlay(pred, picture, 0.6, legend=False)], 1)
                rows.append((f"val_overlays/{len(rows)}", _shrink(row, 3 * OVERLAY_SIDE)))
        except Exception as exc:
            warnings.warn(f"tracking: the validation overlays could not be drawn ({type(exc).__name__}: {exc}); "
                          "they are off for the rest of this run", RuntimeWarning, stacklevel=2)
            self.images = 0
            return
        for tag, image in rows:
            self._each("logging an overlay", lambda b: b.image(tag, image, at))

    def finish(self, out: Path, best_key: str, best: float | None, epochs: int) -> None:
        """The best score, the model directory and the run's files; closes every backend."""
        if best is not None and math.isfinite(best):
            self._each("logging the best score", lambda b: b.scalars({f"best/{best_key}": float(best)},
                                                                     epochs * self.steps))
        self._each("logging the model directory", lambda b: b.files(out))
        self._each("closing", lambda b: b.close(True))
        self.backends = []

    def state(self) -> dict:
        """What a resumed session needs to continue the same runs (kept in the training state)."""
        out: dict = {}
        for backend in self.backends:
            out.update(backend.state())
        return out


def open_trackers(cfg, out: Path, resumed: dict | None, steps: int, classes: list[str], best_key: str,
                  start_epoch: int = 0, say: Callable[[str], None] = lambda line: None) -> Trackers:
    """The backends `cfg.train.log_to` asks for, opened for the run in `out` (rank 0 calls this). `resumed`:
    the tracking state of the session a resume continues ({} for a fresh run). Opening the MLflow run (a
    server that does not answer, a bad URI) fails here, before the first step, as a one-line ConfigError."""
    tc = cfg.train
    names = list(dict.fromkeys(tc.log_to))
    if not names:
        return Trackers()
    check_available(names)
    resumed = resumed or {}
    backends: list = []
    for name in names:
        if name == "tensorboard":
            backends.append(TensorBoard(out / TB_DIR, purge_step=start_epoch * steps + 1 if start_epoch else None))
            continue
        uri, artifacts = mlflow_uri(tc.tracking_uri, out)
        run_id = resumed.get("mlflow_run_id") if resumed.get("mlflow_uri") == uri else None
        if start_epoch and not run_id:
            say(f"mlflow: the checkpoint names no run at {uri}; this session starts a new run")
        try:
            backends.append(MLflow(uri, tc.tracking_experiment, out.resolve().name, run_id, artifacts, say))
        except Exception as exc:
            for b in backends:
                b.close(False)
            raise ConfigError(f"config key 'train.log_to': mlflow could not open a run at {uri} "
                              f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]})") from None
    trackers = Trackers(backends, steps, classes, tc.log_every, tc.tracking_images)
    params = flatten(cfg.to_dict())
    trackers._each("logging the hyper-parameters", lambda b: b.hparams(params, [f"best/{best_key}", "train/loss"]))
    return trackers
