"""Batch prediction on Ray Data (`pixelwise predict --ray`, pixelwise.inference.raypredict) on a local 2-CPU
Ray started here: the same files, byte for byte, as the plain `pixelwise predict`; resuming skips before any
Ray work; a bad image is named and the others written; options that cannot apply are refused."""
import numpy as np
import pytest
import torch
from PIL import Image

import pixelwise as pw
from conftest import run_cli

ray = pytest.importorskip("ray", reason="pixelwise[ray] (ray[data]) is not installed")

from pixelwise.inference import raypredict  # noqa: E402

COUNT = 200


@pytest.fixture(scope="module")
def cluster():
    """A local Ray with 2 CPUs (2 one-CPU actors), shut down after the module."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = pw.create_model("unet", 6, base_channels=4, depth=2)
    return pw.save_model(model, tmp_path_factory.mktemp("ray_model") / "unet", classes=[f"c{i}" for i in range(6)])


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """COUNT synthetic 64x64 scenes as PNG files."""
    from pixelwise.data.synthetic import make_scene

    folder = tmp_path_factory.mktemp("ray_images")
    for i in range(COUNT):
        Image.fromarray(make_scene(i, size=64).image).save(folder / f"scene_{i:03d}.png")
    return folder


def test_ray_predict_writes_the_plain_predict_files_and_resumes(cluster, model_dir, images, tmp_path, capsys,
                                                                 monkeypatch):
    plain, on_ray = tmp_path / "plain", tmp_path / "ray"
    code, out, err = run_cli(["predict", str(model_dir), str(images / "*.png"), "--out", str(plain),
                              "--precision", "fp32", "--workers", "0"], capsys)
    assert code == 0 and f"wrote {COUNT} semantic predictions" in out, err
    # the images as URIs (pyarrow's local filesystem): the actors read the bytes themselves
    code, out, err = run_cli(["predict", str(model_dir), f"file://{images}/*.png", "--out", str(on_ray),
                              "--precision", "fp32", "--ray"], capsys)
    assert code == 0 and f"wrote {COUNT} predictions to {on_ray} on Ray (2 workers)" in out, err
    names = sorted(p.name for p in plain.iterdir())
    assert len(names) == COUNT and names == sorted(p.name for p in on_ray.iterdir())
    differ = [n for n in names if (plain / n).read_bytes() != (on_ray / n).read_bytes()]
    assert not differ, f"{len(differ)} index PNGs differ, e.g. {differ[:3]}"
    assert Image.open(on_ray / names[0]).mode == "P"

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray ran although every image was done")

    monkeypatch.setattr(raypredict, "_run", no_ray)  # resuming decides before any Ray work
    code, out, err = run_cli(["predict", str(model_dir), str(images), "--out", str(on_ray), "--precision", "fp32",
                              "--ray"], capsys)
    assert code == 0 and "wrote 0 predictions" in out and f"skipped {COUNT} already done" in out, err


def test_a_bad_image_is_named_and_the_others_written(cluster, model_dir, images, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(5):
        (folder / f"scene_{i:03d}.png").write_bytes((images / f"scene_{i:03d}.png").read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    logged = []
    result = raypredict.predict_ray(model_dir, [folder], tmp_path / "out", formats=["png", "npy"],
                                    options={"precision": "fp32"}, progress=False, log=logged.append)
    assert len(result.written) == 5 and not result.skipped
    assert len(result.failed) == 1 and "broken.png" in result.failed[0] and "broken.png" in logged[0]
    for i in range(5):
        assert (tmp_path / "out" / f"scene_{i:03d}.png").is_file()
        assert np.load(tmp_path / "out" / f"scene_{i:03d}.npy").shape == (64, 64)
    assert not (tmp_path / "out" / "broken.png").exists()


def test_inputs_expand_and_clashes_are_refused_before_ray(model_dir, images, tmp_path):
    rows = raypredict.expand_inputs([f"file://{images}/scene_00*.png", str(images / "scene_001.png")])
    assert [r["name"] for r in rows][:3] == ["scene_000.png", "scene_001.png", "scene_002.png"]
    assert len(rows) == 11 and rows[0]["root"] and not rows[-1]["root"]  # 10 URIs, then the local file
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "scene_000.jpg").write_bytes(b"x")
    with pytest.raises(pw.errors.DataError, match="same file stem"):
        raypredict.predict_ray(model_dir, [images / "scene_000.png", tmp_path / "b" / "scene_000.jpg"],
                               tmp_path / "o", options={"precision": "fp32"})
    with pytest.raises(pw.errors.DataError, match="would overwrite an input"):
        raypredict.predict_ray(model_dir, [images / "scene_000.png"], images, options={"precision": "fp32"})
    with pytest.raises(pw.errors.DataError, match="not found"):
        raypredict.predict_ray(model_dir, [f"file://{tmp_path}/nothing.png"], tmp_path / "o")


@pytest.mark.parametrize("extra, words", [
    (["--ray", "--workers", "3"], "--workers does not apply with --ray"),
    (["--ray", "--every", "2"], "--every does not apply with --ray"),
    (["--ray", "--device", "cpu"], "--device does not apply with --ray"),
    (["--ray-workers", "3"], "--ray-workers needs --ray"),
])
def test_options_that_cannot_apply_with_ray_are_refused(model_dir, images, tmp_path, capsys, extra, words):
    code, _, err = run_cli(["predict", str(model_dir), str(images / "scene_000.png"), "--out", str(tmp_path / "o"),
                            *extra], capsys)
    assert code == 2 and words in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
