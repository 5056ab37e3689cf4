"""Throughput of batch prediction: the plain `pixelwise predict` against `pixelwise predict --ray` on a local
Ray with 2 one-CPU actors (pixelwise.inference.raypredict), on the same images, in one run.

    python benchmarks/ray_predict.py [--data ../shared/data/camvid] [--count 200] [--workers 2]

The images are the first `--count` CamVid frames (480x360; train, then val). The model is a U-Net on
ResNet-18 (11 classes, untrained: throughput does not depend on the weights), saved once. Each command
runs in its own process, as a user runs it, timed end to end (start-up, model load, Ray start included)
and, from its per-image output times, over the images alone. Both write index PNGs; the benchmark checks
that the two output folders hold the same bytes. Prints a table and appends it to benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def frames(root: Path, count: int) -> list[Path]:
    found = sorted((root / "train").glob("*.png")) + sorted((root / "val").glob("*.png"))
    if len(found) < count:
        sys.exit(f"{root}: {len(found)} CamVid frames in train/ and val/, fewer than --count {count}")
    return found[:count]


def timed(command: list[str], out: Path) -> tuple[float, float]:
    """(seconds end to end, seconds from the first output written to the last) of one CLI run."""
    t0 = time.time()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    total = time.time() - t0
    stamps = sorted(p.stat().st_mtime for p in out.glob("*.png"))
    return total, stamps[-1] - stamps[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "camvid"))
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2, help="Ray actors, one CPU each")
    ap.add_argument("--model", default="unet", help="a registered architecture (encoder resnet18)")
    args = ap.parse_args()
    import torch

    import pixelwise as pw
    from pixelwise.hardware import describe_cpu

    images = frames(Path(args.data), args.count)
    cli = [sys.executable, "-m", "pixelwise"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        for p in images:
            (tmp / "in" / p.name).symlink_to(p.resolve())
        torch.manual_seed(0)
        model = pw.create_model(args.model, 11, encoder="resnet18")
        model_dir = pw.save_model(model, tmp / "model", classes=[f"c{i}" for i in range(11)])
        common = [str(model_dir), str(tmp / "in"), "--precision", "fp32"]
        env_note = f"OMP_NUM_THREADS unset, {os.cpu_count()} CPUs"
        plain_total, plain_images = timed([*cli, "predict", *common, "--out", str(tmp / "plain")], tmp / "plain")
        ray_total, ray_images = timed([*cli, "predict", *common, "--out", str(tmp / "ray"), "--ray",
                                       "--ray-workers", str(args.workers)], tmp / "ray")
        names = sorted(p.name for p in (tmp / "plain").glob("*.png"))
        same = sum((tmp / "plain" / n).read_bytes() == (tmp / "ray" / n).read_bytes() for n in names)
    n = args.count
    rows = [("plain `pixelwise predict` (2 decoding workers, torch threads = CPUs)", plain_total, plain_images),
            (f"`pixelwise predict --ray` ({args.workers} actors x 1 CPU)", ray_total, ray_images)]
    table = ("| command | end to end s | images/s end to end | images/s between first and last output |\n"
             "|---|---|---|---|\n"
             + "\n".join(f"| {name} | {total:.1f} | {n / total:.2f} | {(n - 1) / span:.2f} |"
                         for name, total, span in rows)
             + f"\n\nRay / plain: {plain_total / ray_total:.2f}x end to end, "
               f"{plain_images / ray_images:.2f}x over the images; outputs byte-equal: {same}/{len(names)}.")
    print(table)
    with open(HERE / "RESULTS.md", "a") as f:
        f.write(f"\n## Batch prediction on Ray against the plain predict ({datetime.date.today()})\n\n"
                f"Machine: {describe_cpu()}; {env_note}. {n} CamVid frames (480x360), `{args.model}` on ResNet-18, "
                f"11 classes, fp32, index PNGs. Command: `python benchmarks/ray_predict.py --count {n} "
                f"--workers {args.workers}`.\n\n{table}\n")


if __name__ == "__main__":
    main()
