"""The one-pass colour jitter against torchvision's own adjustments, and the fused resize + random scale."""
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from pixelwise.data.colour import GRAY, AffineColorJitter, apply_colour, hue_matrix
from pixelwise.data.synthetic import make_scene
from pixelwise.data.transforms import RandomScale


@pytest.fixture(scope="module")
def scene():
    return torch.from_numpy(make_scene(seed=3, size=96).image).permute(2, 0, 1).contiguous()


@pytest.mark.parametrize("which,factor,reference", [
    ("b", 1.25, F.adjust_brightness), ("b", 0.7, F.adjust_brightness),
    ("c", 0.75, F.adjust_contrast), ("c", 1.3, F.adjust_contrast),
    ("s", 0.6, F.adjust_saturation), ("s", 1.4, F.adjust_saturation)])
def test_each_adjustment_alone_is_torchvisions(scene, which, factor, reference):
    args = {"b": 1.0, "c": 1.0, "s": 1.0, "h": 0.0, which: factor}
    got = apply_colour(scene, args["b"], args["c"], args["s"], args["h"])
    assert got.dtype == torch.uint8
    assert (got.int() - reference(scene, factor).int()).abs().max() <= 1  # rounding only


def test_hue_keeps_luma_and_turns_the_way_torchvision_does(scene):
    assert torch.equal(apply_colour(scene, 1, 1, 1, 0.0), scene)
    for h in (0.05, -0.05):
        torch.testing.assert_close(GRAY @ hue_matrix(h), GRAY, atol=1e-3, rtol=0)  # luma kept (before clamping)
        assert not torch.allclose(hue_matrix(h), torch.eye(3, dtype=torch.float64), atol=1e-2)
        ours = (apply_colour(scene, 1, 1, 1, h).float() - F.adjust_hue(scene, h).float()).abs().mean()
        other_way = (apply_colour(scene, 1, 1, 1, -h).float() - F.adjust_hue(scene, h).float()).abs().mean()
        assert ours < other_way


def test_the_jitter_changes_images_not_masks(scene):
    torch.manual_seed(0)
    mask = tv_tensors.Mask(torch.randint(0, 5, (96, 96), dtype=torch.uint8))
    image, out_mask = AffineColorJitter(0.3, 0.05)(tv_tensors.Image(scene), mask)
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8 and not torch.equal(image, scene)
    assert torch.equal(out_mask, mask)


def test_resize_and_random_scale_resample_once():
    img = tv_tensors.Image(torch.zeros(3, 360, 480, dtype=torch.uint8))
    sizes = {tuple(RandomScale(1.0, 1.0, shorter=240)(img).shape[-2:])}
    assert sizes == {(240, 320)}
    torch.manual_seed(0)
    for _ in range(20):
        h, w = RandomScale(0.75, 1.5, shorter=240)(img).shape[-2:]
        assert 180 <= h <= 360 and abs(w / h - 4 / 3) < 0.01
