"""`pixelwise predict MODEL_DIR scan.nii.gz --out out/`: a 3-D volume predicted slice by slice into a NIfTI
label volume with the source's geometry.

The volume (a .nii / .nii.gz file, or a DICOM series folder) is read and windowed to uint8 as the model's
training set was (`volume_setting`: the window and axis of its recipe's nifti / dicom reader options), cut
into slices along the axis, and the slices go through the Predictor in batches (`Predictor.outputs`:
precision, tiles, TTA as configured) and `task.decode`. The label maps are stacked back into the source's
voxel order and written as out/<name>.nii.gz: uint8 class ids (uint16 past 255 classes), the source's affine,
and for a NIfTI source its header with the qform and sform (and their codes) of the source; a DICOM series
gets its affine from the series geometry (pixelwise.data.dicom) as qform and sform, code 1 (scanner).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pixelwise.data.formats.volumes import read_volume, windowed
from pixelwise.data.volume import check_axis, is_nifti, load_nifti, nibabel, stack_slices, take_slice, volume_name
from pixelwise.data.window import Window, parse_window
from pixelwise.errors import PixelwiseError

VOLUME_FORMATS = ("nifti", "dicom")
DEFAULT_BATCH = 8


@dataclass(frozen=True)
class VolumeSetting:
    window: Window
    axis: int
    source: str  # where it came from, for the one line predict prints


def is_volume(item: str | Path) -> bool:
    """A NIfTI file name, or a folder holding a DICOM series (.dcm files)."""
    if is_nifti(item):
        return True
    from pixelwise.data.dicom import is_series

    return is_series(item)


def volume_setting(config: dict, window: str | None = None) -> VolumeSetting:
    """The window and axis a model reads volumes with: its recipe's (data.format nifti or dicom: data.options
    window, default percentile, and axis, default 2). `window` (--window) may only restate the recipe's; a
    model trained on other data needs it (its training images' window is unknown here)."""
    data = (config.get("recipe") or {}).get("data") or {}
    if data.get("format") in VOLUME_FORMATS:
        options = data.get("options") or {}
        trained = parse_window(options.get("window"), "the model's recipe data.options.window")
        axis = check_axis(options.get("axis", 2), "the model's recipe data.options.axis")
        if window is not None and parse_window(window, "--window") != trained:
            raise PixelwiseError(f"--window {window}: the model was trained with window {trained.spelling()} "
                                 f"(its recipe's {data['format']} reader); predict with that one")
        return VolumeSetting(trained, axis, f"the model's recipe ({data['format']} reader)")
    if window is None:
        raise PixelwiseError("the model was not trained on nifti: / dicom: volumes, so its intensity window is "
                             "unknown: give --window (percentile, ct_soft, ct_lung, ct_bone, ct_brain or C,W) as "
                             "its training slices were made")
    return VolumeSetting(parse_window(window, "--window"), 2, "--window")


def predict_volume(predictor, image: np.ndarray, axis: int, batch: int = DEFAULT_BATCH,
                   source: str = "volume") -> np.ndarray:
    """uint8 (A0, A1, A2) windowed volume -> int64 label volume of the same shape, slices along `axis`
    predicted `batch` at a time."""
    labels = []
    count = image.shape[axis]
    for start in range(0, count, batch):
        rgb = [predictor.check_image(np.repeat(take_slice(image, axis, k)[..., None], 3, axis=2),
                                     f"{source} slice {k}") for k in range(start, min(start + batch, count))]
        with torch.inference_mode():
            out = predictor.outputs(torch.cat([predictor.normalize(x) for x in rgb]))
        for j in range(len(rgb)):
            pred = predictor.task.decode({k: v[j] for k, v in out.items()})
            if pred.semantic is None:
                raise PixelwiseError(f"{source}: the {predictor.task.name} task gives no label map; a volume is "
                                     "written as one (semantic or panoptic models)")
            labels.append(pred.semantic)
    return stack_slices(labels, axis)


def label_image(labels: np.ndarray, source: str, affine: np.ndarray, num_classes: int):
    """The nibabel image of a label volume: the NIfTI source's header, qform and sform, else `affine`."""
    nib = nibabel()
    dtype = np.uint8 if num_classes <= 256 else np.uint16
    data = labels.astype(dtype)
    if not is_nifti(source):
        out = nib.Nifti1Image(data, affine)
        out.set_qform(affine, code=1)
        out.set_sform(affine, code=1)
        return out
    src = load_nifti(source)
    out = type(src)(data, src.affine, header=src.header.copy())
    out.set_data_dtype(dtype)
    out.header.set_slope_inter(1, 0)
    out.header["cal_min"], out.header["cal_max"] = 0, num_classes - 1
    out.set_qform(src.get_qform(), code=int(src.header["qform_code"]))
    out.set_sform(src.get_sform(), code=int(src.header["sform_code"]))
    return out


@dataclass
class VolumeResult:
    path: Path
    shape: tuple[int, ...]
    skipped: bool = False


def predict_volume_file(predictor, source: str | Path, out_dir: str | Path, setting: VolumeSetting,
                        batch: int | None = None, overwrite: bool = False) -> VolumeResult:
    """Predict one volume file / series folder into out_dir/<name>.nii.gz (skipped when it exists, unless
    overwrite); written atomically (a temporary file renamed)."""
    out_dir = Path(out_dir)
    path = out_dir / f"{volume_name(source)}.nii.gz"
    if path.is_file() and not overwrite:
        return VolumeResult(path, (), skipped=True)
    volume = read_volume(str(source))
    image = windowed(volume, setting.window)
    labels = predict_volume(predictor, image, setting.axis, batch or DEFAULT_BATCH, str(source))
    img = label_image(labels, str(source), volume.affine, predictor.num_classes)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{path.name[:-len('.nii.gz')]}.partial.nii.gz"
    nibabel().save(img, str(tmp))
    os.replace(tmp, path)
    return VolumeResult(path, tuple(labels.shape))
