"""Reading and writing images and label maps, with errors that name the file.

Masks are read as class-index maps: a palette ('P') or greyscale ('L'/'I') PNG gives its values directly.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pixelwise.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        img = Image.open(path)
        img.load()  # decode now, so a truncated file fails here and not inside a DataLoader worker
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: unreadable or truncated image ({exc})") from None
    return img


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 (H, W, 3) RGB."""
    path = Path(path)
    img = _open(path)
    if img.mode != "RGB":
        img = img.convert("RGB")
    arr = np.asarray(img, dtype=np.uint8)
    if arr.size == 0:
        raise DataError(f"{path}: image has zero size")
    return arr


def read_mask(path: str | Path) -> np.ndarray:
    """Read a class-index mask (palette or greyscale PNG) as int64 (H, W)."""
    path = Path(path)
    img = _open(path)
    if img.mode in ("RGB", "RGBA"):
        raise DataError(f"{path}: mask is {img.mode}-coded, expected an index (palette or greyscale) PNG;"
                        " use the 'colormask' format for colour-coded masks")
    if img.mode not in ("P", "L", "I", "I;16", "1"):
        img = img.convert("L")
    return np.asarray(img).astype(np.int64)


def read_rgb_mask(path: str | Path) -> np.ndarray:
    """Read a colour-coded mask as uint8 (H, W, 3)."""
    path = Path(path)
    img = _open(path)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def label_dtype(num_classes: int) -> np.dtype:
    """The smallest integer type that holds class ids 0..num_classes-1 and the void label 255."""
    return np.dtype(np.uint8 if num_classes <= 256 else np.int32)


def index_png_bytes(labels: np.ndarray, palette=None) -> bytes:
    """The one index-PNG encoder: (H, W) non-negative class ids -> PNG bytes. Up to 256 values: an 8-bit
    palette PNG (a full 256-entry palette, colours from `palette`, the rest black); up to 65536: a 16-bit
    greyscale PNG. Both are read back as ids by `read_mask`."""
    import io

    labels = np.asarray(labels)
    low, top = int(labels.min(initial=0)), int(labels.max(initial=0))
    if low < 0 or top > 65535:
        raise ValueError(f"index PNG: label values must lie in 0..65535, got {low}..{top}")
    if top > 255:
        img = Image.fromarray(labels.astype(np.uint16))
    else:
        img = Image.fromarray(labels.astype(np.uint8), mode="P")
        flat = np.zeros((256, 3), np.uint8)
        if palette is not None and len(palette):
            colors = np.asarray(palette, np.uint8).reshape(-1, 3)[:256]
            flat[:len(colors)] = colors
        img.putpalette(flat.ravel().tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def png_bytes(image: np.ndarray) -> bytes:
    """uint8 (H, W, 3) RGB (or (H, W) grey) -> PNG bytes."""
    import io

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write bytes to `path` through a temporary sibling and a rename: never a half-written file."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_index_png(path: str | Path, mask: np.ndarray, palette: list[tuple[int, int, int]] | None = None) -> Path:
    """Write an (H, W) label map as an index PNG (see `index_png_bytes`), atomically."""
    try:
        data = index_png_bytes(mask, palette)
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from None
    return write_atomic(path, data)


def list_images(folder: Path) -> list[Path]:
    """Image files in a folder, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
