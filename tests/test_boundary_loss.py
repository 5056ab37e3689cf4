"""PIDNet's boundary supervision against the official code (XuJiacong/PIDNet: utils/criterion.py `weighted_bce`,
`BondaryLoss`; models/pidnet.py FullModel's boundary-aware term; datasets/base_dataset.py `gen_sample` edges)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pixelwise.models import create_model
from pixelwise.tasks.semantic.boundary import (BCE_WEIGHT, balanced_bce, boundary_loss, boundary_targets,
                                               sure_labels)
from pixelwise.tasks.semantic.loss import SemanticLoss


def official_weighted_bce(bd_pre, target):
    """The official `weighted_bce`, transcribed."""
    log_p = bd_pre.permute(0, 2, 3, 1).contiguous().view(1, -1)
    target_t = target.view(1, -1)
    pos_index = target_t == 1
    neg_index = target_t == 0
    weight = torch.zeros_like(log_p)
    pos_num = pos_index.sum()
    neg_num = neg_index.sum()
    sum_num = pos_num + neg_num
    weight[pos_index] = neg_num * 1.0 / sum_num
    weight[neg_index] = pos_num * 1.0 / sum_num
    return F.binary_cross_entropy_with_logits(log_p, target_t, weight, reduction="mean")


def test_balanced_bce_is_the_official_weighted_bce():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 17, 23, generator=g) * 3
    edges = (torch.rand(3, 17, 23, generator=g) < 0.15).float()
    ours = balanced_bce(logits, edges)
    assert torch.allclose(ours, official_weighted_bce(logits, edges), rtol=1e-6, atol=1e-7)
    # and it is balanced: a constant prediction costs the two classes alike
    assert ours > 0


def test_boundary_targets_band_along_every_label_change():
    labels = torch.zeros(1, 16, 20, dtype=torch.long)
    labels[:, :, 10:] = 3
    labels[:, 12:, :] = 255  # void is a label change too, as in the official edges
    edges = boundary_targets(labels)[0]
    cols = edges[:6].nonzero()[:, 1].unique().tolist()
    assert cols == [8, 9, 10, 11]  # a 4-px band, two pixels either side of the change
    rows = edges[:, :4].nonzero()[:, 0].unique().tolist()
    assert rows == [10, 11, 12, 13]
    assert edges[:6, :6].sum() == 0 and edges[:6, 14:].sum() == 0


def test_boundary_targets_agree_with_the_official_canny_edges():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    label = np.zeros((96, 128), np.uint8)
    for _ in range(12):  # random rectangles of random classes
        y, x = rng.integers(0, 80), rng.integers(0, 110)
        label[y:y + rng.integers(8, 40), x:x + rng.integers(8, 50)] = rng.integers(1, 11)
    # the official gen_sample: Canny on the label map, edges within 6 px of the border dropped, 4x4 dilation
    edge = cv2.Canny(label, 0.1, 0.2)
    edge = np.pad(edge[6:-6, 6:-6], ((6, 6), (6, 6)), mode="constant")
    official = cv2.dilate(edge, np.ones((4, 4), np.uint8), iterations=1) > 50
    ours = boundary_targets(torch.from_numpy(label.astype(np.int64))[None])[0].numpy() > 0
    inner = (slice(8, -8), slice(8, -8))
    a, b = official[inner], ours[inner]
    iou = (a & b).sum() / (a | b).sum()
    assert iou > 0.6 and abs(int(a.sum()) - int(b.sum())) / a.sum() < 0.2


def test_boundary_loss_is_the_bce_plus_the_loss_at_sure_pixels():
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 4, (2, 12, 12), generator=g)
    labels[0, :3] = 255
    main = torch.randn(2, 4, 12, 12, generator=g, requires_grad=True)
    bd = (torch.randn(2, 1, 12, 12, generator=g) * 3).requires_grad_()
    ce = torch.nn.CrossEntropyLoss(ignore_index=255)
    total = boundary_loss(bd, main, labels, ce)
    sure = torch.sigmoid(bd[:, 0]) > 0.8
    expected_labels = torch.where(sure, labels, torch.full_like(labels, 255))
    expected = BCE_WEIGHT * official_weighted_bce(bd, boundary_targets(labels)) + ce(main, expected_labels)
    assert torch.allclose(total, expected)
    assert torch.equal(sure_labels(bd, labels), expected_labels)
    # the boundary-aware term trains the main head only: the boundary head's gradient is the BCE's alone
    total.backward()
    bd_only = bd.detach().clone().requires_grad_()
    (BCE_WEIGHT * official_weighted_bce(bd_only, boundary_targets(labels))).backward()
    assert torch.allclose(bd.grad, bd_only.grad)


def test_no_sure_pixel_adds_no_boundary_aware_term():
    labels = torch.randint(0, 3, (2, 8, 8))
    bd = torch.full((2, 1, 8, 8), -5.0)
    main = torch.randn(2, 3, 8, 8)
    ce = torch.nn.CrossEntropyLoss(ignore_index=255)
    total = boundary_loss(bd, main, labels, ce)
    assert torch.isfinite(total)
    assert torch.allclose(total, BCE_WEIGHT * balanced_bce(bd, boundary_targets(labels)))


def test_pidnet_trains_its_boundary_head_through_the_semantic_loss():
    torch.manual_seed(0)
    model = create_model("pidnet", 5, variant="s").train()
    x = torch.randn(2, 3, 64, 96)
    # regions, not noise: with a label change at every pixel every pixel is boundary and the balanced BCE
    # weighs them all 0 (the official weighting, too)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(96), indexing="ij")
    labels = torch.stack([(yy // 16 + xx // 24) % 5, (yy // 8 + xx // 32) % 5])
    out = model(x)
    assert set(out) == {"out", "aux", "boundary"} and out["boundary"].shape == (2, 1, 64, 96)
    ce = torch.nn.CrossEntropyLoss(ignore_index=255)
    loss = SemanticLoss(ce)(out, labels)
    manual = (ce(out["out"], labels) + 0.4 * ce(out["aux"], labels)
              + boundary_loss(out["boundary"], out["out"], labels, ce))
    assert torch.allclose(loss, manual)
    loss.backward()
    assert model.aux_head.seghead_d.conv2.weight.grad.abs().sum() > 0
    assert model.aux_head.seghead_p.conv2.weight.grad.abs().sum() > 0
