"""Scores of the classical methods on real data: foreground IoU / pixel accuracy on ISBI 2012 membranes and
DSB 2018 nuclei, and instance PQ on DSB nuclei.

    python benchmarks/classical_scores.py [--data ../shared/data] [--limit N] [--methods otsu,kmeans] [--no-write]

- ISBI 2012 (isbi2012_membrane, 24 slices 512x512): foreground = membrane (label 0), which is dark, so every
  method's regions become classes with to_semantic(rule="dark").
- DSB 2018 stage-1 test (dsb2018_stage1_test_nuclei, 52 images): foreground = any nucleus; the images mix
  fluorescence (bright nuclei) and brightfield/H&E (dark nuclei), so rule="auto" (per image, the smaller of the
  bright and dark sides). Instances for PQ: connected components of the foreground ("PQ cc") and the
  foreground split by the distance-transform watershed (h-maxima, h=2 px; "PQ dt-ws"); instances under
  MIN_SIZE pixels are dropped first.
Scores are dataset totals (one confusion matrix, one PQ count over all images). Parameters are fixed per
dataset (the PARAMS table below, chosen on these same images: treat them as tuned, not held-out, numbers).
The table is printed and written into benchmarks/RESULTS.md under its own heading (replaced on rerun);
the rows of full runs are kept in benchmarks/classical_scores.json, so `--methods a,b` refreshes just those.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import measure

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pixelwise import classical  # noqa: E402
from pixelwise.metrics.panoptic import instance_pq, instance_stats  # noqa: E402
from pixelwise.metrics.semantic import confusion, scores_from_confusion  # noqa: E402
from pixelwise.classical._util import remove_small  # noqa: E402
from pixelwise.classical.watershed import split_touching  # noqa: E402

HERE = Path(__file__).resolve().parent
CACHE = HERE / "classical_scores.json"
HEADING = "## Classical methods: scores on ISBI 2012 membranes and DSB 2018 nuclei"



# (row name, method, params) per dataset: method defaults except where a short sweep on these images
# (Gaussian sigma, k / colour space, segment counts) found a clearly better setting.
def _rows(sigma: float, canny_sigma: float, sobel_sigma: float, km: dict, gm: dict) -> list:
    return [
        ("sobel", "sobel", {"sigma": sobel_sigma}), ("scharr", "scharr", {"sigma": sobel_sigma}), ("log", "log", {}),
        ("canny", "canny", {"sigma": canny_sigma}),
        ("otsu", "otsu", {"sigma": sigma}), ("multiotsu", "multiotsu", {"classes": 3, "sigma": sigma}),
        ("adaptive", "adaptive", {"block_size": 101, "sigma": sigma}), ("li", "li", {"sigma": sigma}),
        ("triangle", "triangle", {"sigma": sigma}), ("kmeans", "kmeans", km), ("gmm", "gmm", gm),
        ("meanshift", "meanshift", {}), ("watershed (gradient)", "watershed", {}),
        ("watershed (distance)", "watershed", {"surface": "distance", "sigma": sigma}),
        ("slic", "slic", {"n_segments": 1000}), ("felzenszwalb", "felzenszwalb", {"scale": 50}),
        ("quickshift", "quickshift", {}), ("chan_vese", "chan_vese", {}), ("morph_chan_vese", "morph_chan_vese", {}),
        ("morph_geodesic", "morph_geodesic", {}),
    ]


PARAMS = {"isbi": _rows(2.0, 3.0, 2.0, {"k": 2}, {"k": 2}),
          "dsb": _rows(1.0, 1.0, 2.0, {"k": 3, "space": "rgb"}, {"k": 2, "space": "rgb"})}
MIN_SIZE = 10  # instances below this many pixels are dropped before PQ (specks, not nuclei)
RULES = {"isbi": "dark", "dsb": "auto"}


def load_isbi(root: Path, limit: int | None):
    names = sorted((root / "image").glob("*.png"), key=lambda p: int(p.stem))[:limit]
    for path in names:
        image = np.asarray(Image.open(path).convert("RGB"))
        label = np.asarray(Image.open(root / "label" / path.name))
        yield path.stem, image, (label == 0).astype(np.int64), None  # membrane (label 0) is the foreground


def load_dsb(root: Path, limit: int | None):
    for folder in sorted((root / "stage1_test").iterdir())[:limit]:
        image = np.asarray(Image.open(folder / "images" / f"{folder.name}.png").convert("RGB"))
        instances = np.zeros(image.shape[:2], np.int32)
        for k, mask_path in enumerate(sorted((folder / "masks").glob("*.png")), start=1):
            instances[np.asarray(Image.open(mask_path)) > 0] = k
        yield folder.name[:8], image, (instances > 0).astype(np.int64), instances


def semantic_row(cm: np.ndarray, foreground: int = 1) -> dict:
    """miou, pixel_acc, mean_acc, per_class_iou and the foreground IoU (NaN where absent) of a 2x2 matrix."""
    s = scores_from_confusion(cm)
    fg = s["per_class_iou"][foreground]
    return {k: s[k] for k in ("miou", "pixel_acc", "mean_acc", "per_class_iou")} | {
        "fg_iou": float("nan") if fg is None else fg}


def score(samples, method: str, params: dict, rule: str) -> dict:
    cm = np.zeros((2, 2), np.int64)
    cc, ws, seconds = np.zeros((2, 4)), np.zeros((2, 4)), 0.0
    for _, image, truth, instances in samples:
        start = time.perf_counter()
        fg = classical.to_semantic(classical.segment(image, method, **params), image, rule)
        seconds += time.perf_counter() - start
        cm += confusion(fg, truth, 2)
        if instances is not None:
            fg = remove_small(fg, MIN_SIZE)
            cc += instance_stats(measure.label(fg, connectivity=1), instances)
            ws += instance_stats(split_touching(fg, h=2.0), instances)
    row = semantic_row(cm)
    row["s_per_image"] = seconds / len(samples)
    if samples[0][3] is not None:
        row["pq_cc"], row["pq_ws"] = instance_pq(cc)["pq"], instance_pq(ws)["pq"]
    return row


def params_text(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"


def table(results: dict) -> str:
    lines = ["| method | params (ISBI / DSB) | ISBI membrane IoU | ISBI pixel acc | DSB nuclei IoU | DSB pixel acc "
             "| DSB PQ cc | DSB PQ dt-ws | s/img ISBI | s/img DSB |", "|" + "---|" * 10]
    names = dict.fromkeys(name for key in ("isbi", "dsb") for name, _, _ in PARAMS[key])
    for name in names:
        i, d = results.get("isbi", {}).get(name), results.get("dsb", {}).get(name)
        if not (i or d):
            continue
        f = lambda r, k, fmt=".3f": format(r[k], fmt) if r and k in r else "-"  # noqa: E731
        params = [r["params"] for r in (i, d) if r]
        shown = params[0] if len(set(params)) == 1 else " / ".join(params)
        lines.append(f"| {name} | {shown} | {f(i, 'fg_iou')} | {f(i, 'pixel_acc')} "
                     f"| {f(d, 'fg_iou')} | {f(d, 'pixel_acc')} | {f(d, 'pq_cc')} | {f(d, 'pq_ws')} "
                     f"| {f(i, 's_per_image', '.2f')} | {f(d, 's_per_image', '.2f')} |")
    return "\n".join(lines)


def write_section(text: str, heading: str, path: Path = HERE / "RESULTS.md") -> None:
    """Put `text` (which starts with `heading`) in RESULTS.md: replace that section if present, else append."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    start = old.find(heading)
    if start >= 0:
        end = old.find("\n## ", start + len(heading))
        old = old[:start].rstrip("\n") + ("\n\n" + old[end + 1:] if end >= 0 else "")
    path.write_text(old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data")
    parser.add_argument("--limit", type=int, default=None, help="first N images of each dataset (quick look)")
    parser.add_argument("--methods", default="", help="comma-separated row names (default: all)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md and the cache alone")
    args = parser.parse_args()
    wanted = set(filter(None, args.methods.split(",")))
    keep = not args.no_write and args.limit is None
    datasets = {"isbi": list(load_isbi(args.data / "isbi2012_membrane", args.limit)),
                "dsb": list(load_dsb(args.data / "dsb2018_stage1_test_nuclei", args.limit))}
    # Rows of full runs are kept in CACHE, so a run of a few --methods updates the table without redoing all.
    results = json.loads(CACHE.read_text()) if keep and CACHE.exists() else {}
    for key, samples in datasets.items():
        results.setdefault(key, {})
        for name, method, params in PARAMS[key]:
            if wanted and name not in wanted:
                continue
            row = score(samples, method, params, RULES[key])
            row.update(params=params_text(params), images=len(samples))
            results[key][name] = row
            print(f"{key:5s} {name:22s} IoU {row['fg_iou']:.3f} acc {row['pixel_acc']:.3f}"
                  + (f" PQcc {row['pq_cc']:.3f} PQws {row['pq_ws']:.3f}" if "pq_cc" in row else "")
                  + f"  {row['s_per_image']:.2f} s/img", flush=True)
            if keep:
                CACHE.write_text(json.dumps(results, indent=1) + "\n")
    text = table(results)
    note = (f"{HEADING}\n\nFrom `benchmarks/classical_scores.py` on {len(datasets['isbi'])} ISBI slices and "
            f"{len(datasets['dsb'])} DSB images (dataset totals). Foreground: ISBI = membrane, rule `dark`; "
            "DSB = nuclei, rule `auto` (per image, the smaller of the bright and dark side). PQ cc = connected "
            "components of the foreground; PQ dt-ws = foreground split by distance-transform watershed (h=2); "
            f"both drop instances under {MIN_SIZE} px. Parameters chosen on these same images (no held-out "
            "split). s/img: wall time on 2 shared CPU cores, indicative only.\n\n")
    print("\n" + text)
    if keep:
        write_section(note + text, HEADING)


if __name__ == "__main__":
    main()
