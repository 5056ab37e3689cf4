"""Does tiled inference agree with one pass? On a trained model and a real validation split.

    python benchmarks/tiling_agreement.py runs/camvid_unet/best --data camvid:../shared/data/camvid
    python benchmarks/tiling_agreement.py MODEL_DIR --data camvid:ROOT --tile 256 --overlap 0.5 --blend linear

For every image of the split: the label map of one pass over the whole image and of sliding-window
inference (tiles of --tile pixels overlapping by --overlap), the share of all pixels where they agree,
and both label maps' mIoU against the ground truth. Target (issue 6): >= 97% agreement with 256-pixel
tiles and overlap 0.5 on CamVid val. Both runs use the same precision (--precision, default fp32, so the
figure measures tiling alone). Appends a row to benchmarks/RESULTS.md unless --no-append.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--data", required=True, help="FORMAT:ROOT, e.g. camvid:../shared/data/camvid")
    parser.add_argument("--split", default="val")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--blend", default="gaussian", choices=["gaussian", "linear"])
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="first N images only")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from tqdm import tqdm

    from pixelwise.data.formats import open_dataset
    from pixelwise.hardware import describe_cpu
    from pixelwise.inference.predictor import Predictor
    from pixelwise.metrics.semantic import ConfusionMatrix

    dataset = open_dataset(args.data, args.split)
    whole = Predictor.from_dir(args.model_dir, device="cpu", precision=args.precision, tta=None, crf=None)
    tiled = Predictor.from_dir(args.model_dir, device="cpu", precision=args.precision, tile=args.tile,
                               overlap=args.overlap, blend=args.blend, tta=None, crf=None)
    if whole.num_classes != dataset.num_classes:
        raise SystemExit(f"model has {whole.num_classes} classes, {dataset.name} has {dataset.num_classes}")
    cms = {k: ConfusionMatrix(whole.num_classes) for k in ("one pass", "tiled")}
    same = total = 0
    worst = (1.0, "")
    n = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    start = time.perf_counter()
    for i in tqdm(range(n), desc="images"):
        sample = dataset[i]
        a = whole.predict(sample.image).semantic
        b = tiled.predict(sample.image).semantic
        agree = int((a == b).sum())
        same, total = same + agree, total + a.size
        worst = min(worst, (agree / a.size, sample.meta.get("name", str(i))))
        target = torch.from_numpy(np.asarray(sample.semantic))
        cms["one pass"].update(torch.from_numpy(a)[None], target[None])
        cms["tiled"].update(torch.from_numpy(b)[None], target[None])
    miou = {k: cm.compute(dataset.classes)["miou"] for k, cm in cms.items()}
    agreement = same / total
    h, w = dataset[0].image.shape[:2]
    grid_note = f"{args.tile} px tiles, overlap {args.overlap}, {args.blend} blend"
    print(f"{n} images ({w}x{h}), {grid_note}: tiled agrees with one pass on {agreement:.4%} of pixels "
          f"(worst image {worst[1]}: {worst[0]:.4%}); mIoU one pass {miou['one pass']:.4f}, tiled {miou['tiled']:.4f}")
    command = "python benchmarks/tiling_agreement.py " + " ".join(sys.argv[1:])
    scale = (f" The model resizes the shorter side to {whole.resize} px first; tiles count input pixels and "
             f"are resized with the image." if whole.resize else "")
    text = (f"\n## Tiled vs one-pass inference on {dataset.name}\n\n"
            f"From `benchmarks/tiling_agreement.py`. Model `{args.model_dir}`, {whole.describe()}.{scale} CPU: "
            f"{describe_cpu()}. Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC. Command: "
            f"`{command}` ({time.perf_counter() - start:.0f} s).\n\n"
            "| images | tiling | pixel agreement | worst image | mIoU one pass | mIoU tiled |\n|---|---|---|---|---|---|\n"
            f"| {n} | {grid_note} | **{agreement:.4%}** | {worst[0]:.4%} ({worst[1]}) | {miou['one pass']:.4f} "
            f"| {miou['tiled']:.4f} |\n")
    if not args.no_append:
        with Path(__file__).with_name("RESULTS.md").open("a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
