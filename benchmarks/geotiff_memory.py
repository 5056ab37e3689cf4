"""A 30000 x 30000 3-band GeoTIFF scene through `pixelwise predict MODEL_DIR scene.tif`, window by window: peak
RSS and wall time of the predicting process.

    python benchmarks/geotiff_memory.py                      # 30000 x 30000, tile 1024, overlap 0.125
    python benchmarks/geotiff_memory.py --size 8000 --no-append

1. The scene is written under a temporary folder in /tmp (deleted at the end) window by window, 512 rows at a
   time, through `pixelwise.data.raster.GeoTiffRows` (so the writer is bounded too): uint8 RGB, a mosaic of the
   synthetic street scenes, tiled 256 x 256, deflate, a made-up UTM CRS and transform, nodata 0 with a nodata
   corner of 1000 x 1000 pixels.
2. A tiny U-Net (random weights, seed 0: the memory and time do not depend on them) is saved as a model dir.
3. The CLI itself predicts the scene in a child process (`python -m pixelwise predict ... --precision fp32`);
   its peak RSS is ru_maxrss of RUSAGE_CHILDREN (the largest child waited for), its wall time measured around
   it. A child before it reports what the CLI holds before any pixel (its imports and the loaded model).
4. The mask is checked window by window: its size, CRS and transform equal the scene's, the nodata corner is
   255 and nothing else is; the class histogram is printed.
"""
from __future__ import annotations

import argparse
import datetime
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROWS = 512  # rows of the scene written at a time
CORNER = 1000  # the nodata corner's side
# What a process holds before any pixel: the CLI's imports (torch, timm, torchvision, rasterio) and the loaded
# model; its VmHWM, printed by a child of its own.
BASELINE = ("import re, sys; from pathlib import Path; import rasterio, pixelwise.cli, pixelwise.inference.geotiff; "
            "from pixelwise.inference.predictor import Predictor; "
            "Predictor.from_dir(sys.argv[1], device='cpu', precision='fp32', tile=1024); "
            "print(int(re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text()).group(1)) / 1024)")


def mosaic_rows(scenes: list[np.ndarray], y0: int, y1: int, width: int, strips: dict) -> np.ndarray:
    """Rows [y0, y1) of a mosaic of the scenes (each (s, s, 3) uint8) -> (3, y1 - y0, width), the nodata corner
    0; `strips` caches the mosaic's rows of scenes, (s, width, 3) each."""
    s = scenes[0].shape[0]
    parts = []
    for i in range(y0 // s, (y1 - 1) // s + 1):
        if i not in strips:
            strips.clear()  # rows go down: the strip above is done
            strips[i] = np.concatenate([scenes[(i + 2 * j) % len(scenes)] for j in range(-(-width // s))],
                                       axis=1)[:, :width]
        top, bottom = max(y0, i * s) - i * s, min(y1, (i + 1) * s) - i * s
        parts.append(strips[i][top:bottom])
    out = np.ascontiguousarray(np.moveaxis(np.concatenate(parts), -1, 0))
    if y0 < CORNER:
        out[:, :CORNER - y0, :CORNER] = 0
    return out


def write_scene(path: Path, size: int) -> float:
    """The synthetic scene (see the module docstring); returns the seconds it took."""
    from pixelwise.data.raster import GeoTiffRows
    from pixelwise.data.synthetic import make_scene

    start = time.perf_counter()
    scenes = [np.maximum(make_scene(seed=s, size=500).image, 1) for s in range(4)]  # 0 is the corner's alone
    meta = {"crs": "EPSG:32633", "transform": [0.5, 0.0, 355_000.0, 0.0, -0.5, 2_780_000.0]}
    strips: dict = {}
    with GeoTiffRows(path, 3, size, size, np.uint8, meta, nodata=0) as out:
        for y0 in range(0, size, ROWS):
            out.write(mosaic_rows(scenes, y0, min(y0 + ROWS, size), size, strips))
    return time.perf_counter() - start


def check_mask(scene: Path, mask: Path, classes: int) -> dict:
    """Size, CRS, transform and nodata of the mask against the scene, read window by window; the histogram."""
    from pixelwise.data.raster import open_raster, read_window

    counts = np.zeros(256, np.int64)
    with open_raster(scene, max_pixels=None) as src, open_raster(mask, max_pixels=None) as got:
        same = (got.width, got.height, got.crs, got.transform) == (src.width, src.height, src.crs, src.transform)
        for y0 in range(0, got.height, 2048):
            labels = read_window(got, [1], y0, 0, 2048, got.width)[..., 0]
            counts += np.bincount(labels.ravel(), minlength=256)
        corner = read_window(got, [1], 0, 0, CORNER + 8, CORNER + 8)[..., 0]
        layout = {"nodata": got.nodata, "compression": got.compression.name if got.compression else None,
                  "blocks": got.block_shapes[0]}
    expected_void = np.zeros_like(corner, bool)
    expected_void[:CORNER, :CORNER] = True
    return {"grid_equal": bool(same), "nodata_exact": bool(np.array_equal(corner == 255, expected_void)),
            "void": int(counts[255]), "classes": counts[:classes].tolist(), **layout}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=30000)
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--overlap", type=float, default=0.125)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    import torch

    import pixelwise as pw
    from pixelwise.data.raster import GDAL_CACHE_MB
    from pixelwise.hardware import describe_cpu

    work = Path(tempfile.mkdtemp(prefix="pixelwise-geotiff-", dir="/tmp"))
    try:
        scene = work / "scene.tif"
        write_s = write_scene(scene, args.size)
        torch.manual_seed(0)
        model = pw.create_model("unet", args.classes, base_channels=2, depth=1)
        model_dir = pw.save_model(model, work / "model", classes=[f"c{i}" for i in range(args.classes)])
        cmd = [sys.executable, "-m", "pixelwise", "predict", str(model_dir), str(scene), "--out", str(work / "out"),
               "--tile", str(args.tile), "--overlap", str(args.overlap), "--precision", "fp32"]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        baseline = subprocess.run([sys.executable, "-c", BASELINE, str(model_dir)], capture_output=True, text=True,
                                  env=env, check=True)
        base_mb = float(baseline.stdout.strip().splitlines()[-1])
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # kB on Linux; the larger child
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(1)
        check = check_mask(scene, work / "out" / "scene.tif", args.classes)
        scene_mb, mask_mb = scene.stat().st_size / 2**20, (work / "out" / "scene.tif").stat().st_size / 2**20
    finally:
        shutil.rmtree(work, ignore_errors=True)
    torch.set_num_threads(args.threads)
    from pixelwise.inference.sliding import make_grid

    grid = make_grid(args.size, args.size, args.tile, args.overlap, int(getattr(model, "stride", 32) or 32))
    raw_gb = args.size * args.size * 3 / 2**30
    command = "python benchmarks/geotiff_memory.py " + " ".join(sys.argv[1:])
    text = (f"\n## GeoTIFF scene: {args.size}x{args.size} RGB predicted window by window (`pixelwise predict`)\n\n"
            f"From `benchmarks/geotiff_memory.py`. CPU: {describe_cpu()} (shared with other jobs: load average "
            f"{os.getloadavg()[0]:.1f} at the end). Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC. "
            f"Command: `{command.strip()}`. The scene (uint8, {raw_gb:.1f} GiB of pixels; {scene_mb:.0f} MiB as a "
            f"deflate GeoTIFF) was written window by window in {write_s:.0f} s; the child process is the CLI itself, "
            "`pixelwise predict MODEL_DIR scene.tif --out OUT`, a U-Net of base_channels 2, depth 1 (random "
            "weights).\n\n"
            "| scene | model | classes | tile | overlap | tiles | precision | wall s (whole CLI process) | MP/s "
            "| peak RSS MB (whole process) | of it before any pixel MB | mask GeoTIFF MiB | CRS + transform equal "
            "| nodata corner exact |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
            f"| {args.size}x{args.size} x3 uint8 | unet (2 ch, depth 1) | {args.classes} | {args.tile} "
            f"| {args.overlap} | {grid.count} | fp32 | {wall:.0f} | {args.size ** 2 / wall / 1e6:.2f} "
            f"| **{peak_mb:.0f}** | {base_mb:.0f} "
            f"| {mask_mb:.1f} "
            f"| {'yes' if check['grid_equal'] else 'NO'} | {'yes' if check['nodata_exact'] else 'NO'} |\n\n"
            f"Mask: {check['compression']}, blocks {check['blocks']}, nodata {check['nodata']:g}; "
            f"class pixels {check['classes']}, void {check['void']} (the {CORNER}x{CORNER} corner). Before any pixel: "
            "the VmHWM of a process that imports what the CLI imports and loads the model; the rest is the windowed "
            f"path's: the blending accumulator of one row of tiles ({args.classes} classes x {args.tile} x "
            f"{grid.padded_w} float32, and its weights: "
            f"{(args.classes + 1) * grid.tile_h * grid.padded_w * 4 / 2**20:.0f} MiB), GDAL's block cache "
            f"(at most {GDAL_CACHE_MB} MiB), a band of logits and the tile batch.\n")
    print(text)
    if not args.no_append:
        with Path(__file__).with_name("RESULTS.md").open("a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
