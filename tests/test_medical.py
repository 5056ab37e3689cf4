"""Medical volumes: the nifti and dicom formats (slices, windows, rescale), volume prediction to NIfTI with the
source's geometry, and per-volume Dice / HD95 (checked against a brute-force reference and MONAI when present)."""
from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli, shared_dataset
from pixelwise.data.formats import open_dataset
from pixelwise.data.window import apply_window, parse_window
from pixelwise.errors import DataError
from pixelwise.metrics.volume import dice, hd95

nib = pytest.importorskip("nibabel")
pydicom = pytest.importorskip("pydicom")

SIDE = 128  # ISBI slices (512 px) are downsampled 4x: a tiny model trains on them in seconds
AFFINE = np.array([[0.0, -0.5, 0.0, 12.0],   # rows run along -y, columns along x, slices along z: spacing
                   [0.5, 0.0, 0.0, -30.0],   # 0.5 x 0.5 x 2.0 mm with a rotation and an origin
                   [0.0, 0.0, 2.0, 7.5],
                   [0.0, 0.0, 0.0, 1.0]])


# ---- HD95 and Dice against references ---------------------------------------------------------------------

def brute_hd95(a: np.ndarray, b: np.ndarray, spacing) -> float:
    """HD95 by definition, independent of the distance transform: surface voxels are mask voxels with a
    6-neighbour outside the mask (or the array); every pairwise distance is computed."""
    def surface(m):
        padded = np.pad(m, 1)
        inner = np.ones_like(m)
        for axis in range(m.ndim):
            for step in (-1, 1):
                inner &= np.roll(padded, step, axis=axis)[tuple(slice(1, -1) for _ in range(m.ndim))]
        return np.argwhere(m & ~inner) * np.asarray(spacing, float)

    sa, sb = surface(a), surface(b)
    d = np.sqrt(((sa[:, None, :] - sb[None, :, :]) ** 2).sum(-1))
    return float(max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95)))


def random_masks(seed: int, shape=(6, 20, 18)):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    a = ndimage.binary_dilation(rng.random(shape) > 0.97, iterations=2)
    b = ndimage.binary_dilation(rng.random(shape) > 0.97, iterations=2)
    return a, b


@pytest.mark.parametrize("seed", range(4))
def test_hd95_matches_the_definition_in_physical_units(seed):
    a, b = random_masks(seed)
    spacing = (2.0, 0.5, 0.7)
    assert hd95(a, b, spacing) == pytest.approx(brute_hd95(a, b, spacing), rel=1e-9)
    assert dice(a, b) == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_hd95_matches_monai():
    monai = pytest.importorskip("monai.metrics")
    torch = pytest.importorskip("torch")
    for seed in range(3):
        a, b = random_masks(10 + seed)
        spacing = (2.0, 0.5, 0.5)
        ref = monai.compute_hausdorff_distance(torch.tensor(a)[None, None].float(), torch.tensor(b)[None, None].float(),
                                               percentile=95, spacing=spacing).item()
        assert hd95(a, b, spacing) == pytest.approx(ref, rel=1e-5)


def test_hd95_of_a_shift_is_the_shift_in_millimetres_and_empty_is_undefined():
    a = np.zeros((10, 10, 10), bool)
    a[2:6, 3:7, 3:7] = True
    b = np.roll(a, 2, axis=0)  # two slices along the 2.0 mm axis
    assert hd95(a, b, (2.0, 0.5, 0.5)) == pytest.approx(4.0)
    assert hd95(a, np.zeros_like(a)) is None and dice(np.zeros_like(a), np.zeros_like(a)) is None


# ---- windows ----------------------------------------------------------------------------------------------

def test_windows_follow_the_dicom_linear_voi_lut():
    hu = np.array([-1024.0, -160.0, 0.0, 40.0, 176.0, 376.0])
    # ct_soft, c=40 w=400: x <= -160 -> 0, x > 239 -> 255, else ((x - 39.5) / 399 + 0.5) * 255 rounded
    # 0 -> 102.256 -> 102; 40 -> 127.82 -> 128; 176 -> 214.74 -> 215
    assert apply_window(hu, parse_window("ct_soft")).tolist() == [0, 0, 102, 128, 215, 255]
    assert parse_window("40,400") == parse_window([40, 400]) == parse_window("ct_soft")
    windowing = pytest.importorskip("pydicom.pixels").apply_windowing
    ds = pydicom.Dataset()
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = -600, 1500, "LINEAR"
    ds.PhotometricInterpretation, ds.BitsStored, ds.PixelRepresentation = "MONOCHROME2", 16, 0
    values = np.linspace(-1400, 300, 97)
    ref = windowing(values.copy(), ds)  # pydicom maps onto 0 .. 2**16 - 1
    ours = apply_window(values, parse_window("ct_lung")).astype(float)
    assert np.abs(ours - ref / 65535 * 255).max() <= 0.5 + 1e-6
    with pytest.raises(DataError, match="not a window"):
        parse_window("soft")


# ---- DICOM ------------------------------------------------------------------------------------------------

def write_series(folder: Path, stored: np.ndarray, uid: str = "1.2.3.4", positions=None, pixel=True,
                 names=None) -> None:
    """stored uint16 (slices, rows, cols) -> one CT file per slice, RescaleSlope 2, RescaleIntercept -1024,
    written in a shuffled name order with InstanceNumbers reversed (the position decides the order)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    n, rows, cols = stored.shape
    positions = positions or [[-20.0, 30.0, 10.0 + 2.5 * k] for k in range(n)]
    names = names or [f"img{(7 * k + 3) % 11:02d}.dcm" for k in range(n)]
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID, ds.InstanceNumber = "CT", uid, n - k
        ds.ImagePositionPatient, ds.ImageOrientationPatient = positions[k], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.8, 0.6], 2.5
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = 2, -1024
        ds.WindowCenter, ds.WindowWidth = 40, 400
        if pixel:
            ds.PixelData = stored[k].astype("<u2").tobytes()
        try:
            ds.save_as(str(folder / names[k]), enforce_file_format=True)  # pydicom 3
        except TypeError:
            ds.save_as(str(folder / names[k]), write_like_original=False)  # pydicom 2.4


STORED = np.array([[[432, 512, 532, 600, 700], [0, 512, 512, 512, 512]],      # HU -160 0 40 176 376; -1024 0 ...
                   [[512, 532, 532, 532, 532], [600, 600, 700, 0, 432]],
                   [[700, 700, 700, 700, 700], [432, 432, 432, 432, 512]]], np.uint16)
# ct_soft by hand (see test_windows_...): 432 -> 0, 512 -> 102, 532 -> 128, 600 -> 215, 700 -> 255, 0 -> 0
BY_HAND = {432: 0, 512: 102, 532: 128, 600: 215, 700: 255, 0: 0}


@pytest.mark.parametrize("window", ["ct_soft", "file", "40,400"])
def test_dicom_series_reads_in_position_order_with_rescale_and_window(tmp_path, window):
    root = tmp_path / "dicom"
    write_series(root / "s1", STORED)
    labels = (STORED.transpose(1, 2, 0) > 600).astype(np.uint8)  # (rows, cols, slices)
    np.save(root / "s1" / "labels.npy", labels)
    (root / "classes.txt").write_text("background\nbright\n")
    ds = open_dataset(f"dicom:{root}", "all", window=window)
    assert len(ds) == 3
    for k in range(3):
        s = ds[k]
        expected = np.vectorize(BY_HAND.get)(STORED[k]).astype(np.uint8)
        assert s.image.dtype == np.uint8 and s.image.shape == (2, 5, 3)
        np.testing.assert_array_equal(s.image[..., 0], expected)
        np.testing.assert_array_equal(s.semantic, STORED[k] > 600)
        assert (s.meta["volume"], s.meta["slice"], s.meta["slices"]) == ("s1", k, 3)
        assert s.meta["spacing"] == pytest.approx((2.5, 0.8, 0.6))
    affine = np.array(ds[0].meta["affine"])  # LPS (-20, 30, 10) -> RAS (20, -30, 10); rows along -y (LPS +y)
    np.testing.assert_allclose(affine[:3, 3], [20, -30, 10])
    np.testing.assert_allclose(affine[:3, :3], np.diag([0.0, 0.0, 2.5]) + [[0, -0.6, 0], [-0.8, 0, 0], [0, 0, 0]])


def test_bad_dicom_folders_give_one_line(tmp_path, capsys):
    mixed = tmp_path / "mixed"
    write_series(mixed, STORED[:2], uid="1.2.3.4")
    write_series(mixed, STORED[:1], uid="1.2.3.5", positions=[[0.0, 0.0, 50.0]], names=["other.dcm"])
    (mixed / "classes.txt").write_text("a\nb\n")
    with pytest.raises(DataError, match="holds 2 DICOM series"):
        open_dataset(f"dicom:{mixed}", "all")
    empty = tmp_path / "nopixels"
    write_series(empty, STORED[:2], pixel=False)
    (empty / "classes.txt").write_text("a\nb\n")
    code, out, err = run_cli(["data", "check", f"dicom:{empty}", "--split", "all"], capsys)
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert code != 0 and "has no pixel data" in (err + out), (out, err)
    assert len(lines) <= 1 and "Traceback" not in err


# ---- NIfTI: train slice-wise, predict the volume, eval per volume ---------------------------------------------

def isbi_volumes(root: Path, data: Path) -> None:
    """Two NIfTI volumes of 6 ISBI slices each (float32 'CT-like' intensities) and their label volumes."""
    pngs = sorted((data / "image").glob("*.png"), key=lambda p: int(p.stem))[:12]
    images, labels = [], []
    for p in pngs:
        images.append(np.asarray(Image.open(p).convert("L").resize((SIDE, SIDE), Image.BILINEAR), np.float32))
        mask = np.asarray(Image.open(data / "label" / p.name).convert("L").resize((SIDE, SIDE), Image.NEAREST))
        labels.append((mask > 127).astype(np.uint8))  # 0 = membrane, 1 = cell
    for d in ("images", "labels"):
        (root / d).mkdir(parents=True)
    for name, part in (("a", slice(0, 6)), ("b", slice(6, 12))):
        vol = np.stack(images[part], axis=-1) * 4.0 - 500.0
        img = nib.Nifti1Image(vol, AFFINE)
        img.set_qform(AFFINE, code=1)
        nib.save(img, str(root / "images" / f"{name}.nii.gz"))
        nib.save(nib.Nifti1Image(np.stack(labels[part], axis=-1), AFFINE), str(root / "labels" / f"{name}.nii.gz"))
    (root / "classes.txt").write_text("membrane\ncell\n")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = shared_dataset("isbi2012_membrane")
    tmp = tmp_path_factory.mktemp("medical")
    root = tmp / "nifti"
    isbi_volumes(root, data)
    recipe = tmp / "recipe.yaml"
    recipe.write_text(f"""data:
  format: nifti
  root: {root}
  options: {{window: percentile, axis: 2, val_every: 2}}
  train_split: train
  val_split: val
  crop_size: 128
  num_workers: 0
model:
  name: unet
  kwargs: {{base_channels: 8, depth: 2}}
train:
  epochs: 25
  batch_size: 3
  optimizer: adamw
  lr: 0.005
  val_every: 25
""")
    return root, recipe, tmp


def test_nifti_slices_carry_the_volume_geometry(trained):
    root, _, _ = trained
    ds = open_dataset(f"nifti:{root}", "val", val_every=2)
    assert len(ds) == 6
    s = ds[4]
    assert (s.meta["volume"], s.meta["slice"], s.meta["name"]) == ("b", 4, "b_0004")
    np.testing.assert_allclose(s.meta["affine"], AFFINE)
    assert s.meta["spacing"] == pytest.approx((2.0, 0.5, 0.5))
    assert s.image.shape == (SIDE, SIDE, 3) and s.image.dtype == np.uint8 and set(np.unique(s.semantic)) <= {0, 1}
    vol = nib.load(str(root / "images" / "b.nii.gz")).get_fdata()
    expected = apply_window(vol, parse_window("percentile"))[:, :, 4]  # one window for the whole volume
    np.testing.assert_array_equal(s.image[..., 0], expected)
    assert len(open_dataset(f"nifti:{root}", "all", axis=0)) == 2 * SIDE


def test_train_predict_and_eval_a_volume(trained, capsys):
    root, recipe, tmp = trained
    run = tmp / "run"
    code, out, err = run_cli(["train", str(recipe), "--out", str(run), "--no-report", "--device", "cpu"], capsys)
    assert code == 0, err[-2000:]
    source = root / "images" / "b.nii.gz"
    code, out, err = run_cli(["predict", str(run / "best"), str(source), "--out", str(tmp / "pred"),
                              "--precision", "fp32", "--device", "cpu", "--batch", "4"], capsys)
    assert code == 0, err[-2000:]
    assert "window percentile, axis 2" in err
    pred = nib.load(str(tmp / "pred" / "b.nii.gz"))
    src = nib.load(str(source))
    np.testing.assert_allclose(pred.affine, src.affine)
    np.testing.assert_allclose(pred.get_qform(), src.get_qform())
    np.testing.assert_allclose(pred.get_sform(), src.get_sform())
    assert int(pred.header["qform_code"]) == 1 and int(pred.header["sform_code"]) == int(src.header["sform_code"])
    labels = np.asanyarray(pred.dataobj)
    assert labels.dtype == np.uint8 and labels.shape == src.shape and set(np.unique(labels)) <= {0, 1}

    series = tmp / "series"  # a DICOM series folder predicts the same way, with the series' geometry
    write_series(series, STORED)
    code, out, err = run_cli(["predict", str(run / "best"), str(series), "--out", str(tmp / "pred"),
                              "--precision", "fp32", "--device", "cpu"], capsys)
    assert code == 0, err[-2000:]
    from pixelwise.data.dicom import read_series

    written = nib.load(str(tmp / "pred" / "series.nii.gz"))
    assert written.shape == (2, 5, 3) and int(written.header["sform_code"]) == 1
    np.testing.assert_allclose(written.affine, read_series(series).affine)

    scores_path = tmp / "scores.json"
    code, out, err = run_cli(["eval", str(run / "best"), "--data", f"nifti:{root}", "--split", "val",
                              "--precision", "fp32", "--device", "cpu", "--json", str(scores_path)], capsys)
    assert code == 0, err[-2000:]
    assert "Dice" in out and "HD95" in out and "b / cell" in out and "mean Dice / HD95" in out
    vols = json.loads(scores_path.read_text())["volumes"]
    truth = np.asanyarray(nib.load(str(root / "labels" / "b.nii.gz")).dataobj)
    for c in (0, 1):  # eval's per-volume scores are those of the predicted NIfTI volume against the labels
        assert vols["per_volume"]["b"]["dice"][c] == pytest.approx(dice(labels == c, truth == c))
        expected_hd = hd95((labels == c).transpose(2, 0, 1), (truth == c).transpose(2, 0, 1), (2.0, 0.5, 0.5))
        assert vols["per_volume"]["b"]["hd95"][c] == pytest.approx(expected_hd)
    with capsys.disabled():  # the figures, for the record (pytest -s shows them)
        print("\n" + out[out.index("per-volume"):], file=sys.stderr)
    assert vols["dice"][0] > 0.2 and vols["dice"][1] > 0.8  # it learnt membranes, briefly
    assert all(h is not None and h > 0 for h in vols["hd95"])

    code, out, err = run_cli(["predict", str(run / "best"), str(source), "--out", str(tmp / "p2"),
                              "--window", "ct_soft"], capsys)
    assert code == 2 and "trained with window percentile" in err
    bad = tmp / "truncated.nii.gz"
    bad.write_bytes(source.read_bytes()[: len(source.read_bytes()) // 2])
    code, out, err = run_cli(["predict", str(run / "best"), str(bad), "--out", str(tmp / "p3"),
                              "--precision", "fp32", "--device", "cpu"], capsys)
    assert code == 2 and str(bad) in err and "Traceback" not in err
    assert len([ln for ln in err.splitlines() if ln.startswith("error")]) == 1


def test_bad_nifti_inputs_give_one_line(tmp_path):
    root = tmp_path / "n"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("a\nb\n")
    vol = nib.Nifti1Image(np.zeros((4, 4, 3), np.float32), np.eye(4))
    nib.save(vol, str(root / "images" / "x.nii.gz"))
    with pytest.raises(DataError, match="no label volume"):
        open_dataset(f"nifti:{root}", "all")
    nib.save(nib.Nifti1Image(np.full((4, 4, 3), 7, np.uint8), np.eye(4)), str(root / "labels" / "x.nii.gz"))
    with pytest.raises(DataError, match="label values out of range: 7"):
        open_dataset(f"nifti:{root}", "all")[0]
    with pytest.raises(DataError, match="window=file"):
        open_dataset(f"nifti:{root}", "all", window="file")
    with pytest.raises(DataError, match="not a volume axis"):
        open_dataset(f"nifti:{root}", "all", axis=3)
    raw = (root / "images" / "x.nii.gz").read_bytes()
    (root / "images" / "x.nii.gz").write_bytes(gzip.compress(gzip.decompress(raw)[:200]))
    with pytest.raises(DataError, match="x.nii.gz"):
        open_dataset(f"nifti:{root}", "all")[0]


def test_nnunet_layout_reads_cases_channel_zero_and_dataset_json(tmp_path):
    root = tmp_path / "Dataset001_Toy"
    for d in ("imagesTr", "labelsTr", "imagesTs"):
        (root / d).mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "organ": 1}}))
    for case in ("c1", "c2"):
        nib.save(nib.Nifti1Image(np.arange(60, dtype=np.float32).reshape(3, 4, 5), AFFINE),
                 str(root / "imagesTr" / f"{case}_0000.nii.gz"))
        nib.save(nib.Nifti1Image((np.arange(60).reshape(3, 4, 5) % 2).astype(np.uint8), AFFINE),
                 str(root / "labelsTr" / f"{case}.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 2), np.float32), AFFINE), str(root / "imagesTs" / "t1_0000.nii.gz"))
    ds = open_dataset(f"nifti:{root}", "all", window="-10,50")
    assert ds.classes == ["background", "organ"] and len(ds) == 10
    assert ds[0].meta["volume"] == "c1" and ds[0].semantic.shape == (3, 4)
    test = open_dataset(f"nifti:{root}", "test")
    assert len(test) == 2 and test[0].semantic is None
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 5), np.float32), AFFINE), str(root / "imagesTr" / "c1_0001.nii.gz"))
    with pytest.raises(DataError, match="second image channel"):
        open_dataset(f"nifti:{root}", "all")
