"""Extra bands against RGB alone: per-class IoU of the same recipe trained with and without them.

    python benchmarks/multiband.py [--only spectral4,spectral4_rgb] [--data ../shared/data]

Rows, each a recipe with its own budget (trained when RUN_DIR/best is missing, then scored with
`pixelwise eval --precision fp32` on the split named below):
- the multispectral scenes (`spectral`, pixelwise.data.spectral) with 4 bands (blue, green, red, NIR) and with
  13 Sentinel-2 bands, each against the same scenes read as red, green, blue only (`data.bands`): vegetation
  and turf have the same visible colours and differ in NIR and red edge;
- Dubai land cover with excess green derived from the RGB (`configs/landcover/unet_exg.yaml`, 4 channels, the
  Lite0 ImageNet weights' first convolution adapted) against the RGB recipe (`configs/landcover/unet.yaml`).
Prints one table per dataset and appends them to benchmarks/RESULTS.md with the machine.
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPECTRAL = "configs/spectral/unet.yaml"

# name: (table, label, recipe, overrides, eval data, eval options, split, run dir)
ROWS = {
    "spectral4": ("spectral scenes, 4 bands (test split, 24 scenes)", "blue, green, red, NIR", SPECTRAL, [],
                  "spectral:default", ["bands=4"], "test", "runs/spectral4"),
    "spectral4_rgb": ("spectral scenes, 4 bands (test split, 24 scenes)", "red, green, blue only", SPECTRAL,
                      ["data.bands=[red, green, blue]"], "spectral:default", ["bands=4"], "test",
                      "runs/spectral4_rgb"),
    "spectral13": ("spectral scenes, 13 Sentinel-2 bands (test split, 24 scenes)", "B1-B12 (13 bands)", SPECTRAL,
                   ["data.options.bands=13"], "spectral:default", ["bands=13"], "test", "runs/spectral13"),
    "spectral13_rgb": ("spectral scenes, 13 Sentinel-2 bands (test split, 24 scenes)", "B4, B3, B2 only",
                       SPECTRAL, ["data.options.bands=13", "data.bands=[B4, B3, B2]"], "spectral:default",
                       ["bands=13"], "test", "runs/spectral13_rgb"),
    "landcover_rgb": ("Dubai land cover, Tile 8 (7 images)", "RGB (configs/landcover/unet.yaml)",
                      "configs/landcover/unet.yaml", [], "colormask:{data}/dubai_aerial_landcover", [], "all[51:]",
                      "runs/landcover_unet"),
    "landcover_exg": ("Dubai land cover, Tile 8 (7 images)", "RGB + exg (configs/landcover/unet_exg.yaml)",
                      "configs/landcover/unet_exg.yaml", [], "colormask:{data}/dubai_aerial_landcover", [],
                      "all[51:]", "runs/landcover_exg"),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data", help="the shared data folder, relative to the repository")
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    from pixelwise.hardware import describe_cpu

    exe = [sys.executable, "-m", "pixelwise"]
    tables: dict[str, list[tuple[str, dict, list, str]]] = {}
    for name in (args.only.split(",") if args.only else ROWS):
        table, label, recipe, extra, data, options, split, run = ROWS[name]
        data = data.format(data=args.data)
        run_dir = ROOT / run
        overrides = [*extra] + ([f"data.root={Path(data.split(':', 1)[1]).as_posix()}"] if data.startswith("colormask")
                                else [])
        train_cmd = ["train", recipe, *overrides, "--out", run, "--no-report"]
        if not (run_dir / "best" / "config.json").is_file():
            subprocess.run(exe + train_cmd, check=True, cwd=ROOT)
        scores_path = run_dir / f"eval_{split.replace('[', '_').replace(']', '').replace(':', '_')}.json"
        if not scores_path.is_file():
            opts = [x for o in options for x in ("--data-option", o)]
            subprocess.run(exe + ["eval", f"{run}/best", "--data", data, "--split", split, *opts, "--precision",
                                  "fp32", "--json", str(scores_path)], check=True, cwd=ROOT)
        scores = json.loads(scores_path.read_text())
        log = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
        command = " ".join(["pixelwise", *train_cmd])
        tables.setdefault(table, []).append((label, scores, log, command))

    lines = [f"## Extra bands against RGB alone ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC)",
             "", f"From `benchmarks/multiband.py`. CPU: {describe_cpu()}. Scores from `pixelwise eval --precision "
             "fp32`; epochs and minutes from each run's metrics.jsonl; each row trained alone on the machine.", ""]
    for table, rows in tables.items():
        classes = rows[0][1]["classes"]
        lines += [f"### {table}", "", "| input | epochs | train min | mIoU | " + " | ".join(classes) + " |",
                  "|---|---|---|---|" + "---|" * len(classes)]
        for label, scores, log, _ in rows:
            minutes = sum(r.get("seconds", 0) for r in log) / 60
            ious = " | ".join(f"{v:.3f}" if v is not None else "-" for v in scores["per_class_iou"])
            lines.append(f"| {label} | {len(log)} | {minutes:.1f} | {scores['miou']:.4f} | {ious} |")
        lines += [""] + [f"- `{command}`" for *_, command in rows] + [""]
    text = "\n".join(lines)
    print(text)
    with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
        f.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
