"""An 8000 x 8000 RGB image through DeepLabV3+ with sliding-window inference: wall time and peak RSS.

    python benchmarks/large_image.py                         # resnet18 encoder, tile 1024, overlap 0.25
    python benchmarks/large_image.py --encoder resnet50 --size 8000 --out runs/labels.npy

The prediction runs in a child process so its peak RSS (VmHWM, the whole process: interpreter, torch,
the model, the 192 MB uint8 image, the tile batch and the one-row-of-tiles logit band, the uint8 label
map) is its own. The image is a mosaic of synthetic street scenes, built in place (no float copy).
`Predictor.labels` fills a uint8 label map band by band; with --out the bands go to a .npy file on
disk instead (`Predictor.iter_rows`), and no label map is held at all. Random weights (the memory and
time do not depend on them).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path


def mosaic(size: int, block: int = 500):
    import numpy as np

    from pixelwise.data.synthetic import make_scene

    scenes = [make_scene(seed=s, size=block).image for s in range(4)]
    image = np.empty((size, size, 3), np.uint8)
    for i, y in enumerate(range(0, size, block)):
        for j, x in enumerate(range(0, size, block)):
            tile = scenes[(i + 2 * j) % 4]
            image[y:y + block, x:x + block] = tile[:size - y, :size - x]
    return image


def vm(key: str) -> float:
    return int(re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def child(args) -> dict:
    stages = {"interpreter": vm("VmRSS")}
    import numpy as np
    import torch

    stages["import torch"] = vm("VmRSS")
    torch.set_num_threads(args.threads)
    from pixelwise.data.classes import default_palette
    from pixelwise.inference.predictor import Predictor
    from pixelwise.inference.sliding import make_grid
    from pixelwise.models import create_model

    stages["import pixelwise (timm, torchvision)"] = vm("VmRSS")
    torch.manual_seed(0)
    model = create_model("deeplabv3plus", args.classes, encoder=args.encoder).eval()
    stages["model built (fp32)"] = vm("VmRSS")
    config = {"classes": [f"c{i}" for i in range(args.classes)], "palette": default_palette(args.classes),
              "preprocessing": {}}
    predictor = Predictor(model, config, "cpu", args.precision, tile=args.tile, overlap=args.overlap,
                          tile_batch=args.tile_batch)
    del model
    stages["Predictor ready (fast-path copy; original freed)"] = vm("VmRSS")
    stages["peak while preparing (precision timing)"] = vm("VmHWM")
    image = mosaic(args.size)
    stages["image in memory"] = vm("VmRSS")
    grid = make_grid(args.size, args.size, args.tile, args.overlap, predictor.align)
    rss_ready = vm("VmRSS")
    start = time.perf_counter()
    if args.out:
        labels = np.lib.format.open_memmap(args.out, mode="w+", dtype=np.uint8, shape=image.shape[:2])
        for y0, y1, band in predictor.iter_rows(image):
            labels[y0:y1] = band
        labels.flush()
        counts = None
    else:
        labels = predictor.labels(image)
        counts = np.bincount(labels.ravel(), minlength=args.classes).tolist()
    wall = time.perf_counter() - start
    return {"size": args.size, "encoder": args.encoder, "classes": args.classes, "tile": args.tile,
            "overlap": args.overlap, "tiles": grid.count, "tile_batch": predictor._tile_batch(grid),
            "precision": predictor.precision, "wall_s": wall, "tiles_per_s": grid.count / wall,
            "rss_before_mb": rss_ready, "peak_rss_mb": vm("VmHWM"), "label_counts": counts,
            "streamed_to": args.out, "stages": stages, "rss_after_mb": vm("VmRSS"),
            "file_backed_mb": int(re.search(r"RssFile:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=8000)
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--tile-batch", type=int, default=None, help="tiles per call (default: the Predictor's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--out", help="stream the label map to this .npy file")
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args)))
        return
    cmd = [sys.executable, __file__, "--child"] + sys.argv[1:]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(1)
    r = json.loads(line[7:])
    import torch

    from pixelwise.hardware import describe_cpu

    torch.set_num_threads(args.threads)
    command = "python benchmarks/large_image.py " + " ".join(sys.argv[1:])
    steps = [(k, v) for k, v in r["stages"].items() if not k.startswith("peak")]
    text = (f"\n## Large image: {r['size']}x{r['size']} RGB through DeepLabV3+ ({r['encoder']}), tiled\n\n"
            f"From `benchmarks/large_image.py`. CPU: {describe_cpu()} (shared with other jobs: load average "
            f"{os.getloadavg()[0]:.1f} at the end). Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC. "
            f"Command: `{command.strip()}`.\n\n"
            "| image | model | classes | tile | overlap | tiles | tiles/call | precision | wall s | tiles/s | peak RSS MB "
            "(whole process) | RSS before predict MB | output |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
            f"| {r['size']}x{r['size']} | deeplabv3plus {r['encoder']} | {r['classes']} | {r['tile']} | {r['overlap']} "
            f"| {r['tiles']} | {r['tile_batch']} | {r['precision']} | {r['wall_s']:.0f} | {r['tiles_per_s']:.2f} | **{r['peak_rss_mb']:.0f}** "
            f"| {r['rss_before_mb']:.0f} | {'streamed .npy' if r['streamed_to'] else 'uint8 label map in memory'} |\n"
            "\nWhere the resident set goes (VmRSS after each stage of the same process; "
            f"{r['file_backed_mb']:.0f} MB of the final set is file-backed: shared libraries' pages):\n\n"
            "| stage | RSS MB | added MB |\n|---|---|---|\n"
            + "".join(f"| {k} | {v:.0f} | {v - prev:+.0f} |\n" for (k, v), prev in
                      zip(steps, [0] + [v for _, v in steps][:-1]))
            + f"| peak while preparing (precision timing) | {r['stages']['peak while preparing (precision timing)']:.0f} | |\n"
            f"| peak during the tiled prediction | {r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] - r['stages']['image in memory']:+.0f} |\n"
            f"| after it (label map held) | {r['rss_after_mb']:.0f} | |\n")
    print(text)
    if not args.no_append:
        with Path(__file__).with_name("RESULTS.md").open("a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
