"""train.amp: auto is a measured choice: forms timed on real steps, checked against fp32, cached; the
fp32 depthwise form changes no weights; measuring leaves the run as it would have been."""

import pytest
import timm
import torch
from torch import nn

from pixelwise.engine import autoamp
from pixelwise.engine.depthwise import count_depthwise, float32_depthwise, is_depthwise
from pixelwise.engine.logging import read_jsonl
from pixelwise.engine.trainer import train
from pixelwise.modeldir import read_model_config

from test_engine import tiny_config


def test_choose_keeps_the_fastest_form_that_agrees():
    ok, bad = {"ok": True}, {"ok": False}
    assert autoamp.choose({"fp32": 100, "bf16": 60, "bf16+fp32dw": 40}, {"bf16": ok, "bf16+fp32dw": ok}) == "bf16+fp32dw"
    assert autoamp.choose({"fp32": 100, "bf16": 60, "bf16+fp32dw": 40}, {"bf16": ok, "bf16+fp32dw": bad}) == "bf16"
    assert autoamp.choose({"fp32": 100, "bf16": 97}, {"bf16": ok}) == "fp32"  # within MIN_GAIN: fp32 is exact
    assert autoamp.choose({"fp32": 100, "bf16": 130}, {"bf16": ok}) == "fp32"


def _depthwise_net():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 5, padding=2, groups=8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.Conv2d(8, 4, 1))


def test_float32_depthwise_changes_no_weights_and_runs_fp32_under_autocast():
    net = _depthwise_net()
    keys = list(net.state_dict())
    x = torch.randn(2, 3, 16, 16)
    ref = net[1](net[0](x))
    assert count_depthwise(net) == 1  # the grouped (not depthwise) conv is left alone
    assert float32_depthwise(net) == 1 and not is_depthwise(net[1]) and isinstance(net[1], nn.Conv2d)
    assert list(net.state_dict()) == keys
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = net[0](x)
        assert h.dtype == torch.bfloat16
        out = net[1](h)
    assert out.dtype == torch.float32  # the depthwise layer ran in fp32 on the bf16 input
    torch.testing.assert_close(out, ref, atol=0.05, rtol=0.02)
    assert net[1](net[0](x)).dtype == torch.float32 and torch.allclose(net[1](net[0](x)), ref)


def test_float32_depthwise_keeps_timms_same_padding():
    conv = timm.layers.create_conv2d(16, 16, 5, stride=2, padding="same", depthwise=True)
    assert type(conv).__name__ == "Conv2dSame"
    x = torch.randn(1, 16, 15, 15)
    ref = conv(x)
    float32_depthwise(conv)
    assert type(conv).__name__ == "Float32Conv2dSame"
    torch.testing.assert_close(conv(x), ref)


def test_measure_times_agrees_and_caches(monkeypatch):
    import pixelwise.hardware as hw

    monkeypatch.setattr(hw, "cpu_has_fast_bf16", lambda: True)
    speeds = {"fp32": 100.0, "bf16": 70.0, "bf16+fp32dw": 50.0}
    calls = []
    monkeypatch.setattr(autoamp, "time_steps", lambda m, mk, c, x, y, form: calls.append(form) or speeds[form])
    net = _depthwise_net()
    net.pixelwise_arch = {"name": "test-net", "unique": id(net)}
    make = lambda m: torch.optim.AdamW(m.parameters(), 1e-3)  # noqa: E731
    x, y = torch.randn(2, 3, 16, 16), torch.randint(0, 4, (2, 16, 16))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    first = autoamp.measure(net, make, nn.CrossEntropyLoss(), x, y, True, "adamw")
    assert first["chosen"] == "bf16+fp32dw" and not first["cached"] and sorted(calls) == sorted(speeds)
    assert first["agreement"]["bf16"]["ok"] and first["agreement"]["bf16"]["grad_cosine"] > 0.99
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # measured on copies
    again = autoamp.measure(net, make, nn.CrossEntropyLoss(), x, y, True, "adamw")
    assert again["cached"] and again["chosen"] == "bf16+fp32dw" and len(calls) == 3
    assert "bf16+fp32dw" in autoamp.describe(again) and "cached" in autoamp.describe(again)


def test_no_bf16_units_means_fp32_without_timing(monkeypatch):
    import pixelwise.hardware as hw

    monkeypatch.setattr(hw, "cpu_has_fast_bf16", lambda: False)
    monkeypatch.setattr(autoamp, "time_steps", lambda *a, **k: pytest.fail("nothing to time"))
    got = autoamp.measure(_depthwise_net(), None, None, torch.zeros(1, 3, 8, 8), None, True, "adamw")
    assert got["chosen"] == "fp32" and "no bf16" in autoamp.describe(got)


def test_a_measured_run_trains_exactly_as_the_same_form_asked_for(tmp_path, monkeypatch):
    """Measuring draws a batch and random numbers; the run must not notice: amp auto that settles on fp32
    trains the same weights as amp off."""
    def measured_fp32(model, make, criterion, images, targets, channels_last, name):
        torch.rand(100)  # a measurement that uses the random stream, as dropout in timed steps does
        return {"chosen": "fp32", "ms": {"fp32": 1.0, "bf16": 2.0}, "agreement": {}, "cached": False}

    monkeypatch.setattr(autoamp, "measure", measured_fp32)
    auto = train(tiny_config(epochs=2, amp="auto"), tmp_path / "auto", progress=False)
    plain = train(tiny_config(epochs=2, amp="off"), tmp_path / "off", progress=False)
    assert auto.best_miou == pytest.approx(plain.best_miou, abs=1e-9)
    a, b = read_jsonl(tmp_path / "auto" / "metrics.jsonl"), read_jsonl(tmp_path / "off" / "metrics.jsonl")
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]
    assert {r["precision"] for r in a} == {"fp32"}
    saved = read_model_config(tmp_path / "auto" / "best")
    assert saved["train_precision"]["asked"] == "auto" and saved["train_precision"]["ms"]["bf16"] == 2.0
    assert read_model_config(tmp_path / "off" / "best")["train_precision"] == {"chosen": "fp32", "asked": "off"}


def test_agreement_check_draws_the_same_dropout_masks_for_every_form():
    """A model with dropout agrees with itself: the check's passes share one seed, so only the precision can
    move the gradient (with fresh masks per pass, SegFormer's bf16 scored a cosine of 0.966 and was refused)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Dropout(0.5), nn.Conv2d(8, 4, 1))
    x, y = torch.randn(2, 3, 16, 16), torch.randint(0, 4, (2, 16, 16))
    criterion = nn.CrossEntropyLoss()
    reference = autoamp._gradient(net, criterion, x, y, None)
    net.zero_grad()
    same = autoamp.agreement(net, criterion, x, y, "fp32", reference)
    assert same["grad_cosine"] == pytest.approx(1.0, abs=1e-6) and same["ok"]
    low = autoamp.agreement(net, criterion, x, y, "bf16", reference)
    assert low["grad_cosine"] > 0.99 and low["ok"]
    torch.manual_seed(1)
    expected = torch.rand(1).item()
    torch.manual_seed(1)
    autoamp._gradient(net, criterion, x, y, None)
    assert torch.rand(1).item() == expected  # the check leaves the run's own random stream where it was
