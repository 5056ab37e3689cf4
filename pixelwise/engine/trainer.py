"""The training loop: one function, `train(cfg, out_dir)`, for every task.

What differs between tasks (targets, batches, loss, validation metric and the score that picks the best
checkpoint) comes from the task object (pixelwise.tasks), chosen by `task.name` or, when that is unset,
the model's own task; the loop knows only the Task protocol. Writes into RUN_DIR: `config.yaml` (the resolved recipe), `metrics.jsonl` (one line per
epoch), `training_curves.png`, `best/` (model with the best validation score: mIoU, or PQ for panoptic)
and `last/` (the latest epoch plus the state needed to resume: optimizer, scheduler, epoch, RNG). Under
torchrun each process takes 1/world of every batch (train.batch_size is the global batch), gradients are
averaged by DDP, and the validation statistics (confusion matrix, PQ counts) are summed over processes.
"""
from __future__ import annotations

import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from pixelwise import atomicdir
from pixelwise.config import Config, save_config
from pixelwise.data.dataset import TransformedDataset
from pixelwise.data.formats import open_dataset
from pixelwise.engine import autoamp, autocompile
from pixelwise.engine import checkpoint as ckpt
from pixelwise.engine import tune
from pixelwise.engine import tracking
from pixelwise.engine import distributed as ddp
from pixelwise.engine.ema import ModelEMA
from pixelwise.engine.evaluate import run_evaluation
from pixelwise.engine.finetune import InitReport, encoder_lr_mult, load_init, param_groups, set_encoder_frozen
from pixelwise.engine.inputs import input_kwargs, resolve_bands, resolve_channel_norm
from pixelwise.engine.inputs import preprocessing as input_preprocessing
from pixelwise.engine.logging import append_jsonl, plot_curves, read_jsonl, write_jsonl
from pixelwise.engine.schedules import build_optimizer, build_scheduler
from pixelwise.errors import ConfigError, DataError, TrainingError
from pixelwise.hardware import describe_cpu
from pixelwise.inference.predictor import Predictor
from pixelwise.modeldir import read_model_config, resolve_model_dir
from pixelwise.models import create_model
from pixelwise.precision import autocast_dtype, resolve_precision
from pixelwise.tasks import Task, build_task, native_task


@dataclass
class TrainResult:
    """best_score: the best validation value of the task's `best_key` ("miou", "pq", ...) at best_epoch."""

    run_dir: Path
    best_score: float
    best_epoch: int
    epochs_done: int
    seconds: float
    last_val: dict | None
    best_key: str = "miou"
    best_val: dict | None = None
    inference: dict | None = None  # the stored inference setting measured after training (engine.tune)

    @property
    def best_miou(self) -> float:
        """Validation mIoU of the best checkpoint (for panoptic runs, of the semantic head)."""
        if self.best_key == "miou":
            return self.best_score
        return float((self.best_val or {}).get("miou", float("nan")))


class EpochSampler(RandomSampler):
    """A shuffling sampler whose order is a function of (seed, epoch), so a resumed run sees the same
    order as an uninterrupted one (DistributedSampler does the same under DDP)."""

    def __init__(self, data, seed: int):
        super().__init__(data, generator=torch.Generator())
        self.seed = seed

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed + epoch)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def model_kwargs(cfg: Config) -> dict:
    kwargs = dict(cfg.model.kwargs)
    if cfg.model.encoder is not None:
        kwargs["encoder"] = cfg.model.encoder
    if cfg.model.pretrained is not None:
        kwargs["pretrained"] = cfg.model.pretrained
    return kwargs


def dataset_options(cfg: Config) -> dict:
    """Reader options from the config: data.options plus data.classes."""
    opts = dict(cfg.data.options)
    if cfg.data.classes:
        opts["classes"] = cfg.data.classes
    return opts


def _datasets(cfg: Config):
    spec = f"{cfg.data.format}:{cfg.data.root}"
    opts = dataset_options(cfg)
    train_ds = open_dataset(spec, cfg.data.train_split, **opts)
    if cfg.data.limit:
        train_ds = train_ds.subset(range(min(cfg.data.limit, len(train_ds))))
    if len(train_ds) == 0:
        raise DataError(f"{spec}: split '{cfg.data.train_split}' has no images")
    val_ds = open_dataset(spec, cfg.data.val_split, **opts) if cfg.data.val_split else None
    return spec, train_ds, val_ds


def train(cfg: Config, out_dir: str | Path, resume: bool = False, progress: bool = True,
          device: str | None = None) -> TrainResult:
    """Train the model a Config describes; returns where the best model is and how good it was."""
    info = ddp.setup(device)
    try:
        return _train(cfg, Path(out_dir), resume, progress and info.main, info)
    finally:
        ddp.teardown()


@dataclass
class _Run:
    """What one training run holds between epochs."""

    cfg: Config
    out: Path
    info: ddp.DistInfo
    task: Task
    model: torch.nn.Module
    train_model: torch.nn.Module
    loader: DataLoader
    sampler: Any
    criterion: torch.nn.Module
    optimizer: Any
    scheduler: Any
    scaler: Any
    amp: torch.dtype | None
    amp_choice: dict
    compile_choice: dict
    val_ds: Any
    classes: list[str]
    save_args: dict = field(default_factory=dict)
    start_epoch: int = 0
    best: float | None = None
    best_epoch: int = -1
    best_val: dict | None = None
    ema: ModelEMA | None = None
    init: InitReport | None = None
    tracker: tracking.Trackers = field(default_factory=tracking.Trackers)  # rank 0's, when train.log_to asks
    tracker_state: dict = field(default_factory=dict)  # the resumed session's tracking (its MLflow run id)
    train_seconds: float = 0.0  # seconds of training steps over every session (the model card's training time)

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights validation scores and `best/` keeps: the EMA average when train.ema > 0."""
        return self.ema.module if self.ema is not None else self.model


def _check_run_dir(out: Path, resume: bool) -> None:
    """Refuse to start over in a run directory that holds training (a last/ checkpoint or logged epochs:
    its log and best model would be overwritten), and to resume one without training state. Run after
    `atomicdir.recover` settled what a kill left."""
    has_state = (out / "last" / ckpt.STATE_NAME).is_file()
    logged = bool(read_jsonl(out / "metrics.jsonl"))
    if (has_state or logged) and not resume:
        held = ", ".join(n for n, x in (("last/", has_state), ("metrics.jsonl", logged)) if x)
        raise ConfigError(f"{out}: already holds a training run ({held}); pass --resume to continue it or "
                          "choose another --out")
    if resume and not has_state:
        raise ConfigError(f"{out}: nothing to resume (no {out / 'last' / ckpt.STATE_NAME})")


def _start_fresh(out: Path) -> None:
    """A run that never finished its first epoch may have left a best/ of that epoch: it goes, so the new
    run's best/ and log start together."""
    shutil.rmtree(out / "best", ignore_errors=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)


def _loader(cfg: Config, parts, train_ds, info: ddp.DistInfo):
    tc = cfg.train
    per_proc = max(1, tc.batch_size // info.world)
    train_data = TransformedDataset(train_ds, parts.transform, cache=cfg.data.cache)
    if info.world > 1:
        sampler = DistributedSampler(train_data, info.world, info.rank, shuffle=True, seed=tc.seed)
    else:
        sampler = EpochSampler(train_data, tc.seed)
    loader = DataLoader(train_data, batch_size=per_proc, sampler=sampler, num_workers=cfg.data.num_workers,
                        collate_fn=parts.collate, drop_last=len(train_data) >= tc.batch_size,
                        persistent_workers=cfg.data.num_workers > 0)
    return loader, sampler


def _to_device(targets, device, non_blocking: bool = True):
    """A target tensor, or a dict of them (other values left as they are), moved to `device`."""
    if isinstance(targets, torch.Tensor):
        return targets.to(device, non_blocking=non_blocking)
    if isinstance(targets, dict):
        return {k: _to_device(v, device, non_blocking) for k, v in targets.items()}
    return targets


def _task(cfg: Config, classes: list[str], train_ds, model: torch.nn.Module | None = None) -> Task:
    """The task of a run: task.name, else the model's own; it must be one that trains. With the model,
    its own settings (a panoptic model's post-processing) are the defaults of the task's options, as
    they are when the saved model is loaded for inference."""
    task = build_task(cfg.task.name or native_task(cfg.model.name), classes, train_ds.palette, train_ds.things,
                      cfg.task.options, defaults=getattr(model, "postprocess", None))
    if not task.trainable:
        task.training(cfg.data, cfg.train, None)  # raises, saying how this task is trained instead
    return task


def _setup(cfg: Config, out: Path, info: ddp.DistInfo) -> _Run:
    """Datasets, model, task, loader, optimizer and schedule of a fresh run."""
    tc = cfg.train
    spec, train_ds, val_ds = _datasets(cfg)
    if cfg.data.classes and len(cfg.data.classes) != train_ds.num_classes:
        raise ConfigError(f"config key 'data.classes': names {len(cfg.data.classes)} classes, but {train_ds.name} has "
                          f"{train_ds.num_classes} ({', '.join(train_ds.classes)})")
    names = list(cfg.data.classes or train_ds.classes)
    classes = _task(cfg, names, train_ds).classes  # the dataset's, and any the task derives (multi-label unions)
    cfg, bands = resolve_bands(cfg, train_ds)
    model = create_model(cfg.model.name, len(classes), **{**model_kwargs(cfg), **input_kwargs(bands)})
    task = _task(cfg, names, train_ds, model)
    init = load_init(model, tc.init_from, cfg.model.name) if tc.init_from else None
    cfg = resolve_channel_norm(cfg, bands, train_ds, model, init)
    parts = task.training(cfg.data, cfg.train, model)
    model = model.to(info.device)
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader, sampler = _loader(cfg, parts, train_ds, info)
    optimizer = _make_optimizer(cfg)(model)
    budget_s = tc.time_limit_min * 60 if tc.time_limit_min else None
    steps = len(loader)
    scheduler = build_scheduler(optimizer, tc.epochs * steps, tc.schedule, int(tc.warmup_epochs * steps),
                                tc.poly_power, budget_s)
    amp, amp_choice = _training_form(cfg, model, parts.criterion.to(info.device), loader, info)
    scaler = torch.amp.GradScaler(info.device.type, enabled=amp == torch.float16)
    preprocessing = input_preprocessing(cfg, bands)
    extra = {"dataset": spec, "recipe": cfg.to_dict(), "task": task.name, "task_options": dict(cfg.task.options),
             "things": list(task.things), "train_precision": amp_choice}
    encoder = getattr(model, "encoder", None)
    if getattr(encoder, "adapted_input", False):  # said in the saved model: its weights started from RGB ones
        extra["input_adapted"] = {"from_channels": 3, "to_channels": bands.channels,
                                  "how": "pretrained RGB first convolution adapted as timm's adapt_input_conv"}
    if init is not None:
        extra["init_from"] = {"path": str(init.source), "classes": init.classes, "reinitialised": init.reinitialised}
    save_args = {"classes": classes, "palette": task.palette, "preprocessing": preprocessing, "extra": extra}
    train_model, compile_choice = _compiled(cfg, model, parts.criterion.to(info.device), loader, info, amp)
    extra["train_compile"] = compile_choice
    if info.world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(model)
    ema = ModelEMA(model, tc.ema) if tc.ema > 0 else None
    return _Run(cfg, out, info, task, model, train_model, loader, sampler, parts.criterion.to(info.device),
                optimizer, scheduler, scaler, amp, amp_choice, compile_choice, val_ds, classes, save_args, ema=ema,
                init=init)


def _make_optimizer(cfg: Config):
    tc = cfg.train
    return lambda model: build_optimizer(param_groups(model, tc.lr, tc.weight_decay, encoder_lr_mult(cfg)),
                                         tc.optimizer, tc.lr, tc.weight_decay, tc.momentum)


def _training_form(cfg: Config, model: torch.nn.Module, criterion, loader: DataLoader,
                   info: ddp.DistInfo) -> tuple[torch.dtype | None, dict]:
    """The autocast dtype of the run and what decided it: train.amp as written, or for "auto" on a CPU
    the fastest agreeing form timed on the run's first batch (`pixelwise.engine.autoamp`; rank 0 measures,
    every rank follows). The model is put in that form in place (depthwise convolutions kept fp32)."""
    tc = cfg.train
    if tc.amp != "auto" or info.device.type != "cpu":
        name = resolve_precision(tc.amp, info.device, "config key 'train.amp'")
        return autocast_dtype(name, info.device), {"chosen": name, "asked": tc.amp}
    decision = None
    if info.main:
        state = ckpt.rng_state()  # measuring draws random numbers; the run must not notice
        images, targets = _first_batch(loader, info, tc.channels_last)
        decision = autoamp.measure(model, _make_optimizer(cfg), criterion, images, targets, tc.channels_last,
                                   tc.optimizer)
        ckpt.set_rng_state(state)
    names = list(autoamp.FORMS)
    index = ddp.broadcast_value(float(names.index(decision["chosen"])) if decision else 0.0)
    decision = decision or {"chosen": names[int(index)], "from": "rank 0"}
    return autoamp.apply(model, decision["chosen"]), {**decision, "asked": "auto"}


def _first_batch(loader: DataLoader, info: ddp.DistInfo, channels_last: bool):
    images, targets = next(iter(loader))
    images, targets = images.to(info.device), _to_device(targets, info.device)
    return (images.contiguous(memory_format=torch.channels_last) if channels_last else images), targets


def _compiled(cfg: Config, model: torch.nn.Module, criterion, loader: DataLoader, info: ddp.DistInfo,
              amp: torch.dtype | None) -> tuple[torch.nn.Module, dict]:
    """The module the training steps run (torch.compile'd or the model itself) and what decided it
    (`pixelwise.engine.autocompile`)."""
    tc = cfg.train
    if tc.compile == "off":
        return model, {"asked": "off", "compiled": False}
    if info.world > 1:  # a recipe with compile: auto runs unchanged under torchrun, eager
        if tc.compile == "auto":
            return model, {"asked": "auto", "compiled": False, "why": "torch.compile is applied in single-process "
                                                                       "runs only, and this one is DDP"}
        raise ConfigError("config key 'train.compile': torch.compile is applied in single-process runs only; set "
                          "train.compile=off (or auto) for DDP")
    if tc.compile == "on":
        return torch.compile(model), {"asked": "on", "compiled": True}
    state = ckpt.rng_state()
    images, targets = _first_batch(loader, info, tc.channels_last)
    budget = tc.time_limit_min * 60 if tc.time_limit_min else None
    module, decision = autocompile.measure(model, _make_optimizer(cfg), criterion, images, targets, amp, budget,
                                           tc.epochs * len(loader))
    ckpt.set_rng_state(state)
    return module, {**decision, "asked": "auto"}


def _resume(run: _Run) -> None:
    src = resolve_model_dir(run.out / "last")
    saved = read_model_config(src)["arch"]
    arch = run.model.pixelwise_arch
    if (saved["name"], saved["num_classes"], saved.get("kwargs", {})) != (arch["name"], arch["num_classes"],
                                                                          arch["kwargs"]):
        raise ConfigError(f"{run.out}: the run was trained as {saved['name']} with {saved['num_classes']} classes "
                          f"and model kwargs {saved.get('kwargs', {})}; the recipe now builds {arch['name']} with "
                          f"{arch['num_classes']} and {arch['kwargs']}. Resume with the run's own "
                          f"{run.out / 'config.yaml'}, or train into another --out")
    run.model.load_state_dict(ckpt.load_file_state(src))
    state = ckpt.load_train_state(src)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.start_epoch, run.best, run.best_epoch = state["epoch"] + 1, state["best"], state["best_epoch"]
    if run.ema is not None and "ema" in state:
        run.ema.load_state_dict(state["ema"])
    ckpt.set_rng_state(state["rng"])
    run.tracker_state = state.get("tracking") or {}
    run.train_seconds = float(state.get("train_seconds", 0.0))
    if run.info.main and "record" in state:  # the log says what the checkpoint holds, each epoch once
        rows = [r for r in read_jsonl(run.out / "metrics.jsonl") if r.get("epoch", 0) < state["record"]["epoch"]]
        rows = list({r["epoch"]: r for r in rows}.values()) + [state["record"]]
        write_jsonl(run.out / "metrics.jsonl", rows)


def _save(run: _Run, directory: Path, epoch: int, metrics: dict | None = None, with_metrics: bool = True,
          train_state: dict | None = None, model: torch.nn.Module | None = None) -> None:
    a = run.save_args
    extra = {**a["extra"], "epoch": epoch, **({"metrics": metrics} if with_metrics else {})}
    device = run.info.device  # what the model card says of how far training went, and where
    extra["trained"] = {"steps": run.scheduler.steps, "seconds": round(run.train_seconds, 3), "processes": run.info.world,
                        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else describe_cpu()}
    if model is None and run.ema is not None:
        extra["ema"] = {"decay": run.ema.decay, "updates": run.ema.updates}
    ckpt.save_checkpoint(model if model is not None else run.eval_model, directory, a["classes"], a["palette"],
                         a["preprocessing"], extra, train_state=train_state)


def _better(task: Task, score: float, best: float | None) -> bool:
    return best is None or (score > best if task.higher_is_better else score < best)


def _validate(run: _Run, epoch: int, record: dict, progress: bool) -> dict:
    """Score the model on the val split through the same loop as `pixelwise eval` (the module itself, fp32
    whatever the training precision; labels at full resolution), log it into `record`, keep the best."""
    run.model.eval()
    config = {"classes": run.classes, "preprocessing": run.save_args["preprocessing"]}
    predictor = Predictor(run.eval_model, config, run.info.device, task=run.task, fastpath=False)
    scores = run_evaluation(predictor, run.val_ds, rank=run.info.rank, world=run.info.world, full=False,
                            progress=progress, reducer=ddp.reducer())
    run.tracker.validation(predictor, run.val_ds, epoch)  # overlays, while the model is in eval mode
    run.model.train()
    record["val"] = {k: scores[k] for k in run.task.record_keys if k in scores}
    if _better(run.task, scores[run.task.best_key], run.best):
        run.best, run.best_epoch, run.best_val = scores[run.task.best_key], epoch + 1, scores
        if run.info.main:
            _save(run, run.out / "best", epoch + 1, scores)
    return scores


def _train(cfg: Config, out: Path, resume: bool, progress: bool, info: ddp.DistInfo) -> TrainResult:
    t_start = time.time()
    tc = cfg.train
    if info.main:  # settle what a kill left in last/ and best/ (the newest complete copy of each stays)
        for name in ("last", "best"):
            atomicdir.recover(out / name)
    ddp.barrier()
    _check_run_dir(out, resume)
    if info.main and not resume:
        _start_fresh(out)
    tune.check_candidates(cfg.infer.tta, cfg.infer.crf)  # a typo in infer: stops here, not after training
    tracking.check_available(tc.log_to)  # a backend asked for but not installed: stops before training
    seed_everything(tc.seed + info.rank, tc.deterministic)
    run = _setup(cfg, out, info)
    cfg = run.cfg  # with the normalisation resolved
    if resume:
        _resume(run)
    if info.main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        run.tracker = tracking.open_trackers(cfg, out, run.tracker_state, len(run.loader), run.classes,
                                             run.task.best_key, run.start_epoch,
                                             tqdm.write if progress else (lambda line: None))
        if progress and run.init is not None:
            tqdm.write(run.init.summary())
        if progress and run.amp_choice.get("asked") == "auto":
            tqdm.write(autoamp.describe(run.amp_choice))
        if progress and run.compile_choice["asked"] != "off":
            tqdm.write(autocompile.describe(run.compile_choice))
    last_val, epoch = None, run.start_epoch - 1
    for epoch in range(run.start_epoch, tc.epochs):
        run.sampler.set_epoch(epoch)
        run.tracker.begin_epoch(epoch)
        t0 = time.time()
        loss, images = _train_epoch(run, tc, info, desc=f"epoch {epoch + 1}/{tc.epochs}", progress=progress,
                                    clock=_Clock(run.scheduler.elapsed), frozen=epoch < tc.freeze_encoder_epochs)
        seconds = time.time() - t0
        run.train_seconds += seconds
        # images actually seen: a time-cut last epoch stops early and must not count the steps it skipped
        record = {"epoch": epoch + 1, "train_loss": loss, "lr": run.optimizer.param_groups[0]["lr"],
                  "seconds": round(seconds, 3), "images": images, "images_per_s": round(images / seconds, 2),
                  "precision": run.amp_choice["chosen"]}
        out_of_time = run.scheduler.done
        if run.val_ds is not None and ((epoch + 1) % tc.val_every == 0 or out_of_time or epoch + 1 == tc.epochs):
            last_val = _validate(run, epoch, record, progress)
        if info.main:
            state = {"optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(), "epoch": epoch,
                     "best": run.best, "best_epoch": run.best_epoch, "rng": ckpt.rng_state(), "record": record,
                     "tracking": run.tracker.state()}
            if run.ema is not None:
                state["ema"] = run.ema.state_dict()
            state["train_seconds"] = run.train_seconds
            _save(run, out / "last", epoch + 1, last_val, train_state=state, model=run.model)
            append_jsonl(out / "metrics.jsonl", record)
            run.tracker.epoch_end(record)
            plot_curves(read_jsonl(out / "metrics.jsonl"), out / "training_curves.png")
            if progress:
                summary = f"  {run.task.summary(last_val)}" if "val" in record else ""
                tqdm.write(f"epoch {epoch + 1}: loss {loss:.4f}{summary}")
        if out_of_time:
            if progress:
                tqdm.write(f"time limit of {tc.time_limit_min} min reached after epoch {epoch + 1}")
            break
    if run.best_epoch < 0 and info.main:  # no validation split: the last model is the best we know
        _save(run, out / "best", epoch + 1, with_metrics=False)
    result = None
    if info.main and run.val_ds is not None and run.best_epoch > 0 and tune.wants_tuning(cfg.infer.tta, cfg.infer.crf):
        say = tqdm.write if progress else (lambda line: None)
        say(f"measuring the inference setting on {run.val_ds.name} (infer: tta {cfg.infer.tta}, crf {cfg.infer.crf})")
        result = tune.tune(out / "best", run.val_ds, cfg.infer.tta, cfg.infer.crf, cfg.infer.min_gain,
                           cfg.infer.images, device=str(run.info.device), log=say)
        say(tune.summary(result))
    if info.main:  # after tune: the logged model directory holds the stored inference setting
        run.tracker.finish(out, run.task.best_key, run.best, epoch + 1)
    ddp.barrier()
    best = run.best if run.best is not None else float("nan")
    return TrainResult(out, best, run.best_epoch, epoch + 1, time.time() - t_start, last_val,
                       run.task.best_key, run.best_val, result)


class _Clock:
    """Training seconds for the time budget: those of earlier sessions (resume) plus this one's."""

    def __init__(self, before: float):
        self.before, self.t0 = before, time.time()

    def __call__(self, info: ddp.DistInfo) -> float:
        elapsed = self.before + time.time() - self.t0
        return ddp.broadcast_value(elapsed)  # every rank follows rank 0's clock


def _train_epoch(run: _Run, tc, info, desc: str, progress: bool, clock: _Clock,
                 frozen: bool = False) -> tuple[float, int]:
    """One epoch (or until the time budget is spent): (mean loss over processes, images seen by all)."""
    model, loader, criterion, optimizer = run.train_model, run.loader, run.criterion, run.optimizer
    scheduler, scaler, amp = run.scheduler, run.scaler, run.amp
    model.train()
    if tc.freeze_encoder_epochs:  # after train(): a frozen encoder's BatchNorm stays in eval mode
        set_encoder_frozen(run.model, frozen)
    total, count, seen = 0.0, 0, 0
    bar = tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    t0 = time.time()
    for step, (images, targets) in enumerate(bar):
        images, targets = images.to(info.device, non_blocking=True), _to_device(targets, info.device)
        if tc.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(info.device.type, dtype=amp, enabled=amp is not None):
            out = model(images)
        loss = criterion(out, targets)
        bad = not math.isfinite(loss.item())
        if info.world > 1:
            bad = ddp.all_reduce_mean(float(bad)) > 0
        if bad:
            raise TrainingError(f"{desc}, step {step + 1}: the loss became {loss.item()} (NaN/Inf); stopping. "
                                "Lower train.lr or set train.clip_grad; the last completed epoch is in RUN_DIR/last")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if tc.clip_grad:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        if run.ema is not None:
            run.ema.update(run.model)
        scheduler.step(clock(info) if scheduler.budget_s else None)
        total += loss.item()
        count += 1
        seen += images.shape[0]
        run.tracker.train_step(step, loss, optimizer.param_groups[0]["lr"], images.shape[0] * info.world)
        if scheduler.done:
            break  # time budget spent: end the epoch here, validate and save
        if progress and (step % tc.log_every == 0 or step + 1 == len(loader)):
            ips = (step + 1) * images.shape[0] * info.world / max(1e-6, time.time() - t0)
            bar.set_postfix(loss=f"{total / count:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                            img_s=f"{ips:.1f}")
    seen = int(round(ddp.all_reduce_mean(float(seen)) * info.world))
    return ddp.all_reduce_mean(total / max(1, count)), seen
