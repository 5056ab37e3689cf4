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


def test_run_classic_writes_labels_and_overlays(tmp_path, monkeypatch):
    image, _ = blobs()
    Image.fromarray(image).save(tmp_path / "a.png")
    (tmp_path / "bad.png").write_text("not an image")
    result = run_classic("otsu", [str(tmp_path / "a.png")], tmp_path / "out", overlay=True, params={})
    assert [p.name for p in result.written] == ["a.png", "a_overlay.png"] and not result.failed
    np.testing.assert_array_equal(read_mask(result.written[0]), classical.segment(image, "otsu"))
    many = run_classic("felzenszwalb", [str(tmp_path / "a.png")], tmp_path / "many", False, {"scale": 1, "min_size": 1})
    assert read_mask(many.written[0]).max() == classical.segment(image, "felzenszwalb", scale=1, min_size=1).max()
    logged = []
    bad = run_classic("otsu", [str(tmp_path / "bad.png"), str(tmp_path / "a.png")], tmp_path / "out2", False, {},
                      log=logged.append)
    assert [p.name for p in bad.written] == ["a.png"] and [p.name for p in bad.images] == ["a.png"]
    assert len(bad.failed) == 1 and "bad.png" in bad.failed[0] and "\n" not in bad.failed[0]
    assert logged == [f"skipped: {bad.failed[0]}"]
    import pixelwise.classical.cli as classic_cli

    def bomb(path):  # PIL's own refusal, whether or not read_image turns it into a DataError
        raise Image.DecompressionBombError("Image size (10000000000 pixels) exceeds limit of 178956970 pixels")

    monkeypatch.setattr(classic_cli, "read_image", bomb)
    refused = run_classic("otsu", [str(tmp_path / "a.png")], tmp_path / "out3", False, {})
    assert refused.written == [] and len(refused.failed) == 1
    assert refused.failed[0].startswith(f"{tmp_path / 'a.png'}: refused, possible decompression bomb")
    monkeypatch.undo()
    with pytest.raises(DataError, match="missing.png: file not found"):  # a mistyped name: refused before work
        run_classic("otsu", [str(tmp_path / "missing.png")], tmp_path / "out", False, {})
    with pytest.raises(ConfigError, match="unknown parameter"):
        run_classic("otsu", [str(tmp_path / "a.png")], tmp_path / "out", False, {"k": 2})


def _png_with_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but whose data is a few bytes (a decompression bomb's shape;
    as tests/test_serve.py)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def test_classic_cli_skips_unreadable_files_and_exits_1(tmp_path, capsys):
    from conftest import run_cli

    folder = tmp_path / "in"
    folder.mkdir()
    for seed, name in enumerate(("a.png", "c.png")):
        Image.fromarray(blobs(seed=seed)[0]).save(folder / name)
    good = (folder / "a.png").read_bytes()
    (folder / "b_truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "d_bomb.png").write_bytes(_png_with_header(100_000, 100_000))
    code, out, err = run_cli(["classic", "otsu", str(folder), "--out", str(tmp_path / "out")], capsys)
    assert code == 1, (out, err)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]
    skipped = [line for line in err.splitlines() if line.startswith("skipped: ")]
    assert len(skipped) == 2, err
    assert "b_truncated.png" in skipped[0] and "d_bomb.png" in skipped[1]
    assert "Traceback" not in err + out and len(err.strip().splitlines()) == 2, err
    assert "wrote 2 files for 2 images" in out and "2 failed" in out
    np.testing.assert_array_equal(read_mask(tmp_path / "out" / "c.png"), classical.segment(blobs(seed=1)[0], "otsu"))
    code, out, err = run_cli(["classic", "otsu", str(folder / "a.png"), "--out", str(tmp_path / "out2")], capsys)
    assert code == 0 and "wrote 1 files for 1 images" in out and "failed" not in out and not err


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


def _old_float_grey(v: np.ndarray) -> np.ndarray:
    """What the thresholds used to see: a float copy of the grey levels (then 256 bins over its range)."""
    v = v.astype(np.float64)
    return (v * 0.299 + v * 0.587 + v * 0.114) / 255.0


def test_grey_levels_of_rgb_uint8():
    from pixelwise.classical._util import gray, gray_u8

    levels = np.arange(256, dtype=np.uint8)
    grey_rgb = np.repeat(levels[None, :, None], 3, axis=2)
    np.testing.assert_array_equal(gray_u8(grey_rgb)[0], levels)  # R = G = B = v is exactly v
    np.testing.assert_array_equal(gray(grey_rgb)[0], levels / 255.0)
    colour = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(gray_u8(colour), np.asarray(Image.fromarray(colour).convert("L")))
    assert np.abs(gray_u8(colour) - gray(colour) * 255).max() <= 0.5 + 1e-9


def test_global_thresholds_work_on_integer_levels():
    from skimage import filters

    rng = np.random.default_rng(3)
    # bimodal 8-bit levels 37..211 with gaps: 256 float bins over [37, 211] do not fall on the levels
    levels = np.concatenate([rng.normal(70, 12, 3000), rng.normal(160, 25, 1500)]).clip(37, 211)
    img = (np.round(levels / 3) * 3).astype(np.uint8).reshape(50, 90)
    t = filters.threshold_otsu(img)
    assert (img == t).any()  # pixels exactly at the threshold: they are below it (`img > t`)
    old = _old_float_grey(img)
    assert ((old > filters.threshold_otsu(old)) != (img > t)).sum() > 0  # the defect this guards against
    for image in (img, np.repeat(img[..., None], 3, axis=2), img / 255.0):
        np.testing.assert_array_equal(classical.segment(image, "otsu"), img > t)
    np.testing.assert_array_equal(classical.segment(img, "li"), img > filters.threshold_li(img))
    np.testing.assert_array_equal(classical.segment(img, "triangle"), img > filters.threshold_triangle(img))
    thresholds = filters.threshold_multiotsu(img, classes=3)
    np.testing.assert_array_equal(classical.segment(img, "multiotsu", classes=3),
                                  np.digitize(img, thresholds, right=True))
    np.testing.assert_array_equal(classical.segment(img, "multiotsu", classes=2), img > t)  # 2 classes = Otsu
    # sigma > 0: the smoothed image is not integer any more; the thresholds work on the float grey
    from scipy import ndimage as ndi

    smooth = ndi.gaussian_filter(img / 255.0, 1.5)
    np.testing.assert_array_equal(classical.segment(img, "otsu", sigma=1.5), smooth > filters.threshold_otsu(smooth))
    with pytest.raises(ConfigError, match="sigma"):
        classical.segment(img, "otsu", sigma=-1)


def test_otsu_on_isbi_equals_scikit_image_and_opencv():
    import cv2
    from skimage import filters

    from pixelwise.data.io import read_image

    isbi = shared_dataset("isbi2012_membrane")
    paths = sorted((isbi / "image").glob("*.png"), key=lambda p: int(p.stem))
    assert len(paths) == 24
    was_off = 0
    for path in paths:
        img = np.asarray(Image.open(path))
        assert img.dtype == np.uint8 and img.ndim == 2
        reference = img > filters.threshold_otsu(img)
        # OpenCV's THRESH_BINARY is also `src > thresh`, and its Otsu threshold is the same level here:
        # the two agree pixel for pixel (no >= / > difference to allow for).
        cv_t, cv_map = cv2.threshold(img, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        assert cv_t == filters.threshold_otsu(img), path.name
        np.testing.assert_array_equal(cv_map > 0, reference)
        for image in (img, read_image(path)):  # as an array, and as `pixelwise classic` reads the file (RGB)
            ours = classical.segment(image, "otsu").astype(bool)
            assert (ours != reference).sum() == 0, path.name
            assert (ours != (cv_map > 0)).sum() == 0, path.name
        np.testing.assert_array_equal(classical.segment(img, "li"), img > filters.threshold_li(img))
        np.testing.assert_array_equal(classical.segment(img, "triangle"), img > filters.threshold_triangle(img))
        np.testing.assert_array_equal(classical.segment(img, "multiotsu"),
                                      np.digitize(img, filters.threshold_multiotsu(img), right=True))
        old = _old_float_grey(img)
        was_off += int(((old > filters.threshold_otsu(old)) != reference).sum())
    assert was_off > 0  # the float-copy thresholds disagreed on these slices (26194 pixels in all)
