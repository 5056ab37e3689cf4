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


def write_index_png(path: str | Path, mask: np.ndarray, palette: list[tuple[int, int, int]] | None = None) -> None:
    """Write an (H, W) label map as a palette PNG (values must fit in 0..255)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mask.min(initial=0) < 0 or mask.max(initial=0) > 255:
        raise ValueError(f"{path}: label values must lie in 0..255 for an index PNG")
    img = Image.fromarray(mask.astype(np.uint8), mode="P")
    flat = [0] * 768
    for i, color in enumerate(palette or []):
        flat[3 * i:3 * i + 3] = list(color)
    img.putpalette(flat)
    tmp = path.with_name(path.name + ".tmp")
    img.save(tmp, format="PNG")
    tmp.replace(path)


def list_images(folder: Path) -> list[Path]:
    """Image files in a folder, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
