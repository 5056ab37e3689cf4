"""Draw the U-Net paper's weight map (arXiv 1505.04597, eq. 2; `pixelwise.tasks.semantic.weightmap`) on one
DSB 2018 image (objects: its nucleus instances) and one ISBI 2012 slice (objects: the cells, the connected
regions between membranes), and time it per image.

    python benchmarks/weight_map_figures.py              # writes docs/weightmap_dsb.png, docs/weightmap_isbi.png

Each figure: the image, the objects, and the weight map w(x) (w_c = 1, w0 = 10, sigma = 5: the recipe's
settings) on a log colour scale, so the thin background gaps between touching objects stand out.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def figure(image, objects, weights, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    axes[0].imshow(image, cmap="gray" if image.ndim == 2 else None)
    axes[0].set_title("image")
    rng = np.random.default_rng(0)
    colours = rng.uniform(0.2, 1.0, (int(objects.max()) + 1, 3))
    colours[0] = 0
    axes[1].imshow(colours[objects])
    axes[1].set_title(f"objects ({int(objects.max())})")
    im = axes[2].imshow(weights, cmap="magma", norm=LogNorm(vmin=max(weights.min(), 0.5), vmax=weights.max()))
    axes[2].set_title("weight map w(x), log scale")
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(ROOT / "docs"))
    args = ap.parse_args()
    from pixelwise.data.formats import open_dataset
    from pixelwise.tasks.semantic import weightmap as wm

    data, out = Path(args.data), Path(args.out)
    dsb = open_dataset(f"dsb:{data / 'dsb2018_stage1_test_nuclei'}", "train")
    isbi = open_dataset(f"folder:{data / 'isbi2012_membrane'}", "all", classes=["membrane", "cell"], remap={255: 1})
    # a DSB image with many touching nuclei: the one whose instances leave the most 1-3 px gaps
    picks = []
    for i in range(min(len(dsb), 40)):
        s = dsb[i]
        if s.instances is not None and len(s.instances.masks) >= 10:
            picks.append((len(s.instances.masks), i))
    s = dsb[max(picks)[1] if picks else 0]
    for name, sample, objects in [
            ("dsb", s, wm.objects_from_instances(s.instances.masks)),
            ("isbi", isbi[0], None)]:
        if objects is None:
            objects = wm.objects_from_components(sample.semantic, background=0)
        t0 = time.perf_counter()
        w = wm.unet_weight_map(sample.semantic, objects, None, 10.0, 5.0)
        ms = (time.perf_counter() - t0) * 1000
        h, wd = objects.shape
        figure(sample.image, objects, w, f"{name}: {sample.name[:12]} ({wd}x{h}), {int(objects.max())} objects, "
               f"max weight {w.max():.1f}", out / f"weightmap_{name}.png")
        print(f"{name}: {sample.name} {wd}x{h}, {int(objects.max())} objects, weight map {ms:.0f} ms, "
              f"max {w.max():.2f}, mean {w.mean():.3f} -> {out / f'weightmap_{name}.png'}")


if __name__ == "__main__":
    main()
