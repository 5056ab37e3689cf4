"""Classical segmentation: every method's contract, the label-order rules, errors, scoring, CLI functions."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pixelwise import classical
from pixelwise.classical.cli import evaluate_classic, run_classic
from pixelwise.metrics.panoptic import instance_pq, instance_stats
from pixelwise.metrics.semantic import confusion, scores_from_confusion
from pixelwise.classical.superpixels import merge_regions
from pixelwise.data.dataset import SegmentationDataset
from pixelwise.data.io import read_mask
from pixelwise.data.sample import Instances, Sample
from pixelwise.errors import ConfigError, DataError, PixelwiseError

from conftest import shared_dataset


def blobs(size: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two touching bright disks (instances 1, 2) and a dark square on a mid-grey noisy background."""
    rr, cc = np.mgrid[:size, :size]
    truth = np.zeros((size, size), np.int32)
    truth[(rr - 24) ** 2 + (cc - 14) ** 2 <= 64] = 1
    truth[(rr - 24) ** 2 + (cc - 29) ** 2 <= 64] = 2
    grey = np.full((size, size), 60.0)
    grey[truth > 0] = 200.0
    grey += np.random.default_rng(seed).normal(0, 5, grey.shape)
    image = np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    return image, truth


ISSUE_METHODS = ["sobel", "canny", "otsu", "multiotsu", "adaptive", "kmeans", "gmm", "meanshift", "watershed",
                 "slic", "felzenszwalb", "quickshift", "chan_vese"]


def test_list_methods_covers_the_issue():
    names = classical.list_methods()
    assert set(ISSUE_METHODS) <= set(names)
    assert {"scharr", "log", "li", "triangle", "morph_chan_vese", "morph_geodesic"} <= set(names)


@pytest.mark.parametrize("method", classical.list_methods())
def test_every_method_gives_a_deterministic_int_map(method):
    image, _ = blobs()
    a = classical.segment(image, method)
    b = classical.segment(image.copy(), method)
    assert a.shape == image.shape[:2] and a.dtype == np.int32 and a.min() >= 0
    np.testing.assert_array_equal(a, b)
    fg = classical.to_semantic(a, image)
    assert fg.dtype == np.int64 and set(np.unique(fg)) <= {0, 1}


def test_thresholds_and_clusters_are_ordered_dark_to_bright():
    image, truth = blobs()
    for method in ("otsu", "li", "kmeans", "gmm"):
        labels = classical.segment(image, method)
        assert labels[truth > 0].mean() > 0.95, method  # the bright disks take the top label
        assert labels[truth == 0].mean() < 0.05, method
    levels = classical.segment(image, "multiotsu", classes=3)
    assert levels.max() == 2 and levels[24, 14] == 2


def test_greyscale_and_float_inputs_match_rgb():
    image, _ = blobs()
    expected = classical.segment(image, "otsu")
    np.testing.assert_array_equal(classical.segment(image[..., 0], "otsu"), expected)
    np.testing.assert_array_equal(classical.segment(image[..., 0] / 255.0, "otsu"), expected)


def test_to_semantic_rules():
    image, truth = blobs()
    labels = classical.segment(image, "kmeans", k=2)
    np.testing.assert_array_equal(classical.to_semantic(labels, image, "bright"), truth > 0)
    np.testing.assert_array_equal(classical.to_semantic(labels, image, "dark"), truth == 0)
    np.testing.assert_array_equal(classical.to_semantic(labels, image, "auto"), truth > 0)  # the smaller side
    np.testing.assert_array_equal(classical.to_semantic(truth, image, "nonzero"), truth > 0)
    many = classical.segment(image, "slic", n_segments=30)
    assert (classical.to_semantic(many, image, "bright") == (truth > 0)).mean() > 0.9


def test_distance_watershed_splits_touching_objects():
    image, truth = blobs()
    assert classical.segment(image, "otsu").astype(bool)[truth > 0].all()
    objects = classical.segment(image, "watershed", surface="distance", polarity="bright")
    assert objects.max() == 2
    assert instance_pq(instance_stats(objects, truth))["pq"] > 0.8
    seeds = np.zeros_like(truth)
    seeds[24, 14], seeds[24, 29] = 7, 9  # markers from elsewhere, e.g. a model's predicted centres
    seeded = classical.segment(image, "watershed", surface="distance", markers=seeds, polarity="bright")
    assert seeded.max() == 2 and seeded[24, 14] != seeded[24, 29]


def test_merge_regions_reaches_the_target_count():
    image, _ = blobs()
    labels = classical.segment(image, "slic", n_segments=40, n_regions=3)
    assert 1 <= labels.max() + 1 <= 3
    assert merge_regions(image, labels, 10).max() == labels.max()  # already few enough: unchanged


def test_errors_are_clear():
    image, _ = blobs()
    with pytest.raises(ConfigError, match="unknown classical method 'nope'"):
        classical.segment(image, "nope")
    with pytest.raises(ConfigError, match="unknown parameter.*colour"):
        classical.segment(image, "kmeans", colour=3)
    with pytest.raises(ConfigError, match="'k' must be an integer >= 2"):
        classical.segment(image, "kmeans", k=1)
    with pytest.raises(ConfigError, match="block_size"):
        classical.segment(image, "adaptive", block_size=10)
    with pytest.raises(DataError, match="shape"):
        classical.segment(np.zeros((2, 4, 4, 3)), "otsu")
    with pytest.raises(DataError, match="numpy array"):
        classical.segment([[1, 2]], "otsu")
    with pytest.raises(PixelwiseError, match="rule"):
        classical.to_semantic(np.zeros((4, 4), int), np.zeros((4, 4)), rule="big")


def test_semantic_scores_hand_computed():
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 0, 1]])
    cm = confusion(pred, truth, 2)
    np.testing.assert_array_equal(cm, [[3, 1], [1, 2]])  # the void pixel is skipped
    s = scores_from_confusion(cm)
    assert s["per_class_iou"] == pytest.approx([3 / 5, 2 / 4])
    assert s["miou"] == pytest.approx(0.55)
    assert s["pixel_acc"] == pytest.approx(5 / 7) and s["mean_acc"] == pytest.approx((3 / 4 + 2 / 3) / 2)


def test_panoptic_quality_hand_computed():
    truth = np.zeros((4, 6), int)
    truth[0:2, 0:2] = 1  # A: 4 px
    truth[2:4, 4:6] = 2  # B: 4 px
    pred = np.zeros_like(truth)
    pred[0:2, 0:2] = 5
    pred[1, 1] = 0
    pred[0, 2] = 5      # P5: 3 px of A + 1 outside -> IoU 3/5, a match
    pred[2:4, 3] = 8
    pred[2:4, 4] = 8    # P8: 2 px of B + 2 outside -> IoU 2/6, no match
    pred[3, 0] = 9      # P9: background only
    stats = instance_stats(pred, truth)
    np.testing.assert_allclose(stats[1], [0.6, 1, 2, 1])  # (IoU sum, TP, FP, FN) of the instances
    q = instance_pq(stats + instance_stats(np.zeros_like(truth), np.zeros_like(truth)))
    assert (q["tp"], q["fp"], q["fn"]) == (1, 2, 1)
    assert q["sq"] == pytest.approx(0.6) and q["rq"] == pytest.approx(1 / 2.5) and q["pq"] == pytest.approx(0.24)


def test_run_classic_writes_labels_and_overlays(tmp_path):
    image, _ = blobs()
    Image.fromarray(image).save(tmp_path / "a.png")
    (tmp_path / "bad.png").write_text("not an image")
    written = run_classic("otsu", [str(tmp_path / "a.png")], tmp_path / "out", overlay=True, params={})
    assert [p.name for p in written] == ["a.png", "a_overlay.png"]
    np.testing.assert_array_equal(read_mask(written[0]), classical.segment(image, "otsu"))
    many = run_classic("felzenszwalb", [str(tmp_path / "a.png")], tmp_path / "many", False, {"scale": 1, "min_size": 1})
    assert read_mask(many[0]).max() == classical.segment(image, "felzenszwalb", scale=1, min_size=1).max()
    with pytest.raises(DataError, match="bad.png"):
        run_classic("otsu", [str(tmp_path / "bad.png")], tmp_path / "out", False, {})
    with pytest.raises(ConfigError, match="unknown parameter"):
        run_classic("otsu", [str(tmp_path / "a.png")], tmp_path / "out", False, {"k": 2})


def test_evaluate_classic_semantic_and_instances():
    samples = [blobs(seed=s) for s in range(2)]
    semantic = SegmentationDataset(samples, lambda r: Sample(r[0], semantic=(r[1] > 0).astype(np.int64)),
                                   ["background", "blob"], name="toy")
    scores = evaluate_classic("otsu", semantic, {})
    assert set(scores) >= {"miou", "pixel_acc", "mean_acc", "per_class_iou", "fg_iou"}
    assert scores["fg_iou"] > 0.9 and "pq" not in scores
    swapped = SegmentationDataset(samples, lambda r: Sample(r[0], semantic=(r[1] == 0).astype(np.int64)),
                                  ["blob", "background"], name="toy")  # foreground is class 0, as ISBI membranes
    again = evaluate_classic("otsu", swapped, {"foreground_class": 0})
    assert again["fg_iou"] == pytest.approx(scores["fg_iou"])
    assert again["per_class_iou"] == pytest.approx(scores["per_class_iou"][::-1])

    def with_instances(r):
        masks = np.stack([r[1] == k for k in (1, 2)])
        return Sample(r[0], instances=Instances(masks, np.ones(2, np.int64)))

    instances = SegmentationDataset(samples, with_instances, ["background", "blob"], name="toy", things=[1])
    scores = evaluate_classic("kmeans", instances, {"rule": "bright", "k": 2})
    assert scores["fg_iou"] > 0.9 and scores["pq"] > 0.8
    with pytest.raises(ConfigError, match="unknown parameter"):
        evaluate_classic("otsu", semantic, {"bogus": 1})


def test_real_images_smoke():
    isbi = shared_dataset("isbi2012_membrane")
    image = np.asarray(Image.open(isbi / "image" / "0.png"))
    truth = np.asarray(Image.open(isbi / "label" / "0.png")) == 0  # membrane = 0
    membrane = classical.to_semantic(classical.segment(image, "otsu", sigma=1.0), image, "dark")
    assert (membrane == truth).mean() > 0.7
