"""Inference: sliding window, TTA, the fast path (BN folding, precision check), batch prediction."""
import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pixelwise as pw
from pixelwise import rle
from pixelwise.data.transforms import normalize_image
from pixelwise.errors import PixelwiseError
from pixelwise.inference import predictor as predictor_mod
from pixelwise.inference import sliding
from pixelwise.inference.batch import predict_files
from pixelwise.inference.fastpath import fold_batchnorm, prepare_model
from pixelwise.inference.swaps import DilatedConvMatmul, FastASPP, Float32Layer, OneDNNConv, onednn_by_default
from pixelwise.inference.predictor import Predictor
from pixelwise.inference.tta import parse_tta

CLASSES = ["a", "b", "c", "d"]
CONFIG = {"classes": CLASSES, "palette": [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]],
          "preprocessing": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}


class Local(nn.Module):
    """Three 3x3 convs with batch norm: receptive-field radius 3, stride 1."""

    stride = 1

    def __init__(self, classes=4, symmetric=False):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, classes, 3, padding=1))
        torch.manual_seed(0)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics, so folding has work to do
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
            if symmetric and isinstance(m, nn.Conv2d):  # mirror-symmetric kernels: flip-equivariant model
                m.weight.data = (m.weight.data + m.weight.data.flip(-1)) / 2
        self.eval()

    def forward(self, x):
        return self.body(x)


class Strided(nn.Module):
    """A stride-2 encoder-decoder (pads to its stride like SegmentationModel); receptive radius ~7 px."""

    stride = 2

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.down = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1))
        self.head = nn.Conv2d(8, 4, 1)
        self.offset = nn.Conv2d(8, 2, 1)
        self.dict_output = False
        self.eval()

    def forward(self, x):
        h, w = x.shape[-2:]
        x = F.pad(x, (0, -w % 2, 0, -h % 2))
        f = F.interpolate(self.down(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        out = self.head(f)[..., :h, :w]
        return {"out": out, "offset": self.offset(f)[..., :h, :w]} if self.dict_output else out


def image(h=90, w=77, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def fp32(model, **kw):
    return Predictor(model, CONFIG, "cpu", "fp32", **kw)


def test_grid_is_aligned_and_covers_the_image():
    g = sliding.make_grid(1000, 130, tile=256, overlap=0.25, align=32)
    assert (g.padded_h, g.padded_w) == (1024, 160) and (g.tile_h, g.tile_w) == (256, 160)
    assert all(y % 32 == 0 for y in g.ys) and g.ys[0] == 0 and g.ys[-1] + g.tile_h == g.padded_h
    assert all(b - a <= 256 * 0.75 for a, b in zip(g.ys, g.ys[1:])) and g.xs == (0,)
    with pytest.raises(ValueError):
        sliding.make_grid(10, 10, 8, overlap=1.0)


@pytest.mark.parametrize("model", [Local(), Strided()], ids=["stride1", "stride2"])
def test_tiled_equals_one_pass_when_the_receptive_field_fits_the_overlap(model):
    x = normalize_image(image(), CONFIG["preprocessing"]["mean"], CONFIG["preprocessing"]["std"])
    whole = fp32(model).logits(x)
    linear = fp32(model, tile=32 if model.stride == 1 else 64, overlap=0.5, blend="linear").logits(x)
    torch.testing.assert_close(linear, whole, atol=1e-5, rtol=1e-5)  # exact up to rounding
    gauss = fp32(model, tile=32, overlap=0.5, tile_batch=3).logits(x)
    assert (gauss - whole).abs().max() < 0.05 * whole.abs().max()  # near-exact: tiny weights at the cuts
    assert (gauss.argmax(1) == whole.argmax(1)).float().mean() > 0.99


@pytest.mark.parametrize("band_bytes", [64 * 2**20, 4 * 61 * 4 * 5], ids=["one band per tile row", "5-row bands"])
def test_streaming_labels_match_full_logits_and_write_rows(monkeypatch, band_bytes):
    monkeypatch.setattr(sliding, "BAND_BYTES", band_bytes)
    model = Local()
    img = image(150, 61)
    tiled = fp32(model, tile=32, overlap=0.5, blend="linear")
    expect = fp32(model).predict(img).semantic
    assert np.array_equal(tiled.predict(img).semantic, expect)
    rows, out = [], np.zeros(img.shape[:2], np.uint8)
    for y0, y1, band in tiled.iter_rows(img):
        rows.append((y0, y1))
        out[y0:y1] = band.semantic
    assert rows[0][0] == 0 and rows[-1][1] == 150 and all(a[1] == b[0] for a, b in zip(rows, rows[1:]))
    assert len(rows) > 2 and np.array_equal(out, expect)
    assert max(b - a for a, b in rows) <= (5 if band_bytes < 2**20 else 150)
    grid = sliding.make_grid(150, 61, 32, 0.5, align=1)
    fetch = sliding.uint8_fetcher(img, CONFIG["preprocessing"]["mean"], CONFIG["preprocessing"]["std"])
    written = {}
    assert sliding.stitch_labels(tiled._run, fetch, grid, "linear", on_rows=lambda a, b, v: written.update({a: v})) is None
    assert np.array_equal(np.concatenate([written[k] for k in sorted(written)]), expect)


def test_low_precision_accumulator_and_dict_outputs():
    model = Strided()
    model.dict_output = True
    x = normalize_image(image(70, 100), [0.5] * 3, [0.25] * 3)
    whole = fp32(model).outputs(x)
    grid = sliding.make_grid(70, 100, 64, 0.5, align=2)
    run = fp32(model)._run
    got = sliding.stitch(run, sliding.tensor_fetcher(x[0]), grid, "linear", accum_dtype=torch.float16)
    for key in ("out", "offset"):
        torch.testing.assert_close(got[key], whole[key][0], atol=2e-3, rtol=2e-3)


def test_tta_flip_on_a_flip_symmetric_model_changes_nothing():
    model = Local(symmetric=True)
    x = normalize_image(image(40, 52), [0.5] * 3, [0.25] * 3)
    plain = fp32(model).logits(x)
    torch.testing.assert_close(fp32(model, tta="flip").logits(x), plain, atol=1e-5, rtol=1e-5)
    # the plain model is not symmetric on a flipped image, so this is a real check of the un-flip
    assert (fp32(model).logits(x.flip(-1)) - plain).abs().max() > 1e-3


def test_tta_means_the_augmented_logits():
    model = Local()
    p = fp32(model)
    x = normalize_image(image(40, 52), [0.5] * 3, [0.25] * 3)
    flip = (p.logits(x) + p.logits(x.flip(-1)).flip(-1)) / 2
    torch.testing.assert_close(fp32(model, tta="flip").logits(x), flip, atol=1e-5, rtol=1e-5)
    half = F.interpolate(p.logits(F.interpolate(x, size=(20, 26), mode="bilinear", align_corners=False)),
                         size=(40, 52), mode="bilinear", align_corners=False)
    torch.testing.assert_close(fp32(model, tta=[0.5, 1]).logits(x), (half + p.logits(x)) / 2, atol=1e-5, rtol=1e-5)
    assert parse_tta("flip,0.75,1,1.25") == (("", "h"), (0.75, 1.0, 1.25))
    assert parse_tta(None) == (("",), (1.0,)) and parse_tta([0.5]) == (("",), (0.5,))
    assert parse_tta("flip,d4")[0] == parse_tta("d4")[0] and len(set(parse_tta("d4")[0])) == 8
    with pytest.raises(PixelwiseError, match="flip"):
        parse_tta("flop")


def test_tta_flip_negates_horizontal_offsets():
    from pixelwise.inference.tta import with_tta

    def right(x):  # every pixel points one pixel to the right: not flip-equivariant
        n, _, h, w = x.shape
        return {"out": x[:, :1], "offset": torch.stack([torch.zeros(n, h, w), torch.ones(n, h, w)], 1)}

    out = with_tta(right, *parse_tta("flip"))(torch.randn(2, 3, 8, 8))
    assert torch.all(out["offset"] == 0)
    out = with_tta(right, scales=[0.5])(torch.randn(1, 3, 8, 8))
    assert torch.allclose(out["offset"][:, 1], torch.full((1, 8, 8), 2.0))  # half-size pixels count double


def test_d4_views_are_the_eight_symmetries_and_map_back():
    from pixelwise.inference.tta import spell_tta, view_of, with_tta

    x = torch.arange(2 * 12.0).view(1, 2, 3, 4)
    def key(t):
        return tuple(t.flatten().tolist()), tuple(t.shape)

    seen = {key(view_of(x, v)) for v in parse_tta("d4")[0]}
    rotations = {key(torch.rot90(f, k, (-2, -1))) for f in (x, x.flip(-1)) for k in range(4)}
    assert seen == rotations  # the dihedral group of the rectangle's square, nothing repeated
    # an equivariant map (identity of the input) comes back unchanged through every view
    out = with_tta(lambda t: t * 1.0, *parse_tta("d4"))(x)
    torch.testing.assert_close(out, x)
    # the mean over d4 of a non-symmetric function is its average over the 8 rotated/flipped inputs
    weight = torch.randn(2, 2, 3, 3)

    def conv(t):
        return F.conv2d(t, weight, padding=1)

    manual = sum(torch.rot90(conv(torch.rot90(f, k, (-2, -1))), -k, (-2, -1)).flip(-1) if flipped else
                 torch.rot90(conv(torch.rot90(f, k, (-2, -1))), -k, (-2, -1))
                 for flipped, f in ((False, x), (True, x.flip(-1))) for k in range(4)) / 8
    torch.testing.assert_close(with_tta(conv, *parse_tta("d4"))(x), manual, atol=1e-4, rtol=1e-4)
    for spec in ("none", "flip", "flips", "d4", "d4,0.75,1,1.25", "0.5,1"):
        assert spell_tta(*parse_tta(spec)) == spec


def test_d4_moves_offset_vectors_with_the_pixels():
    from pixelwise.inference.tta import with_tta

    def to_centre(x):  # every pixel's vector points at the image centre: a rotation/flip-covariant field
        n, _, h, w = x.shape
        yy = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
        xx = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w)
        offset = torch.stack([(h - 1) / 2 - yy, (w - 1) / 2 - xx])[None].expand(n, 2, h, w)
        return {"out": x[:, :1], "offset": offset}

    x = torch.randn(1, 3, 6, 10)
    out = with_tta(to_centre, *parse_tta("d4"))(x)
    torch.testing.assert_close(out["offset"], to_centre(x)["offset"])

    def right(x):  # not covariant: averaged over d4 the vectors cancel
        n, _, h, w = x.shape
        return {"out": x[:, :1], "offset": torch.stack([torch.zeros(n, h, w), torch.ones(n, h, w)], 1)}

    assert torch.allclose(with_tta(right, *parse_tta("d4"))(torch.randn(1, 3, 8, 8))["offset"], torch.zeros(1, 2, 8, 8))


def test_fold_batchnorm_keeps_outputs_and_leaves_the_model_alone():
    model = pw.create_model("deeplabv3", 4, encoder="resnet18").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded, n = fold_batchnorm(model)
    assert n >= 20 and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    x = torch.randn(1, 3, 64, 80)
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), model(x), atol=1e-4, rtol=1e-4)
        fast = prepare_model(model, "cpu", torch.float32)  # + ASPP without its copies, conv+ReLU fused
        assert any(isinstance(m, FastASPP) for m in fast.modules())
        torch.testing.assert_close(fast(x.contiguous(memory_format=torch.channels_last)), model(x), atol=1e-4,
                                   rtol=1e-4)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_predictor_runs_the_aspp_swap(precision):
    """The Predictor folds batch norm itself and prepares the folded copy: the ASPP swap must still reach
    the model it runs (it did not, while prepare_model swapped only when it folded)."""
    torch.manual_seed(0)
    model = pw.create_model("deeplabv3", 4, encoder="resnet18").eval()
    config = {"classes": ["a", "b", "c", "d"], "preprocessing": {}}
    predictor = Predictor(model, config, "cpu", precision, calibrate=False)
    assert any(isinstance(m, FastASPP) for m in predictor.model.modules())
    x = torch.randn(1, 3, 64, 80)
    with torch.inference_mode():
        reference = model(x)
    agreement = (predictor.logits(x).argmax(1) == reference.argmax(1)).float().mean()
    assert agreement > (0.999 if precision == "fp32" else 0.95)


def test_fold_batchnorm_undoes_itself_when_a_conv_output_is_reused():
    class Reuse(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
            self.bn.running_mean.fill_(1.0)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # y is used twice: folding the bn into the conv would change both

    with pytest.warns(UserWarning, match="folding changed"):
        model, n = fold_batchnorm(Reuse().eval())
    assert n == 0 and isinstance(model.bn, nn.BatchNorm2d)


def test_relu_fusion_skips_a_residual_added_in_place():
    from pixelwise.inference.swaps import onednn_convs

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.act1 = nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(inplace=True)
            self.conv2, self.act2 = nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(inplace=True)

        def forward(self, x):
            y = self.conv2(self.act1(self.conv1(x)))
            y += x  # ResNet's residual: the ReLU after it must not be fused into conv2
            return self.act2(y)

    block = Block().eval()
    fused = prepare_model(block, "cpu", torch.float32, onednn=False)
    if onednn_convs(fused):  # 0 where this torch has no oneDNN post-op kernels
        assert fused.conv1.relu and isinstance(fused.act1, nn.Identity)
        assert isinstance(fused.act2, nn.ReLU) and not fused.conv2.relu
    x = torch.randn(1, 3, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x.contiguous(memory_format=torch.channels_last)), block(x))


@pytest.mark.parametrize("dilation, size", [(2, 9), (12, 10), (5, 16)])
def test_dilated_conv_as_matmul_equals_the_convolution(dilation, size):
    conv = nn.Conv2d(16, 8, 3, padding=dilation, dilation=dilation)
    x = torch.randn(2, 16, size, size + 3).contiguous(memory_format=torch.channels_last)
    assert DilatedConvMatmul.applies(conv)
    with torch.inference_mode():
        torch.testing.assert_close(DilatedConvMatmul(conv)(x), conv(x), atol=1e-4, rtol=1e-4)


def test_prepare_model_casts_fuses_and_keeps_logits_in_fp32():
    model = Local()
    fast = prepare_model(model, "cpu", torch.bfloat16)
    first, head = fast.body[0], fast.body[6]
    assert isinstance(head, Float32Layer)
    # prepacked oneDNN conv + ReLU post-op, where oneDNN runs bf16 here (an AVX2-only CPU refuses the bf16
    # weight reorder: the swap is then undone by its check and the module stays a plain convolution)
    if onednn_by_default(torch.device("cpu"), torch.bfloat16) and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        assert isinstance(first, OneDNNConv) and first.relu and isinstance(fast.body[2], nn.Identity)
        first = first.conv
        assert isinstance(head.layer, OneDNNConv) and not head.layer.relu
    head = head.layer
    assert first.weight.dtype == torch.bfloat16 and first.weight.is_contiguous(memory_format=torch.channels_last)
    assert getattr(head, "conv", head).weight.dtype == torch.float32
    x = torch.randn(2, 3, 24, 20)
    with torch.inference_mode():
        out = fast(x.bfloat16().contiguous(memory_format=torch.channels_last))
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, model(x), atol=0.05, rtol=0.05)
        fp32 = prepare_model(model, "cpu", torch.float32)
        torch.testing.assert_close(fp32(x), model(x), atol=1e-4, rtol=1e-4)


def bf16_times_faster(monkeypatch, factor: float = 2.0):
    """The timer of precision='auto' made to see bf16 `factor` times faster than fp32 (bf16 candidates on)."""
    from pixelwise.inference import autoprecision

    monkeypatch.setattr("pixelwise.hardware.cpu_has_fast_bf16", lambda: True)
    monkeypatch.setenv("PIXELWISE_PRECISION_CACHE", "off")
    monkeypatch.setattr(autoprecision, "time_model",
                        lambda model, x, repeats=3: 10.0 / factor if x.dtype == torch.bfloat16 else 10.0)


def test_low_precision_is_checked_against_fp32(monkeypatch):
    bf16_times_faster(monkeypatch)
    monkeypatch.setattr(predictor_mod, "MIN_AGREEMENT", 0.0)
    p = Predictor(Local(), CONFIG, "cpu", "auto")
    assert p.precision == "bf16" and p.calibration["ok"] and p.dtype == torch.bfloat16
    assert p.predict(image(33, 47)).semantic.shape == (33, 47)
    monkeypatch.setattr(predictor_mod, "MIN_AGREEMENT", 1.01)  # no model can reach it: forces the fall-back
    with pytest.warns(UserWarning, match="running in fp32"):
        p = Predictor(Local(), CONFIG, "cpu", "auto")
    assert p.precision == "fp32" and p.dtype == torch.float32 and not p.calibration["ok"]
    with pytest.warns(UserWarning, match="would fall back"):
        p = Predictor(Local(), CONFIG, "cpu", "bf16")  # asked for explicitly: kept, with a warning
    assert p.precision == "bf16"
    monkeypatch.setattr("pixelwise.hardware.cpu_has_fast_bf16", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Predictor(Local(), CONFIG, "cpu", "auto").precision == "fp32"
    with pytest.raises(PixelwiseError, match="CUDA"):
        Predictor(Local(), CONFIG, "cpu", "fp16")


def test_low_precision_is_checked_on_the_models_own_training_images(monkeypatch):
    """The agreement check reads the training set config.json names (resized as inference resizes), and
    falls back to the synthetic scene when that set is not readable here."""
    from pixelwise.inference import predictor as pm

    bf16_times_faster(monkeypatch)
    monkeypatch.setattr(predictor_mod, "MIN_AGREEMENT", 0.0)
    seen = []
    real = pm.Predictor._model_outputs

    def spy(self, model, x, dtype):
        seen.append(tuple(x.shape[-2:]))
        return real(self, model, x, dtype)

    monkeypatch.setattr(pm.Predictor, "_model_outputs", spy)
    config = {**CONFIG, "dataset": "synthetic:5", "preprocessing": {**CONFIG["preprocessing"], "resize": 48}}
    p = Predictor(Local(), config, "cpu", "auto")
    assert p.calibration["on"] == "2 training images of synthetic:5" and p.precision == "bf16"
    assert seen and all(min(hw) == 48 for hw in seen)  # the images as inference resizes them
    assert "on 2 training images of synthetic:5" in p.describe()
    seen.clear()
    gone = {**CONFIG, "dataset": "camvid:/nonexistent/camvid"}
    p = Predictor(Local(), gone, "cpu", "auto")
    assert p.calibration["on"] == "the synthetic calibration scene"
    assert seen == [(pm.CALIBRATION_SIZE, pm.CALIBRATION_SIZE)] * 2  # fp32 and bf16 on the scene
    assert pm.training_images({"dataset": "not a spec"}) == ([], None)


def test_auto_precision_is_measured_not_read_from_the_cpu_flag(monkeypatch, tmp_path):
    """bf16 instructions present but bf16 slower (or not faster by 5%): auto keeps fp32; faster: bf16. The
    decision is cached per (architecture, size, CPU, torch) and a second Predictor does not time again."""
    from pixelwise.inference import autoprecision

    monkeypatch.setattr(predictor_mod, "MIN_AGREEMENT", 0.0)
    bf16_times_faster(monkeypatch, factor=0.5)  # bf16 twice as slow
    p = Predictor(Local(), CONFIG, "cpu", "auto")
    assert p.precision == "fp32" and p.auto_choice["ms"] == {"fp32": 10.0, "bf16": 20.0}
    assert "auto: fp32 10.0 ms, bf16 20.0 ms" in p.describe()
    bf16_times_faster(monkeypatch, factor=1.03)  # within the 5% margin: fp32
    assert Predictor(Local(), CONFIG, "cpu", "auto").precision == "fp32"
    bf16_times_faster(monkeypatch, factor=2.0)
    monkeypatch.setenv("PIXELWISE_PRECISION_CACHE", "on")
    monkeypatch.setenv("PIXELWISE_CACHE_DIR", str(tmp_path))
    tile = Predictor(Local(), CONFIG, "cpu", "auto", tile=96)
    assert tile.precision == "bf16" and tile.auto_choice["size"] == 96 and not tile.auto_choice["cached"]
    assert (tmp_path / "precision.json").is_file()
    calls = []
    monkeypatch.setattr(autoprecision, "time_model", lambda *a, **k: calls.append(1) or 1.0)
    again = Predictor(Local(), CONFIG, "cpu", "auto", tile=96)
    assert again.precision == "bf16" and again.auto_choice["cached"] and not calls
    Predictor(Local(), CONFIG, "cpu", "auto", tile=64)  # another size: timed
    assert calls
    assert Predictor(Local(), CONFIG, "cpu", "fp32").auto_choice is None  # explicit: nothing measured
    (tmp_path / "precision.json").write_text("{not json")  # a damaged cache is rebuilt, not an error
    assert Predictor(Local(), CONFIG, "cpu", "auto", tile=96).precision in ("bf16", "fp32")


def test_auto_precision_times_the_real_model():
    """Without stand-ins: both candidates are timed (where bf16 instructions exist) and the faster kept."""
    from pixelwise.hardware import cpu_has_fast_bf16

    p = Predictor(Local(), CONFIG, "cpu", "auto")
    if cpu_has_fast_bf16():
        assert set(p.auto_choice["ms"]) == {"fp32", "bf16"} and all(v > 0 for v in p.auto_choice["ms"].values())
    else:
        assert p.auto_choice["chosen"] == "fp32" and p.auto_choice["ms"] == {}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = pw.create_model("unet", 4, base_channels=4, depth=2)
    return pw.save_model(model, tmp_path_factory.mktemp("m") / "unet", classes=CLASSES)


def test_from_dir_options_and_describe(model_dir):
    p = Predictor.from_dir(model_dir, device="cpu", precision="fp32", tile=64, overlap=0.5, tta="flip")
    assert p.tile == 64 and p.tta == (("", "h"), (1.0,)) and "tile 64" in p.describe()
    assert p.predict(image(100, 130)).semantic.shape == (100, 130)
    with pytest.raises(PixelwiseError, match="overlap"):
        Predictor.from_dir(model_dir, device="cpu", overlap=1.5)


def test_batch_prediction_writes_formats_and_resumes(model_dir, tmp_path):
    from PIL import Image

    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(3):
        Image.fromarray(image(40 + i, 50, seed=i)).save(inputs / f"img{i}.png")
    (inputs / "bad.png").write_bytes(b"not a png")
    paths = [inputs / "bad.png", *(inputs / f"img{i}.png" for i in range(3))]
    p = Predictor.from_dir(model_dir, device="cpu", precision="fp32", tile=32)
    out = tmp_path / "out"
    formats = ["png", "npy", "rle"]
    logged = []
    result = predict_files(p, paths, out, formats, overlay=True, num_workers=1, progress=False, log=logged.append)
    assert len(result.written) == 3 and len(result.failed) == 1 and "bad.png" in logged[0]
    labels = np.load(out / "img1.npy")
    assert labels.shape == (41, 50) and np.array_equal(labels, np.asarray(Image.open(out / "img1.png")))
    doc = json.loads((out / "img1.json").read_text())
    decoded = np.full(labels.shape, -1)
    for seg in doc["segments"]:
        decoded[rle.decode(seg["rle"])] = seg["id"]
    assert np.array_equal(decoded, labels) and (out / "img1_overlay.png").is_file()
    (out / "img2.npy").unlink()
    stamp = (out / "img0.png").stat().st_mtime_ns
    again = predict_files(p, paths[1:], out, formats, overlay=True, num_workers=0, progress=False)
    assert [q.name for q in again.written] == ["img2.png"] and len(again.skipped) == 2
    assert (out / "img2.npy").is_file() and (out / "img0.png").stat().st_mtime_ns == stamp
    assert not [q for q in out.iterdir() if ".tmp" in q.name]
    only_npy = predict_files(p, paths[1:2], tmp_path / "npy", ["npy"], num_workers=0, progress=False)
    assert only_npy.written and np.array_equal(np.load(tmp_path / "npy" / "img0.npy"), np.load(out / "img0.npy"))
