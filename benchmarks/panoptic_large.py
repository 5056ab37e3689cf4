"""A panoptic model on a 4000 x 3000 image through `pixelwise predict --tile 1024`: wall time and peak memory.

    python benchmarks/panoptic_large.py --model runs/synthetic_panoptic/best     # a trained Panoptic-DeepLab
    python benchmarks/panoptic_large.py                                           # the recipe's architecture, random weights

The image is a mosaic of synthetic street scenes (the embedded default). Each setting runs `pixelwise
predict MODEL big.png --out DIR --tile 1024 [--tta flip] --format coco --overlay` as a child process, as a
user would, and reads that process's peak RSS (ru_maxrss of the child: interpreter, torch, the model, the
36 MB image, the stitched output maps, the grouping and the written files). Rows are appended to
benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEASURE = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")
sys.path.insert(0, str(ROOT / "benchmarks"))


def random_model(directory: Path) -> Path:
    """The synthetic panoptic recipe's architecture with random weights (memory does not depend on them)."""
    import torch

    import pixelwise as pw
    from pixelwise.config import load_config
    from pixelwise.data.synthetic import CLASSES, PALETTE
    from pixelwise.engine.trainer import model_kwargs

    cfg = load_config(ROOT / "configs" / "synthetic" / "panoptic_deeplab.yaml")
    torch.manual_seed(0)
    kwargs = model_kwargs(cfg)
    kwargs.pop("pretrained", None)
    model = pw.create_model(cfg.model.name, len(CLASSES), **kwargs)
    return pw.save_model(model, directory / "model", classes=CLASSES, palette=PALETTE,
                         extra={"task": "panoptic", "things": [3, 4, 5]})


def run(model: str, image: Path, out: Path, options: list[str], threads: int) -> dict:
    cmd = [sys.executable, "-m", "pixelwise", "predict", model, str(image), "--out", str(out), "--workers", "0",
           "--format", "coco", "--overlay", *options]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    # a fresh parent per setting, so ru_maxrss of its children is this prediction's peak alone
    proc = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    peak = int(proc.stdout.strip().splitlines()[-1])  # KB
    pan = json.loads((out / "panoptic.json").read_text())
    segments = pan["annotations"][0]["segments_info"]
    things = {c["id"] for c in pan["categories"] if c["isthing"]}
    return {"options": " ".join(options), "wall_s": wall, "peak_rss_mb": peak / 1024,
            "segments": len(segments), "instances": sum(s["category_id"] in things for s in segments)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a panoptic model directory (default: the recipe's architecture, random)")
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--task-option", action="append", default=[],
                        help="KEY=VALUE passed to pixelwise predict, e.g. top_k=1000 (the recipe keeps 50 centres)")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    from PIL import Image

    from large_image import mosaic
    from pixelwise.hardware import describe_cpu

    work = Path(tempfile.mkdtemp(prefix="panoptic_large_"))
    model = args.model or str(random_model(work))
    image = work / "big.png"
    Image.fromarray(mosaic(max(args.width, args.height))[:args.height, :args.width]).save(image)
    extra = [a for o in args.task_option for a in ("--task-option", o)]
    rows = [run(model, image, work / "out_plain", ["--tile", str(args.tile), *extra], args.threads)]
    rows.append(run(model, image, work / "out_tta", ["--tile", str(args.tile), "--tta", "flip", *extra], args.threads))
    import torch

    torch.set_num_threads(args.threads)
    command = "python benchmarks/panoptic_large.py " + " ".join(sys.argv[1:])
    text = (f"\n## Panoptic prediction of a {args.width}x{args.height} image, tiled\n\n"
            f"From `benchmarks/panoptic_large.py`: `pixelwise predict` in a child process, peak RSS of that "
            f"process. Model: {'`' + args.model + '`' if args.model else 'the synthetic recipe architecture, random weights'}. "
            f"CPU: {describe_cpu()} (load average {os.getloadavg()[0]:.1f} at the end). "
            f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC. Command: `{command.strip()}`.\n\n"
            "| options | wall s | peak RSS MB (whole process) | segments | thing instances |\n|---|---|---|---|---|\n")
    for r in rows:
        text += f"| `{r['options']}` | {r['wall_s']:.0f} | **{r['peak_rss_mb']:.0f}** | {r['segments']} | {r['instances']} |\n"
    print(text)
    if not args.no_append:
        with Path(__file__).with_name("RESULTS.md").open("a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
