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
from pixelwise.modeldir import INT8_NAME  # noqa: E402
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
    # below the bar the 7-bit-weight graph (reduce_range) was tried too, and the better of the two reported
    assert set(report["tried"]) == {False, True} and "7-bit" in report["message"]
    assert report["agreement"] == max(report["tried"].values())
    assert report["reduce_range"] == (report["tried"][True] > report["tried"][False])
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
    with pytest.raises(ConfigError, match=r"precision int8 needs the model's int8 graph .*pixelwise export"):
        Predictor.from_dir(bare, precision="int8")
    with pytest.raises(ConfigError, match="int8 runs as a quantized ONNX graph"):
        Predictor(pw.load_model(bare), {"classes": ["a", "b"]}, "cpu", "int8")  # a module has no int8 graph
    with pytest.raises(SystemExit) as exc:
        main(["export", str(model_dir)])  # no --onnx and no --int8: nothing says where to write
    assert exc.value.code == 2


def times(monkeypatch, **ms):
    """The timer of precision='auto' made to see each candidate at the given ms (int8: the onnxruntime graph,
    recognised by its float32 NCHW input; fp32: channels_last float32; bf16: bfloat16)."""
    from pixelwise.inference import autoprecision

    def fake(model, x, repeats=3):
        if x.dtype == torch.bfloat16:
            return ms["bf16"]
        return ms["int8"] if not isinstance(model, torch.nn.Module) else ms["fp32"]

    monkeypatch.setenv("PIXELWISE_PRECISION_CACHE", "off")
    monkeypatch.setattr(autoprecision, "time_model", fake)


@pytest.fixture()
def with_int8(model_dir, tmp_path, monkeypatch):
    """A copy of the model directory holding its own int8 graph (written by `pixelwise export DIR --int8`)."""
    import shutil

    directory = tmp_path / "m"
    shutil.copytree(model_dir, directory)
    monkeypatch.setattr(quantize, "MIN_AGREEMENT", 0.0)
    main(["export", str(directory), "--int8", "--calibration-images", "3"])
    assert (directory / INT8_NAME).is_file()
    return directory


def test_auto_times_the_int8_graph_of_the_model_directory(with_int8, monkeypatch):
    """int8 inside "auto": the graph beside the model is one more timed candidate; the fastest is kept, fp32
    wins ties within 5%, and PIXELWISE_AUTO_CANDIDATES simulates a CPU without bf16."""
    image = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)
    monkeypatch.setattr("pixelwise.hardware.cpu_has_fast_bf16", lambda: True)
    monkeypatch.setattr("pixelwise.inference.predictor.MIN_AGREEMENT", 0.0)
    times(monkeypatch, fp32=10.0, bf16=8.0, int8=5.0)
    p = Predictor.from_dir(with_int8, precision="auto")
    assert p.precision == "int8" and p.onnx and p.auto_choice["ms"] == {"fp32": 10.0, "bf16": 8.0, "int8": 5.0}
    assert "onnxruntime" in p.describe() and "int8" in p.describe() and "held-out" in p.calibration["on"]
    assert p.predict(image).semantic.shape == (40, 56)
    reference = Predictor.from_dir(with_int8, precision="int8")  # asked for by name: the same graph
    assert reference.precision == "int8"
    np.testing.assert_array_equal(p.predict(image).semantic, reference.predict(image).semantic)
    times(monkeypatch, fp32=10.0, bf16=8.0, int8=9.8)
    p = Predictor.from_dir(with_int8, precision="auto")
    assert p.precision == "bf16" and not p.onnx
    monkeypatch.setenv("PIXELWISE_AUTO_CANDIDATES", "fp32,int8")  # a CPU without bf16, simulated
    times(monkeypatch, fp32=10.0, bf16=1.0, int8=9.8)
    p = Predictor.from_dir(with_int8, precision="auto")
    assert p.precision == "fp32" and set(p.auto_choice["ms"]) == {"fp32", "int8"}  # 2% faster: not enough
    times(monkeypatch, fp32=10.0, bf16=1.0, int8=6.0)
    assert Predictor.from_dir(with_int8, precision="auto").precision == "int8"
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # not installed: torch forms only
    p = Predictor.from_dir(with_int8, precision="auto")
    assert p.precision == "fp32" and "int8" not in p.auto_choice["ms"]


def test_auto_decision_is_cached_per_int8_graph(with_int8, monkeypatch, tmp_path):
    """A cached "auto" decision names the int8 graph it timed: a rewritten graph is timed again."""
    import os

    from pixelwise.inference import autoprecision

    monkeypatch.setenv("PIXELWISE_AUTO_CANDIDATES", "fp32,int8")
    times(monkeypatch, fp32=10.0, bf16=1.0, int8=5.0)
    monkeypatch.setenv("PIXELWISE_PRECISION_CACHE", "on")
    monkeypatch.setenv("PIXELWISE_CACHE_DIR", str(tmp_path / "cache"))
    assert Predictor.from_dir(with_int8, precision="auto").precision == "int8"
    calls = []
    monkeypatch.setattr(autoprecision, "time_model", lambda *a, **k: calls.append(1) or 1.0)
    again = Predictor.from_dir(with_int8, precision="auto")
    assert again.auto_choice["cached"] and again.precision == "int8" and not calls
    graph = with_int8 / INT8_NAME
    st = graph.stat()
    os.utime(graph, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # as if written again
    Predictor.from_dir(with_int8, precision="auto")
    assert calls


def test_an_int8_graph_that_disagrees_is_not_kept_in_the_model_directory(with_int8, monkeypatch, capsys):
    monkeypatch.setattr(quantize, "MIN_AGREEMENT", 1.01)
    main(["export", str(with_int8), "--int8", "--calibration-images", "2"])
    assert not (with_int8 / INT8_NAME).exists()  # the older graph is gone too
    assert "no int8 graph kept in the model directory" in capsys.readouterr().out
    times(monkeypatch, fp32=10.0, bf16=8.0, int8=1.0)
    monkeypatch.setenv("PIXELWISE_AUTO_CANDIDATES", "fp32,int8")
    p = Predictor.from_dir(with_int8, precision="auto")
    assert p.precision == "fp32" and "int8" not in p.auto_choice["ms"]
