"""DICOM series -> `Volume` (pydicom; `pip install 'pixelwise[medical]'`).

A series is one folder of single-frame DICOM files (names ending .dcm, or with no suffix), all of one
SeriesInstanceUID. Slices are ordered by their position along the slice normal (ImagePositionPatient
projected on the cross product of the ImageOrientationPatient direction cosines), else by InstanceNumber.
Stored values become modality values (HU for CT) by RescaleSlope / RescaleIntercept (PS3.3 C.11.1.1.2).

The volume is (rows, columns, slices): slice k of axis 2 is the k-th image of the series as stored. Its
affine maps (row, column, slice) to RAS+ mm: DICOM's patient axes are LPS, so x and y change sign
(the convention of nibabel and dcm2niix).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pixelwise.data.volume import MEDICAL_EXTRA, Volume
from pixelwise.errors import DataError

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima", "")


def pydicom():
    try:
        import pydicom as dicom
    except ImportError:
        raise DataError(f"DICOM series need pydicom: {MEDICAL_EXTRA}") from None
    return dicom


def series_files(folder: Path) -> list[Path]:
    """The candidate DICOM files of a folder (by suffix; hidden files left out), sorted by name."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in DICOM_SUFFIXES)


def is_series(folder: str | Path) -> bool:
    folder = Path(folder)
    return folder.is_dir() and any(p.suffix.lower() in (".dcm", ".dicom", ".ima") for p in series_files(folder))


def _header(path: Path):
    dicom = pydicom()
    try:
        return dicom.dcmread(str(path), defer_size="1 KB")  # large values (pixels) read on use only
    except Exception as exc:  # InvalidDicomError, truncated files
        raise DataError(f"{path}: not a readable DICOM file ({' '.join(str(exc).split())[:160]})") from None


def _floats(ds, key: str, count: int) -> np.ndarray | None:
    value = ds.get(key)
    if value is None:
        return None
    values = np.asarray([float(v) for v in (value if count > 1 else [value])], np.float64)
    return values if len(values) == count else None


def sorted_headers(folder: Path) -> list[tuple[Path, object]]:
    """(path, header) of every slice of the series in `folder`, in slice order; a DataError on an empty
    folder, several series, files without pixel data or two slices at one position."""
    files = series_files(folder)
    if not files:
        raise DataError(f"{folder}: no DICOM files (.dcm) in the series folder")
    headers = [(p, _header(p)) for p in files]
    uids = sorted({str(ds.get("SeriesInstanceUID", "")) for _, ds in headers})
    if len(uids) > 1:
        raise DataError(f"{folder}: holds {len(uids)} DICOM series ({', '.join(u or '(none)' for u in uids[:3])}"
                        f"{' ...' if len(uids) > 3 else ''}); put each series in its own folder")
    for path, ds in headers:
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            raise DataError(f"{path}: DICOM file has no pixel data")
    orient = _floats(headers[0][1], "ImageOrientationPatient", 6)
    positions = [_floats(ds, "ImagePositionPatient", 3) for _, ds in headers]
    if orient is not None and all(p is not None for p in positions):
        normal = np.cross(orient[:3], orient[3:])
        keys = [float(p @ normal) for p in positions]
    else:
        keys = [float(ds.get("InstanceNumber", i)) for i, (_, ds) in enumerate(headers)]
    order = np.argsort(keys, kind="stable")
    ranked = [keys[i] for i in order]
    for a, b, i in zip(ranked, ranked[1:], order[1:]):
        if abs(b - a) < 1e-6:
            raise DataError(f"{headers[i][0]}: two slices of the series share one position ({b:g}); "
                            "is it several series or a repeated file?")
    return [headers[i] for i in order]


def series_shape(folder: Path) -> tuple[int, int, int]:
    """(rows, columns, slices) of a series from its headers alone."""
    headers = sorted_headers(folder)
    ds = headers[0][1]
    return int(ds.Rows), int(ds.Columns), len(headers)


def series_affine(headers: list) -> np.ndarray:
    """(row, column, slice) index -> RAS+ mm of sorted series headers (identity-like when geometry is missing)."""
    first = headers[0][1]
    orient = _floats(first, "ImageOrientationPatient", 6)
    spacing = _floats(first, "PixelSpacing", 2)
    origin = _floats(first, "ImagePositionPatient", 3)
    if orient is None:
        orient = np.array([1.0, 0, 0, 0, 1, 0])
    if spacing is None:
        spacing = np.array([1.0, 1.0])
    if origin is None:
        origin = np.zeros(3)
    row_dir, col_dir = orient[:3], orient[3:]  # along a row (column index grows), along a column (row grows)
    affine = np.eye(4)
    affine[:3, 0] = col_dir * spacing[0]  # row index r moves by PixelSpacing[0] along the column direction
    affine[:3, 1] = row_dir * spacing[1]
    last = _floats(headers[-1][1], "ImagePositionPatient", 3)
    if len(headers) > 1 and last is not None:
        affine[:3, 2] = (last - origin) / (len(headers) - 1)
    else:
        thickness = float(first.get("SpacingBetweenSlices", first.get("SliceThickness", 1.0)) or 1.0)
        affine[:3, 2] = np.cross(row_dir, col_dir) * thickness
    affine[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS -> RAS


def _file_window(ds) -> tuple[float, float] | None:
    centre, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if centre is None or width is None:
        return None
    return _first(centre), _first(width)


def _first(value) -> float:
    """A DS value or the first of a multi-valued one (WindowCenter may list several windows)."""
    try:
        return float(value)
    except TypeError:
        return float(value[0])


def read_series(folder: str | Path) -> Volume:
    """A DICOM series folder -> Volume: values float32 (rows, columns, slices) in modality units (HU)."""
    dicom = pydicom()
    folder = Path(folder)
    headers = sorted_headers(folder)
    slices = []
    for path, _ in headers:
        try:
            ds = dicom.dcmread(str(path))
            pixels = np.asarray(ds.pixel_array, np.float32)
        except Exception as exc:  # compressed data without a decoder, truncated pixel data
            raise DataError(f"{path}: DICOM pixel data unreadable ({' '.join(str(exc).split())[:160]})") from None
        if pixels.ndim != 2:
            raise DataError(f"{path}: {pixels.ndim}-D pixel data (multi-frame or colour); single-frame grey slices "
                            "are read")
        if slices and pixels.shape != slices[0].shape:
            raise DataError(f"{path}: slice is {pixels.shape[1]}x{pixels.shape[0]}, the series' first is "
                            f"{slices[0].shape[1]}x{slices[0].shape[0]} (WxH)")
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        slices.append(pixels * np.float32(slope) + np.float32(intercept))
    return Volume(np.stack(slices, axis=-1), series_affine(headers), str(folder), _file_window(headers[0][1]))
