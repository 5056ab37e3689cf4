"""Classical methods against a small U-Net on the same held-out images (ISBI membranes, DSB nuclei).

    python benchmarks/unet_vs_classical.py [--minutes 4]

Trains configs/isbi/unet.yaml and configs/dsb/unet_foreground.yaml with the given training budget (CPU),
then scores the U-Nets and every classical method (parameters as in benchmarks/classical_scores.py) on the
validation images: foreground IoU and pixel accuracy, and for DSB instance PQ, instances made from the
foreground by the same distance-transform watershed (h=2, specks under 10 px dropped) for every row.
Writes a table to benchmarks/RESULTS.md and overlay figures to docs/unet_vs_classical_{isbi,dsb}.png.
"""
from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from classical_scores import MIN_SIZE, PARAMS, RULES, semantic_row  # noqa: E402

from pixelwise import classical  # noqa: E402
from pixelwise.classical.cli import evaluate_classic  # noqa: E402
from pixelwise.metrics.panoptic import instance_pq, instance_stats  # noqa: E402
from pixelwise.metrics.semantic import confusion  # noqa: E402
from pixelwise.classical._util import remove_small  # noqa: E402
from pixelwise.classical.watershed import split_touching  # noqa: E402
from pixelwise.data.formats import open_dataset  # noqa: E402
from pixelwise.hardware import describe_cpu  # noqa: E402
from pixelwise.inference.predictor import Predictor  # noqa: E402
from pixelwise.viz import overlay, save_png  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SETS = {
    "isbi": dict(config="configs/isbi/unet.yaml", spec=f"folder:{DATA / 'isbi2012_membrane'}", split="all[18:]",
                 options={"classes": ["membrane", "cell"], "remap": {255: 1}}, fg=0),
    "dsb": dict(config="configs/dsb/unet_foreground.yaml", spec=f"dsb:{DATA / 'dsb2018_stage1_test_nuclei'}",
                split="val", options={}, fg=1),
}
SHOW = {"isbi": "multiotsu", "dsb": "li"}  # the best classical row of each set, drawn in the figure


def score_unet(predictor: Predictor, dataset, fg_class: int) -> tuple[dict, list[np.ndarray]]:
    cm = np.zeros((2, 2), np.int64)
    stats, preds = np.zeros((2, 4)), []
    for i in range(len(dataset)):
        sample = dataset[i]
        pred = predictor.predict(sample.image).semantic
        preds.append(pred)
        cm += confusion(pred, sample.semantic, 2)
        if sample.instances is not None:
            fg = remove_small(pred == fg_class, MIN_SIZE)
            truth_ids = np.zeros(pred.shape, np.int32)
            for k, m in enumerate(sample.instances.masks, start=1):
                truth_ids[m] = k
            stats += instance_stats(split_touching(fg, 2.0), truth_ids)
    out = semantic_row(cm, foreground=fg_class)
    if dataset[0].instances is not None:
        out.update(instance_pq(stats))
    return out, preds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--out", default=str(ROOT / "runs" / "unet_vs_classical"))
    args = ap.parse_args()
    lines = []
    for key, s in SETS.items():
        run = Path(args.out) / key
        if not (run / "best" / "config.json").is_file():
            subprocess.run([sys.executable, "-m", "pixelwise", "train", s["config"], f"train.time_limit_min={args.minutes}",
                            "--out", str(run), "--no-report"], check=True, cwd=ROOT)
        dataset = open_dataset(s["spec"], s["split"], **s["options"])
        unet, preds = score_unet(Predictor.from_dir(run / "best", device="cpu", precision="fp32", tta=None, crf=None), dataset, s["fg"])
        rows = [("U-Net (trained " + f"{args.minutes:g} min)", unet)]
        for name, method, params in PARAMS[key]:
            opts = {**params, "rule": RULES[key], "foreground_class": s["fg"], "min_size": MIN_SIZE}
            rows.append((name, evaluate_classic(method, dataset, opts)))
            print(key, rows[-1][0], f"{rows[-1][1]['fg_iou']:.3f}", flush=True)
        lines += [f"\n### {key.upper()} ({len(dataset)} held-out images: {dataset.name})\n",
                  "| method | fg IoU | pixel acc |" + (" PQ (dt-ws) |" if key == "dsb" else ""),
                  "|---|---|---|" + ("---|" if key == "dsb" else "")]
        for name, r in rows:
            lines.append(f"| {name} | {r['fg_iou']:.3f} | {r['pixel_acc']:.3f} |"
                         + (f" {r['pq']:.3f} |" if key == "dsb" else ""))
        figure(key, dataset, preds, s["fg"], s["options"])
    text = "\n".join(lines)
    print(text)
    with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
        f.write(f"\n## Classical methods vs a small U-Net on held-out images ({datetime.date.today()})\n\n"
                f"Machine: {describe_cpu()}. Command: `python benchmarks/unet_vs_classical.py --minutes {args.minutes:g}`."
                f" U-Net: plain, 16 base channels, {args.minutes:g} min of CPU training from scratch.\n{text}\n")


def figure(key: str, dataset, preds, fg_class: int, options) -> None:
    """Two images side by side: image | truth | best classical | U-Net (foreground in colour)."""
    palette = [(255, 60, 60), (0, 0, 0)] if fg_class == 0 else [(0, 0, 0), (255, 200, 0)]
    rows = []
    for i in range(min(2, len(dataset))):
        sample = dataset[i]
        params = next(p for name, _, p in PARAMS[key] if name == SHOW[key])
        labels = classical.segment(sample.image, SHOW[key], **params)
        fg = classical.to_semantic(labels, sample.image, RULES[key])
        cls = np.where(fg.astype(bool), fg_class, 1 - fg_class)
        panels = [sample.image] + [overlay(sample.image, m, palette, 0.55) for m in (sample.semantic, cls, preds[i])]
        rows.append(np.concatenate(panels, 1))
    width = max(r.shape[1] for r in rows)
    grid = np.concatenate([np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows], 0)
    save_png(ROOT / "docs" / f"unet_vs_classical_{key}.png", grid)


if __name__ == "__main__":
    main()
