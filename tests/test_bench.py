"""`pixelwise bench` and `pixelwise models`: timing through the fast path against a peer in the same run,
sizes parsed, options that cannot apply refused."""
from __future__ import annotations

import json

import pytest
import torch

import pixelwise as pw
from pixelwise.errors import ConfigError
from pixelwise.inference.speed import PeakMemory, parse_size, peer, summarise
from conftest import run_cli


def test_parse_size():
    assert parse_size("360x480") == (360, 480) and parse_size("512") == (512, 512) and parse_size("64,96") == (64, 96)
    for bad in ("360x", "axb", "0x10", "-3"):
        with pytest.raises(ConfigError, match="--size"):
            parse_size(bad)


def test_summarise_median_p95_fps():
    times = [10.0] * 18 + [30.0, 40.0]  # p95 by nearest rank: the 19th of 20
    r = summarise("m", times, 12.0, (8, 8), 2, "cpu", "fp32", [])
    assert r.median_ms == 10.0 and r.p95_ms == 30.0 and r.fps == 200.0 and r.runs == 20


def test_peak_memory_sees_an_allocation():
    with PeakMemory(torch.device("cpu")) as memory:
        block = torch.ones(64 * 2**20 // 4)  # 64 MB, touched
        del block
    assert memory.mb > 32


def test_bench_name_against_torchvision(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code, stdout, err = run_cli(["bench", "lraspp", "--size", "64x96",
                                 "--seconds", "0", "--precision", "fp32", "--compare",
                                 "torchvision:lraspp_mobilenet_v3_large", "--json", str(out)], capsys)
    assert code == 0, err
    assert "| torchvision:lraspp_mobilenet_v3_large | 64x96 | 1 | cpu | fp32 |" in stdout
    assert "x the frames/s of torchvision:lraspp_mobilenet_v3_large" in stdout
    record = json.loads(out.read_text())
    ours, theirs = record["results"]
    assert ours["fps"] > 0 and theirs["fps"] > 0 and ours["runs"] >= 20
    assert "batch norm folded" in ours["steps"] and "channels_last" in ours["steps"] and theirs["steps"] == ["eager"]


def test_bench_model_dir_and_errors(tmp_path, capsys):
    model = pw.create_model("unet", 3, base_channels=4, depth=2)
    model_dir = pw.save_model(model, tmp_path / "unet", classes=["a", "b", "c"])
    code, stdout, err = run_cli(["bench", str(model_dir), "--size", "32", "--seconds", "0", "--batch", "2",
                                 "--precision", "fp32"], capsys)
    assert code == 0, err
    assert "| unet | 32x32 | 2 | cpu | fp32 |" in stdout
    code, _, err = run_cli(["bench", str(model_dir), "--classes", "5"], capsys)
    assert code != 0 and "--classes applies to an architecture given by name" in err
    code, _, err = run_cli(["bench", "no_such_model"], capsys)
    assert code != 0 and "neither a model directory nor an architecture" in err
    code, _, err = run_cli(["bench", str(model_dir), "--compare", "keras:foo"], capsys)
    assert code != 0 and "LIBRARY:MODEL" in err
    with pytest.raises(ConfigError, match="torchvision has no segmentation model"):
        peer("torchvision:unet", 3)


def test_models_lists_gflops_at_cityscapes_size(capsys):
    code, stdout, err = run_cli(["models", "--size", "64x128"], capsys)
    assert code == 0, err
    assert "GFLOPs@64x128" in stdout and "lraspp" in stdout and "arXiv 1905.02244" in stdout
    # the inference model's parameters first, the training model's (with its booster heads) beside them
    row = next(line for line in stdout.splitlines() if line.startswith("bisenetv2 "))
    assert row.split()[1:3] == ["3.36", "14.80"]
    row = next(line for line in stdout.splitlines() if line.startswith("unet "))
    assert row.split()[1] == "31.04" and row.split()[2] != "31.04"  # no training-only heads: one count
