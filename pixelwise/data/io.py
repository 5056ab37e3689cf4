"""Reading and writing images and label maps, with errors that name the file.

One image loader for every entry point (training, eval, predict, classic, the server): `decode_image` takes a
path or uploaded bytes and
- checks the size the header declares before any pixel is decoded (a decompression bomb, a small file that
  claims 100000 x 100000 pixels, is refused at once: `ImageTooLarge`, a DataError) against `max_pixels`;
- decodes now, so a truncated file fails here (and not inside a DataLoader worker);
- applies the EXIF orientation (a phone photo is read upright; masks get the same treatment, so they stay
  aligned with their images);
- turns every mode into uint8 RGB, 16-bit and float greyscale scaled by their maximum (not clipped at 255);
- reads the first frame of a multi-page TIFF or animated image and says so (a warning naming the file).
Masks are read as class-index maps: a palette ('P') or greyscale ('L'/'I') PNG gives its values directly.
"""
from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pixelwise.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
RASTER_SUFFIXES = (".tif", ".tiff", ".npy")  # read with their bands and dtype by pixelwise.data.raster
# the image files of a folder dataset: IMAGE_SUFFIXES (what read_image decodes) and .npy arrays; readers that
# only decode with read_image (predict, classic, camvid...) keep listing IMAGE_SUFFIXES
DATASET_SUFFIXES = (*IMAGE_SUFFIXES, ".npy")
MAX_PIXELS = 2**30  # the largest width x height read by default (a 32768 x 32768 image: 3 GiB as RGB)
# PIL's own bomb guard raises past 2 x MAX_IMAGE_PIXELS; ours checks the header first, at MAX_PIXELS
Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, MAX_PIXELS // 2)


class ImageTooLarge(DataError):
    """The image's declared size is over the pixel limit."""


def _declared_size(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) from a PNG, GIF or BMP header, for a clear message where PIL refuses the
    file outright (it does so for zero-size images)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        return ("PNG", *struct.unpack(">II", data[16:24]))
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return ("GIF", *struct.unpack("<HH", data[6:10]))
    if data[:2] == b"BM" and len(data) >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        return ("BMP", w, abs(h))
    return None


def open_image(source: str | Path | bytes, where: str | None = None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A decoded, upright PIL image of a path or bytes, checked as the module docstring says. `where`
    names the source in errors (default: the path)."""
    if isinstance(source, (bytes, bytearray)):
        where = where or "the upload"
        if not source:
            raise DataError(f"{where}: the file is empty (0 bytes)")
        head, stream = bytes(source[:64]), io.BytesIO(source)
    else:
        path = Path(source)
        where = where or str(path)
        if not path.is_file():
            raise DataError(f"{where}: file not found")
        with open(path, "rb") as f:
            head = f.read(64)
        if not head:
            raise DataError(f"{where}: the file is empty (0 bytes)")
        stream = path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(stream)
    except Image.DecompressionBombError as exc:
        declared = _declared_size(head)
        size = f"{declared[1]}x{declared[2]} = {declared[1] * declared[2]} pixels" if declared else str(exc)
        raise ImageTooLarge(f"{where}: image too large: {size}, over the limit of {max_pixels}") from None
    except UnidentifiedImageError:
        declared = _declared_size(head)
        if declared and 0 in declared[1:]:
            raise DataError(f"{where}: zero-size image (its {declared[0]} header says "
                            f"{declared[1]}x{declared[2]})") from None
        raise DataError(f"{where}: not an image (the format of this file is not known; it starts "
                        f"{head[:8]!r})") from None
    except Exception as exc:  # noqa: BLE001 - PIL's parsers raise KeyError, struct.error... on hostile bytes
        raise DataError(f"{where}: truncated or corrupt image: its header cannot be read "
                        f"({_reason(exc)})") from None
    w, h = img.size
    if w <= 0 or h <= 0:
        raise DataError(f"{where}: zero-size image ({w}x{h})")
    if w * h > max_pixels:
        raise ImageTooLarge(f"{where}: image too large: {w}x{h} = {w * h} pixels, over the limit of {max_pixels}")
    try:
        frames = getattr(img, "n_frames", 1)  # counting seeks through every frame's header
        img.seek(0)
    except Exception as exc:  # noqa: BLE001 - as above: a later frame's header is broken
        raise DataError(f"{where}: truncated or corrupt image ({img.format or 'unknown format'} {w}x{h}): a "
                        f"later frame cannot be read ({_reason(exc)})") from None
    if frames > 1:
        warnings.warn(f"{where}: {frames} frames (a multi-page or animated image); only the first is read",
                      stacklevel=3)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
            img = ImageOps.exif_transpose(img)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"{where}: image too large ({exc})") from None
    except MemoryError:
        raise ImageTooLarge(f"{where}: not enough memory to decode this {img.format or 'unknown format'} "
                            f"{w}x{h} image") from None
    except Exception as exc:  # noqa: BLE001 - a decoder's own errors on a damaged file
        raise DataError(f"{where}: truncated or corrupt image ({img.format or 'unknown format'} {w}x{h}): "
                        f"{_reason(exc)}") from None
    return img


def _reason(exc: BaseException) -> str:
    """One line for a decoder's exception: its message, or its type where it has none."""
    text = " ".join(str(exc).split())[:200]
    return text or type(exc).__name__


def to_rgb(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> uint8 (H, W, 3); 16-bit and float greyscale are scaled by their maximum."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        grey = np.asarray(img, dtype=np.float64)
        top = grey.max(initial=0)
        grey = (grey * (255.0 / top) if top > 255 else grey).clip(0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)


def decode_image(source: str | Path | bytes, where: str | None = None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A path or image bytes -> uint8 (H, W, 3) RGB, upright; DataError (ImageTooLarge past `max_pixels`)."""
    arr = to_rgb(open_image(source, where, max_pixels))
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{where or source}: zero-size image")
    return np.ascontiguousarray(arr)


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as uint8 (H, W, 3) RGB (see `decode_image`)."""
    return decode_image(Path(path), max_pixels=max_pixels)


def _open(path: Path) -> Image.Image:
    """A mask file, decoded and upright (EXIF), with the image checks."""
    return open_image(path)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a class-index mask (palette or greyscale PNG) as int64 (H, W)."""
    path = Path(path)
    img = _open(path)
    if img.mode in ("RGB", "RGBA"):
        raise DataError(f"{path}: mask is {img.mode}-coded, expected an index (palette or greyscale) PNG;"
                        " use the 'colormask' format for colour-coded masks")
    if img.mode not in ("P", "L", "I", "I;16", "1"):
        try:
            img = img.convert("L")
        except ValueError:
            raise DataError(f"{path}: a {img.mode} image cannot be read as a mask; expected an index (palette "
                            "or greyscale) image") from None
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
