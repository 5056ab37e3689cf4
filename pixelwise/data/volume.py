"""3-D volumes (NIfTI files, DICOM series) as arrays with their geometry, and their 2-D slices.

A `Volume` is `values` float32 (A0, A1, A2) in the file's voxel order with its `affine` (4x4, voxel index ->
RAS+ millimetres, nibabel's convention). Slicing along `axis` gives 2-D images of the other two axes in
order: axis 2 (the default) gives values[:, :, k], (A0, A1). NIfTI files are read by nibabel
(`pip install 'pixelwise[medical]'`), DICOM series by `pixelwise.data.dicom` (pydicom).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pixelwise.errors import DataError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
MEDICAL_EXTRA = "pip install 'pixelwise[medical]'"


@dataclass
class Volume:
    """values: float32 (A0, A1, A2); affine: float64 (4, 4); window: the file's own (centre, width) or None."""

    values: np.ndarray
    affine: np.ndarray
    path: str
    window: tuple[float, float] | None = None


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def volume_name(path: str | Path) -> str:
    """'scan.nii.gz' -> 'scan'; a DICOM series folder -> its name."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return name


def nibabel():
    try:
        import nibabel as nib
    except ImportError:
        raise DataError(f"NIfTI volumes need nibabel: {MEDICAL_EXTRA}") from None
    return nib


def load_nifti(path: str | Path):
    """The nibabel image of a .nii / .nii.gz file (header read, data not yet); a DataError on a bad file."""
    nib = nibabel()
    try:
        image = nib.load(str(path))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Exception as exc:  # nibabel raises ImageFileError, OSError, EOFError, zlib errors on bad files
        raise DataError(f"{path}: not a readable NIfTI file ({' '.join(str(exc).split())[:160]})") from None
    if len(image.shape) != 3:
        shape = "x".join(map(str, image.shape))
        raise DataError(f"{path}: a {len(image.shape)}-D image ({shape}); a 3-D volume is needed")
    return image


def read_array(image, path, dtype=None) -> np.ndarray:
    """The voxel array of a nibabel image (scaled by the header's slope/intercept unless `dtype` is raw)."""
    try:
        data = np.asanyarray(image.dataobj) if dtype == "raw" else image.get_fdata(dtype=np.float32)
    except Exception as exc:  # a truncated .nii.gz fails here, when the data is decompressed
        raise DataError(f"{path}: NIfTI data unreadable ({' '.join(str(exc).split())[:160]})") from None
    return np.asarray(data)


def read_nifti(path: str | Path) -> Volume:
    """A NIfTI file -> Volume (values float32 with the header's scaling applied)."""
    image = load_nifti(path)
    return Volume(read_array(image, path), np.asarray(image.affine, np.float64), str(path))


def read_labels(path: str | Path, shape: tuple[int, ...]) -> np.ndarray:
    """An integer label volume (.nii[.gz] or .npy) of `shape` -> int64 array; a DataError names the file."""
    if str(path).lower().endswith(".npy"):
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable .npy array ({exc})") from None
    else:
        data = read_array(load_nifti(path), path, dtype="raw")
    if tuple(data.shape) != tuple(shape):
        raise DataError(f"{path}: label volume is {'x'.join(map(str, data.shape))} but its image is "
                        f"{'x'.join(map(str, shape))}")
    if not np.issubdtype(data.dtype, np.integer):
        rounded = np.rint(data)
        if not np.array_equal(rounded, data):
            raise DataError(f"{path}: label volume holds non-integer values (dtype {data.dtype})")
        data = rounded
    return data.astype(np.int64)


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """(3,) voxel spacing along each array axis: the lengths of the affine's first three columns."""
    return np.sqrt((np.asarray(affine, np.float64)[:3, :3] ** 2).sum(axis=0))


def slice_spacing(affine: np.ndarray, axis: int) -> tuple[float, float, float]:
    """Spacing of the stack of slices along `axis`, as (between slices, slice rows, slice columns)."""
    sizes = voxel_sizes(affine)
    return (float(sizes[axis]), *(float(sizes[i]) for i in range(3) if i != axis))


def check_axis(axis, where: str = "option axis") -> int:
    if isinstance(axis, bool) or not isinstance(axis, int) or axis not in (0, 1, 2):
        raise DataError(f"{where}: {axis!r} is not a volume axis (0, 1 or 2)")
    return axis


def take_slice(array: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The 2-D slice `index` of a 3-D array along `axis`, contiguous."""
    return np.ascontiguousarray(np.take(array, index, axis=axis))


def stack_slices(slices: list[np.ndarray], axis: int) -> np.ndarray:
    """Inverse of `take_slice` over every index: 2-D slices -> the 3-D array, slices along `axis`."""
    return np.stack(slices, axis=axis)
