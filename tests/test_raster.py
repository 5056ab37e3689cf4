"""Multi-band rasters (pixelwise.data.raster), the folder format reading them, the `spectral` synthetic set."""
from __future__ import annotations

import pickle
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from pixelwise.data.check import check_dataset
from pixelwise.data.formats import open_dataset
from pixelwise.data.io import ImageTooLarge, write_index_png
from pixelwise.data.raster import (RASTER_SUFFIXES, is_raster_path, read_image_file,
                                   read_label_file, read_raster, read_raster_labels, write_geotiff)
from pixelwise.data.spectral import CLASSES, RGBN_BANDS, S2_BANDS, make_spectral_scene, open_spectral
from pixelwise.errors import DataError

rasterio = pytest.importorskip("rasterio")
tifffile = pytest.importorskip("tifffile")

EPSG_32633 = rasterio.crs.CRS.from_epsg(32633).to_wkt()
TRANSFORM = [10.0, 0.0, 500_000.0, 0.0, -10.0, 5_600_000.0]


@pytest.fixture(params=["rasterio", "tifffile"])
def backend(request, monkeypatch):
    """Read TIFFs with rasterio, or with tifffile as where rasterio is not installed."""
    if request.param == "tifffile":
        monkeypatch.setitem(sys.modules, "rasterio", None)  # `import rasterio` now raises ImportError
    return request.param


def bands(h=12, w=10, b=4, dtype=np.uint16, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 10_000, (h, w, b)).astype(dtype)


def one_line_error(fn, *args, match: str = "", **kwargs) -> str:
    with pytest.raises(DataError, match=match) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message
    return message


# ---- GeoTIFF --------------------------------------------------------------------------------------------------

def test_geotiff_round_trip_against_rasterio(tmp_path):
    image = bands(20, 24, 4)
    meta = {"crs": EPSG_32633, "transform": TRANSFORM, "band_names": ["blue", "green", "red", "nir"]}
    path = write_geotiff(tmp_path / "a.tif", image, meta, nodata=0)
    array, got = read_raster(path)
    assert array.dtype == np.uint16 and array.shape == (20, 24, 4)
    np.testing.assert_array_equal(array, image)
    with rasterio.open(path) as ds:  # the reference reader
        np.testing.assert_array_equal(array, np.moveaxis(ds.read(), 0, -1))
        assert ds.crs == rasterio.crs.CRS.from_epsg(32633)
        assert list(ds.transform)[:6] == TRANSFORM
        assert ds.descriptions == ("blue", "green", "red", "nir")
        assert ds.profile["tiled"] and ds.profile["compress"] == "deflate"
    assert rasterio.crs.CRS.from_wkt(got["crs"]) == rasterio.crs.CRS.from_epsg(32633)
    assert got["transform"] == TRANSFORM and got["band_names"] == ["blue", "green", "red", "nir"]
    assert got["nodata"] == 0 and got["dtype"] == "uint16"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif"]  # no temporary nor sidecar file left


def test_geotiff_without_georeferencing_is_a_plain_tiff(tmp_path):
    image = np.random.default_rng(1).random((7, 9)).astype(np.float32)
    array, meta = read_raster(write_geotiff(tmp_path / "plain.tif", image, None))
    assert array.shape == (7, 9, 1) and array.dtype == np.float32
    np.testing.assert_array_equal(array[..., 0], image)
    assert meta == {"crs": None, "transform": None, "band_names": None, "nodata": None, "dtype": "float32"}


def test_geotiff_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "a.tif"
    target.write_bytes(b"the old file")
    monkeypatch.setattr(type(target), "replace", lambda self, other: (_ for _ in ()).throw(OSError("killed")))
    one_line_error(write_geotiff, target, bands(), None, match="cannot write the GeoTIFF")
    assert target.read_bytes() == b"the old file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif"]


def test_geotiff_write_errors(tmp_path, monkeypatch):
    one_line_error(write_geotiff, tmp_path / "a.tif", bands(), {"band_names": ["x"]}, match="1 band names for 4")
    one_line_error(write_geotiff, tmp_path / "a.tif", np.zeros((2, 3, 4, 5)), None, match="shape")
    one_line_error(write_geotiff, tmp_path / "a.tif", bands(), {"crs": "not a crs"}, match="crs")
    monkeypatch.setitem(sys.modules, "rasterio", None)
    one_line_error(write_geotiff, tmp_path / "a.tif", bands(), None,
                   match=r"needs rasterio: pip install 'pixelwise\[geo\]'")
    assert not list(tmp_path.iterdir())


# ---- TIFF through rasterio or tifffile -------------------------------------------------------------------------

def test_multi_page_tiff_pages_become_bands(tmp_path, backend):
    image = bands(9, 11, 5)
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tw:
        for b in range(5):
            tw.write(image[..., b], photometric="minisblack")
    array, meta = read_raster(tmp_path / "pages.tif")
    np.testing.assert_array_equal(array, image)
    with tifffile.TiffFile(tmp_path / "pages.tif") as tif:
        np.testing.assert_array_equal(array, np.stack([p.asarray() for p in tif.pages], -1))
    assert meta["dtype"] == "uint16" and meta["crs"] is None


def test_multi_page_rgb_tiff_reads_the_first_page(tmp_path, backend):
    frames = [Image.fromarray(bands(6, 8, 3, np.uint8, seed=i)) for i in range(3)]
    frames[0].save(tmp_path / "rgb.tif", save_all=True, append_images=frames[1:])
    with pytest.warns(UserWarning, match="rgb.tif: 3 pages.*only the first is read"):
        array, _ = read_raster(tmp_path / "rgb.tif")
    np.testing.assert_array_equal(array, np.asarray(frames[0]))


@pytest.mark.parametrize("layout", ["contig", "separate"])
def test_single_page_multi_band_tiff(tmp_path, backend, layout):
    image = bands(8, 12, 6, np.int16)
    data = image if layout == "contig" else np.moveaxis(image, -1, 0)
    tifffile.imwrite(tmp_path / "one.tif", data, photometric="minisblack", planarconfig=layout)
    array, meta = read_raster(tmp_path / "one.tif")
    assert array.dtype == np.int16 and meta["dtype"] == "int16"
    np.testing.assert_array_equal(array, image)


def test_rgb_tiff_reads_as_pil_does(tmp_path, backend):
    rgb = bands(5, 7, 3, np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.tif")
    Image.fromarray(np.dstack([rgb, np.full((5, 7), 200, np.uint8)])).save(tmp_path / "rgba.tif")
    for name in ("rgb.tif", "rgba.tif"):
        array, meta = read_raster(tmp_path / name)
        assert array.dtype == np.uint8 and array.shape == (5, 7, 3)
        np.testing.assert_array_equal(array, np.asarray(Image.open(tmp_path / name).convert("RGB")))


def test_geotiff_band_names_without_rasterio(tmp_path, monkeypatch):
    path = write_geotiff(tmp_path / "a.tif", bands(), {"crs": EPSG_32633, "transform": TRANSFORM,
                                                       "band_names": ["b", "g", "r", "n"]}, nodata=7)
    monkeypatch.setitem(sys.modules, "rasterio", None)
    array, meta = read_raster(path)
    np.testing.assert_array_equal(array, bands())
    assert meta["band_names"] == ["b", "g", "r", "n"] and meta["nodata"] == 7
    assert meta["crs"] is None and meta["transform"] is None  # georeferencing needs rasterio


def test_int32_and_float64_become_float32(tmp_path, backend):
    tifffile.imwrite(tmp_path / "i.tif", np.arange(12, dtype=np.int32).reshape(3, 4))
    np.save(tmp_path / "f.npy", np.linspace(0, 1, 12).reshape(3, 4))
    for name in ("i.tif", "f.npy"):
        array, meta = read_raster(tmp_path / name)
        assert array.dtype == np.float32 and array.shape == (3, 4, 1) and meta["dtype"] == "float32"


def test_without_any_tiff_library(tmp_path, monkeypatch):
    Image.fromarray(bands(4, 5, 3, np.uint8)).save(tmp_path / "rgb.tif")
    monkeypatch.setitem(sys.modules, "rasterio", None)
    monkeypatch.setitem(sys.modules, "tifffile", None)
    one_line_error(read_raster, tmp_path / "rgb.tif",
                   match=r"rgb.tif: reading multi-band TIFF needs rasterio or tifffile: pip install 'pixelwise\[geo\]'")
    image, meta = read_image_file(tmp_path / "rgb.tif")  # datasets still read RGB TIFFs, through PIL
    assert image.shape == (4, 5, 3) and meta is None


# ---- .npy -------------------------------------------------------------------------------------------------------

def test_npy_shapes(tmp_path):
    np.save(tmp_path / "grey.npy", bands(6, 5, 1)[..., 0])
    np.save(tmp_path / "multi.npy", bands(6, 5, 13))
    array, meta = read_raster(tmp_path / "grey.npy")
    assert array.shape == (6, 5, 1) and array.dtype == np.uint16
    np.testing.assert_array_equal(array[..., 0], bands(6, 5, 1)[..., 0])
    array, meta = read_raster(tmp_path / "multi.npy")
    np.testing.assert_array_equal(array, bands(6, 5, 13))
    assert meta == {"crs": None, "transform": None, "band_names": None, "nodata": None, "dtype": "uint16"}
    assert array.flags.writeable and array.flags.c_contiguous  # a copy, not the memory map


def test_suffixes():
    assert RASTER_SUFFIXES == (".tif", ".tiff", ".npy")
    assert is_raster_path("a/B.TIF") and is_raster_path("x.npy") and not is_raster_path("x.png")


def _bad(tmp_path, case: str):
    path = tmp_path / {"tif-truncated": "x.tif", "tif-empty": "x.tif", "tif-junk": "x.tif"}.get(case, "x.npy")
    if case == "npy-object":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif case == "npy-pickle":
        path.write_bytes(pickle.dumps({"a": 1}))
    elif case == "npy-4d":
        np.save(path, np.zeros((2, 3, 4, 5), np.uint8))
    elif case == "npy-zero-size":
        np.save(path, np.zeros((0, 4), np.uint8))
    elif case == "npy-too-many-bands":
        np.save(path, np.zeros((8, 8, 65), np.uint8))
    elif case == "npy-int64":
        np.save(path, np.zeros((3, 3), np.int64))
    elif case == "npy-truncated":
        np.save(path, bands(16, 16, 4))
        path.write_bytes(path.read_bytes()[:300])
    elif case == "tif-truncated":
        tifffile.imwrite(path, bands(32, 32, 3), photometric="minisblack", planarconfig="separate")
        path.write_bytes(path.read_bytes()[:3000])
    elif case == "tif-empty":
        path.write_bytes(b"")
    elif case == "tif-junk":
        path.write_bytes(b"hello, this is no TIFF")
    return path


BAD = {"npy-object": "object array", "npy-pickle": "pickle", "npy-4d": r"shape \(2, 3, 4, 5\)",
       "npy-zero-size": "zero-size", "npy-too-many-bands": "65 bands, over the limit of 64",
       "npy-int64": "dtype int64 not supported", "npy-truncated": "truncated",
       "tif-truncated": "truncated or corrupt TIFF", "tif-empty": "empty", "tif-junk": "not a TIFF"}


CASES = [(case, lib) for case in sorted(BAD)
         for lib in (("rasterio", "tifffile") if case.startswith("tif") else ("-",))]


@pytest.mark.parametrize("case,lib", CASES)
def test_bad_rasters_are_one_line_errors(tmp_path, monkeypatch, case, lib):
    if lib == "tifffile":
        monkeypatch.setitem(sys.modules, "rasterio", None)
    path = _bad(tmp_path, case)
    message = one_line_error(read_raster, path, match=BAD[case])
    assert message.startswith(f"{path}: ")


def test_pixel_limit_is_checked_from_the_header(tmp_path, backend):
    """Files cut short after their header: the declared size is refused before any pixel is read."""
    np.save(tmp_path / "a.npy", bands(10, 10, 2))
    tifffile.imwrite(tmp_path / "a.tif", bands(10, 10, 2), photometric="minisblack", planarconfig="contig")
    for name in ("a.npy", "a.tif"):
        path = tmp_path / name
        path.write_bytes(path.read_bytes()[:-150])
        with pytest.raises(ImageTooLarge, match=f"{name}: image too large: 10x10 = 100 pixels"):
            read_raster(path, max_pixels=99)
        one_line_error(read_raster, path, match="truncated")


def test_label_rasters(tmp_path):
    np.save(tmp_path / "m.npy", np.array([[0, 1], [2, 255]], np.int64))
    tifffile.imwrite(tmp_path / "m.tif", np.array([[0, 1], [2, 255]], np.uint8))
    np.save(tmp_path / "f.npy", np.array([[0.5, 1.0]], np.float32))
    np.save(tmp_path / "rgb.npy", np.zeros((2, 2, 3), np.uint8))
    for name in ("m.npy", "m.tif"):
        labels = read_label_file(tmp_path / name)
        assert labels.dtype == np.int64
        np.testing.assert_array_equal(labels, [[0, 1], [2, 255]])
    one_line_error(read_raster_labels, tmp_path / "f.npy", match="not whole numbers")
    one_line_error(read_raster_labels, tmp_path / "rgb.npy", match="one band, this raster has 3")


# ---- the folder format -------------------------------------------------------------------------------------------

def _raster_folder(root, n=3, h=12, w=16, b=13):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for i in range(n):
        np.save(root / "images" / f"s{i}.npy", bands(h, w, b, seed=i))
        labels = np.random.default_rng(i).integers(0, len(CLASSES), (h, w))
        labels[0, 0] = 255
        write_index_png(root / "masks" / f"s{i}.png", labels)
    return root


def test_folder_of_npy_rasters(tmp_path):
    root = _raster_folder(tmp_path / "set")
    ds = open_dataset(f"folder:{root}", "all")
    assert len(ds) == 3
    sample = ds[1]
    assert sample.image.shape == (12, 16, 13) and sample.image.dtype == np.uint16
    np.testing.assert_array_equal(sample.image, bands(12, 16, 13, seed=1))
    assert sample.semantic.shape == (12, 16) and sample.semantic[0, 0] == 255
    assert sample.meta["raster"]["dtype"] == "uint16" and sample.meta["name"] == "s1"
    report = check_dataset(f"folder:{root}")
    assert report.ok, report.to_text()
    assert report.splits[0].num_read == 3 and report.splits[0].sizes == {(16, 12): 3}


def test_folder_split_list_and_raster_masks(tmp_path):
    root = _raster_folder(tmp_path / "set", n=2)
    (root / "val.txt").write_text("s1.npy\n")
    assert [s.name for s in open_dataset(f"folder:{root}", "val")] == ["s1"]
    (root / "masks" / "s0.png").unlink()
    np.save(root / "masks" / "s0.npy", np.full((12, 16), 4, np.int64))
    (root / "masks" / "s1.png").unlink()
    tifffile.imwrite(root / "masks" / "s1.tif", np.full((12, 16), 9, np.uint8))
    ds = open_dataset(f"folder:{root}", "all")
    assert (ds[0].semantic == 4).all()
    one_line_error(lambda: ds[1], match=r"s1.tif: label values out of range: 9")


def test_folder_geotiff_images_and_size_check(tmp_path):
    root = _raster_folder(tmp_path / "set", n=1)
    (root / "images" / "s0.npy").unlink()
    write_geotiff(root / "images" / "s0.tif", bands(12, 16, 4), {"crs": EPSG_32633, "transform": TRANSFORM})
    sample = open_dataset(f"folder:{root}", "all")[0]
    assert sample.image.shape == (12, 16, 4) and sample.meta["raster"]["transform"] == TRANSFORM
    write_geotiff(root / "images" / "s0.tif", bands(12, 15, 4), None)
    message = one_line_error(lambda: open_dataset(f"folder:{root}", "all")[0], match="mask is 16x12")
    assert "is 15x12 (WxH)" in message


PIL_TIFF_MODES = ["RGB", "L", "P", "RGBA", "1", "I;16", "F", "CMYK", "LAB", "I"]


def test_folder_check_of_any_tiff_reports_only_data_errors(tmp_path, backend):
    """TIFF images of every PIL mode, whole, cut short or with flipped bytes: `data check` reports each
    problem as a one-line DataError (never another exception)."""
    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("a\nb\n")
    rgb = bands(5, 6, 3, np.uint8)
    for i, mode in enumerate(PIL_TIFF_MODES):
        img = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257) if mode == "I;16" else \
            Image.fromarray(rgb[..., 0].astype(np.float32 if mode == "F" else np.int32) * 300) \
            if mode in ("F", "I") else Image.fromarray(rgb).convert(mode)
        for variant in ("whole", "cut", "flipped"):
            path = root / "images" / f"{i}{variant}.tif"
            img.save(path)
            data = bytearray(path.read_bytes())
            if variant == "cut":
                data = data[:len(data) * 2 // 3]
            elif variant == "flipped":
                for k in range(8, len(data), 7):
                    data[k] ^= 0x5A
            path.write_bytes(bytes(data))
            write_index_png(root / "masks" / f"{i}{variant}.png", np.zeros((5, 6), np.int64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = check_dataset(f"folder:{root}")
    assert not [p for p in report.problems if "whole" in p.file]  # every whole file is read
    for problem in report.problems:
        assert "\n" not in problem.message and not problem.message.split(":")[0].endswith(("Error", "Exception"))


# ---- the spectral set ----------------------------------------------------------------------------------------

def test_spectral_scenes_are_deterministic():
    a, b = make_spectral_scene(7, size=32), make_spectral_scene(7, size=32)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.semantic, b.semantic)
    assert not np.array_equal(a.image, make_spectral_scene(8, size=32).image)
    four = make_spectral_scene(7, size=32, bands=4)
    np.testing.assert_array_equal(four.image, a.image[..., [1, 2, 3, 7]])


@pytest.mark.parametrize("n", [4, 13])
def test_spectral_shapes_and_band_names(n):
    ds = open_dataset("spectral:3", "val", bands=n, count=2, size=40)
    assert len(ds) == 2 and ds.classes == CLASSES and len(ds.palette) == 5
    sample = ds[0]
    assert sample.image.shape == (40, 40, n) and sample.image.dtype == np.uint16
    assert sample.image.max() <= 10_000 and sample.semantic.dtype == np.int64
    assert sample.meta["raster"]["band_names"] == (RGBN_BANDS if n == 4 else S2_BANDS)
    assert rasterio.crs.CRS.from_wkt(sample.meta["raster"]["crs"]).to_epsg() == 32633
    with pytest.raises(DataError, match="option bands must be 4"):
        open_spectral("3", "val", bands=5)


def test_spectral_sample_writes_as_geotiff(tmp_path):
    sample = make_spectral_scene(1, size=32, bands=4)
    array, meta = read_raster(write_geotiff(tmp_path / "s.tif", sample.image, sample.meta["raster"]))
    np.testing.assert_array_equal(array, sample.image)
    assert meta["band_names"] == RGBN_BANDS and meta["transform"] == sample.meta["raster"]["transform"]


def test_spectral_vegetation_and_turf_differ_only_outside_the_visible():
    ds = open_spectral("default", "train", size=64)
    assert len(ds) == 96 and len(open_spectral("default", "val")) == 24
    samples = [ds[i] for i in range(len(ds))]
    pixels = np.concatenate([s.image.reshape(-1, 13) for s in samples]).astype(np.float64)
    labels = np.concatenate([s.semantic.ravel() for s in samples])
    assert set(np.unique(labels)) == set(range(5))
    veg, turf = pixels[labels == CLASSES.index("vegetation")], pixels[labels == CLASSES.index("turf")]
    visible = [S2_BANDS.index(b) for b in ("B2", "B3", "B4")]
    gap = np.abs(veg[:, visible].mean(0) - turf[:, visible].mean(0)) / turf[:, visible].mean(0)
    assert (gap < 0.03).all(), gap
    nir = S2_BANDS.index("B8")
    assert veg[:, nir].mean() > 3 * turf[:, nir].mean()
    assert 3000 <= np.median(veg[:, nir]) <= 5000 and 500 <= np.median(turf[:, nir]) <= 900
