"""Instances from semantic maps, mask AP, the DSB score and AJI, and the DSB reader."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import shared_dataset


from pixelwise.metrics.instance import MaskAP, aggregated_jaccard, dsb_score
from pixelwise.postprocess.instances import instances_from_semantic, label_components, labels_to_instances


def two_touching_disks(h=40, w=60):
    yy, xx = np.mgrid[:h, :w]
    a = (yy - 20) ** 2 + (xx - 18) ** 2 <= 100
    b = (yy - 20) ** 2 + (xx - 36) ** 2 <= 100
    semantic = np.zeros((h, w), np.int64)
    semantic[a | b] = 1
    semantic[2:5, 50:55] = 2  # a small separate object of another thing class
    return semantic


def test_components_and_watershed():
    semantic = two_touching_disks()
    labels, classes = label_components(semantic, [1, 2])
    assert labels.max() == 2 and classes.tolist() == [1, 2]  # the two disks touch: one component
    labels, classes, scores = instances_from_semantic(semantic, [1, 2], "watershed", h=1.0)
    assert classes.tolist() == [1, 1, 2] and scores.tolist() == [1, 1, 1]
    assert {int(labels[20, 12]), int(labels[20, 42])} == {1, 2}  # watershed splits the disks
    labels, _, _ = instances_from_semantic(semantic, [1, 2], min_area=20)
    assert labels.max() == 1  # the 15-pixel object is dropped
    probs = np.zeros((3, 40, 60), np.float32)
    probs[1] = 0.8
    _, _, scores = instances_from_semantic(semantic, [1], probs=probs)
    assert scores.tolist() == pytest.approx([0.8])
    inst = labels_to_instances(*label_components(semantic, [1, 2]))
    assert inst.masks.shape == (2, 40, 60) and inst.masks[0].sum() == (semantic == 1).sum()


def test_dsb_score_and_aji_by_hand():
    gt = np.zeros((20, 20), int)
    gt[2:8, 2:8], gt[10:18, 10:18] = 1, 2
    pred = np.zeros_like(gt)
    pred[2:8, 2:8], pred[10:18, 10:16], pred[0:2, 15:20] = 1, 2, 7  # IoUs 1 and 48/64; label gaps are fine
    # thresholds 0.5 .. 0.7: TP 2, FP 1 -> 2/3; 0.75 .. 0.95: TP 1, FP 2, FN 1 -> 1/4
    assert dsb_score(gt, pred) == pytest.approx((5 * 2 / 3 + 5 * 1 / 4) / 10)
    assert dsb_score(gt, gt) == 1.0 and dsb_score(gt, np.zeros_like(gt)) == 0.0
    # AJI: intersections 36 + 48, unions 36 + 64, plus the unpaired prediction's 10 pixels
    assert aggregated_jaccard(gt, pred) == pytest.approx(84 / 110)
    assert aggregated_jaccard(gt, gt) == 1.0 and aggregated_jaccard(gt, np.zeros_like(gt)) == 0.0


def test_mask_ap_through_pycocotools():
    gt = np.zeros((20, 20), int)
    gt[2:8, 2:8], gt[10:18, 10:18] = 1, 2
    metric = MaskAP([1], ["background", "nucleus"])
    metric.update(gt, [1, 1], gt, [1, 1], [0.9, 0.8])
    assert metric.compute()["ap"] == pytest.approx(1.0)
    pred = np.zeros_like(gt)
    pred[2:8, 2:8], pred[10:18, 10:16], pred[0:2, 15:20] = 1, 2, 3
    metric = MaskAP([1])
    metric.update(gt, [1, 1], pred, [1, 1, 1], [0.9, 0.8, 0.1])
    s = metric.compute()
    # IoUs 1 and 0.75: AP50 .. AP75 see both objects (AP 1); above 0.75 only one of two is found, with the
    # highest score first: precision 1 up to recall 0.5 -> 101-point AP = 51/101
    assert s["ap50"] == pytest.approx(1.0) and s["ap75"] == pytest.approx(1.0)
    assert s["ap"] == pytest.approx((6 * 1.0 + 4 * 51 / 101) / 10)


def make_dsb(root, n=5):
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"img{i:02d}"
        (folder / "images").mkdir(parents=True)
        (folder / "masks").mkdir()
        rgba = Image.fromarray(rng.integers(0, 255, (16, 16, 4), dtype=np.uint8), "RGBA")
        rgba.save(folder / "images" / f"img{i:02d}.png")
        for k in range(2):
            m = np.zeros((16, 16), np.uint8)
            m[k * 8:k * 8 + 4, 2:6] = 255
            Image.fromarray(m).save(folder / "masks" / f"m{k}.png")
    return root


def test_dsb_reader_split_and_errors(tmp_path):
    import pixelwise as pw
    from pixelwise.errors import DataError

    root = make_dsb(tmp_path / "stage1_train")
    train, val = pw.open_dataset(f"dsb:{tmp_path}", "train"), pw.open_dataset(f"dsb:{root}", "val")
    assert len(train) == 4 and len(val) == 1 and val.records[0].name == "img03"  # every 4th of the sorted ids
    s = val[0]
    assert s.image.shape == (16, 16, 3) and len(s.instances) == 2 and s.semantic.sum() == 32
    assert val.classes == ["background", "nucleus"] and val.things == [1]
    assert len(pw.open_dataset(f"dsb:{root}", "all", val_every=2)) == 5
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "img01" / "masks" / "bad.png")
    with pytest.raises(DataError, match="bad.png.*8x8"):
        train[1]
    with pytest.raises(DataError, match="no split 'test'"):
        pw.open_dataset(f"dsb:{root}", "test")


def test_real_dsb_split():
    import pixelwise as pw

    root = shared_dataset("dsb2018_stage1_test_nuclei")
    train, val = pw.open_dataset(f"dsb:{root}", "train"), pw.open_dataset(f"dsb:{root}", "val")
    assert (len(train), len(val)) == (39, 13)
    assert not {r.name for r in train.records} & {r.name for r in val.records}


def test_instance_task_reads_panoptic_and_semantic_models(tmp_path, capsys):
    """The instance task through the one path: a panoptic model's thing segments, a semantic model's
    components; scored by mask AP, written as COCO results; refused where it cannot train."""
    import json

    import torch

    import pixelwise as pw
    from conftest import run_cli
    from pixelwise.config import load_config
    from pixelwise.errors import ConfigError

    torch.manual_seed(0)
    classes = ["sky", "grass", "road", "disk", "box", "triangle"]
    pan = pw.create_model("panoptic_deeplab", 6, encoder="resnet18", aspp_channels=16, decoder_channels=16,
                          instance_decoder_channels=16, head_channels=8, stuff_area=16)
    pan_dir = pw.save_model(pan, tmp_path / "pan", classes=classes, extra={"task": "panoptic", "things": [3, 4, 5]})
    sem = pw.create_model("unet", 6, base_channels=4, depth=2)
    sem_dir = pw.save_model(sem, tmp_path / "sem", classes=classes)
    val = pw.open_dataset("synthetic:4", "val", count=2, size=64)
    for directory in (pan_dir, sem_dir):  # the semantic model has no thing classes saved: the dataset's are used
        scores = pw.evaluate(directory, val, device="cpu", task="instance")
        assert {"ap", "ap50", "ap75", "dsb_score", "aji", "mask_ap"} <= set(scores)
    predictor = pw.Predictor.from_dir(pan_dir, device="cpu", precision="fp32", task="instance")
    pred = predictor.predict(val[0].image)
    labels, class_ids, scores = pred.instances
    assert labels.shape == (64, 64) and set(class_ids.tolist()) <= {3, 4, 5} and len(scores) == len(class_ids)
    Image.fromarray(val[0].image).save(tmp_path / "a.png")
    code, out, err = run_cli(["predict", str(pan_dir), str(tmp_path / "a.png"), "--task", "instance", "--out",
                              str(tmp_path / "o"), "--precision", "fp32", "--overlay", "--workers", "0"], capsys)
    assert code == 0 and "instance predictions" in out, err
    results = json.loads((tmp_path / "o" / "instances.json").read_text())
    assert len(results) == len(class_ids) and all(r["image_id"] == 1 for r in results)
    assert (tmp_path / "o" / "a_overlay.png").is_file()
    cfg = load_config(None, ["task.name=instance", "model.name=panoptic_deeplab"])
    with pytest.raises(ConfigError, match="train a panoptic model"):
        pw.train(cfg, tmp_path / "run", progress=False)
