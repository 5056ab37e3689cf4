"""The CLI's exact forms, end to end on tiny synthetic data, and its one-line errors."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from pixelwise.cli import main

RECIPE = """
data: {format: synthetic, root: "3", crop_size: 48, num_workers: 0, limit: 8}
model: {name: unet, kwargs: {base_channels: 4, depth: 2}}
train: {epochs: 1, batch_size: 4, lr: 0.01}
"""


run = run_cli


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    recipe = root / "tiny.yaml"
    recipe.write_text(RECIPE)
    main(["train", str(recipe), "train.epochs=2", "--out", str(root / "run"), "--no-report"])
    return root


def test_train_eval_predict(run_dir, capsys, tmp_path):
    assert (run_dir / "run" / "best" / "model.safetensors").is_file()
    assert (run_dir / "run" / "last" / "model.safetensors").is_file()
    out_json = tmp_path / "scores.json"
    code, out, _ = run(["eval", str(run_dir / "run" / "best"), "--data", "synthetic:3", "--split", "val",
                        "--json", str(out_json)], capsys)
    assert code == 0 and "mIoU" in out
    scores = json.loads(out_json.read_text())
    assert 0 <= scores["miou"] <= 1 and 0 <= scores["pixel_acc"] <= 1 and len(scores["per_class_iou"]) == 6
    img = tmp_path / "in" / "a.png"
    img.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(img)
    code, out, _ = run(["predict", str(run_dir / "run" / "best"), str(img), "--out", str(tmp_path / "pred"),
                        "--overlay"], capsys)
    assert code == 0
    mask = Image.open(tmp_path / "pred" / "a.png")
    assert mask.mode == "P" and mask.size == (50, 40)
    assert (tmp_path / "pred" / "a_overlay.png").is_file()


def test_eval_writes_report(run_dir, capsys, tmp_path):
    code, out, _ = run(["eval", str(run_dir / "run"), "--data", "synthetic:3", "--report", str(tmp_path / "rep")],
                       capsys)
    assert code == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "Per-class IoU" in text and (tmp_path / "rep" / "confusion.png").is_file()


def test_predict_reports_unreadable_files_and_goes_on(run_dir, capsys, tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[:40])
    code, out, err = run(["predict", str(run_dir / "run" / "best"), str(good), str(bad), "--out",
                          str(tmp_path / "o")], capsys)
    assert code == 1 and "bad.png" in out + err
    assert (tmp_path / "o" / "good.png").is_file()


@pytest.mark.parametrize("argv, fragment", [
    (["train", "{recipe}", "train.epochz=1", "--out", "{tmp}/r"], "train.epochz' does not exist"),
    (["train", "{tmp}/missing.yaml", "--out", "{tmp}/r"], "missing.yaml: config file not found"),
    (["eval", "{tmp}/nomodel", "--data", "synthetic:3"], "not a pixelwise model directory"),
    (["eval", "{run}/best", "--data", "camvid:{tmp}/nodata"], "dataset folder not found"),
    (["eval", "{run}/best", "--data", "nosuchformat:/x"], "unknown dataset format"),
])
def test_errors_are_one_line(argv, fragment, run_dir, capsys, tmp_path):
    recipe = run_dir / "tiny.yaml"
    argv = [a.format(recipe=recipe, tmp=tmp_path, run=run_dir / "run") for a in argv]
    code, out, err = run(argv, capsys)
    assert code == 2
    assert fragment in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_no_traceback_from_the_console_script(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pixelwise", "train", str(tmp_path / "x.yaml"), "--out",
                           str(tmp_path / "r")], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "x.yaml" in proc.stderr


def test_bad_mask_inside_a_dataloader_worker_is_one_line(tmp_path, capsys):
    root = tmp_path / "ds"
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / split / "images" / f"{i}.png")
            size = (12, 16) if (split, i) == ("train", 2) else (16, 16)  # one mask of the wrong size
            Image.fromarray(np.zeros(size, np.uint8)).save(root / split / "masks" / f"{i}.png")
    (root / "classes.txt").write_text("a\nb\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data: {{format: folder, root: '{root}', crop_size: 16, num_workers: 1}}\n"
                      "model: {name: unet, kwargs: {base_channels: 4, depth: 2}}\ntrain: {epochs: 1, batch_size: 2}\n")
    code, out, err = run(["train", str(recipe), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and "Traceback" not in err
    errors = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "2.png" in errors[0] and "16x12" in errors[0]


def test_eval_and_predict_with_the_dense_crf(run_dir, capsys, tmp_path):
    import torch

    import pixelwise as pw

    predictor = pw.Predictor.from_dir(run_dir / "run" / "best", device="cpu", precision="fp32", crf="default")
    image = pw.open_dataset("synthetic:3", "val")[0].image
    pred = predictor.predict(image, return_probs=True)
    assert pred.semantic.shape == image.shape[:2]
    np.testing.assert_allclose(pred.probs.sum(0), 1, atol=1e-4)
    plain = pw.Predictor.from_dir(run_dir / "run" / "best", device="cpu", precision="fp32")
    from pixelwise.data.transforms import normalize_image

    x = normalize_image(image, plain.mean, plain.std)
    assert not torch.allclose(predictor.logits(x).softmax(1), plain.logits(x).softmax(1), atol=1e-3)
    code, out, _ = run(["eval", str(run_dir / "run" / "best"), "--data", "synthetic:3", "--crf", "deeplab_v1",
                        "--precision", "fp32"], capsys)
    assert code == 0 and "mIoU" in out
    code, _, err = run(["predict", str(run_dir / "run" / "best"), str(tmp_path), "--crf", "bogus", "--out",
                        str(tmp_path / "o")], capsys)
    assert code == 2


def test_eval_classic_scores_a_method_like_a_model(capsys, tmp_path):
    from conftest import shared_dataset

    root = shared_dataset("dsb2018_stage1_test_nuclei")
    out_json = tmp_path / "otsu.json"
    code, out, _ = run(["eval", "--classic", "otsu", "--param", "sigma=1", "--data", f"dsb:{root}", "--split", "val",
                        "--json", str(out_json)], capsys)
    assert code == 0 and "fg_iou" in out
    scores = json.loads(out_json.read_text())
    assert 0.3 < scores["fg_iou"] < 1 and 0 <= scores["pq"] <= 1
    code, out, err = run(["classic", "otsu", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "missing.png" in err
