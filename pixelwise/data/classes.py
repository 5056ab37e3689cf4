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
    """Class names, one per line; blank lines and '#' comments skipped."""
    from pathlib import Path

    lines = Path(path).read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
