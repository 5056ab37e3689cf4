"""COCO readers and writers: coco-panoptic on panopticapi's sample, coco-instance, results round trips."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import shared_dataset


from pixelwise.errors import DataError


@pytest.fixture
def sample_dir():
    return shared_dataset("coco_panoptic_sample") / "sample_data"


def test_coco_panoptic_reader(sample_dir):
    import pixelwise as pw

    spec = f"coco-panoptic:{sample_dir / 'panoptic_examples.json'}"
    with pytest.raises(DataError, match="--images"):
        pw.open_dataset(spec, "val")
    ds = pw.open_dataset(spec, "val", images=str(sample_dir / "input_images"))
    assert len(ds) == 2 and ds.num_classes == 133 and len(ds.things) == 80
    s = ds[0]
    assert s.image.shape == (427, 640, 3) and s.semantic.shape == (427, 640)
    assert len(s.instances) == 14  # 13 persons + 1 sports ball; the crowd of people is no instance
    ids, segments = s.meta["panoptic"]
    assert len(segments) == 18 and sum(seg["iscrowd"] for seg in segments) == 1
    crowd = next(seg for seg in segments if seg["iscrowd"])
    assert (s.semantic[ids == crowd["id"]] == 255).all() and ds.classes[crowd["category_id"]] == "person"
    assert (s.semantic[ids == 0] == 255).all()


def test_panoptic_writer_round_trip_scores_one(sample_dir, tmp_path):
    """Truth read by the reader, written by the writer, scored against the original files: PQ 1."""
    import pixelwise as pw
    from pixelwise.data.formats.coco import load_json, write_coco_panoptic
    from pixelwise.tasks.panoptic.files import pq_compute

    gt_json = sample_dir / "panoptic_examples.json"
    data = load_json(gt_json)
    ds = pw.open_dataset(f"coco-panoptic:{gt_json}", "val", images=str(sample_dir / "input_images"))
    cat_ids = [c["id"] for c in data["categories"]]
    annotations, maps = [], {}
    for i in range(len(ds)):
        sample = ds[i]
        ids, segments = sample.meta["panoptic"]
        name = f"{sample.name}.png"
        annotations.append({"image_id": sample.meta["image_id"], "file_name": name, "segments_info": [
            {"id": s["id"], "category_id": cat_ids[s["category_id"]], "iscrowd": s["iscrowd"]} for s in segments]})
        maps[name] = ids
    pred = write_coco_panoptic(tmp_path / "pred.json", annotations, data["categories"], data["images"], maps)
    scores = pq_compute(gt_json, pred)
    assert scores["pq"] == 1.0 and scores["images"] == 2


def test_coco_instance_reader_and_results_eval(sample_dir, tmp_path, capsys):
    import pixelwise as pw
    from pixelwise.cli import main
    from pixelwise.data.formats.coco import instance_results, write_coco_instances
    from pixelwise.tasks.instance.files import coco_instance_eval

    # panopticapi's detection-format copy of the sample: RLE instances (things and stuff, crowd included)
    gt_json = sample_dir / "panoptic_coco_detection_format.json"
    ds = pw.open_dataset(f"coco-instance:{gt_json}", "val", images=str(sample_dir / "input_images"))
    assert ds.classes[0] == "background" and ds.things == list(range(1, 134))
    s = ds[0]
    data = json.loads(gt_json.read_text())
    anns = [a for a in data["annotations"] if a["image_id"] == s.meta["image_id"]]
    assert len(s.instances) == sum(1 for a in anns if not a["iscrowd"])
    assert (s.semantic == 255).any()  # the crowd region is void
    cat_ids = [c["id"] for c in data["categories"]]
    results = []
    for i in range(len(ds)):  # the truth as results (each object drawn on its own label map)
        sample = ds[i]
        for k, (mask, cls) in enumerate(zip(sample.instances.masks, sample.instances.class_ids)):
            results += instance_results(sample.meta["image_id"], mask.astype(np.int32), [cls - 1], [1.0 - 0.01 * k],
                                        cat_ids)
    path = write_coco_instances(tmp_path / "results.json", results)
    scores = coco_instance_eval(gt_json, path)
    assert scores["ap"] == pytest.approx(1.0) and scores["per_class"]["person"] == pytest.approx(1.0)
    main(["eval", "--task", "instance", "--pred", str(path), "--data", f"coco-instance:{gt_json}"])
    assert "mask AP" in capsys.readouterr().out


def test_coco_errors(tmp_path):
    import pixelwise as pw

    with pytest.raises(DataError, match="not found"):
        pw.open_dataset(f"coco-panoptic:{tmp_path / 'x.json'}", "val")
    (tmp_path / "p.json").write_text(json.dumps({"annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    with pytest.raises(DataError, match="PNG folder not found"):
        pw.open_dataset(f"coco-panoptic:{tmp_path / 'p.json'}", "val")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools on numpy 2
def test_encode_each_matches_pycocotools_mask_by_mask():
    """All instances' RLEs in one pass over the label map equal pycocotools' encoding of each mask."""
    from pycocotools import mask as mask_utils

    from pixelwise import rle

    rng = np.random.default_rng(0)
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(1, 25, 2))
        labels = rng.integers(0, 6, (h, w)) * (rng.random((h, w)) > rng.random())
        got = rle.encode_each(labels, ids=[7])  # 7 is absent: an empty mask
        for k in range(1, 8):
            ref = mask_utils.encode(np.asfortranarray((labels == k).astype(np.uint8)))
            if k in got:
                assert got[k]["counts"] == ref["counts"].decode() and got[k]["size"] == [h, w]
            else:
                assert not (labels == k).any()
        assert rle.decode(got[7]).sum() == 0
