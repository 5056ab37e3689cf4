"""Intensity windows: a medical volume's values (CT Hounsfield units, MR intensities) -> uint8 slices.

A window is chosen by a reader option `window=`:

    percentile (default)   per volume: the 0.5th and 99.5th percentiles of its voxels map to 0 and 255
    ct_soft | ct_lung | ct_bone | ct_brain   CT presets (centre/width in HU): 40/400, -600/1500, 400/1800, 40/80
    "C,W" or [C, W]        an explicit centre and width (in the volume's units, HU for CT)
    file                   DICOM only: the series' own WindowCenter / WindowWidth (first value, first slice)

A centre/width window follows the DICOM standard's linear VOI LUT (PS3.3 C.11.2.1.2.1, as
pydicom.pixels.apply_windowing): x <= c - 0.5 - (w - 1) / 2 -> 0; x > c - 0.5 + (w - 1) / 2 -> 255; else
((x - (c - 0.5)) / (w - 1) + 0.5) * 255; then rounded half up to uint8.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pixelwise.errors import DataError

PRESETS: dict[str, tuple[float, float]] = {
    "ct_soft": (40.0, 400.0),
    "ct_lung": (-600.0, 1500.0),
    "ct_bone": (400.0, 1800.0),
    "ct_brain": (40.0, 80.0),
}
PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class Window:
    """kind: "percentile", "fixed" (centre, width set) or "file" (the DICOM file's own, resolved per volume)."""

    kind: str
    centre: float | None = None
    width: float | None = None

    def spelling(self) -> str:
        return f"{self.centre:g},{self.width:g}" if self.kind == "fixed" else self.kind


def parse_window(value, where: str = "option window") -> Window:
    """'ct_soft' / '40,400' / [40, 400] / 'percentile' / 'file' / None (percentile) -> Window; else a DataError."""
    if value is None or value == "percentile":
        return Window("percentile")
    if value == "file":
        return Window("file")
    if isinstance(value, str) and value in PRESETS:
        return fixed_window(*PRESETS[value], where=where)
    parts = value.split(",") if isinstance(value, str) else value
    try:
        centre, width = (float(v) for v in parts)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {value!r} is not a window (one of percentile, file, {', '.join(PRESETS)}, "
                        f"or CENTRE,WIDTH e.g. 40,400)") from None
    return fixed_window(centre, width, where)


def fixed_window(centre: float, width: float, where: str = "option window") -> Window:
    if not (np.isfinite(centre) and np.isfinite(width) and width >= 1):
        raise DataError(f"{where}: window centre {centre:g}, width {width:g}: the width must be >= 1 and both finite")
    return Window("fixed", float(centre), float(width))


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """float (...) values -> uint8 (...) through a resolved window ("percentile" or "fixed")."""
    x = np.asarray(values, np.float64)
    if window.kind == "percentile":
        lo, hi = np.percentile(x, PERCENTILES) if x.size else (0.0, 0.0)
        y = np.zeros_like(x) if hi <= lo else (x - lo) / (hi - lo) * 255.0
    elif window.kind == "fixed":
        c, w = window.centre, window.width
        y = ((x - (c - 0.5)) / max(w - 1.0, 1e-12) + 0.5) * 255.0
        y = np.where(x <= c - 0.5 - (w - 1) / 2, 0.0, np.where(x > c - 0.5 + (w - 1) / 2, 255.0, y))
    else:
        raise DataError(f"window '{window.kind}' must be resolved to a centre and width before it applies")
    return np.floor(np.clip(y, 0.0, 255.0) + 0.5).astype(np.uint8)
