"""A Markdown report of a model on a dataset, for any task: scores, the task's tables and figures, and the
best and worst images (image | truth | prediction, drawn by the task).

`write_report(predictor, dataset, out_dir)` evaluates through `pixelwise.engine.evaluate`, keeps each
image's headline score (`Task.image_score`), draws the best and worst images and writes `report.md`
beside its PNGs and scores.json. A training run adds its curves. Used by `pixelwise train`,
`pixelwise eval --report` and `pixelwise demo`.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from pixelwise.engine.evaluate import run_evaluation
from pixelwise.viz import save_png


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
                 progress: bool = False) -> tuple[Path, dict]:
    """Evaluate `predictor` on `dataset` and write out_dir/report.md (+ PNGs, scores.json). Returns the
    report's path and the scores."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    task = predictor.task
    per_image: list[float] = []

    def keep(index, sample, pred, truth):
        score = task.image_score(pred, truth)
        per_image.append(score if math.isfinite(score) else -math.inf)

    scores = {**run_evaluation(predictor, dataset, progress=progress, on_image=keep), "classes": list(task.classes)}
    (out / "scores.json").write_text(json.dumps(scores, indent=2))
    order = np.argsort(per_image, kind="stable")
    picks = {"worst": order[:examples].tolist(), "best": order[::-1][:examples].tolist()}
    for kind, indices in picks.items():
        rows = []
        for i in indices:
            sample = dataset[i]
            pred, truth, picture = predictor.predict(sample.image), task.truth(sample), predictor.display(sample.image)
            rows.append(np.concatenate([picture, task.overlay(truth, picture, 0.6, legend=False),
                                        task.overlay(pred, picture, 0.6, legend=False)], 1))
        if rows:
            save_png(out / f"examples_{kind}.png", _grid(rows))

    lines = [f"# {title}", "", *(extra_lines or []),
             f"Dataset: `{dataset.name}` ({len(dataset)} images); task: {task.name}; model run as: "
             f"{predictor.describe()}", ""]
    lines += task.report(scores, out)
    if curves and Path(curves).is_file():
        lines += ["", "## Training curves", "", f"![curves]({os.path.relpath(Path(curves).resolve(), out.resolve())})"]
    lines += ["", "## Worst and best images, by their own score (image | truth | prediction)", "",
              "Worst:", "", "![worst](examples_worst.png)", "", "Best:", "", "![best](examples_best.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path, scores
