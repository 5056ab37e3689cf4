"""Parameters, GFLOPs and CPU latency of every registered architecture at its paper configuration.

    python benchmarks/model_latency.py [--size 512] [--threads 2] [--repeats 3] [--models segformer,upernet]

Latency: one 3x512x512 image (batch 1), fp32 eager, eval mode, torch.inference_mode, median of
`--repeats` runs after one warm-up. Prints a Markdown table and appends it to benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import time
from pathlib import Path

import torch

from pixelwise.hardware import describe_cpu
from pixelwise.models import create_model, list_models, model_info


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--classes", type=int, default=21)
    ap.add_argument("--models", default=None, help="comma-separated names (default: every registered one)")
    args = ap.parse_args()
    names = args.models.split(",") if args.models else list_models()
    unknown = sorted(set(names) - set(list_models()))
    if unknown:
        ap.error(f"--models: unknown {', '.join(unknown)}")
    torch.set_num_threads(args.threads)
    rows = []
    for name in names:
        info = model_info(name, num_classes=args.classes, size=args.size)
        model = create_model(name, args.classes).eval()
        x = torch.randn(1, 3, args.size, args.size)
        times = []
        with torch.inference_mode():
            out = model(x)  # warm-up
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                out = model(x)
                times.append(time.perf_counter() - t0)
        if isinstance(out, dict):
            out = next(iter(out.values()))
        ms = 1000 * statistics.median(times)
        rows.append(f"| `{name}` | {info['paper']} | {info['params'] / 1e6:.2f} | {info['gflops']:.1f} | {ms:.0f} |")
        print(rows[-1], flush=True)
        del model
    table = ("| model | paper | params (M) | GFLOPs (MACs) | CPU ms |\n|---|---|---|---|---|\n" + "\n".join(rows))
    print(table)
    with open(Path(__file__).resolve().parent / "RESULTS.md", "a") as f:
        f.write(f"\n## Architectures at {args.size}x{args.size}, {args.classes} classes ({datetime.date.today()})\n\n"
                f"Machine: {describe_cpu()}. Command: `python benchmarks/model_latency.py --size {args.size} "
                f"--threads {args.threads}" + (f" --models {args.models}" if args.models else "") + "`. Latency: batch 1, fp32 eager, median of {args.repeats}.\n\n{table}\n")


if __name__ == "__main__":
    main()
