"""The dataset linter: statistics on a tiny folder dataset, every problem collected, class weights."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pixelwise.data.check import CheckReport, check_dataset, class_weights


def write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


@pytest.fixture
def folder(tmp_path):
    """Three 8x8 pairs (one 8x6) with known class counts; classes a, b, c."""
    (tmp_path / "classes.txt").write_text("a\nb\nc\n")
    masks = {"x": np.zeros((8, 8)), "y": np.ones((8, 8)), "z": np.zeros((6, 8))}
    masks["x"][0, :4] = 255  # 4 void pixels
    masks["y"][:2] = 2  # 16 pixels of c, 48 of b
    for name, mask in masks.items():
        write(tmp_path / "images" / f"{name}.png", np.zeros(mask.shape + (3,)))
        write(tmp_path / "masks" / f"{name}.png", mask)
    return tmp_path


def test_statistics_of_a_clean_dataset(folder):
    report = check_dataset(f"folder:{folder}", weights=True)
    assert isinstance(report, CheckReport) and report.ok and report.classes == ["a", "b", "c"]
    (split,) = report.splits  # no split information: reported as "all"
    assert split.split == "all" and split.num_images == split.num_read == 3
    assert split.sizes == {(8, 8): 2, (8, 6): 1}
    assert split.pixel_counts == [60 + 48, 48, 16] and split.void_pixels == 4
    assert sorted(split.label_values) == [0, 1, 2, 255]
    text = report.to_text()
    assert "8x8 (2)" in text and "void" in text and "OK" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] and data["splits"][0]["min_size"] == [8, 6]
    assert data["splits"][0]["void_fraction"] == pytest.approx(4 / 176)


def test_every_problem_is_collected(folder):
    write(folder / "masks" / "y.png", np.full((8, 8), 9))  # out of range
    write(folder / "masks" / "x.png", np.zeros((4, 4)))  # size mismatch
    broken = folder / "images" / "z.png"
    broken.write_bytes(broken.read_bytes()[:40])  # truncated
    write(folder / "images" / "w.png", np.zeros((8, 8, 3)))
    write(folder / "masks" / "w.png", np.zeros((8, 8)))  # one good pair remains
    report = check_dataset(str(folder), splits=["train", "val"])
    assert not report.ok
    files = sorted(p.file.rsplit("/", 2)[-2] + "/" + p.file.rsplit("/", 1)[-1] for p in report.problems[1:])
    assert files == ["images/z.png", "masks/x.png", "masks/y.png"]
    assert report.problems[0].split == "val" and "no split 'val'" in report.problems[0].message
    assert report.splits[0].num_read == 1 and report.splits[0].pixel_counts == [64, 0, 0]
    text = report.to_text()
    assert "PROBLEMS: 4" in text and "absent from this split: b, c" in text


def test_unopenable_dataset_is_a_problem_not_a_crash(tmp_path):
    report = check_dataset(f"camvid:{tmp_path / 'missing'}")
    assert not report.ok and len(report.problems) == 1 and "not found" in report.problems[0].message


def test_class_weights():
    # class 0 in every image (2 x 100 px), class 1 only in image 2 (20 px), class 2 never
    w = class_weights(np.array([180, 20, 0]), np.array([200, 100, 0]))
    freq = np.array([180 / 200, 20 / 100])
    median = np.median(freq)
    assert w["median_frequency"] == pytest.approx([median / freq[0], median / freq[1], 0.0], abs=1e-6)
    assert w["inverse_frequency"] == pytest.approx([200 / (2 * 180), 200 / (2 * 20), 0.0], abs=1e-6)


def test_camvid_val_real(camvid_root):
    report = check_dataset(f"camvid:{camvid_root}", splits=["val"])
    assert report.ok and report.splits[0].num_read == 101 and report.splits[0].sizes == {(480, 360): 101}
    assert 0.01 < report.splits[0].void_pixels / report.splits[0].total_pixels < 0.03
