"""Speed of each classical method, in seconds per megapixel, on two real images.

    python benchmarks/classical_speed.py [--data ../shared/data] [--repeats 3] [--methods otsu,slic] [--no-write]

Images: ISBI 2012 slice 0 (512x512 greyscale EM, given as RGB) and a DSB 2018 H&E tile (680x512 colour).
Each method runs once to warm up, then `repeats` times (once only when a run takes over 2 s); the median
time counts, with default parameters (watershed also with surface=distance). CPU time is single-process;
OpenCV and BLAS may use several threads, their counts are printed. The table is printed and written into
benchmarks/RESULTS.md under its own heading (replaced on rerun).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pixelwise import classical  # noqa: E402

HERE = Path(__file__).resolve().parent
HEADING = "## Classical methods: speed per megapixel"
DSB_IMAGE = "0f1f896d9ae5a04752d3239c690402c022db4d72c0d2c087d73380896f72c466"
ROWS = [(m, m, {}) for m in classical.list_methods() if m != "watershed"]
ROWS.insert(classical.list_methods().index("watershed"), ("watershed (distance)", "watershed", {"surface": "distance"}))
ROWS.insert(classical.list_methods().index("watershed"), ("watershed (gradient)", "watershed", {}))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_method(image: np.ndarray, method: str, params: dict, repeats: int) -> float:
    classical.segment(image, method, **params)  # warm-up: imports, caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        classical.segment(image, method, **params)
        times.append(time.perf_counter() - start)
        if times[-1] > 2.0:
            break
    return statistics.median(times)


def environment() -> str:
    import cv2
    import skimage
    import torch

    return (f"CPU: {cpu_model()}, {os.cpu_count()} logical cores (shared with other jobs while measured); "
            f"torch {torch.__version__} with {torch.get_num_threads()} threads, OpenCV {cv2.__version__} with "
            f"{cv2.getNumThreads()} threads, scikit-image {skimage.__version__}, "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default="", help="comma-separated row names (default: all)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args()
    wanted = set(filter(None, args.methods.split(",")))
    isbi = np.asarray(Image.open(args.data / "isbi2012_membrane" / "image" / "0.png").convert("RGB"))
    dsb_dir = args.data / "dsb2018_stage1_test_nuclei" / "stage1_test" / DSB_IMAGE / "images"
    dsb = np.asarray(Image.open(dsb_dir / f"{DSB_IMAGE}.png").convert("RGB"))
    images = {"ISBI 512x512 grey": isbi, f"DSB {dsb.shape[1]}x{dsb.shape[0]} H&E": dsb}
    lines = ["| method | " + " | ".join(f"s/MP {k}" for k in images) + " | MP/s (mean) |",
             "|---|" + "---|" * (len(images) + 1)]
    for name, method, params in ROWS:
        if wanted and name not in wanted:
            continue
        per_mp = [time_method(img, method, params, args.repeats) / (img.shape[0] * img.shape[1] / 1e6)
                  for img in images.values()]
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in per_mp)
                     + f" | {1 / statistics.mean(per_mp):.2f} |")
        print(lines[-1], flush=True)
    env = environment()
    text = (f"{HEADING}\n\nFrom `benchmarks/classical_speed.py` (median of {args.repeats} runs after a warm-up, "
            f"default parameters). {env}.\n\n" + "\n".join(lines))
    print("\n" + env)
    if not args.no_write and not wanted:
        from classical_scores import write_section
        write_section(text, HEADING)


if __name__ == "__main__":
    main()
