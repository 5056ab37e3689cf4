"""The training loop: one function, `train(cfg, out_dir)`.

Writes into RUN_DIR: `config.yaml` (the resolved recipe), `metrics.jsonl` (one line per epoch),
`training_curves.png`, `best/` (model with the highest validation mIoU) and `last/` (the latest epoch plus
the state needed to resume: optimizer, scheduler, epoch, RNG). Under torchrun each process takes
1/world of every batch (train.batch_size is the global batch), gradients are averaged by DDP, and the
validation confusion matrix is summed over processes.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from pixelwise.config import Config, save_config
from pixelwise.data.dataset import TransformedDataset
from pixelwise.data.formats import open_dataset
from pixelwise.data.transforms import build_transform, pad_collate
from pixelwise.engine import checkpoint as ckpt
from pixelwise.engine import distributed as ddp
from pixelwise.engine.evaluate import evaluate_logits_fn, model_logits_fn
from pixelwise.engine.logging import append_jsonl, plot_curves, read_jsonl
from pixelwise.engine.schedules import build_optimizer, build_scheduler
from pixelwise.errors import ConfigError, DataError, TrainingError
from pixelwise.hardware import cpu_has_fast_bf16
from pixelwise.losses import build_loss
from pixelwise.models import create_model

AUX_WEIGHT = 0.4  # weight of auxiliary (deep-supervision) heads, as in PSPNet/DeepLab references


@dataclass
class TrainResult:
    run_dir: Path
    best_miou: float
    best_epoch: int
    epochs_done: int
    seconds: float
    last_val: dict | None


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


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for training. 'auto' = bf16 (or fp16) on CUDA; bf16 on CPUs with native bf16 units
    (AMX / AVX-512 BF16), fp32 elsewhere. Weights and optimizer state stay fp32 either way."""
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        if device.type != "cuda":
            raise ConfigError("config key 'train.amp': fp16 needs a CUDA device (use bf16 on CPU)")
        return torch.float16
    if amp == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else None
    raise ConfigError(f"config key 'train.amp': unknown value '{amp}' (auto, off, bf16, fp16)")


def model_kwargs(cfg: Config) -> dict:
    kwargs = dict(cfg.model.kwargs)
    if cfg.model.encoder is not None:
        kwargs["encoder"] = cfg.model.encoder
    if cfg.model.pretrained is not None:
        kwargs["pretrained"] = cfg.model.pretrained
    return kwargs


def _datasets(cfg: Config):
    spec = f"{cfg.data.format}:{cfg.data.root}"
    opts = {"classes": cfg.data.classes} if cfg.data.classes else {}
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


def _train(cfg: Config, out: Path, resume: bool, progress: bool, info: ddp.DistInfo) -> TrainResult:
    t_start = time.time()
    tc = cfg.train
    last_dir = out / "last"
    has_state = (last_dir / ckpt.STATE_NAME).is_file() or (out / "last.old" / ckpt.STATE_NAME).is_file()
    if has_state and not resume:
        raise ConfigError(f"{out}: already holds a training run; pass --resume to continue it or choose another --out")
    if resume and not has_state:
        raise ConfigError(f"{out}: nothing to resume (no {last_dir / ckpt.STATE_NAME})")
    seed_everything(tc.seed + info.rank, tc.deterministic)
    spec, train_ds, val_ds = _datasets(cfg)
    classes = list(cfg.data.classes or train_ds.classes)
    model = create_model(cfg.model.name, len(classes), **model_kwargs(cfg)).to(info.device)
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = build_loss(tc, len(classes)).to(info.device)

    per_proc = max(1, tc.batch_size // info.world)
    train_data = TransformedDataset(train_ds, build_transform(cfg.data, train=True))
    if info.world > 1:
        sampler = DistributedSampler(train_data, info.world, info.rank, shuffle=True, seed=tc.seed)
    else:
        sampler = EpochSampler(train_data, tc.seed)
    loader = DataLoader(train_data, batch_size=per_proc, sampler=sampler, num_workers=cfg.data.num_workers,
                        collate_fn=pad_collate, drop_last=len(train_data) >= tc.batch_size,
                        persistent_workers=cfg.data.num_workers > 0)
    steps = len(loader)
    total = tc.epochs * steps
    optimizer = build_optimizer(model.parameters(), tc.optimizer, tc.lr, tc.weight_decay, tc.momentum)
    budget_s = tc.time_limit_min * 60 if tc.time_limit_min else None
    scheduler = build_scheduler(optimizer, total, tc.schedule, int(tc.warmup_epochs * steps), tc.poly_power, budget_s)
    amp = resolve_amp(tc.amp, info.device)
    scaler = torch.amp.GradScaler(info.device.type, enabled=amp == torch.float16)

    start_epoch, best, best_epoch = 0, -1.0, -1
    if resume:
        src = ckpt.resolve_model_dir(last_dir)
        model.load_state_dict(ckpt.load_file_state(src))
        state = ckpt.load_train_state(src)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best, best_epoch = state["epoch"] + 1, state["best"], state["best_epoch"]
        ckpt.set_rng_state(state["rng"])
    train_model = model
    if info.world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(model)
    if info.main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    preprocessing = {"mean": list(cfg.data.mean), "std": list(cfg.data.std), "resize": cfg.data.val_resize}
    extra = {"dataset": spec, "recipe": cfg.to_dict()}
    val_tf = build_transform(cfg.data, train=False)
    last_val = None
    epoch = start_epoch - 1
    for epoch in range(start_epoch, tc.epochs):
        sampler.set_epoch(epoch)
        t0 = time.time()
        clock = _Clock(scheduler.elapsed)
        loss_sum = _train_epoch(train_model, loader, criterion, optimizer, scheduler, scaler, amp, tc, info,
                                desc=f"epoch {epoch + 1}/{tc.epochs}", progress=progress, clock=clock)
        seconds = time.time() - t0
        record = {"epoch": epoch + 1, "train_loss": loss_sum, "lr": optimizer.param_groups[0]["lr"],
                  "seconds": round(seconds, 2), "images_per_s": round(steps * tc.batch_size / seconds, 2)}
        out_of_time = scheduler.done
        final = out_of_time or epoch + 1 == tc.epochs
        if val_ds is not None and ((epoch + 1) % tc.val_every == 0 or final):
            model.eval()
            # validation in fp32 whatever the training precision: the figures then equal `pixelwise eval`
            last_val = evaluate_logits_fn(model_logits_fn(model), val_ds, val_tf, len(classes),
                                          info.device, rank=info.rank, world=info.world, progress=progress)
            model.train()
            record["val"] = {k: last_val[k] for k in ("miou", "pixel_acc", "mean_acc", "fw_iou", "per_class_iou")}
            if last_val["miou"] > best:
                best, best_epoch = last_val["miou"], epoch + 1
                if info.main:
                    ckpt.save_model(model, out / "best", classes, train_ds.palette, preprocessing,
                                    {**extra, "epoch": epoch + 1, "metrics": last_val})
        if info.main:
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch,
                     "best": best, "best_epoch": best_epoch, "rng": ckpt.rng_state()}
            ckpt.save_model(model, last_dir, classes, train_ds.palette, preprocessing,
                            {**extra, "epoch": epoch + 1, "metrics": last_val}, train_state=state)
            append_jsonl(out / "metrics.jsonl", record)
            plot_curves(read_jsonl(out / "metrics.jsonl"), out / "training_curves.png")
            if progress:
                msg = f"epoch {epoch + 1}: loss {loss_sum:.4f}"
                if "val" in record:
                    msg += f"  val mIoU {record['val']['miou']:.4f}  pixel acc {record['val']['pixel_acc']:.4f}"
                tqdm.write(msg)
        if out_of_time:
            if progress:
                tqdm.write(f"time limit of {tc.time_limit_min} min reached after epoch {epoch + 1}")
            break
    if best_epoch < 0 and info.main:  # no validation split: the last model is the best we know
        ckpt.save_model(model, out / "best", classes, train_ds.palette, preprocessing, {**extra, "epoch": epoch + 1})
    ddp.barrier()
    return TrainResult(out, best, best_epoch, epoch + 1, time.time() - t_start, last_val)


class _Clock:
    """Training seconds for the time budget: those of earlier sessions (resume) plus this one's."""

    def __init__(self, before: float):
        self.before, self.t0 = before, time.time()

    def __call__(self, info: ddp.DistInfo) -> float:
        elapsed = self.before + time.time() - self.t0
        return ddp.broadcast_value(elapsed, info.device)  # every rank follows rank 0's clock


def _train_epoch(model, loader, criterion, optimizer, scheduler, scaler, amp, tc, info, desc, progress,
                 clock: _Clock) -> float:
    model.train()
    total, count = 0.0, 0
    bar = tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    t0 = time.time()
    for step, (images, targets) in enumerate(bar):
        images, targets = images.to(info.device, non_blocking=True), targets.to(info.device, non_blocking=True)
        if tc.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(info.device.type, dtype=amp, enabled=amp is not None):
            out = model(images)
        if isinstance(out, dict):
            loss = criterion(out["out"], targets) + sum(AUX_WEIGHT * criterion(v, targets)
                                                        for k, v in out.items() if k != "out")
        else:
            loss = criterion(out, targets)
        bad = not math.isfinite(loss.item())
        if info.world > 1:
            bad = ddp.all_reduce_mean(float(bad), info.device) > 0
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
        scheduler.step(clock(info) if scheduler.budget_s else None)
        total += loss.item()
        count += 1
        if scheduler.done:
            break  # time budget spent: end the epoch here, validate and save
        if progress and (step % tc.log_every == 0 or step + 1 == len(loader)):
            ips = (step + 1) * images.shape[0] * info.world / max(1e-6, time.time() - t0)
            bar.set_postfix(loss=f"{total / count:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                            img_s=f"{ips:.1f}")
    return ddp.all_reduce_mean(total / max(1, count), info.device)
