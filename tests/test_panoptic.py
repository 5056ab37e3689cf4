"""Panoptic: targets, post-processing, PQ (checked against panopticapi's numbers), loss, train/eval/predict."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import shared_dataset


from pixelwise.metrics.panoptic import PanopticQuality, pq_stats
from pixelwise.tasks.panoptic.files import pq_compute
from pixelwise.tasks.panoptic.postprocess import (find_instance_centers, group_pixels, merge_semantic_and_instance,
                                                  panoptic_segments)
from pixelwise.tasks.panoptic.targets import instance_id_map, panoptic_from_maps, panoptic_targets


def test_targets_gaussian_centers_and_offsets():
    semantic = torch.zeros(20, 30, dtype=torch.long)
    inst = torch.zeros(20, 30, dtype=torch.long)
    inst[4:9, 5:10] = 1  # 5x5 square, centre (6, 7)
    semantic[inst == 1] = 3
    semantic[0, 0] = 255
    t = panoptic_targets(semantic, inst, sigma=2.0, small_area=100)
    assert t["center"].shape == (1, 20, 30) and t["center"][0, 6, 7] == 1.0
    assert t["center"][0, 6, 9] == pytest.approx(np.exp(-4 / 8))
    assert t["offset"][:, 4, 5].tolist() == [2.0, 2.0] and t["offset"][:, 15, 15].tolist() == [0.0, 0.0]
    assert t["semantic_weight"][5, 6] == 3.0 and t["semantic_weight"][15, 15] == 1.0 and t["semantic_weight"][0, 0] == 0
    assert t["center_weight"][0, 0] == 0 and t["offset_weight"].sum() == 25


def test_centers_nms_topk_grouping_and_merge():
    heat = torch.zeros(1, 12, 12)
    heat[0, 2, 2], heat[0, 3, 3], heat[0, 9, 9], heat[0, 6, 0] = 0.9, 0.5, 0.8, 0.05
    assert find_instance_centers(heat, 0.1, 3).tolist() == [[2, 2], [9, 9]]  # (3,3) suppressed, (6,0) too low
    assert find_instance_centers(heat, 0.1, 3, top_k=1).tolist() == [[2, 2]]
    centers = torch.tensor([[2, 2], [9, 9]])
    offset = torch.zeros(2, 12, 12)
    offset[0, 5, 5], offset[1, 5, 5] = 4.0, 4.0  # (5, 5) points at (9, 9)
    groups = group_pixels(centers, offset, mask=torch.ones(12, 12, dtype=torch.bool))
    assert groups[1, 1] == 1 and groups[10, 10] == 2 and groups[5, 5] == 2
    semantic = torch.full((12, 12), 0)
    semantic[:6, :6] = 3
    semantic[8:, 8:] = 3
    semantic[0, 11] = 1  # a one-pixel stuff region: dropped by stuff_area
    instance = group_pixels(centers, offset, semantic == 3)
    pan = merge_semantic_and_instance(semantic, instance, [3], stuff_area=2)
    assert set(torch.unique(pan).tolist()) == {-1, 0, 3001, 3002}
    ids, segments = panoptic_segments(pan, [3])
    assert [(s["category_id"], s["isthing"]) for s in segments] == [(0, False), (3, True), (3, True)]
    assert sorted(torch.unique(ids).tolist()) == [0, 1, 2, 3]


def _merge_by_loops(semantic, instance, things, stuff_area, min_thing_area, divisor=1000):
    """The fusion written the plain way, one mask per instance and per class: the reference."""
    pan = torch.full_like(semantic, -1)
    is_thing = torch.isin(semantic, torch.tensor(things))
    counters = {}
    for k in torch.unique(instance).tolist():
        m = (instance == k) & is_thing
        if k == 0 or int(m.sum()) < max(1, min_thing_area):
            continue
        classes, counts = torch.unique(semantic[m], return_counts=True)
        cls = int(classes[counts == counts.max()].min())
        counters[cls] = counters.get(cls, 0) + 1
        pan[m] = cls * divisor + counters[cls]
    for cls in torch.unique(semantic).tolist():
        m = (semantic == cls) & (instance == 0)
        if cls not in things and int(m.sum()) >= stuff_area:
            pan[m] = cls * divisor
    return pan


def test_vectorised_fusion_and_segments_equal_the_per_mask_loops():
    g = torch.Generator().manual_seed(0)
    things = [3, 4, 5]
    for _ in range(20):
        semantic = torch.randint(0, 6, (30, 40), generator=g)
        instance = torch.randint(0, 9, (30, 40), generator=g) * torch.isin(semantic, torch.tensor(things))
        stuff_area, min_area = int(torch.randint(0, 150, (1,), generator=g)), int(torch.randint(1, 15, (1,), generator=g))
        pan = merge_semantic_and_instance(semantic, instance, things, stuff_area=stuff_area, min_thing_area=min_area)
        assert torch.equal(pan, _merge_by_loops(semantic, instance, things, stuff_area, min_area))
        probs, center = torch.rand(6, 30, 40, generator=g).softmax(0), torch.rand(1, 30, 40, generator=g)
        ids, segments = panoptic_segments(pan, things, probs, center)
        values = [v for v in torch.unique(pan).tolist() if v >= 0]
        assert [s["id"] for s in segments] == list(range(1, len(values) + 1))
        for seg, value in zip(segments, values):
            mask = pan == value
            assert torch.equal(ids == seg["id"], mask) and seg["area"] == int(mask.sum())
            expected = (float(probs[value // 1000][mask].mean()) * float(center[0][mask].max())
                        if value // 1000 in things else 1.0)
            assert seg["score"] == pytest.approx(expected, rel=1e-5)


def test_pq_by_hand():
    gt = np.array([[1, 1, 1, 1], [1, 1, 2, 2], [3, 3, 2, 2], [3, 3, 0, 0]])
    gt_segs = [{"id": 1, "category_id": 0}, {"id": 2, "category_id": 1}, {"id": 3, "category_id": 1}]
    pred = np.array([[1, 1, 1, 1], [1, 1, 1, 2], [4, 4, 2, 2], [4, 4, 2, 5]])
    pred_segs = [{"id": 1, "category_id": 0}, {"id": 2, "category_id": 1}, {"id": 4, "category_id": 0},
                 {"id": 5, "category_id": 1}]
    stats = pq_stats(gt, gt_segs, pred, pred_segs, 2)
    # class 0: stuff 6 px vs 7 px -> IoU 6/7 (TP); pred 4 (class 0 on gt thing 3) -> FP
    # class 1: thing 2 (4 px) vs pred 2 (3 px on it + 1 on void, left out of the union) -> IoU 3/4 (TP);
    #          thing 3 unmatched -> FN; pred 5 lies wholly on void -> not a FP
    np.testing.assert_allclose(stats, [[6 / 7, 1, 1, 0], [3 / 4, 1, 0, 1]])
    metric = PanopticQuality(2, things=[1], class_names=["road", "car"])
    metric.update(gt, gt_segs, pred, pred_segs)
    s = metric.compute()
    assert s["per_class"]["road"]["pq"] == pytest.approx((6 / 7) / 1.5)
    assert s["things"]["pq"] == pytest.approx(0.75 / 1.5) and s["pq"] == pytest.approx(((6 / 7) + 0.75) / 3)


def _perturbed_prediction(src, out):
    """panopticapi's sample with three mistakes (see test_pq_matches_panopticapi_on_coco_sample)."""
    from PIL import Image

    from pixelwise.data.formats.coco import id2rgb, read_panoptic_png, write_coco_panoptic

    data = json.loads((src / "panoptic_examples.json").read_text())
    maps = {}
    for ann in data["annotations"]:
        ids = read_panoptic_png(src / "panoptic_examples" / ann["file_name"])
        segs = {s["id"]: dict(s) for s in ann["segments_info"]}
        if ann["image_id"] == 439180:
            ids[ids == 4587520] = 6094848  # the small truck (1680 px) merged into the big one (5791 px)
            del segs[4587520]
        else:
            segs[16757838]["category_id"] = 19  # the sports ball called a horse
            ids[ids == 3997935] = 0  # a small person missed (left void)
            del segs[3997935]
        ann["segments_info"] = list(segs.values())
        maps[ann["file_name"]] = ids
    assert Image.fromarray(id2rgb(maps[ann["file_name"]])).size[::-1] == maps[ann["file_name"]].shape
    return write_coco_panoptic(out / "pred.json", data["annotations"], data["categories"], data["images"], maps)


def test_pq_matches_panopticapi_on_coco_sample(tmp_path):
    src = shared_dataset("coco_panoptic_sample") / "sample_data"
    gt = src / "panoptic_examples.json"
    same = pq_compute(gt, gt)
    assert same["pq"] == same["sq"] == same["rq"] == 1.0 and same["n"] == 8
    scores = pq_compute(gt, _perturbed_prediction(src, tmp_path))
    # By hand. 8 classes occur (4 things, 4 stuff); stuff is untouched (PQ 1).
    #   person: 26 non-crowd, one missed -> TP 25, FN 1 -> 25 / 25.5
    #   sports ball: its only segment predicted as horse -> FN 1 -> 0
    #   horse: 11 TP, plus the ball as a FP -> 11 / 11.5
    #   truck: merged segment vs the big truck, IoU 5791 / 7471; the small one FN -> (5791 / 7471) / 1.5
    by_hand = (25 / 25.5 + 0 + 11 / 11.5 + (5791 / 7471) / 1.5 + 4) / 8
    assert scores["pq"] == pytest.approx(by_hand, abs=1e-12)
    assert by_hand == pytest.approx(0.8067084457173022, abs=1e-12)  # panopticapi's pq_compute, same files
    assert scores["things"]["pq"] == pytest.approx(0.6134168914346043, abs=1e-12)
    assert scores["sq"] == pytest.approx(0.846891313077232) and scores["rq"] == pytest.approx(0.8254475703324808)
    assert scores["per_class"]["truck"]["sq"] == pytest.approx(5791 / 7471)
    try:
        from panopticapi.evaluation import pq_compute as reference  # optional: the reference itself
    except ImportError:
        return
    ref = reference(str(gt), str(tmp_path / "pred.json"))
    assert scores["pq"] == pytest.approx(ref["All"]["pq"], abs=1e-12)


def test_panoptic_from_maps_makes_hidden_thing_pixels_void():
    semantic = np.array([[0, 0, 3], [3, 3, 3]])
    instances = np.array([[0, 0, 0], [1, 1, 0]])  # (0, 2) and (1, 2): class 3 but in no instance
    ids, segments = panoptic_from_maps(semantic, instances, things=[3])
    assert ids.tolist() == [[1, 1, 0], [2, 2, 0]]
    assert [(s["category_id"], s["isthing"], s["area"]) for s in segments] == [(0, False, 2), (3, True, 2)]


def test_loss_is_cross_entropy_alone_when_center_and_offset_are_exact():
    from pixelwise.tasks.panoptic.loss import PanopticLoss

    semantic = torch.randint(0, 3, (2, 8, 8))
    inst = (semantic == 2).long()
    t = [panoptic_targets(s, i) for s, i in zip(semantic, inst)]
    targets = {k: torch.stack([x[k] for x in t]) for k in t[0]} | {"semantic": semantic}
    logits = torch.randn(2, 3, 8, 8)
    out = {"out": logits, "center": targets["center"].clone(), "offset": targets["offset"].clone()}
    loss = PanopticLoss(top_k=1.0)(out, targets)
    ce = (torch.nn.functional.cross_entropy(logits, semantic, reduction="none") * targets["semantic_weight"]).mean()
    assert loss.item() == pytest.approx(ce.item(), rel=1e-5)
    out["center"] += 0.1
    assert PanopticLoss(top_k=1.0)(out, targets).item() == pytest.approx(ce.item() + 200 * 0.01, rel=1e-4)


def test_oracle_outputs_give_pq_one_on_synthetic_scenes():
    """Truth turned into model outputs (one-hot logits, target heatmap and offsets) must come back whole
    through the panoptic task's decoding and metric."""
    import pixelwise as pw
    from pixelwise.tasks import build_task

    ds = pw.open_dataset("synthetic:3", "val", count=3, size=96)
    task = build_task("panoptic", ds.classes, ds.palette, ds.things, {"stuff_area": 1, "nms_kernel": 5})
    metric = task.metric()
    for i in range(len(ds)):
        sample = ds[i]
        truth = task.truth(sample)
        semantic = torch.from_numpy(sample.semantic)
        masks = sample.instances.masks[np.isin(sample.instances.class_ids, ds.things)]
        t = panoptic_targets(semantic, torch.from_numpy(instance_id_map(masks, semantic.shape)), sigma=4.0)
        logits = torch.nn.functional.one_hot(semantic, 6).permute(2, 0, 1).float()
        metric.update(task.decode({"out": logits, "center": t["center"], "offset": t["offset"]}), truth)
    s = metric.compute()
    assert s["pq"] == 1.0 and s["miou"] == 1.0 and s["mask_ap"]["ap"] == pytest.approx(1.0)
    assert s["dsb_score"] == 1.0 and s["aji"] == 1.0


TINY = ("data: {format: synthetic, root: '5', crop_size: 64, num_workers: 0, limit: 4}\n"
        "model: {name: panoptic_deeplab, encoder: resnet18, kwargs: {aspp_channels: 16, decoder_channels: 16,"
        " instance_decoder_channels: 16, head_channels: 8, stuff_area: 16}}\n"
        "train: {epochs: 1, batch_size: 2, lr: 0.001}\n")


def test_train_eval_predict_panoptic_end_to_end(tmp_path, capsys):
    from PIL import Image

    import pixelwise as pw
    from pixelwise.cli import main
    from pixelwise.config import load_config

    (tmp_path / "r.yaml").write_text(TINY)
    cfg = load_config(tmp_path / "r.yaml", ["data.val_split=test"])
    result = pw.train(cfg, tmp_path / "run", progress=False)
    assert result.best_key == "pq" and 0 <= result.best_score <= 1 and 0 <= result.best_miou <= 1
    config = json.loads((tmp_path / "run" / "best" / "config.json").read_text())
    assert config["task"] == "panoptic" and config["things"] == [3, 4, 5] and "pq" in config["metrics"]
    val = pw.open_dataset("synthetic:5", "test").subset(range(3))
    # the validation during training and pw.evaluate read the model with the same task options (its own
    # post-processing: stuff_area 16 here, not the task's default 2048)
    again = pw.evaluate(tmp_path / "run" / "best", pw.open_dataset("synthetic:5", "test"), device="cpu")
    assert again["pq"] == pytest.approx(config["metrics"]["pq"], abs=0.01)
    scores = pw.evaluate(tmp_path / "run" / "best", val, device="cpu")
    assert {"pq", "sq", "rq", "things", "stuff", "per_class", "miou", "mask_ap", "dsb_score", "aji"} <= set(scores)
    Image.fromarray(val[0].image).save(tmp_path / "a.png")
    try:  # the model's own task (panoptic) through the one predict path, with an overlay
        main(["predict", str(tmp_path / "run"), str(tmp_path / "a.png"), "--out", str(tmp_path / "pred"),
              "--precision", "fp32", "--overlay"])
    except SystemExit as exc:
        assert not exc.code
    assert (tmp_path / "pred" / "a_overlay.png").is_file() and (tmp_path / "pred" / "panoptic" / "a.png").is_file()
    pan = json.loads((tmp_path / "pred" / "panoptic.json").read_text())
    assert pan["annotations"][0]["file_name"] == "a.png" and len(pan["categories"]) == 6
    assert isinstance(json.loads((tmp_path / "pred" / "instances.json").read_text()), list)
    capsys.readouterr()


def test_training_task_takes_the_models_postprocessing(tmp_path):
    """The validation during training reads a panoptic model with its own post-processing (the recipe's
    stuff_area 16), as pw.evaluate and the Predictor do, not with the task's defaults (2048)."""
    import pixelwise as pw
    from pixelwise.config import load_config
    from pixelwise.engine.trainer import _task, model_kwargs

    (tmp_path / "r.yaml").write_text(TINY)
    cfg = load_config(tmp_path / "r.yaml")
    ds = pw.open_dataset("synthetic:5", "train")
    model = pw.create_model(cfg.model.name, ds.num_classes, **model_kwargs(cfg))
    assert model.postprocess["stuff_area"] == 16
    assert _task(cfg, ds.classes, ds, model).options.stuff_area == 16
    saved = pw.save_model(model, tmp_path / "m", classes=ds.classes, extra={"task": "panoptic", "things": ds.things})
    assert pw.Predictor.from_dir(saved, device="cpu", precision="fp32").task.options.stuff_area == 16


def test_cli_scores_panoptic_prediction_files(tmp_path, capsys):
    from pixelwise.cli import main

    src = shared_dataset("coco_panoptic_sample") / "sample_data"
    pred = _perturbed_prediction(src, tmp_path)
    gt = src / "panoptic_examples.json"
    main(["eval", "--task", "panoptic", "--pred", str(pred), "--data", f"coco-panoptic:{gt}", "--json",
          str(tmp_path / "s.json")])
    out = capsys.readouterr().out
    assert "truck" in out and "80.7" in out
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["pq"] == pytest.approx(0.8067084457173022) and scores["stuff"]["pq"] == 1.0


def _ddp_worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from pixelwise.engine.distributed import reducer
    from pixelwise.tasks import Prediction, build_task
    from pixelwise.tasks.panoptic.decode import thing_labels

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        task = build_task("panoptic", ["a", "b"], things=[1])
        gt = np.array([[1, 1, 2], [1, 1, 2]])
        segs = [{"id": 1, "category_id": 0}, {"id": 2, "category_id": 1}]
        pred_ids = gt if rank == 0 else np.array([[1, 1, 1], [1, 1, 1]])  # rank 1 misses the thing
        pred_segs = segs if rank == 0 else segs[:1]
        truth = Prediction(task, semantic=gt - 1, panoptic=(gt, segs), instances=thing_labels(gt, segs, [1]),
                           crowd=np.zeros(gt.shape, bool))
        pred = Prediction(task, semantic=pred_ids - 1, panoptic=(pred_ids, pred_segs),
                          instances=thing_labels(pred_ids, pred_segs, [1]))
        metric = task.metric()
        metric.update(pred, truth)
        metric.all_reduce(reducer())
        s = metric.compute()
        if rank == 0:
            Path(out).write_text(json.dumps({"b": s["per_class"]["b"], "images": len(metric.instances.ap.images),
                                             "dsb": s["dsb_score"], "miou": s["miou"]}))
    finally:
        dist.destroy_process_group()


def test_pq_and_instance_stats_are_all_reduced_across_processes(tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "r.json"
    mp.spawn(_ddp_worker, args=(2, f"file://{tmp_path / 'init'}", str(out)), nprocs=2)
    r = json.loads(out.read_text())
    assert r["b"]["tp"] == 1 and r["b"]["fn"] == 1 and r["images"] == 2 and r["dsb"] == pytest.approx(0.5)
    assert r["miou"] == pytest.approx((8 / 10 + 2 / 4) / 2)  # the confusion matrix is summed too
