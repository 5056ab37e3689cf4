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


def display_rgb(image: np.ndarray, band_names=None) -> np.ndarray:
    """Any dataset image -> uint8 (H, W, 3) to look at: RGB as it is, a raster's red/green/blue bands (or its
    first three) stretched as `BandSpec.composite` does, one band as grey."""
    from pixelwise.data.bands import BandSpec

    if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
        return image
    bands = 1 if image.ndim == 2 else image.shape[2]
    names = band_names if band_names and len(band_names) == bands else None
    return BandSpec.build(names, bands, image.dtype, where="image").composite(image)


def truth_overlay(sample, palette, alpha: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """A Sample's truth drawn over its image -> (uint8 (H, W, 3), class ids shown).

    semantic map: the class colours; instances: each object in its class colour with a white outline, so
    touching objects stay apart; multi-label class masks: every present class blended in turn (overlaps mix)."""
    raster = sample.meta.get("raster") or {}
    image = display_rgb(np.asarray(sample.image), raster.get("band_names"))
    if sample.instances is not None and len(sample.instances):
        out = overlay(image, sample.semantic, palette, alpha) if sample.semantic is not None else image.copy()
        for mask, cls in zip(sample.instances.masks, sample.instances.class_ids):
            colour = np.asarray(palette[int(cls)] if int(cls) < len(palette) else (255, 255, 255), np.float32)
            out[mask] = ((1 - alpha) * out[mask] + alpha * colour).astype(np.uint8)
            inner = mask.copy()
            inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
            out[mask & ~inner] = 255
        return out, np.unique(sample.instances.class_ids)
    if sample.class_masks is not None:
        out = image.copy()
        present = []
        for c, mask in enumerate(np.asarray(sample.class_masks) == 1):
            if mask.any():
                out = overlay(out, np.where(mask, c, IGNORE_INDEX), palette, alpha)
                present.append(c)
        return out, np.asarray(present, np.int64)
    if sample.semantic is not None:
        ids = np.unique(sample.semantic)
        return overlay(image, sample.semantic, palette, alpha), ids[ids != IGNORE_INDEX]
    return image, np.zeros(0, np.int64)


def dataset_grid(samples, classes: list[str], palette, columns: int = 4, cell: int = 256,
                 alpha: float = 0.5) -> np.ndarray:
    """Samples -> one uint8 (H, W, 3) sheet: each image with its truth overlaid (`truth_overlay`), scaled to
    fit a `cell` x `cell` box, its name underneath, and a legend of the classes shown on the right."""
    font = ImageFont.load_default()
    caption = 14
    samples = list(samples)
    rows = max(1, -(-len(samples) // columns))
    cols = max(1, min(columns, len(samples)))
    sheet = Image.new("RGB", (cols * cell, rows * (cell + caption)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    shown: set[int] = set()
    for k, sample in enumerate(samples):
        picture, ids = truth_overlay(sample, palette, alpha)
        shown.update(int(i) for i in ids)
        thumb = Image.fromarray(picture)
        thumb.thumbnail((cell, cell), Image.Resampling.NEAREST)
        x, y = (k % cols) * cell, (k // cols) * (cell + caption)
        top = y + (cell - thumb.height) // 2
        sheet.paste(thumb, (x + (cell - thumb.width) // 2, top))
        name = str(sample.name or k)[:max(4, cell // 6 - 1)]  # the default font is 6 px a character
        draw.text((x + 4, top + thumb.height + 1), name, fill=(0, 0, 0), font=font)
    return add_legend(np.asarray(sheet), classes, palette, present=np.asarray(sorted(shown), np.int64))
