import numpy as np
import pytest
import torch

from pixelwise.config import DataConfig
from pixelwise.data.synthetic import CLASSES, THINGS, make_scene, open_synthetic
from pixelwise.data.transforms import build_transform, pad_collate
from pixelwise.errors import DataError


def test_scenes_are_deterministic_and_consistent():
    a, b = make_scene(7), make_scene(7)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.semantic, b.semantic)
    assert a.image.shape == (128, 128, 3) and a.image.dtype == np.uint8
    assert set(np.unique(a.semantic)) <= set(range(len(CLASSES)))
    for mask, cls in zip(a.instances.masks, a.instances.class_ids):
        assert cls in THINGS
        assert (a.semantic[mask] == cls).all()  # instance truth agrees with semantic truth
    # instances do not overlap (panoptic truth)
    assert a.instances.masks.sum(0).max() <= 1


def test_splits_are_disjoint():
    train = open_synthetic("default", "train", count=4)
    val = open_synthetic("default", "val", count=4)
    assert not set(train.records) & set(val.records)
    assert not np.array_equal(train[0].image, val[0].image)
    with pytest.raises(DataError, match="unknown split"):
        open_synthetic("default", "nope")


def test_train_transform_moves_image_and_mask_together():
    sample = make_scene(3)
    cfg = DataConfig(crop_size=200, scale_range=(1.0, 1.0), color_jitter=0.0, rotate=0.0, hflip=False,
                     mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    image, target = build_transform(cfg, train=True)(sample)
    assert image.shape == (3, 200, 200) and target.shape == (200, 200) and target.dtype == torch.int64
    pad = target == 255  # crop larger than the image: padded with void
    assert pad.sum() == 200 * 200 - 128 * 128
    assert (image[:, pad] == 0).all()
    # the kept region is the image and its labels, same offset in both
    ys, xs = torch.nonzero(~pad, as_tuple=True)
    y0, x0 = int(ys.min()), int(xs.min())
    np.testing.assert_array_equal(target[y0:y0 + 128, x0:x0 + 128].numpy(), sample.semantic)
    np.testing.assert_allclose(image[:, y0:y0 + 128, x0:x0 + 128].permute(1, 2, 0).numpy() * 255,
                               sample.image, atol=1e-3)


def test_flip_and_scale_keep_labels_valid():
    sample = make_scene(5)
    cfg = DataConfig(crop_size=64, scale_range=(0.5, 2.0), rotate=15)
    tf = build_transform(cfg, train=True)
    for _ in range(5):
        image, target = tf(sample)
        values = set(target.unique().tolist())
        assert values <= set(range(len(CLASSES))) | {255}


def test_pad_collate():
    a = (torch.ones(3, 4, 5), torch.zeros(4, 5, dtype=torch.long))
    b = (torch.ones(3, 6, 3), torch.ones(6, 3, dtype=torch.long))
    x, y = pad_collate([a, b])
    assert x.shape == (2, 3, 6, 5) and y.shape == (2, 6, 5)
    assert (y[0, 4:] == 255).all() and (y[1, :, 3:] == 255).all()


def test_transformed_dataset_cache_decodes_once_and_still_augments():
    from pixelwise.data.dataset import TransformedDataset

    reads = []

    class Counting:
        def __len__(self):
            return 2

        def __getitem__(self, i):
            reads.append(i)
            return i

    draws = iter(range(100))
    data = TransformedDataset(Counting(), lambda s: (s, next(draws)), cache=True)
    assert [data[0], data[0], data[1], data[0]] == [(0, 0), (0, 1), (1, 2), (0, 3)]
    assert reads == [0, 1]
    plain = TransformedDataset(Counting(), lambda s: s)
    plain[0], plain[0]
    assert reads == [0, 1, 0, 0]
