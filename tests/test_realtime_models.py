"""The real-time architectures beyond the parametrized model test: LR-ASPP's head against torchvision's, the
training-only heads, and the official checkpoints' layouts (written here: no download) loading by key."""
from __future__ import annotations

import pytest
import torch

from pixelwise.errors import ModelError
from pixelwise.models import create_model
from pixelwise.models.lraspp import LRASPPDecoder


def _eval_out(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_lraspp_head_is_torchvisions():
    from torchvision.models.segmentation.lraspp import LRASPPHead

    torch.manual_seed(0)
    ours = LRASPPDecoder([16, 24, 40, 960], low_index=2, num_classes=7, inter_channels=128).eval()
    ref = LRASPPHead(40, 960, 7, 128).eval()
    for m in ours.modules():  # non-trivial batch-norm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(0.5, 1.5)
    ref.load_state_dict(ours.state_dict())  # the same module names: cbr, scale, low_classifier, high_classifier
    low, high = torch.randn(2, 40, 24, 32), torch.randn(2, 960, 12, 16)
    feats = [torch.randn(2, 16, 96, 128), torch.randn(2, 24, 48, 64), low, high]
    with torch.no_grad():
        assert torch.allclose(ours(feats), ref({"low": low, "high": high}), atol=1e-5)


def test_lraspp_rejects_bad_options():
    with pytest.raises(ModelError, match="output_stride"):
        create_model("lraspp", 3, encoder="mobilenetv3_small_100", output_stride=8)
    with pytest.raises(ModelError, match="inter_channels"):
        create_model("lraspp", 3, encoder="mobilenetv3_small_100", inter_channels=0)


@pytest.mark.parametrize("name,kwargs,keys", [
    ("ddrnet", {"variant": "23-slim"}, {"out", "aux"}),
    ("pidnet", {"variant": "s"}, {"out", "aux", "boundary"}),
    ("bisenetv2", {}, {"out", "aux", "aux2", "aux3", "aux4"}),
    ("fastscnn", {}, {"out", "aux", "aux2"}),
])
def test_training_heads_only_in_training(name, kwargs, keys):
    torch.manual_seed(0)
    model = create_model(name, 4, **kwargs).train()
    out = model(torch.randn(2, 3, 70, 90))
    assert set(out) == keys and all(v.shape[-2:] == (70, 90) for v in out.values())
    assert _eval_out(model, torch.randn(1, 3, 70, 90)).shape == (1, 4, 70, 90)
    plain = create_model(name, 4, aux=False, **kwargs)
    assert plain.aux_head is None and torch.is_tensor(plain.train()(torch.randn(2, 3, 64, 64)))


def test_ddrnet_variants_and_errors():
    assert create_model("ddrnet", 3, variant=23).encoder.channels == [128, 256]  # YAML's `variant: 23`
    with pytest.raises(ModelError, match="unknown variant"):
        create_model("ddrnet", 3, variant="39")
    with pytest.raises(ModelError, match="aux must be"):
        create_model("ddrnet", 3, aux="yes")


def _official_state(model, aux_names):
    """A model's weights under the official training wrapper's names (PIDNet / DDRNet FullModel: `model.` +
    the network's own names, its heads `final_layer` and the aux heads), with a loss buffer beside them."""
    state = {f"model.{k}": v for k, v in model.encoder.state_dict().items()}
    state.update({f"model.final_layer.{k}": v for k, v in model.head.state_dict().items()})
    state.update({f"model.{k}": v for k, v in model.aux_head.state_dict().items() if k.split(".")[0] in aux_names})
    state["sem_loss.criterion.weight"] = torch.ones(19)
    return {"state_dict": state}


@pytest.mark.parametrize("name,kwargs,aux_names", [
    ("pidnet", {"variant": "s"}, {"seghead_p", "seghead_d"}),
    ("ddrnet", {"variant": "23-slim"}, {"seghead_extra"}),
])
def test_official_finetuned_checkpoint_loads_whole(tmp_path, name, kwargs, aux_names):
    torch.manual_seed(0)
    source = create_model(name, 5, **kwargs)
    path = tmp_path / "official.pth"
    torch.save(_official_state(source, aux_names), path)
    torch.manual_seed(1)
    loaded = create_model(name, 5, pretrained=str(path), **kwargs)
    x = torch.randn(1, 3, 64, 96)
    assert torch.equal(_eval_out(loaded, x), _eval_out(source, x))
    for key, value in source.aux_head.state_dict().items():
        assert torch.equal(loaded.aux_head.state_dict()[key], value)
    # a pixelwise model's own state dict loads the same way
    own = tmp_path / "own.pth"
    torch.save(source.state_dict(), own)
    again = create_model(name, 5, pretrained=str(own), **kwargs)
    assert torch.equal(_eval_out(again, x), _eval_out(source, x))


@pytest.mark.parametrize("name,kwargs", [("pidnet", {"variant": "s"}), ("ddrnet", {"variant": "23-slim"})])
def test_imagenet_checkpoint_loads_the_body_and_leaves_other_classifiers(tmp_path, name, kwargs):
    torch.manual_seed(0)
    source = create_model(name, 5, **kwargs)
    state = dict(source.encoder.state_dict())
    state["final_layer.conv2.weight"] = torch.randn(1000, 64, 1, 1)  # another class count: not loaded
    path = tmp_path / "imagenet.pth"
    torch.save(state, path)
    loaded = create_model(name, 5, pretrained=str(path), **kwargs)
    for key, value in source.encoder.state_dict().items():
        assert torch.equal(loaded.encoder.state_dict()[key], value), key
    assert loaded.head.conv2.weight.shape[0] == 5
    # a file that is not this network's: one line, naming the file
    torch.save({"fc.weight": torch.randn(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(ModelError, match=f"other.pth fits the {name} body|no tensor of .*other.pth"):
        create_model(name, 5, pretrained=str(tmp_path / "other.pth"), **kwargs)


def test_partial_checkpoint_warns_with_names(tmp_path):
    source = create_model("ddrnet", 5)
    state = {k: v for k, v in source.encoder.state_dict().items() if not k.startswith("spp.")}
    torch.save(state, tmp_path / "partial.pth")
    with pytest.warns(UserWarning, match="ddrnet body tensors left at their initialisation"):
        create_model("ddrnet", 5, pretrained=str(tmp_path / "partial.pth"))


@pytest.mark.parametrize("name", ["bisenetv2", "fastscnn"])
def test_mmseg_checkpoint_backbone_loads(tmp_path, name):
    torch.manual_seed(0)
    source = create_model(name, 5)
    state = {f"backbone.{k}": v for k, v in source.encoder.state_dict().items()}
    state["decode_head.conv_seg.weight"] = torch.randn(19, 8, 1, 1)
    torch.save({"state_dict": state, "meta": {}}, tmp_path / "mmseg.pth")
    torch.manual_seed(1)
    loaded = create_model(name, 5, pretrained=str(tmp_path / "mmseg.pth"))
    for key, value in source.encoder.state_dict().items():
        assert torch.equal(loaded.encoder.state_dict()[key], value), key
