"""`pixelwise predict` / `eval` with the inference options: --precision, --tile, --overlap, --tta,
output formats and resuming."""
import numpy as np
import pytest
import torch
from PIL import Image

import pixelwise as pw
from conftest import run_cli


run = run_cli


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = pw.create_model("unet", 6, base_channels=4, depth=2)
    return pw.save_model(model, tmp_path_factory.mktemp("cli_inf") / "unet", classes=[f"c{i}" for i in range(6)])


def test_predict_tiled_with_tta_writes_formats_and_resumes(model_dir, tmp_path, capsys):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    argv = ["predict", str(model_dir), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--tile", "32",
            "--overlap", "0.5", "--tta", "flip,1", "--precision", "fp32", "--format", "npy", "--format", "rle",
            "--workers", "0"]
    code, out, _ = run(argv, capsys)
    assert code == 0 and "wrote 1 semantic predictions" in out
    labels = np.load(tmp_path / "o" / "a.npy")
    assert labels.shape == (70, 90) and (tmp_path / "o" / "a.json").is_file()
    code, out, _ = run(argv, capsys)
    assert code == 0 and "skipped 1 already done" in out
    code, out, _ = run(argv + ["--overwrite"], capsys)
    assert "wrote 1 semantic predictions" in out
    code, _, err = run(argv[:-2] + ["--tta", "flop"], capsys)
    assert code == 2 and "flop" in err


def test_eval_with_tiles(model_dir, capsys):
    code, out, err = run(["eval", str(model_dir), "--data", "synthetic:3", "--tile", "64", "--precision", "fp32"],
                         capsys)
    assert code == 0 and "mIoU" in out and "tile 64" in err


@pytest.fixture(scope="module")
def panoptic_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = pw.create_model("panoptic_deeplab", 6, encoder="resnet18", aspp_channels=16, decoder_channels=16,
                            instance_decoder_channels=16, head_channels=8, stuff_area=16)
    return pw.save_model(model, tmp_path_factory.mktemp("cli_pan") / "pan", classes=[f"c{i}" for i in range(6)],
                         extra={"task": "panoptic", "things": [3, 4, 5]})


@pytest.mark.parametrize("which, extra, words", [
    ("semantic", ["--format", "coco"], "--format coco does not apply to the semantic task"),
    ("semantic", ["--method", "watershed"], "--method does not apply to the semantic task"),
    ("semantic", ["--task", "multilabel"], "cannot be read as the multilabel task"),
    ("panoptic", ["--format", "npy"], "--format npy does not apply to the panoptic task"),
    ("panoptic", ["--task", "bogus"], "'bogus' is not a task"),
])
def test_predict_options_a_task_cannot_honour_stop_with_one_line(model_dir, panoptic_dir, tmp_path, capsys,
                                                                  which, extra, words):
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    directory = model_dir if which == "semantic" else panoptic_dir
    code, _, err = run(["predict", str(directory), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"),
                        "--precision", "fp32", *extra], capsys)
    assert code == 2 and words in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # refused before any work


def test_panoptic_predict_tiles_tta_and_crf_go_through_the_one_path(panoptic_dir, tmp_path, capsys):
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    code, out, err = run(["predict", str(panoptic_dir), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"),
                          "--tile", "64", "--tta", "flip", "--crf", "default", "--precision", "fp32", "--overlay",
                          "--format", "coco", "--format", "png", "--workers", "0"], capsys)
    assert code == 0 and "wrote 1 panoptic predictions" in out, err
    for name in ("panoptic/a.png", "a.png", "a_overlay.png", "panoptic.json", "instances.json"):
        assert (tmp_path / "o" / name).is_file(), name
    predictor = pw.Predictor.from_dir(panoptic_dir, device="cpu", precision="fp32", tile=64, tta="flip", crf="default")
    expected = predictor.predict(np.asarray(Image.open(tmp_path / "a.png")))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o" / "a.png")), expected.semantic)


@pytest.mark.parametrize("argv, words", [
    (["eval", "MODEL", "--data", "synthetic:3", "--classic", "otsu"], "give no MODEL_DIR"),
    (["eval", "--data", "synthetic:3", "--classic", "otsu", "--tile", "64"], "--tile does not apply to --classic"),
    (["eval", "--data", "coco-panoptic:x.json", "--pred", "p.json", "--task", "panoptic", "--tta", "flip"],
     "--tta does not apply to --pred"),
    (["eval", "MODEL", "--data", "synthetic:3", "--param", "sigma=2"], "--param needs --classic"),
    (["eval", "--data", "synthetic:3", "--pred", "p.json"], "not available for the semantic task"),
])
def test_eval_options_that_cannot_apply_are_usage_errors(model_dir, capsys, argv, words):
    argv = [str(model_dir) if a == "MODEL" else a for a in argv]
    code, out, err = run(argv, capsys)
    assert code == 2 and words in err + out and "Traceback" not in err


def test_panoptic_eval_with_tiles_tta_and_report(panoptic_dir, tmp_path, capsys):
    code, out, err = run(["eval", str(panoptic_dir), "--data", "synthetic:2", "--split", "val[:2]", "--tile", "64",
                          "--tta", "flip", "--precision", "fp32", "--report", str(tmp_path / "rep"),
                          "--json", str(tmp_path / "s.json")], capsys)
    assert code == 0 and "Things" in out and "tile 64" in err and "TTA flip" in err, err
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "| PQ |" in report and "## Per-class PQ" in report and (tmp_path / "rep" / "examples_best.png").is_file()
