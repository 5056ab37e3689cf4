"""Latency of the real-time architectures and trained model directories through pixelwise's fast path, against
torchvision's LR-ASPP MobileNetV3-Large (fp32 eager, what its users run), in one process: `pixelwise bench` for
several subjects at once.

    python benchmarks/realtime_bench.py [--size 360x480] [--batch 1] [--classes 19] [--device cuda]
        [--subjects lraspp,fastscnn,bisenetv2,ddrnet,pidnet,runs/camvid_realtime/best]
        [--compare torchvision:lraspp_mobilenet_v3_large] [--seconds 5]

Architectures given by name run with random weights, `--classes` classes, in their default (papers')
configurations (LR-ASPP on MobileNetV3-Large, DDRNet-23-slim, PIDNet-S); a model directory runs as saved (its own classes and
preprocessing, e.g. a resize). Prints a table (ratios against the first row) and appends it to
benchmarks/RESULTS.md with the machine.
"""
from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_SUBJECTS = "lraspp,fastscnn,bisenetv2,ddrnet,pidnet"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="360x480")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--classes", type=int, default=19)
    ap.add_argument("--device", default=None)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--subjects", default=DEFAULT_SUBJECTS)
    ap.add_argument("--compare", action="append", default=None)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    from pixelwise.hardware import describe_cpu
    from pixelwise.inference.predictor import default_device
    from pixelwise.inference.speed import bench_module, bench_predictor, parse_size, peer, subject, table

    device = args.device or default_device()
    size = parse_size(args.size)
    peers = args.compare if args.compare is not None else ["torchvision:lraspp_mobilenet_v3_large"]
    results = []
    for spec in peers:
        results.append(bench_module(peer(spec, args.classes), spec, size, args.batch, device,
                                    min_seconds=args.seconds))
        print(results[-1], flush=True)
    for spec in args.subjects.split(","):
        predictor, name = subject(spec, args.classes, device, args.precision)
        results.append(bench_predictor(predictor, name, size, args.batch, min_seconds=args.seconds))
        print(results[-1], flush=True)
        del predictor
    where = describe_cpu() if torch.device(device).type == "cpu" else torch.cuda.get_device_name(torch.device(device))
    text = table(results)
    print(text)
    with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
        f.write(f"\n## Real-time models, `pixelwise bench` at {args.size} batch {args.batch} ({datetime.date.today()})\n\n"
                f"Machine: {where}. Command: `python benchmarks/realtime_bench.py --size {args.size} --batch "
                f"{args.batch} --classes {args.classes} --subjects {args.subjects}`. Peers fp32 eager; pixelwise "
                f"rows through the fast path (precision {args.precision}: measured on the machine). Peak MB: "
                "memory the calls took above what was held before them (activations, not weights). "
                "x first: frames/s against the first row.\n\n" + text + "\n")


if __name__ == "__main__":
    main()
