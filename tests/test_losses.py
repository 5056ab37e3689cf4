"""Each loss against a value computed by hand."""
import math

import pytest
import torch

from pixelwise.config import TrainConfig
from pixelwise.errors import ConfigError
from pixelwise.losses import (CrossEntropy, DiceLoss, FocalLoss, LovaszSoftmax, OHEMCrossEntropy, WeightedSum,
                              build_loss)


def two_pixels(p0_pixel1: float, p0_pixel2: float):
    """Logits (1,2,1,2) whose softmax gives p(class 0) = the two values; targets [0, 1] plus one void."""
    p = torch.tensor([p0_pixel1, p0_pixel2])
    logits = torch.stack([torch.log(p), torch.log(1 - p)]).reshape(1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    return logits, target


def test_cross_entropy_weights_and_void():
    logits, target = two_pixels(0.8, 0.4)
    expected = -(math.log(0.8) + math.log(0.6)) / 2
    assert CrossEntropy()(logits, target).item() == pytest.approx(expected, rel=1e-5)
    # class weights: weighted mean (w0 * l0 + w1 * l1) / (w0 + w1)
    w = CrossEntropy([1.0, 3.0])(logits, target).item()
    assert w == pytest.approx(-(math.log(0.8) + 3 * math.log(0.6)) / 4, rel=1e-5)
    void = torch.tensor([[[0, 255]]])
    assert CrossEntropy()(logits, void).item() == pytest.approx(-math.log(0.8), rel=1e-5)


def test_dice_by_hand():
    logits, target = two_pixels(0.8, 0.4)
    # class 0: p = [.8, .4], y = [1, 0]: (2*.8 + 1) / (1.2 + 1 + 1); class 1: p = [.2, .6], y = [0, 1]
    d0 = (2 * 0.8 + 1) / (1.2 + 1 + 1)
    d1 = (2 * 0.6 + 1) / (0.8 + 1 + 1)
    assert DiceLoss()(logits, target).item() == pytest.approx(1 - (d0 + d1) / 2, rel=1e-5)


def test_focal_by_hand_and_gamma_zero_is_ce():
    logits, target = two_pixels(0.8, 0.4)
    expected = -((0.2 ** 2) * math.log(0.8) + (0.4 ** 2) * math.log(0.6)) / 2
    assert FocalLoss(gamma=2)(logits, target).item() == pytest.approx(expected, rel=1e-5)
    assert FocalLoss(gamma=0)(logits, target).item() == pytest.approx(CrossEntropy()(logits, target).item())


def test_lovasz_by_hand():
    logits, target = two_pixels(0.8, 0.4)
    # worked in the docstring of this test module: class 0 gives 0.3, class 1 gives 0.4
    assert LovaszSoftmax()(logits, target).item() == pytest.approx(0.35, rel=1e-5)
    perfect = torch.tensor([[[[20.0, -20.0]], [[-20.0, 20.0]]]])
    assert LovaszSoftmax()(perfect, target).item() == pytest.approx(0.0, abs=1e-6)


def test_ohem_keeps_hard_pixels():
    logits, target = two_pixels(0.8, 0.4)  # p(true) = 0.8 and 0.6: only the second is below 0.7
    assert OHEMCrossEntropy(thresh=0.7, min_kept=1)(logits, target).item() == pytest.approx(-math.log(0.6), rel=1e-5)
    both = OHEMCrossEntropy(thresh=0.7, min_kept=2)(logits, target).item()
    assert both == pytest.approx(CrossEntropy()(logits, target).item(), rel=1e-5)


def test_build_loss_weighted_sum_and_errors():
    logits, target = two_pixels(0.8, 0.4)
    loss = build_loss(TrainConfig(loss={"ce": 1.0, "dice": 0.5}), 2)
    assert isinstance(loss, WeightedSum)
    expected = CrossEntropy()(logits, target) + 0.5 * DiceLoss()(logits, target)
    assert loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ConfigError, match="unknown loss"):
        build_loss(TrainConfig(loss="hinge"), 2)
    with pytest.raises(ConfigError, match="class_weights"):
        build_loss(TrainConfig(class_weights=[1.0]), 2)


@pytest.mark.parametrize("name", ["ce", "dice", "focal", "lovasz", "ohem"])
def test_every_loss_backpropagates(name):
    logits = torch.randn(2, 3, 5, 7, requires_grad=True)
    target = torch.randint(0, 3, (2, 5, 7))
    target[0, 0] = 255
    build_loss(TrainConfig(loss=name), 3)(logits, target).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
