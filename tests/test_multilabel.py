"""Multi-label segmentation: scores against scikit-learn, truth from every kind of Sample (class masks,
semantic maps, overlapping instances, derived unions), the folder layout masks/<class>/<stem>.png and its
errors, COCO instances as overlapping class masks, the loss by hand, and one tiny trained model through
train / eval / predict / export and the server."""
from __future__ import annotations

import base64
import io
import json
import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import f1_score, jaccard_score

import pixelwise as pw
from conftest import run_cli
from pixelwise import rle
from pixelwise.config import TrainConfig
from pixelwise.constants import IGNORE_INDEX
from pixelwise.data.sample import Instances, Sample
from pixelwise.errors import ConfigError, DataError
from pixelwise.tasks import build_task
from pixelwise.tasks.multilabel.loss import build_multilabel_loss
from pixelwise.tasks.multilabel.metric import counts, scores_from_counts
from pixelwise.tasks.multilabel.targets import class_masks

SYNTHETIC = ["sky", "grass", "road", "disk", "box", "triangle"]
CLASSES = [*SYNTHETIC, "thing"]  # the trained model's classes: the synthetic set plus the derived union


def write_png(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode=mode).save(path)
    return path


def rgb(h=6, w=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---- 1. scores against scikit-learn ------------------------------------------------------------------------

def test_metric_matches_sklearn_per_class():
    rng = np.random.default_rng(0)
    n_images, C, H, W = 3, 5, 9, 11
    preds = rng.random((n_images, C, H, W)) < 0.4
    truths = rng.choice(np.array([0, 1, 255], np.uint8), size=(n_images, C, H, W), p=[0.5, 0.35, 0.15])
    # class 3: absent from truth and prediction on every valid pixel (only zeros, void and predictions on
    # void pixels, which must count for nothing) -> no score, left out of the means
    truths[:, 3] = np.where(truths[:, 3] == 1, 0, truths[:, 3])
    preds[:, 3] = truths[:, 3] == IGNORE_INDEX
    # class 4: present in truth, never predicted -> IoU 0 and F1 0, counted in the means
    preds[:, 4] = False
    stats = sum(counts(p, t) for p, t in zip(preds, truths))
    assert stats.shape == (C, 3) and stats.dtype == np.int64
    scores = scores_from_counts(stats, list("abcde"))
    ious, f1s = [], []
    for c in range(C):
        valid = truths[:, c] != IGNORE_INDEX
        y_true, y_pred = truths[:, c][valid] == 1, preds[:, c][valid]
        if c == 3:
            assert not y_true.any() and not y_pred.any()
            assert scores["per_class_iou"][c] is None and scores["per_class_f1"][c] is None
            assert stats[c].tolist() == [0, 0, 0]
            continue
        iou, f1 = jaccard_score(y_true, y_pred), f1_score(y_true, y_pred)
        assert scores["per_class_iou"][c] == pytest.approx(iou, abs=1e-12)
        assert scores["per_class_f1"][c] == pytest.approx(f1, abs=1e-12)
        ious.append(iou)
        f1s.append(f1)
    assert scores["per_class_iou"][4] == 0 and scores["per_class_f1"][4] == 0
    assert scores["miou"] == pytest.approx(np.mean(ious)) and scores["mean_f1"] == pytest.approx(np.mean(f1s))
    assert scores["classes"] == list("abcde") and scores["counts"] == stats.tolist()


def test_metric_with_nothing_seen_scores_zero():
    scores = scores_from_counts(np.zeros((2, 3), np.int64), ["a", "b"])
    assert scores["miou"] == 0.0 and scores["mean_f1"] == 0.0 and scores["per_class_iou"] == [None, None]


# ---- 2. truth from a Sample ------------------------------------------------------------------------------

def test_truth_from_semantic_map_keeps_void_in_every_class():
    semantic = np.array([[0, 1, 2, 255],
                         [2, 2, 255, 0]], np.int64)
    masks = class_masks(Sample(image=np.zeros((2, 4, 3), np.uint8), semantic=semantic), 3, [])
    assert masks.dtype == np.uint8 and masks.shape == (3, 2, 4)
    V = IGNORE_INDEX
    np.testing.assert_array_equal(masks[0], [[1, 0, 0, V], [0, 0, V, 1]])
    np.testing.assert_array_equal(masks[1], [[0, 1, 0, V], [0, 0, V, 0]])
    np.testing.assert_array_equal(masks[2], [[0, 0, 1, V], [1, 1, V, 0]])


def test_truth_from_semantic_and_overlapping_instances_with_union():
    V = IGNORE_INDEX
    semantic = np.array([[0, 1, 1, 1],
                         [0, 2, 1, V],
                         [V, 0, 0, V]], np.int64)  # the map keeps one class per pixel: 2 at (1, 1)
    a = np.zeros((3, 4), bool)
    a[:2, 1:3] = True        # a class-1 object over (0..1, 1..2): under the class-2 pixel (1, 1) too
    b = np.zeros((3, 4), bool)
    b[1, 1] = b[1, 3] = True  # a class-2 object on (1, 1) and on (1, 3), void in the semantic map
    sample = Sample(image=np.zeros((3, 4, 3), np.uint8), semantic=semantic,
                    instances=Instances(np.stack([a, b]), np.array([1, 2], np.int64)))
    masks = class_masks(sample, 3, [[1, 2], [0, 1]])
    assert masks.shape == (5, 3, 4)
    np.testing.assert_array_equal(masks[0], [[1, 0, 0, 0], [1, 0, 0, 0], [V, 1, 1, V]])
    np.testing.assert_array_equal(masks[1], [[0, 1, 1, 1], [0, 1, 1, 0], [V, 0, 0, V]])
    np.testing.assert_array_equal(masks[2], [[0, 0, 0, 0], [0, 1, 0, 1], [V, 0, 0, V]])
    assert masks[1, 1, 1] == 1 and masks[2, 1, 1] == 1  # the overlap: both classes present
    # (1, 3) is void in the map but covered by an instance: class 2 there, the others absent (not void)
    assert masks[:3, 1, 3].tolist() == [0, 0, 1]
    np.testing.assert_array_equal(masks[3], [[0, 1, 1, 1], [0, 1, 1, 1], [V, 0, 0, V]])  # 1 or 2
    np.testing.assert_array_equal(masks[4], [[1, 1, 1, 1], [1, 1, 1, 0], [V, 1, 1, V]])  # 0 or 1


def test_union_of_class_masks_is_void_only_where_every_member_is():
    V = IGNORE_INDEX
    given = np.array([[[1, 0, V, V, 0, V]],     # a
                      [[0, V, 0, V, 0, 1]],     # b
                      [[V, V, V, V, 1, 0]]], np.uint8)  # c
    sample = Sample(image=np.zeros((1, 6, 3), np.uint8), class_masks=given)
    masks = class_masks(sample, 3, [[0, 1], [0, 1, 2], [2]])
    np.testing.assert_array_equal(masks[:3], given)  # class masks are taken as they are
    assert masks[3, 0].tolist() == [1, 0, 0, V, 0, 1]
    assert masks[4, 0].tolist() == [1, 0, 0, V, 1, 1]
    assert masks[5, 0].tolist() == [V, V, V, V, 1, 0]
    with pytest.raises(DataError, match="2 class masks for 3 classes"):
        class_masks(Sample(image=np.zeros((1, 6, 3), np.uint8), class_masks=given[:2]), 3, [])
    with pytest.raises(DataError, match="has no labels"):
        class_masks(Sample(image=np.zeros((1, 6, 3), np.uint8), meta={"path": "x.png"}), 3, [])


def test_task_unions_and_threshold_checked():
    task = build_task("multilabel", ["a", "b", "c"], options={"unions": {"ab": ["a", "b"]}})
    assert task.classes == ["a", "b", "c", "ab"] and task.source == ["a", "b", "c"] and task.unions == [[0, 1]]
    # a saved model's class list already ends with the derived names: not added twice
    again = build_task("multilabel", task.classes, options={"unions": {"ab": ["a", "b"]}})
    assert again.classes == ["a", "b", "c", "ab"]
    with pytest.raises(ConfigError, match=r"task\.options\.unions\.x"):
        build_task("multilabel", ["a", "b"], options={"unions": {"x": ["a", "zzz"]}})
    with pytest.raises(ConfigError, match=r"task\.options\.threshold"):
        build_task("multilabel", ["a", "b"], options={"threshold": [0.5]})
    logits = torch.tensor([[[0.1, -0.1]], [[2.0, 0.5]]])  # (2, 1, 2); thresholds 0.5 and 0.75
    pred = build_task("multilabel", ["a", "b"], options={"threshold": [0.5, 0.75]}).decode({"out": logits})
    assert pred.masks.dtype == bool and pred.masks.tolist() == [[[True, False]], [[True, False]]]


def test_training_transform_moves_every_class_mask_together():
    from pixelwise.config import DataConfig
    from pixelwise.tasks.multilabel.targets import MultiLabelTransform

    rng = np.random.default_rng(3)
    h, w = 20, 24
    given = rng.choice(np.array([0, 1, 255], np.uint8), (3, h, w), p=[0.5, 0.4, 0.1])
    sample = Sample(image=rgb(h, w), class_masks=given, meta={"name": "s"})
    cfg = DataConfig(crop_size=32, scale_range=(1.0, 1.0), rotate=15.0, hflip=True, color_jitter=0.0)
    transform = MultiLabelTransform(cfg, 3, [[0, 2]])
    torch.manual_seed(0)
    image, target = transform(sample)
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert target.shape == (4, 32, 32) and target.dtype == torch.int64
    t = target.numpy()
    assert set(np.unique(t)) <= {0, 1, IGNORE_INDEX}
    # padding and rotated-in corners are void in every class; at most the source pixels remain
    outside = (t[:3] == IGNORE_INDEX).all(0)
    assert outside.sum() >= 32 * 32 - h * w
    # the derived class is the union of its members after the geometric ops, as before them
    part = t[[0, 2]]
    union = np.where((part == 1).any(0), 1, np.where((part == IGNORE_INDEX).all(0), IGNORE_INDEX, 0))
    np.testing.assert_array_equal(t[3], union)
    # the crop holds the source pixels: the share of present pixels per class is kept (within resampling)
    for c in range(3):
        valid = t[c] != IGNORE_INDEX
        assert abs((t[c][valid] == 1).mean() - (given[c][given[c] != IGNORE_INDEX] == 1).mean()) < 0.1


def test_semantic_samples_take_the_one_map_path_with_the_same_result():
    """A sample labelled by a semantic map alone is transformed as one map and its masks made from the crop;
    that must equal moving the stacked masks (the same random draws), void padding and unions included."""
    import dataclasses
    import random

    from pixelwise.config import DataConfig
    from pixelwise.tasks.multilabel.targets import MultiLabelTransform, class_masks

    rng = np.random.default_rng(5)
    semantic = rng.choice(np.array([0, 1, 2, 255]), (30, 26), p=[0.4, 0.3, 0.2, 0.1]).astype(np.int64)
    sample = Sample(image=rgb(30, 26), semantic=semantic, meta={"name": "s"})
    stacked = dataclasses.replace(sample, semantic=None, class_masks=class_masks(sample, 3, []))
    cfg = DataConfig(crop_size=40, scale_range=(0.7, 1.3), rotate=20.0, hflip=True, color_jitter=0.0)
    transform = MultiLabelTransform(cfg, 3, [[0, 1]])
    for seed in range(3):
        random.seed(seed), torch.manual_seed(seed)
        image_a, one_map = transform(sample)
        random.seed(seed), torch.manual_seed(seed)
        image_b, moved = transform(stacked)
        assert torch.equal(image_a, image_b) and torch.equal(one_map, moved)
        assert (one_map == IGNORE_INDEX).any()  # the padding is void in both


# ---- 3. the folder multi-label layout ---------------------------------------------------------------------

def make_multilabel_folder(root, classes_txt=None):
    """images a, b, c (6x8); masks/road has a and b, masks/wet has b and c, masks/car has a; values 0/255."""
    for i, stem in enumerate("abc"):
        write_png(root / "images" / f"{stem}.png", rgb(seed=i))
    road_a = np.zeros((6, 8))
    road_a[3:] = 255
    road_b = np.zeros((6, 8))
    road_b[:, :4] = 255
    wet_b = np.zeros((6, 8))
    wet_b[2:5, 2:6] = 255  # overlaps road_b on (2..4, 2..3)
    wet_c = np.full((6, 8), 255)
    car_a = np.zeros((6, 8))
    car_a[0, 0] = 255
    for cls, stem, mask in [("road", "a", road_a), ("road", "b", road_b), ("wet", "b", wet_b), ("wet", "c", wet_c),
                            ("car", "a", car_a)]:
        write_png(root / "masks" / cls / f"{stem}.png", mask)
    if classes_txt:
        (root / "classes.txt").write_text("\n".join(classes_txt) + "\n")
    return root, {"road": {"a": road_a, "b": road_b}, "wet": {"b": wet_b, "c": wet_c}, "car": {"a": car_a}}


def test_folder_multilabel_layout(tmp_path):
    root, truth = make_multilabel_folder(tmp_path)
    ds = pw.open_dataset(f"folder:{root}", "all")
    assert ds.classes == ["car", "road", "wet"] and len(ds) == 3  # folder names, sorted
    for i, stem in enumerate("abc"):
        s = ds[i]
        assert s.meta["name"] == stem and s.semantic is None
        assert s.class_masks.shape == (3, 6, 8) and s.class_masks.dtype == np.uint8
        for c, cls in enumerate(ds.classes):
            expected = (truth[cls].get(stem, np.zeros((6, 8))) > 0).astype(np.uint8)  # no file: absent
            np.testing.assert_array_equal(s.class_masks[c], expected, err_msg=f"{stem} {cls}")
    b = ds[1].class_masks
    assert b[1, 3, 2] == 1 and b[2, 3, 2] == 1  # road and wet overlap on b
    truth_b = build_task("multilabel", ds.classes).truth(ds[1]).masks
    np.testing.assert_array_equal(truth_b, b)


def test_folder_multilabel_class_order_from_classes_txt(tmp_path):
    root, truth = make_multilabel_folder(tmp_path, classes_txt=["wet", "road", "car", "sky"])
    ds = pw.open_dataset(f"folder:{root}", "all")
    assert ds.classes == ["wet", "road", "car", "sky"]  # classes.txt's order; sky has no folder: absent everywhere
    s = ds[0]  # a: road and car
    assert s.class_masks.shape == (4, 6, 8)
    np.testing.assert_array_equal(s.class_masks[0], 0)
    np.testing.assert_array_equal(s.class_masks[1], truth["road"]["a"] > 0)
    np.testing.assert_array_equal(s.class_masks[2], truth["car"]["a"] > 0)
    np.testing.assert_array_equal(s.class_masks[3], 0)
    np.testing.assert_array_equal(ds[2].class_masks[0], 1)  # c: wet everywhere


def one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text, text
    return text


def test_folder_multilabel_image_in_no_class_folder(tmp_path):
    root, _ = make_multilabel_folder(tmp_path)
    write_png(root / "images" / "d.png", rgb(seed=9))
    with pytest.raises(DataError, match=r"images/d\.png: image has no mask") as exc:
        pw.open_dataset(f"folder:{root}", "all")
    one_line(exc)


def test_folder_multilabel_class_folder_not_in_classes_txt(tmp_path):
    root, _ = make_multilabel_folder(tmp_path, classes_txt=["road", "wet"])
    with pytest.raises(DataError, match=r"masks: class folder\(s\) car are not in the class list") as exc:
        pw.open_dataset(f"folder:{root}", "all")
    one_line(exc)


def test_folder_multilabel_mask_size_differs(tmp_path):
    root, _ = make_multilabel_folder(tmp_path)
    write_png(root / "masks" / "wet" / "b.png", np.zeros((5, 8)))
    ds = pw.open_dataset(f"folder:{root}", "all")
    ds[0]  # a is fine
    with pytest.raises(DataError, match=r"masks/wet/b\.png: mask is 8x5 but its image .*images/b\.png is 8x6") as exc:
        ds[1]
    one_line(exc)


# ---- 4. COCO instances as overlapping class masks -------------------------------------------------------

def test_coco_instances_read_as_overlapping_class_masks(tmp_path):
    from pycocotools import mask as mask_utils

    h, w = 12, 16
    write_png(tmp_path / "images" / "one.png", rgb(h, w, seed=1))
    write_png(tmp_path / "images" / "two.png", rgb(h, w, seed=2))
    polygon = [[1.0, 1.0, 10.0, 1.0, 10.0, 9.0, 1.0, 9.0]]  # a "cat" rectangle
    dog = np.zeros((h, w), np.uint8)
    dog[5:11, 6:14] = 1  # a "dog" rectangle overlapping the cat on rows 5.., columns 6..
    dog_rle = mask_utils.encode(np.asfortranarray(dog))
    dog = dog.astype(bool)
    dog_rle["counts"] = dog_rle["counts"].decode("ascii")
    doc = {"images": [{"id": 7, "file_name": "one.png", "height": h, "width": w},
                      {"id": 8, "file_name": "two.png", "height": h, "width": w}],
           "categories": [{"id": 3, "name": "cat"}, {"id": 5, "name": "dog"}],
           "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "segmentation": polygon, "area": 72,
                            "iscrowd": 0},
                           {"id": 2, "image_id": 7, "category_id": 5, "segmentation": dog_rle, "area": 48,
                            "iscrowd": 0},
                           {"id": 3, "image_id": 8, "category_id": 5, "segmentation": dog_rle, "area": 48,
                            "iscrowd": 0}]}
    json_path = tmp_path / "instances.json"
    json_path.write_text(json.dumps(doc))
    ds = pw.open_dataset(f"coco-instance:{json_path}", "val")
    assert ds.classes == ["background", "cat", "dog"] and len(ds) == 2
    with warnings.catch_warnings():  # pycocotools' decode trips numpy 2's __array__(copy=) deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        cat = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygon, h, w))).astype(bool)
    overlap = cat & dog
    assert overlap.sum() > 4
    sample = ds[0]
    # the premise: the reader's semantic map keeps one class on the overlap (the smaller object, drawn last)
    assert set(np.unique(sample.semantic[overlap])) == {2}
    task = build_task("multilabel", ds.classes, options={"unions": {"animal": ["cat", "dog"]}})
    masks = task.truth(sample).masks
    assert masks.shape == (4, h, w)
    np.testing.assert_array_equal(masks[1], cat)
    np.testing.assert_array_equal(masks[2], dog)
    assert (masks[1][overlap] == 1).all() and (masks[2][overlap] == 1).all()
    np.testing.assert_array_equal(masks[0], ~(cat | dog))  # background: neither
    np.testing.assert_array_equal(masks[3], cat | dog)
    other = task.truth(ds[1]).masks
    np.testing.assert_array_equal(other[1], 0)
    np.testing.assert_array_equal(other[2], dog)


# ---- 5. the loss -----------------------------------------------------------------------------------------

def hand_loss(logits, target, eps=1.0, class_weights=None):
    """(masked BCE, soft Dice) by loops: BCE summed over non-void entries (each times its class weight) over
    their count; Dice 1 - (2 sum(p t) + eps) / (sum p + sum t + eps) per class over the batch's non-void
    pixels, averaged over classes."""
    logits, target = np.asarray(logits), np.asarray(target)
    n, C, H, W = logits.shape
    bce_sum, valid_count = 0.0, 0
    dice_terms = []
    for c in range(C):
        inter = prob_sum = truth_sum = 0.0
        for i in range(n):
            for y in range(H):
                for x in range(W):
                    t = int(target[i, c, y, x])
                    if t == IGNORE_INDEX:
                        continue
                    p = 1 / (1 + math.exp(-float(logits[i, c, y, x])))
                    term = -(t * math.log(p) + (1 - t) * math.log(1 - p))
                    bce_sum += term * (class_weights[c] if class_weights else 1.0)
                    valid_count += 1
                    inter += p * t
                    prob_sum += p
                    truth_sum += t
        dice_terms.append(1 - (2 * inter + eps) / (prob_sum + truth_sum + eps))
    return bce_sum / valid_count, sum(dice_terms) / C


def test_loss_by_hand():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 3, 4, generator=gen) * 2
    target = torch.randint(0, 2, (2, 3, 3, 4), generator=gen)
    target[0, :, 0, 0] = IGNORE_INDEX
    target[1, 1, 2, :] = IGNORE_INDEX
    target[:, 2] = torch.where(target[:, 2] == 1, IGNORE_INDEX, 0)  # class 2: no positives at all
    bce, dice = hand_loss(logits, target)
    assert 0 < bce and 0 < dice < 1
    loss = build_multilabel_loss(TrainConfig(), 3)  # train.loss unset: bce 1 + dice 1
    assert loss(logits, target).item() == pytest.approx(bce + dice, rel=1e-5)
    # void entries do not count: moving their logits changes nothing
    moved = logits.clone()
    moved[target == IGNORE_INDEX] = 50.0
    assert loss(moved, target).item() == pytest.approx(bce + dice, rel=1e-5)
    # aux heads add 0.4 x their own loss
    aux = torch.randn(2, 3, 3, 4, generator=gen)
    aux_bce, aux_dice = hand_loss(aux, target)
    assert loss({"out": logits, "aux": aux}, target).item() == pytest.approx(bce + dice + 0.4 * (aux_bce + aux_dice),
                                                                              rel=1e-5)
    # a weighted mix and class weights (on the BCE)
    weights = [1.0, 3.0, 0.5]
    weighted = build_multilabel_loss(TrainConfig(loss={"bce": 2.0, "dice": 0.5}, class_weights=weights), 3)
    wbce, _ = hand_loss(logits, target, class_weights=weights)
    assert wbce != pytest.approx(bce)
    assert weighted(logits, target).item() == pytest.approx(2.0 * wbce + 0.5 * dice, rel=1e-5)
    assert build_multilabel_loss(TrainConfig(loss="dice"), 3)(logits, target).item() == pytest.approx(dice, rel=1e-5)
    assert build_multilabel_loss(TrainConfig(loss="bce"), 3)(logits, target).item() == pytest.approx(bce, rel=1e-5)


def test_loss_config_errors():
    with pytest.raises(ConfigError, match=r"train\.loss") as exc:
        build_multilabel_loss(TrainConfig(loss="ce"), 3)
    assert "'ce'" in str(exc.value)
    with pytest.raises(ConfigError, match=r"train\.loss"):
        build_multilabel_loss(TrainConfig(loss={"bce": 1.0, "focal": 1.0}), 3)
    with pytest.raises(ConfigError, match=r"train\.class_weights"):
        build_multilabel_loss(TrainConfig(class_weights=[1.0, 2.0]), 3)
    with pytest.raises(ConfigError, match=r"train\.label_smoothing"):
        build_multilabel_loss(TrainConfig(label_smoothing=0.1), 3)


# ---- 6. end to end through the command line ---------------------------------------------------------------

RECIPE = """
data: {format: synthetic, root: "5", crop_size: 64, num_workers: 0, limit: 16}
task: {name: multilabel, options: {unions: {thing: [disk, box, triangle]}}}
model: {name: unet, kwargs: {base_channels: 4, depth: 2}}
train: {epochs: 1, batch_size: 2, lr: 0.02}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny multi-label U-Net trained one epoch (16 steps: enough for masks that are neither empty nor full)."""
    from pixelwise.cli import main

    root = tmp_path_factory.mktemp("multilabel")
    recipe = root / "tiny.yaml"
    recipe.write_text(RECIPE)
    main(["train", str(recipe), "--out", str(root / "run"), "--no-report"])
    return root / "run" / "best"


@pytest.fixture(scope="module")
def image():
    return pw.open_dataset("synthetic:5", "val")[0].image  # 128 x 128


def test_cli_train_and_eval(trained, capsys, tmp_path):
    config = json.loads((trained / "config.json").read_text())
    assert config["task"] == "multilabel" and config["classes"] == CLASSES and config["arch"]["num_classes"] == 7
    scores_path = tmp_path / "S.json"
    code, out, err = run_cli(["eval", str(trained), "--data", "synthetic:5", "--split", "val",
                              "--json", str(scores_path)], capsys)
    assert code == 0, err
    assert "mean F1" in out and "mean IoU" in out and "thing" in out
    scores = json.loads(scores_path.read_text())
    assert len(scores["per_class_iou"]) == 7 and len(scores["per_class_f1"]) == 7 and scores["classes"] == CLASSES
    # the counts are those of the model's masks against the truth built from the synthetic semantic maps
    predictor = pw.Predictor.from_dir(trained)
    task = predictor.task
    ds = pw.open_dataset("synthetic:5", "val")
    stats = np.zeros((7, 3), np.int64)
    for sample in ds:
        truth = task.truth(sample).masks
        np.testing.assert_array_equal(truth[6], np.where((truth[3:6] == 1).any(0), 1, truth[6]))
        assert ((truth[6] == 1) == (truth[3:6] == 1).any(0)).all()
        stats += counts(predictor.predict(sample.image).masks, truth)
    assert scores["counts"] == stats.tolist()
    expected = scores_from_counts(stats, CLASSES)
    assert scores["miou"] == pytest.approx(expected["miou"]) and scores["mean_f1"] == pytest.approx(expected["mean_f1"])


def test_cli_predict_png_rle_overlay_tiled(trained, image, capsys, tmp_path):
    src = write_png(tmp_path / "in" / "IMG.png", image)
    out = tmp_path / "OUT"
    code, stdout, err = run_cli(["predict", str(trained), str(src), "--out", str(out), "--overlay", "--format", "png",
                                 "--format", "rle", "--tile", "48", "--tta", "flip"], capsys)
    assert code == 0, err
    assert "wrote 1 multilabel predictions" in stdout
    pngs = {}
    for cls in CLASSES:
        mask = Image.open(out / cls / "IMG.png")
        assert mask.size == (128, 128)
        arr = np.asarray(mask)
        assert set(np.unique(arr)) <= {0, 255}
        pngs[cls] = arr == 255
    doc = json.loads((out / "IMG.json").read_text())
    assert doc["file"] == "IMG.png" and doc["format"] == "rle" and doc["size"] == [128, 128]
    by_name = {seg["name"]: seg for seg in doc["segments"]}
    for c, cls in enumerate(CLASSES):
        if cls in by_name:
            seg = by_name[cls]
            assert seg["id"] == c and seg["area"] == pngs[cls].sum()
            np.testing.assert_array_equal(rle.decode(seg["rle"]), pngs[cls], err_msg=cls)
        else:
            assert not pngs[cls].any(), cls
    overlay = Image.open(out / "IMG_overlay.png")
    assert overlay.mode == "RGB" and overlay.size[1] == 128 and overlay.size[0] >= 128
    # what was written is the Predictor's answer with the same tiles and TTA
    reference = pw.Predictor.from_dir(trained, tile=48, tta="flip").predict(image).masks
    np.testing.assert_array_equal(np.stack([pngs[c] for c in CLASSES]), reference)
    # a non-trivial model: some class is present on part of the image only, and classes overlap
    shares = reference.reshape(7, -1).mean(1)
    assert ((shares > 0) & (shares < 1)).any() and (reference.sum(0) > 1).any()


def test_predicted_masks_read_back_as_a_folder_dataset(trained, image, capsys, tmp_path):
    """The png outputs are the folder format's multi-label masks/ folder: ROOT/images + ROOT/masks."""
    root = tmp_path / "ROOT"
    src = write_png(root / "images" / "IMG.png", image)
    code, _, err = run_cli(["predict", str(trained), str(src), "--out", str(root / "masks")], capsys)
    assert code == 0, err
    want = pw.Predictor.from_dir(trained).predict(image).masks
    ds = pw.open_dataset(f"folder:{root}", "all")
    assert ds.classes == sorted(CLASSES)  # no classes.txt: the folder names, sorted
    order = [CLASSES.index(c) for c in ds.classes]
    np.testing.assert_array_equal(ds[0].class_masks, want[order])
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    ds = pw.open_dataset(f"folder:{root}", "all")
    assert ds.classes == CLASSES
    np.testing.assert_array_equal(ds[0].class_masks, want)


def test_cli_crf_is_a_usage_error(trained, image, capsys, tmp_path):
    src = write_png(tmp_path / "IMG.png", image)
    code, _, err = run_cli(["predict", str(trained), str(src), "--out", str(tmp_path / "o"), "--crf", "default"],
                           capsys)
    assert code == 2 and "--crf" in err and "multilabel" in err
    assert not (tmp_path / "o").exists()
    code, _, err = run_cli(["predict", str(trained), str(src), "--out", str(tmp_path / "o"), "--format", "coco"],
                           capsys)
    assert code == 2 and "--format coco" in err


def test_cli_export_onnx_agrees_with_torch(trained, image, capsys, tmp_path):
    onnx_path = tmp_path / "M.onnx"
    code, out, err = run_cli(["export", str(trained), "--onnx", str(onnx_path)], capsys)
    assert code == 0, err
    assert onnx_path.is_file() and "agreement" in out
    onnx = pw.Predictor.from_dir(str(onnx_path))
    assert onnx.task.name == "multilabel" and onnx.classes == CLASSES
    got = onnx.predict(image).masks
    want = pw.Predictor.from_dir(trained, precision="fp32").predict(image).masks
    assert got.shape == want.shape == (7, 128, 128)
    assert (got == want).mean() >= 0.999


# ---- 7. serving ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(trained):
    pytest.importorskip("fastapi")
    pytest.importorskip("python_multipart")
    from fastapi.testclient import TestClient

    from pixelwise.serve import ServeSettings, create_app

    return TestClient(create_app(trained, ServeSettings(precision="fp32")))


def post_png(client, image, query=""):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return client.post(f"/v1/segment{query}", files={"image": ("x.png", buf.getvalue(), "image/png")})


def test_serve_model_info(served):
    info = served.get("/v1/model").json()
    assert info["task"] == "multilabel" and info["classes"] == CLASSES and "multilabel" in info["tasks"]


def test_serve_bits_answer_reproduces_masks(served, trained, image):
    want = pw.Predictor.from_dir(trained, precision="fp32").predict(image).masks
    r = post_png(served, image)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["task"] == "multilabel" and (body["width"], body["height"]) == (128, 128)
    assert body["mask"]["format"] == "png" and body["mask"]["encoding"] == "bits"
    bits = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask"]["data"])))).astype(np.int64)
    assert bits.shape == (128, 128) and bits.max() < 2 ** 7
    masks = np.stack([(bits >> c) & 1 for c in range(7)]).astype(bool)
    np.testing.assert_array_equal(masks, want)
    assert [c["name"] for c in body["classes"]] == CLASSES
    assert [c["pixels"] for c in body["classes"]] == want.reshape(7, -1).sum(1).tolist()


def test_serve_bits_png_is_16bit_greyscale(served, image):
    """The documented layout (schema.PngData, MultiLabelTask.answer): a 16-bit greyscale PNG."""
    data = base64.b64decode(post_png(served, image).json()["mask"]["data"])
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    bit_depth, color_type = data[24], data[25]
    assert (bit_depth, color_type) == (16, 0), f"bits PNG has bit depth {bit_depth}, colour type {color_type}"


def test_serve_rle_answer(served, trained, image):
    want = pw.Predictor.from_dir(trained, precision="fp32").predict(image).masks
    r = post_png(served, image, "?format=rle")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mask"]["format"] == "rle" and body["mask"]["size"] == [128, 128]
    pixels = {c["name"]: c["pixels"] for c in body["classes"]}
    assert [pixels[c] for c in CLASSES] == want.reshape(7, -1).sum(1).tolist()
    segs = {s["id"]: s for s in body["mask"]["segments"]}
    assert sorted(segs) == [c for c in range(7) if want[c].any()]
    for c, seg in segs.items():
        decoded = rle.decode(seg["rle"])
        np.testing.assert_array_equal(decoded, want[c], err_msg=CLASSES[c])
        assert seg["name"] == CLASSES[c] and seg["area"] == decoded.sum() == pixels[CLASSES[c]]
