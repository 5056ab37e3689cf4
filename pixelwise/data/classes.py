"""Class names and colour palettes that travel with datasets and saved models."""
from __future__ import annotations

Color = tuple[int, int, int]


def default_palette(n: int) -> list[Color]:
    """The PASCAL VOC bit-interleaved palette, extended to n colours (distinct and deterministic)."""
    palette = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette.append((r, g, b))
    return palette


def read_class_file(path) -> list[str]:
    """Class names, one per line (UTF-8 text); blank lines and '#' comments skipped; duplicates refused."""
    from pathlib import Path

    from pixelwise.errors import DataError

    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DataError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}); save it as UTF-8") from None
    names = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(f"{path}: duplicate class names {duplicates}")
    return names
