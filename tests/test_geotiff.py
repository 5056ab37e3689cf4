"""GeoTIFF scenes (pixelwise.inference.geotiff: `pixelwise predict MODEL_DIR scene.tif`, window by window) and the
`geotiff:` dataset format (pixelwise.data.formats.geotiff: band selection, nodata as void)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import pixelwise as pw
from conftest import run_cli, shared_dataset
from pixelwise.constants import IMAGENET_MEAN, IMAGENET_STD
from pixelwise.data.bands import BandSpec
from pixelwise.data.formats import open_dataset
from pixelwise.data.raster import GeoTiffRows
from pixelwise.data.transforms import normalize_image
from pixelwise.errors import DataError

rasterio = pytest.importorskip("rasterio")
from affine import Affine  # noqa: E402  (rasterio's dependency)
from rasterio.features import rasterize  # noqa: E402

TRANSFORM = Affine(0.5, 0.0, 355_000.0, 0.0, -0.5, 2_780_000.0)  # made up: 0.5 m pixels in UTM 33N
CRS = rasterio.crs.CRS.from_epsg(32633)
CLASSES = ["Building", "Land", "Road", "Vegetation", "Water"]
TILE = ["--tile", "96", "--overlap", "0.25", "--precision", "fp32"]


def write_scene(path, image: np.ndarray, nodata=None, crs=CRS, transform=TRANSFORM):
    """(H, W, B) -> a GeoTIFF with the made-up CRS and transform."""
    with rasterio.open(path, "w", driver="GTiff", width=image.shape[1], height=image.shape[0], count=image.shape[2],
                       dtype=image.dtype.name, crs=crs, transform=transform, nodata=nodata) as ds:
        ds.write(np.moveaxis(image, -1, 0))
    return path


@pytest.fixture(scope="module")
def landcover():
    """A 256 x 320 crop of a Dubai aerial image, its labels, and a tiny U-Net fitted to it for 30 steps (so its
    answer shows several classes), saved as a model directory."""
    root = shared_dataset("dubai_aerial_landcover")
    sample = open_dataset(f"colormask:{root}", "all")[0]
    image, labels = sample.image[40:296, 100:420].copy(), sample.semantic[40:296, 100:420]
    torch.manual_seed(0)
    model = pw.create_model("unet", len(CLASSES), base_channels=4, depth=2)
    x = normalize_image(image, IMAGENET_MEAN, IMAGENET_STD)
    y = torch.from_numpy(labels)[None]
    counts = np.bincount(labels[labels != 255], minlength=len(CLASSES)) + 1
    weight = torch.tensor(counts.sum() / counts, dtype=torch.float32)  # or the large Land class is all it says
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(30):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y, weight=weight, ignore_index=255).backward()
        optimizer.step()
    return image, model.eval()


@pytest.fixture(scope="module")
def model_dir(landcover, tmp_path_factory):
    return pw.save_model(landcover[1], tmp_path_factory.mktemp("geotiff") / "unet", classes=CLASSES)


def test_a_landcover_scene_predicts_to_a_georeferenced_mask_equal_to_the_plain_prediction(landcover, model_dir,
                                                                                          tmp_path, capsys):
    image = landcover[0].copy()
    image[:24, :40] = 0  # nodata: every band 0
    scene = write_scene(tmp_path / "scene.tif", image, nodata=0)
    out = tmp_path / "out"
    argv = ["predict", str(model_dir), str(scene), "--out", str(out), *TILE, "--probabilities", "--polygons"]
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "GeoTIFF scenes window by window" in err and "320x256 labels" in stdout
    with rasterio.open(out / "scene.tif") as got:
        assert got.crs == CRS and got.transform == TRANSFORM and got.count == 1 and got.dtypes == ("uint8",)
        assert got.nodata == 255 and got.compression.name == "deflate" and got.profile["tiled"]
        assert got.block_shapes == [(256, 256)]
        mask = got.read(1)
    void = (image == 0).all(axis=2)
    predictor = pw.Predictor.from_dir(model_dir, device="cpu", precision="fp32", tile=96, overlap=0.25)
    plain = predictor.predict(image, return_probs=True)
    assert predictor._streams(256, 320)  # the plain prediction is tiled too: several windows and bands
    expected = np.where(void, 255, plain.semantic)
    assert np.array_equal(mask, expected)
    assert len(np.unique(mask[~void])) >= 3  # a real answer, not one class everywhere
    # the probabilities: one band per class, 255 x p, 0 where the source is nodata
    with rasterio.open(out / "scene_probs.tif") as probs:
        assert probs.count == len(CLASSES) and probs.descriptions == tuple(CLASSES)
        assert probs.crs == CRS and probs.transform == TRANSFORM
        p = probs.read()
    assert p.shape == (len(CLASSES), 256, 320) and (p[:, void] == 0).all()
    reference = np.rint(plain.probs * 255)
    assert np.abs(p[:, ~void].astype(int) - reference[:, ~void]).max() <= 1
    top = np.sort(p, axis=0)
    clear = ~void & (top[-1] > top[-2])  # pixels whose rounded top probability is not tied
    assert clear.mean() > 0.9 and np.array_equal(p.argmax(0)[clear], mask[clear])
    # the polygons: GeoJSON in the raster's CRS; rasterised back, they are the mask, class by class
    doc = json.loads((out / "scene.geojson").read_text())
    assert doc["type"] == "FeatureCollection" and doc["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    shapes = [(f["geometry"], f["properties"]["class"]) for f in doc["features"]]
    assert {f["properties"]["name"] for f in doc["features"]} == {CLASSES[c] for c in np.unique(mask[~void])}
    burnt = rasterize(shapes, out_shape=mask.shape, transform=TRANSFORM, fill=255, dtype="uint8")
    assert np.array_equal(burnt, mask)
    # resumed: the outputs exist, so the scene is skipped
    code, stdout, _ = run_cli(argv, capsys)
    assert code == 0 and "skipped" in stdout


def test_a_multi_band_scene_goes_through_the_band_record(tmp_path, capsys):
    torch.manual_seed(0)
    model = pw.create_model("unet", 3, base_channels=4, depth=2, in_chans=4)
    spec = BandSpec.build(["blue", "green", "red", "nir"], 4, np.uint16, max_value=10000)
    directory = pw.save_model(model, tmp_path / "m", classes=["a", "b", "c"],
                              preprocessing={"bands": spec.to_dict(), "mean": [0.3] * 4, "std": [0.2] * 4})
    rng = np.random.default_rng(0)
    image = rng.integers(0, 10000, (150, 170, 4)).astype(np.uint16)
    image[100:, 150:] = 65535
    scene = write_scene(tmp_path / "s4.tif", image, nodata=65535)
    code, _, err = run_cli(["predict", str(directory), str(scene), "--out", str(tmp_path / "o"), "--tile", "64",
                            "--precision", "fp32"], capsys)
    assert code == 0, err
    with rasterio.open(tmp_path / "o" / "s4.tif") as got:
        mask = got.read(1)
    plain = pw.Predictor.from_dir(directory, device="cpu", precision="fp32", tile=64).predict(image).semantic
    assert np.array_equal(mask, np.where((image == 65535).all(axis=2), 255, plain))
    # an RGB scene given to the 4-band model: one line naming the file
    rgb = write_scene(tmp_path / "rgb.tif", np.zeros((40, 40, 3), np.uint8))
    code, _, err = run_cli(["predict", str(directory), str(rgb), "--out", str(tmp_path / "o2")], capsys)
    assert code == 1 and "rgb.tif: 3 bands; the model reads images of 4" in err


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # the whole path: no CRS
def test_ordinary_tiffs_and_whole_image_outputs_take_the_usual_path(model_dir, tmp_path, capsys):
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.tif")  # no CRS, no transform: not a scene
    scene = write_scene(tmp_path / "scene.tif", photo)
    code, out, err = run_cli(["predict", str(model_dir), str(tmp_path / "photo.tif"), str(scene), "--out",
                              str(tmp_path / "o"), "--precision", "fp32", "--workers", "0"], capsys)
    assert code == 0, err
    assert (tmp_path / "o" / "photo.png").is_file() and "wrote 1 semantic predictions" in out
    assert (tmp_path / "o" / "scene.tif").is_file() and not (tmp_path / "o" / "scene.png").exists()
    # --overlay reads the scene whole, as before
    code, out, err = run_cli(["predict", str(model_dir), str(scene), "--out", str(tmp_path / "o2"), "--format", "tif",
                              "--overlay", "--precision", "fp32", "--workers", "0"], capsys)
    assert code == 0, err
    assert (tmp_path / "o2" / "scene_overlay.png").is_file() and "window by window" not in err
    with rasterio.open(tmp_path / "o2" / "scene.tif") as whole, rasterio.open(tmp_path / "o" / "scene.tif") as windowed:
        assert np.array_equal(whole.read(1), windowed.read(1))  # one tile (no --tile) is the one-pass answer


def test_a_stored_crf_is_left_out_of_a_scene_and_its_stored_tta_kept(landcover, tmp_path, capsys):
    directory = pw.save_model(landcover[1], tmp_path / "tuned", classes=CLASSES,
                              extra={"inference": {"tta": "flip", "crf": "default"}})
    image = landcover[0][:100, :130].copy()
    scene = write_scene(tmp_path / "scene.tif", image)
    code, _, err = run_cli(["predict", str(directory), str(scene), "--out", str(tmp_path / "o"), *TILE], capsys)
    assert code == 0, err
    assert "TTA flip" in err and "CRF" not in err
    with rasterio.open(tmp_path / "o" / "scene.tif") as got:
        mask = got.read(1)
    plain = pw.Predictor.from_dir(directory, device="cpu", precision="fp32", tile=96, tta="flip", crf=None)
    assert np.array_equal(mask, plain.predict(image).semantic)


@pytest.mark.parametrize("extra, words", [
    (["--probabilities", "--overlay"], "--probabilities applies to GeoTIFF scenes predicted window by window"),
    (["--polygons", "--format", "png"], "--polygons applies to GeoTIFF scenes predicted window by window"),
    (["--crf", "default"], "scene.tif: the dense CRF needs the whole image"),
    (["--workers", "3"], "--workers does not apply to GeoTIFF scenes"),
])
def test_options_that_cannot_apply_to_a_scene_stop_with_one_line(model_dir, tmp_path, capsys, extra, words):
    scene = write_scene(tmp_path / "scene.tif", np.zeros((40, 40, 3), np.uint8))
    code, _, err = run_cli(["predict", str(model_dir), str(scene), "--out", str(tmp_path / "o"), "--precision",
                            "fp32", *extra], capsys)
    assert code == 2 and words in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_scene_options_on_other_inputs_and_outputs_over_the_input_are_refused(model_dir, tmp_path, capsys):
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "a.png")
    code, _, err = run_cli(["predict", str(model_dir), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"),
                            "--probabilities"], capsys)
    assert code == 2 and f"--probabilities applies to GeoTIFF scenes" in err and "a.png is not one" in err
    scene = write_scene(tmp_path / "scene.tif", np.zeros((40, 40, 3), np.uint8))
    code, _, err = run_cli(["predict", str(model_dir), str(scene), "--out", str(tmp_path), "--precision", "fp32"],
                           capsys)
    assert code == 2 and "would overwrite an input scene" in err


def test_rows_writer_writes_whole_blocks_and_leaves_nothing_when_aborted(tmp_path):
    rows = np.arange(300 * 40, dtype=np.int64).reshape(300, 40) % 7
    with GeoTiffRows(tmp_path / "r.tif", 1, 300, 40, np.uint8, {"crs": CRS.to_wkt(), "transform": list(TRANSFORM)[:6]},
                     nodata=255) as out:
        for y in range(0, 300, 37):  # bands of any height; the writer holds them back to whole blocks
            out.write(rows[y:y + 37])
    with rasterio.open(tmp_path / "r.tif") as ds:
        assert np.array_equal(ds.read(1), rows) and ds.crs == CRS and ds.nodata == 255
    with pytest.raises(RuntimeError):
        with GeoTiffRows(tmp_path / "k.tif", 1, 300, 40, np.uint8) as out:
            out.write(rows[:100])
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == [tmp_path / "r.tif"]  # no half file, no temporary left


# ---- the geotiff: dataset format ------------------------------------------------------------------------------

@pytest.fixture
def dataset_root(tmp_path):
    """ROOT/images/{a,b}.tif (4-band uint16, nodata 0), ROOT/labels/{a,b}.tif (uint8, nodata 9), 3 classes."""
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        image = rng.integers(1, 10000, (30, 40, 4)).astype(np.uint16)
        image[:5, :5] = 0  # nodata in every band
        image[5:8, :5, [0, 2]] = 0  # zero in bands 1 and 3 only
        labels = rng.integers(0, 3, (30, 40)).astype(np.uint8)
        labels[-4:, -4:] = 9
        labels[0, -1] = 255
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "labels").mkdir(exist_ok=True)
        write_scene(tmp_path / "images" / f"{name}.tif", image, nodata=0)
        write_scene(tmp_path / "labels" / f"{name}.tif", labels[..., None], nodata=9)
    (tmp_path / "classes.txt").write_text("water\nland\nroad\n")
    return tmp_path


def test_geotiff_dataset_selects_bands_and_reads_nodata_as_void(dataset_root):
    ds = open_dataset(f"geotiff:{dataset_root}", "train", bands="3,1")
    assert len(ds) == 2 and ds.classes == ["water", "land", "road"]
    sample = ds[0]
    with rasterio.open(dataset_root / "images" / "a.tif") as src:
        raw = src.read()
    with rasterio.open(dataset_root / "labels" / "a.tif") as lab:
        labels = lab.read(1).astype(np.int64)
    assert sample.image.dtype == np.uint16 and sample.image.shape == (30, 40, 2)
    assert np.array_equal(sample.image, np.moveaxis(raw[[2, 0]], 0, -1))
    assert sample.meta["raster"]["nodata"] == 0 and list(sample.meta["raster"]["transform"]) == list(TRANSFORM)[:6]
    void = np.zeros((30, 40), bool)
    void[:8, :5] = True  # bands 3 and 1 (those read) are both nodata here
    void[-4:, -4:] = True  # the label raster's nodata
    void[0, -1] = True  # label 255
    assert np.array_equal(sample.semantic == 255, void)
    assert np.array_equal(sample.semantic[~void], labels[~void])
    every = open_dataset(f"geotiff:{dataset_root}", "train")[0]  # all four bands: rows 5..7 are not void
    assert every.image.shape == (30, 40, 4) and (every.semantic[5:8, :5] != 255).all()


def one_line(fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_geotiff_dataset_problems_stop_with_one_line_naming_the_file(dataset_root):
    spec = f"geotiff:{dataset_root}"
    assert one_line(open_dataset, spec, "train", bands=[5]).endswith(
        "a.tif: option bands asks for band 5, but this raster has 4 band(s)")
    assert "option bands must be band numbers" in one_line(open_dataset, spec, "train", bands="red")
    # a label raster of another size
    write_scene(dataset_root / "labels" / "b.tif", np.zeros((30, 41, 1), np.uint8))
    message = one_line(lambda: open_dataset(spec, "train")[1])
    assert message.startswith(str(dataset_root / "labels" / "b.tif")) and "41x30" in message
    # a label raster on another grid
    shifted = TRANSFORM @ Affine.translation(1, 0)
    write_scene(dataset_root / "labels" / "b.tif", np.zeros((30, 40, 1), np.uint8), transform=shifted)
    assert "differs from its image's" in one_line(lambda: open_dataset(spec, "train")[1])
    # a label value past the classes
    write_scene(dataset_root / "labels" / "b.tif", np.full((30, 40, 1), 7, np.uint8))
    assert "label values out of range: 7" in one_line(lambda: open_dataset(spec, "train")[1])
    # an image without its label raster
    (dataset_root / "labels" / "b.tif").unlink()
    message = one_line(open_dataset, spec, "train")
    assert message == f"{dataset_root / 'images' / 'b.tif'}: image has no label raster (expected " \
                      f"{dataset_root / 'labels' / 'b.tif'})"
    linted = open_dataset(spec, "train", lint=True)  # the linter lists it and reads the rest
    assert len(linted) == 1 and linted.problems[0][0].endswith("b.tif") and "no label raster" in linted.problems[0][1]


def test_data_check_of_a_geotiff_set_without_classes_txt_lists_it_with_the_orphans(dataset_root):
    """As for the folder format: a missing class list is a problem listed with the others (an image raster
    without its label raster), the label values found are counted, and a classes.txt is suggested."""
    from pixelwise.data.check import check_dataset

    (dataset_root / "classes.txt").unlink()
    write_scene(dataset_root / "images" / "orphan.tif", np.ones((30, 40, 4), np.uint16), nodata=0)
    report = check_dataset(f"geotiff:{dataset_root}")
    files = [p.file.rsplit("/", 1)[-1] for p in report.problems]
    assert files == ["classes.txt", "orphan.tif"], report.problems
    assert not report.class_list and report.suggested_classes == ["class_0", "class_1", "class_2"]
    (split,) = report.splits
    assert split.num_read == 2 and sum(split.pixel_counts) + split.void_pixels == 2 * 30 * 40
    with pytest.raises(DataError, match="no classes.txt"):  # training still needs the class list
        open_dataset(f"geotiff:{dataset_root}", "train")


def test_a_whole_image_geotiff_output_of_an_rgb_model_keeps_the_crs(model_dir, tmp_path, capsys):
    """--format tif with --overlay reads an RGB GeoTIFF whole, as a photo: the mask still carries the source's
    CRS and transform (from the header)."""
    scene = tmp_path / "rgb.tif"
    transform = Affine(0.5, 0, 300000.0, 0, -0.5, 2800000.0)
    write_scene(scene, np.random.default_rng(1).integers(0, 255, (40, 56, 3)).astype(np.uint8), crs="EPSG:32640",
                transform=transform)
    code, out, err = run_cli(["predict", str(model_dir), str(scene), "--out", str(tmp_path / "o"), "--format", "tif",
                              "--overlay", "--precision", "fp32"], capsys)
    assert code == 0, err
    with rasterio.open(tmp_path / "o" / "rgb.tif") as mask:
        assert mask.crs.to_epsg() == 32640 and mask.transform == transform and mask.shape == (40, 56)
    assert (tmp_path / "o" / "rgb_overlay.png").is_file()


def _blobs(seed: int, shape=(70, 90)) -> np.ndarray:
    """A label map of 3 classes in blocky regions (many cross any row), a hole, and a nodata corner."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 3, (shape[0] // 7 + 1, shape[1] // 9 + 1)).astype(np.uint8)
    labels = np.kron(coarse, np.ones((7, 9), np.uint8))[:shape[0], :shape[1]].copy()
    labels[20:40, 30:60] = 1
    labels[26:32, 40:48] = 2  # a hole in the class-1 block
    labels[:5, :6] = 255
    return labels


@pytest.mark.parametrize("seed", range(3))
def test_polygons_read_in_strips_are_the_regions_of_the_whole_mask(tmp_path, seed):
    """Vectorised 8 rows at a time, regions crossing strip edges dissolve: the same regions (count and area per
    class) as rasterio.features.shapes over the whole mask at once, and rasterised back the mask itself."""
    from rasterio.features import shapes as whole_shapes
    from shapely.geometry import shape

    from pixelwise.inference.geotiff import strip_polygons, write_polygons

    labels = _blobs(seed)
    mask = write_scene(tmp_path / "mask.tif", labels[..., None], nodata=255)
    with rasterio.open(mask) as ds:
        pieces = [(shape(g), c) for g, c in strip_polygons(ds, rows=8)]
    reference = [(shape(g), int(c)) for g, c in whole_shapes(labels, mask=labels != 255, connectivity=4,
                                                                transform=TRANSFORM)]
    key = (lambda items: sorted((c, round(g.area, 6)) for g, c in items))
    assert len(pieces) == len(reference) and key(pieces) == key(reference)
    assert any(g.interiors for g, _ in [(p.geoms[0] if p.geom_type == "MultiPolygon" else p, c)
                                        for p, c in pieces])  # the hole is kept
    out = write_polygons(mask, tmp_path / "mask.geojson", ["a", "b", "c"], rows=8)
    features = json.loads(out.read_text())["features"]
    burnt = rasterize([(f["geometry"], f["properties"]["class"]) for f in features], out_shape=labels.shape,
                      transform=TRANSFORM, fill=255, dtype="uint8")
    assert np.array_equal(burnt, labels)


def test_polygons_as_a_geopackage_read_back_by_fiona(tmp_path):
    fiona = pytest.importorskip("fiona")
    from pixelwise.inference.geotiff import write_polygons

    labels = _blobs(0)
    mask = write_scene(tmp_path / "mask.tif", labels[..., None], nodata=255)
    out = write_polygons(mask, tmp_path / "mask.gpkg", ["a", "b", "c"], rows=16, fmt="gpkg")
    with fiona.open(out, layer="polygons") as layer:
        assert layer.crs.to_epsg() == 32633 and layer.schema["geometry"] == "MultiPolygon"
        records = [(dict(r["geometry"]), r["properties"]["class"], r["properties"]["name"]) for r in layer]
    assert {n for _, c, n in records} == {"a", "b", "c"} and all(["a", "b", "c"][c] == n for _, c, n in records)
    burnt = rasterize([(g, c) for g, c, _ in records], out_shape=labels.shape, transform=TRANSFORM, fill=255,
                      dtype="uint8")
    assert np.array_equal(burnt, labels)


def test_polygon_format_needs_polygons(model_dir, tmp_path, capsys):
    scene = write_scene(tmp_path / "s.tif", np.zeros((16, 16, 3), np.uint8))
    code, _, err = run_cli(["predict", str(model_dir), str(scene), "--out", str(tmp_path / "o"), "--polygon-format",
                            "gpkg"], capsys)
    assert code == 2 and "--polygon-format applies with --polygons" in err and "Traceback" not in err
