"""The inference comparison of benchmarks/inference_cpu.py on a CUDA GPU, in one process, under 4 minutes.

    python benchmarks/gpu_inference.py                       # CUDA; table on stdout and in $OUT/gpu_inference.md
    python benchmarks/gpu_inference.py --device cpu --quick  # smoke test of the script itself on a CPU
    sh benchmarks/gpu_inference.sh                           # the same with python3, installing wheels in .wheels/

Needs torch, torchvision, timm and pixelwise's own dependencies; segmentation_models_pytorch (pure
Python) for the smp rows, which are skipped without it (bring its wheel: .wheels/, see the .sh).

Per row (same models and random weights as inference_cpu.py) and batch (1, 8) at 512x512: the baseline
(torchvision / smp) in fp32 eager, then pixelwise's Predictor in bf16 and fp16 (BN folded, channels_last,
weights cast; each after its calibration check against fp32), and the better of the two through
torch.compile (compile time reported separately, once per row). Timed with CUDA events around
`--iters` calls after `--warmup` calls; median. Memory: torch.cuda.max_memory_allocated during the
timed calls, above what the models hold. Agreement: argmax of each fast form against pixelwise fp32
eager on the same batch of synthetic scenes. cuDNN autotuning (cudnn.benchmark) is on for all forms.
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference_cpu import NUM_CLASSES, ROWS, build, out_of, scenes  # noqa: E402


def timer(device: str, fn, warmup: int, iters: int) -> tuple[float, float]:
    """(median seconds, peak extra MB) of fn over iters calls."""
    import torch

    cuda = device.startswith("cuda")
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for _ in range(iters):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else float("nan")
    return statistics.median(times), peak


def measure(row: str, args, deadline: float, compile_pass: bool, best: dict) -> list[dict]:
    """Rows of results for one model pair over args.batches. The eager pass times the baseline, pixelwise
    fp32 eager and the Predictor in each precision; the compile pass times the baseline again and the
    fastest precision of the eager pass through torch.compile."""
    import torch

    from pixelwise.data.classes import default_palette
    from pixelwise.inference.predictor import Predictor

    config = {"classes": [f"c{i}" for i in range(NUM_CLASSES)], "palette": default_palette(NUM_CLASSES),
              "preprocessing": {}}
    cuda = args.device.startswith("cuda")
    precisions = [best.get(row, "bf16")] if compile_pass else (["bf16", "fp16"] if cuda else ["bf16"])
    torch.manual_seed(0)
    base_name, base, ours_name, ours = build(row)
    base = base.eval().to(args.device)
    ours = (ours if ours is not None else base).eval().to(args.device)
    predictors = {p: Predictor(ours, config, args.device, p) for p in precisions}
    compile_s = None
    if compile_pass:
        pred = predictors[precisions[0]]
        pred.model = torch.compile(pred.model)
        pred._run = pred._forward  # the TTA-less run, rebound to the compiled model
    results = []
    for batch in args.batches:
        if time.perf_counter() > deadline:
            results.append({"row": row, "batch": batch, "skipped": "time budget spent"})
            continue
        x = scenes(batch, args.size).to(args.device)

        def form(model):
            def call():
                with torch.inference_mode():
                    out_of(model(x)).argmax(1)
            return call

        r = {"row": row, "batch": batch, "baseline": base_name, "ours": ours_name, "forms": {}}
        with torch.inference_mode():
            ref = out_of(ours(x)).float().argmax(1)
        if compile_pass and compile_s is None:
            t = time.perf_counter()
            with torch.inference_mode():
                predictors[precisions[0]].logits(x)
            if cuda:
                torch.cuda.synchronize()
            compile_s = r["compile_s"] = time.perf_counter() - t
        r["forms"]["baseline fp32"] = timer(args.device, form(base), args.warmup, args.iters) + (None,)
        if ours is not base and not compile_pass:
            r["forms"]["pixelwise fp32 eager"] = timer(args.device, form(ours), args.warmup, args.iters) + (1.0,)
        for p, pred in predictors.items():
            with torch.inference_mode():
                agree = (pred.logits(x).argmax(1) == ref).float().mean().item()
            label = f"pixelwise {pred.precision}" + ("" if pred.precision == p else f" (asked {p})")
            label += " + torch.compile" if compile_pass else ""
            r["forms"][label] = timer(args.device, lambda pred=pred: pred.logits(x).argmax(1),
                                      args.warmup, args.iters) + (agree,)
        if not compile_pass and batch == args.batches[0]:
            fastest = min(predictors, key=lambda p: r["forms"][next(k for k in r["forms"] if p in k)][0])
            best[row] = predictors[fastest].precision
        results.append(r)
        print(format_row(r), flush=True)
    del base, ours, predictors
    if cuda:
        torch.cuda.empty_cache()
    return results


def run(args) -> list[dict]:
    deadline = time.perf_counter() + args.budget
    best: dict[str, str] = {}
    results = []
    for row in args.rows.split(","):
        try:
            results += measure(row, args, deadline, False, best)
        except ImportError as exc:  # segmentation_models_pytorch is not on every machine
            results.append({"row": row, "batch": "-", "skipped": f"skipped: {exc}"})
            print(format_row(results[-1]), flush=True)
    for row in args.compile_rows if args.compile else []:
        if row in best and deadline - time.perf_counter() > args.compile_reserve:
            results += measure(row, args, deadline, True, best)
        else:
            results.append({"row": row, "batch": "-", "skipped": "torch.compile skipped (time budget)"})
    return results


def format_row(r: dict) -> str:
    if "skipped" in r:
        return f"| {r['row']} | {r['batch']} | {r['skipped']} | | | | |"
    base_s = r["forms"]["baseline fp32"][0]
    lines = []
    for name, (s, mem, agree) in r["forms"].items():
        who = r["baseline"] if name == "baseline fp32" else f"{r['ours']}: {name}"
        extra = f" (compile {r['compile_s']:.0f} s)" if "compile" in name and r.get("compile_s") else ""
        agree_s = "" if agree is None else f"{agree:.4%}"
        lines.append(f"| {r['row']} | {r['batch']} | {who}{extra} | {r['batch'] / s:.1f} | {mem:.0f} "
                     f"| {base_s / s:.2f}x | {agree_s} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--budget", type=float, default=200, help="seconds; later rows are skipped past it")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--compile-rows", default="deeplabv3,unet", help="rows also run through torch.compile, last")
    parser.add_argument("--compile-reserve", type=float, default=60,
                        help="seconds of budget a compile pass needs left to start")
    parser.add_argument("--quick", action="store_true", help="tiny run (size 128, 1 iteration, two rows)")
    args = parser.parse_args()
    if args.quick:
        args.size, args.iters, args.warmup, args.batches = 128, 1, 1, "1"
        args.rows = "lraspp,unet" if args.rows == ",".join(ROWS) else args.rows
        args.compile = False
    args.batches = [int(b) for b in args.batches.split(",")]
    args.compile_rows = args.compile_rows.split(",")
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device; use --device cpu --quick for a smoke test")
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels, for every form
    start = time.perf_counter()
    header = ("| row | batch | model: form | img/s | peak extra MB | vs baseline | argmax agreement vs pixelwise fp32 |\n"
              "|---|---|---|---|---|---|---|")
    print(header, flush=True)
    results = run(args)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    text = (f"\n## Inference speed vs torchvision / smp on {device} ({args.size}x{args.size})\n\n"
            f"From `benchmarks/gpu_inference.py`. torch {torch.__version__}, "
            f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, command `python benchmarks/gpu_inference.py "
            f"{' '.join(sys.argv[1:])}` ({time.perf_counter() - start:.0f} s). Median of {args.iters} after "
            f"{args.warmup} warm-up calls; random weights.\n\n" + header + "\n"
            + "\n".join(format_row(r) for r in results) + "\n")
    print(text)
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "gpu_inference.md").write_text(text)


if __name__ == "__main__":
    main()
