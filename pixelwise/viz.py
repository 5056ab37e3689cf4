"""Pictures of results: colour masks, overlays with a legend, confusion-matrix heat maps."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pixelwise.constants import IGNORE_INDEX


def colorize(mask: np.ndarray, palette) -> np.ndarray:
    """(H,W) label map -> (H,W,3) uint8 colours; void (255) and unknown labels are black."""
    lut = np.zeros((256, 3), np.uint8)
    lut[:len(palette)] = np.asarray(palette, np.uint8)[:256]
    lut[IGNORE_INDEX] = 0
    return lut[np.clip(mask, 0, 255).astype(np.uint8)]


def overlay(image: np.ndarray, mask: np.ndarray, palette, alpha: float = 0.5) -> np.ndarray:
    """Blend the colour mask over the image (void pixels keep the image)."""
    color = colorize(mask, palette).astype(np.float32)
    out = image.astype(np.float32)
    keep = (mask != IGNORE_INDEX)[..., None]
    out = np.where(keep, (1 - alpha) * out + alpha * color, out)
    return out.clip(0, 255).astype(np.uint8)


def add_legend(image: np.ndarray, classes: list[str], palette, present: np.ndarray | None = None) -> np.ndarray:
    """Append a legend column (swatch + class name) to the right of an image; only `present` ids if given."""
    ids = [i for i in range(len(classes)) if present is None or i in set(np.asarray(present).tolist())]
    font = ImageFont.load_default()
    row, width = 16, 150
    h = max(image.shape[0], row * len(ids) + 8)
    canvas = Image.new("RGB", (image.shape[1] + width, h), (255, 255, 255))
    canvas.paste(Image.fromarray(image), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for k, i in enumerate(ids):
        y = 4 + k * row
        x = image.shape[1] + 6
        draw.rectangle([x, y, x + 12, y + 12], fill=tuple(int(c) for c in palette[i]), outline=(0, 0, 0))
        draw.text((x + 18, y), classes[i][:20], fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write a uint8 (H, W, 3) image as PNG, atomically (a killed run never leaves half a file)."""
    from pixelwise.data.io import png_bytes, write_atomic

    return write_atomic(path, png_bytes(image))


def plot_confusion(mat: np.ndarray, classes: list[str], out: str | Path) -> Path:
    """Row-normalised confusion matrix heat map (rows = truth)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mat = np.asarray(mat, np.float64)
    norm = mat / np.maximum(mat.sum(1, keepdims=True), 1)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.5 * n, 0.8 + 0.45 * n))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)
