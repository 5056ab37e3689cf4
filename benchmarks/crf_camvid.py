"""The dense CRF's effect on a trained model: mIoU and accuracy near boundaries, with and without it.

    python benchmarks/crf_camvid.py runs/families/deeplabv1/best --data camvid:../shared/data/camvid

For each CRF setting (none, the default, DeepLab v1's), predicts every val image at full resolution,
refines the softmax with `pixelwise.postprocess.crf`, and scores mIoU, pixel accuracy and the boundary
band ("trimap") accuracy at 2/5/10 px (`pixelwise.metrics.boundary`). Prints a table and appends it to
benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import torch

from pixelwise.data.formats import open_dataset
from pixelwise.data.transforms import normalize_image
from pixelwise.hardware import describe_cpu
from pixelwise.inference.predictor import Predictor
from pixelwise.metrics.boundary import BoundaryAccumulator
from pixelwise.metrics.semantic import ConfusionMatrix
from pixelwise.postprocess.crf import CRFConfig, crf_refine_logits

SETTINGS = {"none": None, "default": CRFConfig(), "deeplab_v1": CRFConfig.deeplab_v1()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    ds = open_dataset(args.data, args.split)
    predictor = Predictor.from_dir(args.model_dir, device="cpu", precision="fp32", tta=None, crf=None)
    n = predictor.num_classes
    cms = {k: ConfusionMatrix(n) for k in SETTINGS}
    bands = {k: BoundaryAccumulator(n) for k in SETTINGS}
    seconds = {k: 0.0 for k in SETTINGS}
    count = len(ds) if args.limit is None else min(args.limit, len(ds))
    for i in range(count):
        sample = ds[i]
        logits = predictor.logits(normalize_image(sample.image, predictor.mean, predictor.std))
        image = torch.from_numpy(sample.image).permute(2, 0, 1)[None]
        for name, cfg in SETTINGS.items():
            t0 = time.perf_counter()
            out = logits if cfg is None else crf_refine_logits(logits, image, cfg)
            seconds[name] += time.perf_counter() - t0
            pred = out.argmax(1)[0]
            cms[name].update(pred, torch.from_numpy(sample.semantic))
            bands[name].update(pred.numpy(), sample.semantic)
    rows = []
    for name in SETTINGS:
        s = cms[name].compute()
        b = bands[name].compute()
        rows.append(f"| {name} | {s['miou']:.4f} | {s['pixel_acc']:.4f} | {b[2]['pixel_acc']:.4f} | "
                    f"{b[5]['pixel_acc']:.4f} | {b[10]['pixel_acc']:.4f} | {1000 * seconds[name] / count:.0f} |")
    head = ("| CRF | mIoU | pixel acc | acc within 2 px of a boundary | 5 px | 10 px | CRF ms/image |\n"
            "|---|---|---|---|---|---|---|")
    table = head + "\n" + "\n".join(rows)
    print(table)
    with open(Path(__file__).resolve().parent / "RESULTS.md", "a") as f:
        f.write(f"\n## Dense CRF on {args.model_dir}, {args.data} [{args.split}], {count} images "
                f"({datetime.date.today()})\n\nMachine: {describe_cpu()}. Command: `python benchmarks/crf_camvid.py "
                f"{args.model_dir} --data {args.data}`\n\n{table}\n")


if __name__ == "__main__":
    main()
