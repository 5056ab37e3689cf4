"""ONNX export: dynamic batch/height/width, normalisation in the graph, parity with torch, and the
Predictor running the file with onnxruntime; the `pixelwise export` command."""
import numpy as np
import pytest
import torch

import pixelwise as pw

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from pixelwise.cli import main  # noqa: E402
from pixelwise.export import export_onnx  # noqa: E402
from pixelwise.inference.onnx import OnnxModel  # noqa: E402
from pixelwise.inference.predictor import Predictor  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    model = pw.create_model("unet", 3, base_channels=4, depth=2)
    with torch.no_grad():  # trained-looking batch norm statistics, so the folding inside export matters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    directory = pw.save_model(model, root / "unet", classes=["x", "y", "z"],
                              preprocessing={"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]})
    report = export_onnx(directory, root / "unet.onnx", check_sizes=((1, 70, 90), (3, 33, 41)))
    return directory, root / "unet.onnx", report


def test_onnx_parity_on_other_sizes_and_batches(exported):
    _, path, report = exported
    assert path.is_file() and report["outputs"] == ["logits"]
    assert [c["shape"] for c in report["checks"]] == [[1, 3, 70, 90], [3, 3, 33, 41]]
    assert report["max_abs_diff"] < 1e-4
    assert all(c["agreement"] > 0.999 for c in report["checks"])


def test_predictor_runs_the_onnx_file(exported):
    directory, path, _ = exported
    onnx_model = OnnxModel(path)
    assert onnx_model.config["classes"] == ["x", "y", "z"]
    image = np.random.default_rng(3).integers(0, 256, (57, 83, 3), dtype=np.uint8)
    torch_pred = Predictor.from_dir(directory, device="cpu", precision="fp32").predict(image, return_probs=True)
    onnx_pred = Predictor.from_dir(str(path)).predict(image, return_probs=True)
    assert np.abs(onnx_pred.probs - torch_pred.probs).max() < 1e-4
    tiled = Predictor.from_dir(str(path), tile=32, overlap=0.5, tta="flip")
    assert tiled.onnx and tiled.predict(image).semantic.shape == (57, 83)


def test_export_command(exported, tmp_path, capsys):
    directory, _, _ = exported
    try:
        main(["export", str(directory), "--onnx", str(tmp_path / "m.onnx")])
    except SystemExit as exc:
        assert not exc.code
    out = capsys.readouterr().out
    assert (tmp_path / "m.onnx").is_file() and "max abs logit diff" in out
