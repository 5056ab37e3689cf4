"""Train and score the dataset recipes of configs/ and print one table per dataset.

    python benchmarks/recipes.py [--only camvid_best,landcover] [--data ../shared/data]

Each row trains its recipe with the budget written in the file (skipped when RUN_DIR/best already
exists), scores the best model with `pixelwise eval` on the recipe's validation split at full label
resolution, and reports epochs, training minutes (time inside the training loop, from metrics.jsonl),
val mIoU and pixel accuracy with the command that reproduces it. Appends the tables to
benchmarks/RESULTS.md with the machine.
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name: (dataset title, recipe, extra overrides, eval spec (FORMAT:DIR under --data), split, run dir)
RECIPES = {
    "camvid_best": ("CamVid val (101 images)", "configs/camvid/best.yaml", [], "camvid:camvid", "val",
                    "runs/camvid_best"),
    "camvid_best_scratch": ("CamVid val (101 images)", "configs/camvid/best.yaml", ["model.pretrained=null"],
                            "camvid:camvid", "val", "runs/camvid_best_scratch"),
    "camvid_unet": ("CamVid val (101 images)", "configs/camvid/unet.yaml", [], "camvid:camvid", "val",
                    "runs/camvid_unet"),
    "isbi": ("ISBI 2012 membranes, slices 19-24", "configs/isbi/unet.yaml", [], "folder:isbi2012_membrane",
             "all[18:]", "runs/isbi_unet"),
    "landcover": ("Dubai land cover, Tile 8 (7 images)", "configs/landcover/unet.yaml", [],
                  "colormask:dubai_aerial_landcover", "all[51:]", "runs/landcover_unet"),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    from pixelwise.config import load_config
    from pixelwise.hardware import describe_cpu

    exe = [sys.executable, "-m", "pixelwise"]
    tables: dict[str, list[str]] = {}
    for name in (args.only.split(",") if args.only else RECIPES):
        title, recipe, extra, spec, split, run = RECIPES[name]
        fmt, sub = spec.split(":", 1)
        data_root = str(Path(args.data) / sub)
        run_dir = ROOT / run
        train_cmd = ["train", recipe, f"data.root={data_root}", *extra, "--out", run]
        if not (run_dir / "best" / "config.json").is_file():
            subprocess.run(exe + train_cmd, check=True, cwd=ROOT)
        scores_path = run_dir / "val_full.json"
        if not scores_path.is_file():
            subprocess.run(exe + ["eval", f"{run}/best", "--data", f"{fmt}:{data_root}", "--split", split,
                                  "--precision", "fp32", "--json", str(scores_path)], check=True, cwd=ROOT)
        scores = json.loads(scores_path.read_text())
        log = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        cfg = load_config(ROOT / recipe, [f"data.root={data_root}", *extra])
        model = cfg.model.name + (f" + {cfg.model.encoder}" if cfg.model.encoder else "")
        model += " (ImageNet, PyPI)" if cfg.model.pretrained else " (from scratch)"
        minutes = sum(r["seconds"] for r in log) / 60
        cmd = "pixelwise " + " ".join(train_cmd).replace(str(Path(args.data)), "DATA")
        tables.setdefault(title, []).append(
            f"| `{recipe}`{' ' + ' '.join(extra) if extra else ''} | {model} | {cfg.train.time_limit_min:g} "
            f"| {len(log)} | {minutes:.1f} | {scores['miou']:.4f} | {scores['pixel_acc']:.4f} | `{cmd}` |")
    head = ("| recipe | model | budget (CPU min) | epochs | train min | val mIoU | val pixel acc | command |\n"
            "|---|---|---|---|---|---|---|---|")
    text = "\n\n".join(f"### {title}\n\n{head}\n" + "\n".join(rows) for title, rows in tables.items())
    print(text)
    with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
        f.write(f"\n## Dataset recipes ({datetime.date.today()})\n\nMachine: {describe_cpu()}. Command: "
                "`python benchmarks/recipes.py`. Budgets are training time (train.time_limit_min); scores from "
                "`pixelwise eval` at full label resolution. DATA = ../shared/data.\n\n" + text + "\n")


if __name__ == "__main__":
    main()
