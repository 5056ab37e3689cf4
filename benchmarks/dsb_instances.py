"""DSB 2018 nuclei: Panoptic-DeepLab, Mask2Former and a U-Net + connected components, same split and time budget.

    OMP_NUM_THREADS=1 python benchmarks/dsb_instances.py --data ../shared/data/dsb2018_stage1_test_nuclei \
        --train --minutes 10 --out runs/dsb_bench [--models panoptic,unet,mask2former]

trains (with --train) the recipes of `--models` (configs/dsb/panoptic_deeplab.yaml, unet.yaml, mask2former.yaml)
for `--minutes` each into OUT/NAME (or scores runs already there), then scores each on the val split of the dsb
format (ImageIds sorted, every 4th: 13 images, 39 for training): mask AP / AP50 / AP75 (pycocotools, up to
1000 detections per image), PQ (thing class "nucleus"; background is stuff), the DSB 2018 score (mean over
IoU thresholds 0.5:0.05:0.95 of TP / (TP + FP + FN), averaged over images) and AJI. Writes OUT/results.json
and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"panoptic": ROOT / "configs/dsb/panoptic_deeplab.yaml", "unet": ROOT / "configs/dsb/unet.yaml",
           "mask2former": ROOT / "configs/dsb/mask2former.yaml"}


def train_run(name: str, data: str, minutes: float, out: Path) -> dict:
    from pixelwise.config import load_config
    from pixelwise.engine.trainer import train

    cfg = load_config(RECIPES[name], [f"data.root={data}", f"train.time_limit_min={minutes}"])
    t0 = time.time()
    result = train(cfg, out, progress=False)
    return {"train_minutes": round((time.time() - t0) / 60, 2), "epochs": result.epochs_done,
            "best_epoch": result.best_epoch, f"best_val_{result.best_key}": round(result.best_score, 4)}


def score_run(run: Path, data: str, method: str) -> dict:
    from pixelwise.data.formats import open_dataset
    from pixelwise.engine.evaluate import evaluate

    val = open_dataset(f"dsb:{data}", "val")
    t0 = time.time()
    s = evaluate(run / "best", val, device="cpu", task="panoptic", task_options={"method": method, "max_dets": 1000})
    nucleus = s["per_class"]["nucleus"]
    return {"mask_ap": s["mask_ap"]["ap"], "ap50": s["mask_ap"]["ap50"], "ap75": s["mask_ap"]["ap75"],
            "pq_nucleus": nucleus["pq"], "sq_nucleus": nucleus["sq"], "rq_nucleus": nucleus["rq"], "pq": s["pq"],
            "dsb_score": s["dsb_score"], "aji": s["aji"], "miou": s["miou"], "eval_seconds": round(time.time() - t0, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the DSB folder (dsb format)")
    parser.add_argument("--out", default="runs/dsb_bench")
    parser.add_argument("--train", action="store_true", help="train both models first")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget of each model")
    parser.add_argument("--models", default="panoptic,unet", help=f"comma-separated, of {', '.join(RECIPES)}")
    args = parser.parse_args()
    out = Path(args.out)
    results = {}
    names = [n for n in args.models.split(",") if n]
    unknown = sorted(set(names) - set(RECIPES))
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; known: {', '.join(RECIPES)}")
    for name in names:
        method = "components"  # how a semantic model's foreground splits; the panoptic models group themselves
        entry = train_run(name, args.data, args.minutes, out / name) if args.train else {}
        entry |= score_run(out / name, args.data, method)
        results[name] = entry
        print(name, json.dumps(entry), flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    labels = {"panoptic": "Panoptic-DeepLab (ResNet-10-T)", "unet": "U-Net (ResNet-10-T) + connected components",
              "mask2former": "Mask2Former (ResNet-10-T)"}
    print("\n| model | mask AP | AP50 | AP75 | PQ (nucleus) | DSB score | AJI |\n|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {labels[name]} | {r['mask_ap']:.3f} | {r['ap50']:.3f} | {r['ap75']:.3f} | {r['pq_nucleus']:.3f} | "
              f"{r['dsb_score']:.3f} | {r['aji']:.3f} |")


if __name__ == "__main__":
    main()
