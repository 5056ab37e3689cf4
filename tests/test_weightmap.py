"""The U-Net paper's weight map (arXiv 1505.04597, eq. 2), its weighted cross-entropy and its training preset."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from pixelwise.config import BorderWeight, Config, DataConfig, ModelConfig, TrainConfig, config_from_dict
from pixelwise.data.sample import Instances, Sample
from pixelwise.data.transforms import build_transform
from pixelwise.errors import ConfigError
from pixelwise.losses import WEIGHT_SCALE, WeightMapCrossEntropy
from pixelwise.tasks.semantic import weightmap as wm


def blobs(seed=0, size=64, n=9):
    """Random discs, some touching: object ids int32 (size, size)."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((size, size), np.int32)
    yy, xx = np.mgrid[:size, :size]
    for k in range(1, n + 1):
        cy, cx, r = rng.integers(6, size - 6), rng.integers(6, size - 6), rng.integers(3, 8)
        ids[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (ids == 0)] = k
    return ids


def reference_border(objects, w0, sigma):
    """Eq. 2's border term by its definition: every object's distance map over the whole image, the two
    smallest per pixel; on pixels outside the objects."""
    ks = [k for k in np.unique(objects) if k]
    dist = np.stack([ndimage.distance_transform_edt(objects != k) for k in ks])
    dist.sort(axis=0)
    term = w0 * np.exp(-((dist[0] + dist[1]) ** 2) / (2 * sigma**2))
    term[objects > 0] = 0
    return term


@pytest.mark.parametrize("seed, w0, sigma", [(0, 10, 5), (1, 10, 3), (2, 5, 8)])
def test_border_term_matches_the_definition(seed, w0, sigma):
    objects = blobs(seed)
    got, want = wm.border_term(objects, w0, sigma), reference_border(objects, w0, sigma)
    # objects beyond 4 sigma are out of reach: the term there is below w0 * exp(-8)
    assert np.abs(got - want).max() <= w0 * np.exp(-8) + 1e-5
    near = want > w0 * np.exp(-8)
    assert near.any() and np.allclose(got[near], want[near], atol=1e-4)


def test_the_gap_between_touching_objects_weighs_most():
    objects = np.zeros((20, 30), np.int32)
    objects[5:15, 3:12], objects[5:15, 13:22] = 1, 2  # a one-pixel gap at column 12
    labels = (objects > 0).astype(np.int64)  # 0 background, 1 object
    w = wm.unet_weight_map(labels, objects, class_weights=[1.0, 2.0], w0=10, sigma=5)
    assert w[10, 12] == pytest.approx(1.0 + 10 * np.exp(-((1 + 1) ** 2) / 50), rel=1e-5)  # d1 = d2 = 1
    assert w[10, 5] == pytest.approx(2.0)  # inside an object: its class weight only
    assert w[10, 12] > w[0, 12] > w[10, 29] >= 1.0 and w[10, 12] == w.max()
    labels[0, 0] = 255
    assert wm.unet_weight_map(labels, objects)[0, 0] == 0  # void pixels weigh nothing


def test_objects_from_components_and_instances():
    labels = np.zeros((10, 10), np.int64)
    labels[1:4, 1:4] = 1
    labels[6:9, 6:9] = 1
    labels[0, 9] = 255
    assert wm.objects_from_components(labels, background=0).max() == 2
    assert wm.objects_from_components(labels, background=1).max() == 1  # the background region, one piece
    masks = np.zeros((2, 10, 10), bool)
    masks[0, :3, :3] = masks[1, 5:, 5:] = True
    ids = wm.objects_from_instances(masks)
    assert ids[1, 1] == 1 and ids[7, 7] == 2 and ids[4, 4] == 0


def test_weighted_cross_entropy_reduces_to_cross_entropy_and_weights_pixels():
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    labels[0, 0, :4] = 255
    ones = torch.full_like(labels, WEIGHT_SCALE)
    loss = WeightMapCrossEntropy()
    assert loss(logits, torch.stack([labels, ones], 1)) == pytest.approx(F.cross_entropy(logits, labels,
                                                                                          ignore_index=255).item(), rel=1e-5)
    w = torch.randint(1, 20, labels.shape).float()
    per = F.cross_entropy(logits, labels, ignore_index=255, reduction="none")
    valid = labels != 255
    want = (per * w * valid).sum() / (w * valid).sum()
    got = loss(logits, torch.stack([labels, (w * WEIGHT_SCALE).long()], 1))
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_the_preset_carries_the_map_with_its_labels():
    objects = blobs(3, size=48)
    labels = (objects > 0).astype(np.int64)
    image = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    sample = Sample(image, labels, meta={"name": "a"})
    cfg = DataConfig(crop_size=48, scale_range=[1.0, 1.0], hflip=True, color_jitter=0.0)
    t = wm.WeightMapTransform(build_transform(cfg, train=True), BorderWeight(objects="components"))
    want = wm.unet_weight_map(labels, wm.objects_from_components(labels, 0))
    seen = set()
    for _ in range(12):
        _, target = t(sample)
        assert target.shape == (2, 48, 48) and target.dtype == torch.int64
        flipped = not torch.equal(target[0], torch.from_numpy(labels))
        seen.add(flipped)
        ref = np.fliplr(want) if flipped else want
        assert np.allclose(target[1].numpy() / WEIGHT_SCALE, ref, atol=1 / WEIGHT_SCALE)
    assert seen == {True, False} and len(t.cache) == 1


def test_instances_as_objects_and_the_errors(tmp_path):
    masks = np.zeros((2, 16, 16), np.uint8)
    masks[0, 2:7, 2:7] = masks[1, 2:7, 8:13] = 1
    sample = Sample(np.zeros((16, 16, 3), np.uint8), masks.max(0).astype(np.int64),
                    instances=Instances(masks, np.array([1, 1])), meta={"name": "n"})
    t = wm.WeightMapTransform(lambda s: s, BorderWeight(objects="auto"))
    assert t.weights(sample)[4, 7] > 5 * WEIGHT_SCALE  # the gap between the two touching nuclei
    plain = Sample(sample.image, sample.semantic, meta={"name": "p"})
    with pytest.raises(Exception, match="gives no instance masks"):
        wm.WeightMapTransform(lambda s: s, BorderWeight(objects="instances")).weights(plain)
    with pytest.raises(ConfigError, match="train.border_weight.objects"):
        config_from_dict({"train": {"border_weight": {"objects": "cells"}}})


def test_training_with_the_weight_map_runs_and_other_tasks_refuse_it(tmp_path):
    from pixelwise.engine.trainer import train

    cfg = Config(data=DataConfig(format="synthetic", root="7", crop_size=48, num_workers=0, limit=4),
                 model=ModelConfig(name="unet", kwargs={"base_channels": 4, "depth": 2}),
                 train=TrainConfig(epochs=1, batch_size=2, border_weight=BorderWeight(background=0)))
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.epochs_done == 1 and np.isfinite(result.best_score)
    bad = Config(data=cfg.data, model=cfg.model, train=TrainConfig(epochs=1, loss="dice", border_weight=BorderWeight()))
    with pytest.raises(ConfigError, match="weighs the cross-entropy"):
        train(bad, tmp_path / "bad", progress=False)


def test_touching_instances_are_parted_by_a_gap():
    objects = np.zeros((12, 20), np.int32)
    objects[2:10, 2:10], objects[2:10, 10:18] = 1, 2  # sharing a border between columns 9 and 10
    labels = (objects > 0).astype(np.int64)
    parted_labels, parted = wm.separate_touching(labels, objects, gap=1, background=0)
    assert (parted[2:10, 9:11] == 0).all() and (parted_labels[2:10, 9:11] == 0).all()
    assert (parted[2:10, 2:9] == 1).all() and (parted[2:10, 11:18] == 2).all()  # only the shared border goes
    assert (objects[2:10, 9] == 1).all()  # the inputs are left as they were
    w = wm.unet_weight_map(parted_labels, parted)
    assert w[5, 9] > 8 and w[5, 0] < 2  # the new gap weighs as a gap between cells
    sample = Sample(np.zeros((12, 20, 3), np.uint8), labels, meta={"name": "t"})
    target = wm.WeightMapTransform(lambda s: s, BorderWeight(objects="components", gap=1)).target(sample)
    assert (target[0] == labels).all()  # components of one touching region are one object: nothing to part
