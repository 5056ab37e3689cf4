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
