"""What precision="auto" measures and chooses on this CPU, per model and input size.

    python benchmarks/auto_precision.py [--sizes 256,512] [--models runs/camvid_unet/best,...]

For each model (saved model directories, plus an untrained DeepLabV3-ResNet50 built here) and size, builds
a Predictor with precision="auto" and the cache off, and prints the timings of each candidate (median of 3
calls after a warm-up, batch 1, the fast path), the choice, the bf16 calibration agreement where bf16 won,
and the time the measurement added to building the Predictor. Appends the table to benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--models", default="runs/camvid_unet/best,runs/landcover_unet/best")
    args = ap.parse_args()
    os.environ["PIXELWISE_PRECISION_CACHE"] = "off"
    import torch

    import pixelwise as pw
    from pixelwise.hardware import describe_cpu
    from pixelwise.inference.predictor import Predictor, load_for_inference

    models = []
    for d in [m for m in args.models.split(",") if m]:
        if (ROOT / d / "config.json").is_file() or (ROOT / d).is_dir():
            models.append((d, *load_for_inference(ROOT / d)))
    torch.manual_seed(0)
    deeplab = pw.create_model("deeplabv3", 21, encoder="resnet50")
    models.append(("deeplabv3 resnet50 (untrained)", deeplab, {"classes": [str(i) for i in range(21)]}))
    rows = []
    for name, model, config in models:
        for size in [int(s) for s in args.sizes.split(",")]:
            t0 = time.perf_counter()
            p = Predictor(model, config, "cpu", "auto", tile=size)
            built = time.perf_counter() - t0
            t0 = time.perf_counter()
            Predictor(model, config, "cpu", "fp32", tile=size)
            plain = time.perf_counter() - t0
            ms = p.auto_choice["ms"]
            agree = f"{p.calibration['agreement']:.2%}" if p.calibration else "-"
            rows.append(f"| {name} | {size} | {ms.get('fp32', float('nan')):.1f} | {ms.get('bf16', float('nan')):.1f} "
                        f"| {p.auto_choice['chosen']} -> {p.precision} | {agree} | {built - plain:.1f} |")
    lines = [f"## precision=auto, measured ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC)", "",
             f"From `benchmarks/auto_precision.py`. CPU: {describe_cpu()}. Batch 1, the fast path; ms = median of 3 "
             "calls after one warm-up; bf16 is kept only when at least 5% faster and then calibrated.", "",
             "| model | size | fp32 ms | bf16 ms | measured -> used | bf16 agreement | seconds added to build |",
             "|---|---|---|---|---|---|---|", *rows]
    text = "\n".join(lines)
    print(text)
    with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
        f.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
