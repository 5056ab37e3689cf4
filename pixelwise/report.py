"""A Markdown report of a model on a dataset: scores, per-class IoU, confusion matrix, best/worst images.

`write_report(predictor, dataset, out_dir)` evaluates, keeps a per-image mIoU, then draws the best and
worst validation images (image | truth | prediction) and writes `report.md` beside its PNGs. A training
run adds its curves. Used by `pixelwise train`, `pixelwise eval --report` and `pixelwise demo`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from pixelwise.engine.evaluate import evaluate
from pixelwise.metrics.semantic import scores_from_confusion
from pixelwise.viz import overlay, plot_confusion, save_png


def _image_miou(pred: np.ndarray, target: np.ndarray, n: int) -> float:
    keep = target != 255
    idx = target[keep] * n + pred[keep]
    mat = np.bincount(idx, minlength=n * n).reshape(n, n)
    return scores_from_confusion(mat)["miou"]


def _fit(row: np.ndarray, max_width: int = 1800) -> np.ndarray:
    """Shrink an (H, W, 3) uint8 strip to at most max_width pixels wide (box filter), keeping its aspect:
    a grid of 2000-px aerial tiles would otherwise make a 40 MB PNG."""
    h, w = row.shape[:2]
    if w <= max_width:
        return row
    from PIL import Image

    size = (max_width, max(1, round(h * max_width / w)))
    return np.asarray(Image.fromarray(row).resize(size, Image.Resampling.BOX))


def _grid(rows: list[np.ndarray]) -> np.ndarray:
    rows = [_fit(r) for r in rows]
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(padded, 0)


def write_report(predictor, dataset, out_dir: str | Path, title: str = "pixelwise report",
                 curves: str | Path | None = None, examples: int = 3, extra_lines: list[str] | None = None,
                 progress: bool = False) -> Path:
    """Evaluate `predictor` on `dataset` and write out_dir/report.md (+ PNGs, scores.json). Returns the path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_image: list[float] = []
    n = predictor.num_classes

    def keep(images, targets, preds):
        for t, p in zip(targets.numpy(), preds.numpy()):
            per_image.append(_image_miou(p, t, n))

    scores = evaluate(predictor, dataset, on_batch=keep, progress=progress)
    (out / "scores.json").write_text(json.dumps(scores, indent=2))
    plot_confusion(np.array(scores["confusion"]), predictor.classes, out / "confusion.png")
    order = np.argsort(per_image)
    picks = {"worst": order[:examples].tolist(), "best": order[::-1][:examples].tolist()}
    for kind, indices in picks.items():
        rows = []
        for i in indices:
            sample = dataset[i]
            pred = predictor.predict(sample.image).semantic
            rows.append(np.concatenate([sample.image, overlay(sample.image, sample.semantic, predictor.palette, 0.6),
                                        overlay(sample.image, pred, predictor.palette, 0.6)], 1))
        if rows:
            save_png(out / f"examples_{kind}.png", _grid(rows))

    lines = [f"# {title}", ""]
    lines += extra_lines or []
    lines += [f"Dataset: `{dataset.name}` ({len(dataset)} images)", "",
              "| metric | value |", "|---|---|",
              f"| mIoU | {scores['miou']:.4f} |", f"| pixel accuracy | {scores['pixel_acc']:.4f} |",
              f"| mean class accuracy | {scores['mean_acc']:.4f} |", f"| frequency-weighted IoU | {scores['fw_iou']:.4f} |",
              f"| mean Dice | {scores['mean_dice']:.4f} |", "", "## Per-class IoU", "",
              "| class | IoU | accuracy | Dice |", "|---|---|---|---|"]
    for name, iou, acc, dice in zip(predictor.classes, scores["per_class_iou"], scores["per_class_acc"],
                                    scores["per_class_dice"]):
        fmt = (lambda v: "n/a" if v is None else f"{v:.4f}")
        lines.append(f"| {name} | {fmt(iou)} | {fmt(acc)} | {fmt(dice)} |")
    if curves and Path(curves).is_file():
        lines += ["", "## Training curves", "", f"![curves]({os.path.relpath(Path(curves).resolve(), out.resolve())})"]
    lines += ["", "## Confusion matrix (rows: truth, row-normalised)", "", "![confusion](confusion.png)", "",
              "## Worst and best images (image | truth | prediction)", "",
              "Worst:", "", "![worst](examples_worst.png)", "", "Best:", "", "![best](examples_best.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
