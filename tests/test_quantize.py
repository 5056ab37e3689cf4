"""int8: the exported graph quantized by onnxruntime (calibrated on training images, output layers in float),
kept only when it agrees with fp32; `pixelwise export --int8`; the Predictor running the int8 file."""
import numpy as np
import pytest
import torch

import pixelwise as pw

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import onnx  # noqa: E402

from pixelwise import quantize  # noqa: E402
from pixelwise.cli import main  # noqa: E402
from pixelwise.errors import ConfigError  # noqa: E402
from pixelwise.inference.predictor import Predictor  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = pw.create_model("unet", 3, base_channels=8, depth=2)
    return pw.save_model(model, tmp_path_factory.mktemp("q") / "unet", classes=["a", "b", "c"],
                         preprocessing={"mean": [0.5] * 3, "std": [0.25] * 3}, extra={"dataset": "synthetic:6"})


def test_int8_graph_quantizes_all_but_the_output_layer_and_runs(model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(quantize, "MIN_AGREEMENT", 0.0)  # random weights: keep whatever it agrees
    report = quantize.quantize_model(model_dir, tmp_path / "m.int8.onnx", images=4, check_images=2)
    assert report["precision"] == "int8" and report["calibration"] == "synthetic:6" and report["images"] == 4
    graph = onnx.load(str(tmp_path / "m.int8.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") > 3 and "DequantizeLinear" in ops
    assert len(report["excluded"]) == 1  # the logits convolution, kept in float
    last = next(n for n in graph.node if n.name == report["excluded"][0])
    producers = {o: n for n in graph.node for o in n.output}
    assert last.input[1] not in producers  # its weight is a float initializer, no DequantizeLinear before it
    weight = next(t for t in graph.initializer if t.name == last.input[1])
    assert weight.data_type == onnx.TensorProto.FLOAT
    predictor = Predictor.from_dir(tmp_path / "m.int8.onnx")
    assert predictor.precision == "int8" and "int8" in predictor.describe()
    image = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)
    assert predictor.predict(image).semantic.shape == (40, 56)
    assert 0 <= report["agreement"] <= 1


def test_int8_that_disagrees_falls_back_to_fp32_and_says_so(model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(quantize, "MIN_AGREEMENT", 1.01)  # nothing can agree this well
    report = quantize.quantize_model(model_dir, tmp_path / "m.onnx", images=2, check_images=2)
    assert report["precision"] == "fp32" and "wrote the fp32 graph instead" in report["message"]
    ops = {n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    assert "QuantizeLinear" not in ops
    assert Predictor.from_dir(tmp_path / "m.onnx").precision == "fp32"


def test_calibration_on_a_real_training_set_agrees_with_fp32(tmp_path):
    """A trained-looking model on real images: the int8 argmax matches fp32 on most pixels."""
    data = "camvid:../shared/data/camvid"
    torch.manual_seed(0)
    model = pw.create_model("unet", 11, base_channels=8, depth=3)
    directory = pw.save_model(model, tmp_path / "camvid", classes=[f"c{i}" for i in range(11)],
                              preprocessing={"mean": [0.4, 0.4, 0.4], "std": [0.3, 0.3, 0.3], "resize": 96},
                              extra={"dataset": data})
    report = quantize.quantize_model(directory, tmp_path / "c.onnx", images=4, check_images=2)
    assert report["agreement"] > 0.9, report


def test_export_int8_command_and_its_errors(model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(quantize, "MIN_AGREEMENT", 0.0)
    out = tmp_path / "cli.onnx"
    main(["export", str(model_dir), "--onnx", str(out), "--int8", "--calibration-images", "3"])
    assert out.is_file() and "QuantizeLinear" in {n.op_type for n in onnx.load(str(out)).graph.node}
    with pytest.raises(SystemExit) as exc:
        main(["export", str(model_dir), "--onnx", str(out), "--calibration", "synthetic:3"])
    assert exc.value.code == 2  # --calibration without --int8 is a usage error, not ignored
    bare = pw.save_model(pw.create_model("unet", 2, base_channels=4, depth=2), tmp_path / "bare", classes=["a", "b"])
    with pytest.raises(ConfigError, match="names no training set to calibrate on"):
        quantize.quantize_model(bare, tmp_path / "x.onnx")
    with pytest.raises(ConfigError, match="int8 runs as a quantized ONNX graph"):
        Predictor.from_dir(bare, precision="int8")
