"""Train every architecture family briefly on CamVid with the same budget and score it on val.

    python benchmarks/camvid_families.py --data ../shared/data/camvid --minutes 3 [--only segnet,deeplabv3]

Each family uses its recipe in configs/camvid/ (same data pipeline for all: half resolution, random
scale, 160x160 crops, median-frequency class weights) with `train.time_limit_min` overridden to the
common budget; the model is then scored at full resolution on the 101 val images with `pixelwise eval`.
Prints a table and appends it to benchmarks/RESULTS.md with the machine.
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ["fcn8s", "unet", "segnet_basic", "segnet", "deeplabv1", "deeplabv2", "deeplabv3", "deeplabv3plus",
            "fastfcn", "segmenter", "lraspp", "fastscnn", "bisenetv2", "ddrnet", "pidnet"]


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "camvid"))
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--only", default="")
    ap.add_argument("--out", default=str(ROOT / "runs" / "families"))
    args = ap.parse_args()
    from pixelwise.hardware import describe_cpu

    exe = [sys.executable, "-m", "pixelwise"]
    rows = []
    for name in (args.only.split(",") if args.only else FAMILIES):
        out = Path(args.out) / name
        if not (out / "best" / "config.json").is_file():
            run(exe + ["train", f"configs/camvid/{name}.yaml", f"data.root={args.data}",
                       f"train.time_limit_min={args.minutes}", "train.val_every=1000", "--out", str(out),
                       "--no-report"])
        scores_path = out / "val_scores.json"
        run(exe + ["eval", str(out / "best"), "--data", f"camvid:{args.data}", "--split", "val",
                   "--precision", "fp32", "--json", str(scores_path)])
        scores = json.loads(scores_path.read_text())
        log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        rows.append((name, len(log), sum(r["seconds"] for r in log) / 60,
                     sum(r["images_per_s"] for r in log) / len(log), scores["miou"], scores["pixel_acc"]))
        print(rows[-1], flush=True)
    head = ["model", "epochs", "train min", "train img/s", "val mIoU", "val pixel acc"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, ep, mins, ips, miou, acc in rows:
        lines.append(f"| {name} | {ep} | {mins:.1f} | {ips:.1f} | {miou:.4f} | {acc:.4f} |")
    table = "\n".join(lines)
    print(table)
    with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
        f.write(f"\n## CamVid, every family trained {args.minutes} min from scratch ({datetime.date.today()})\n\n"
                f"Machine: {describe_cpu()}. Command: `python benchmarks/camvid_families.py --minutes {args.minutes}`."
                " Scored at full resolution (480x360) on the 101 val images.\n\n" + table + "\n")


if __name__ == "__main__":
    main()
