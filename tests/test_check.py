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


def test_no_class_list_and_an_orphan_image_are_both_listed(tmp_path):
    """The must-show: a folder without classes.txt and with an image that has no mask; one pass lists both,
    prints the label values found and a classes.txt to start from, and still counts the good pairs."""
    from click.testing import CliRunner

    from pixelwise.cli import cli

    for name in ("a", "b", "orphan"):
        write(tmp_path / "images" / f"{name}.png", np.zeros((8, 8, 3)))
    for name in ("a", "b"):
        mask = np.zeros((8, 8))
        mask[:2] = 3
        mask[7] = 255
        write(tmp_path / "masks" / f"{name}.png", mask)
    write(tmp_path / "masks" / "stray.png", np.zeros((8, 8)))  # a mask without its image
    report = check_dataset(str(tmp_path))
    files = [p.file.rsplit("/", 1)[-1] for p in report.problems]
    assert files == ["classes.txt", "orphan.png", "stray.png"]
    assert not report.class_list and report.suggested_classes == ["class_0", "class_1", "class_2", "class_3"]
    (split,) = report.splits
    assert split.num_read == 2 and split.pixel_counts == [80, 0, 0, 32] and split.void_pixels == 16
    result = CliRunner().invoke(cli, ["data", "check", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "label values found: 0, 3, 255 (255 = void)" in result.output
    assert "a classes.txt to start from" in result.output and "  class_3" in result.output
    assert "image has no mask" in result.output and "no class list" in result.output
    assert "PROBLEMS: 3" in result.output
    (tmp_path / "classes.txt").write_text("\n".join(report.suggested_classes) + "\n")  # the suggestion reads back
    fixed = check_dataset(str(tmp_path))
    assert fixed.class_list and [p.file.rsplit("/", 1)[-1] for p in fixed.problems] == ["orphan.png", "stray.png"]


def test_training_still_stops_at_an_orphan_image(tmp_path):
    """Outside the linter the reader stops at the first problem, with one line naming the file."""
    from pixelwise.data.formats import open_dataset
    from pixelwise.errors import DataError

    (tmp_path / "classes.txt").write_text("a\n")
    write(tmp_path / "images" / "x.png", np.zeros((8, 8, 3)))
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match=r"x\.png: image has no mask"):
        open_dataset(str(tmp_path), "train")


def test_data_show_draws_images_masks_and_legend(tmp_path, camvid_root):
    from click.testing import CliRunner
    from PIL import Image as PILImage

    from pixelwise.cli import cli
    from pixelwise.data.show import pick_samples
    from pixelwise.viz import dataset_grid

    picked = pick_samples(f"camvid:{camvid_root}", "val", 3)
    assert len(picked.samples) == 3 and picked.classes[0] == "Sky"
    sheet = dataset_grid(picked.samples, picked.classes, picked.palette, columns=2, cell=96, alpha=1.0)
    assert sheet.shape[0] == 2 * (96 + 14) and sheet.shape[1] > 2 * 96  # two rows, legend column on the right
    # with alpha 1 the first cell's pixels are the class colours of the first mask (nearest-neighbour scaled)
    first = picked.samples[0]
    colours = {tuple(picked.palette[v]) for v in np.unique(first.semantic) if v != 255}
    cell = sheet[30:50, 10:80].reshape(-1, 3)
    assert {tuple(c) for c in cell} <= colours | {(0, 0, 0)} | {tuple(c) for c in first.image.reshape(-1, 3)}
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(cli, ["data", "show", f"camvid:{camvid_root}", "--out", str(out), "--count", "4",
                                      "--split", "val", "--cell", "64"])
    assert result.exit_code == 0, result.output
    assert PILImage.open(out).size[0] > 4 * 64 * 0.99


def test_data_show_without_class_list_and_instances(tmp_path):
    from pixelwise.data.sample import Instances, Sample
    from pixelwise.data.show import pick_samples
    from pixelwise.viz import truth_overlay

    write(tmp_path / "images" / "a.png", np.zeros((8, 8, 3)))
    write(tmp_path / "masks" / "a.png", np.full((8, 8), 2))
    picked = pick_samples(str(tmp_path), None, 4)
    assert not picked.class_list and picked.classes == ["class_0", "class_1", "class_2"]
    masks = np.zeros((2, 8, 8), bool)
    masks[0, 1:4, 1:4] = masks[1, 4:7, 4:7] = True
    sample = Sample(image=np.zeros((8, 8, 3), np.uint8), instances=Instances(masks, np.array([1, 1])))
    picture, ids = truth_overlay(sample, [(0, 0, 0), (0, 200, 0)], alpha=1.0)
    assert ids.tolist() == [1] and tuple(picture[2, 2]) == (0, 200, 0) and tuple(picture[1, 1]) == (255, 255, 255)
    assert tuple(picture[0, 0]) == (0, 0, 0)
