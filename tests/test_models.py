"""Models: one parametrized test over every registered architecture, encoder tests, parameter counts.

Registering an architecture in MODELS adds it here; give it a small configuration in SMALL when its
defaults are too heavy for a CPU test.
"""
from __future__ import annotations

import json
import warnings

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from pixelwise.errors import ModelError
from pixelwise.models import MODELS, create_encoder, create_model, encoder_norm, list_models, model_info
from pixelwise.models.encoders import read_weights
from pixelwise.tasks.semantic.loss import SemanticMaskLoss

# Small configurations for the forward/backward test (defaults otherwise).
SMALL: dict[str, dict] = {
    "unet": dict(base_channels=8),
    "fcn32s": dict(fc_channels=64),
    "fcn16s": dict(fc_channels=64),
    "fcn8s": dict(fc_channels=64),
    "segnet": dict(encoder="vgg11_bn"),
    "segnet_basic": dict(width=8),
    "deeplabv1": dict(encoder="vgg11"),
    "deeplabv2": dict(encoder="resnet18"),
    "deeplabv3": dict(encoder="resnet18", aux=True),
    "deeplabv3plus": dict(encoder="resnet18", multi_grid=[1, 2, 4]),
    "fastfcn": dict(encoder="resnet18", width=32),
    "segmenter": dict(encoder="vit_tiny_patch16_384"),
    "panoptic_deeplab": dict(encoder="resnet18", aspp_channels=32, decoder_channels=32, instance_decoder_channels=16,
                             head_channels=8),
    "segformer": dict(variant="b0"),
    "upernet": dict(encoder="resnet18", channels=32, aux=True, aux_channels=16),
    "mask2former": dict(encoder="resnet18", hidden_dim=64, num_queries=10, decoder_layers=3, encoder_layers=1,
                        dim_feedforward=128),
    "lraspp": dict(encoder="mobilenetv3_small_100"),
    "pidnet": dict(variant="s"),
    "ddrnet": dict(variant="23-slim"),
}
# Further variants worth the same checks.
VARIANTS = [
    ("unet", dict(encoder="resnet18", base_channels=8, bilinear=True)),
    ("fcn8s", dict(encoder="resnet18")),
    ("deeplabv3plus", dict(encoder="mobilenetv2_100", output_stride=8)),
    ("segmenter", dict(encoder="vit_tiny_patch16_384", decoder="linear", patch_size=32)),
]
CASES = [(name, SMALL.get(name, {})) for name in MODELS] + VARIANTS

# Reference parameter counts of the papers' configurations (21 classes unless said otherwise).
PAPER_PARAMS = [
    # U-Net at 64 base channels: 31.0M in the reference PyTorch port (milesial/Pytorch-UNet, with BN).
    ("unet", {}, 31.04e6),
    # FCN-8s VGG16: the Caffe reference model (voc-fcn8s), 134.5M.
    ("fcn8s", {}, 134.5e6),
    # SegNet (VGG16 encoder, mirrored decoder): 29.5M in the paper's comparison table; SegNet-Basic 1.425M.
    ("segnet", {}, 29.5e6),
    ("segnet_basic", {"num_classes": 11}, 1.425e6),
    # DeepLab-LargeFOV: 20.5M in the v1 paper's Table 2.
    ("deeplabv1", {}, 20.5e6),
    # DeepLabV3 ResNet-101 at stride 16: torchvision's deeplabv3_resnet101 (no aux) has 58.63M; its head adds
    # a 3x3 conv of 256 (0.59M) that the paper's head does not have.
    ("deeplabv3", {}, 58.63e6),
    # DeepLabV3+ ResNet-101: segmentation_models.pytorch's DeepLabV3Plus("resnet101"), 45.67M (counted layer
    # by layer from its decoders/deeplabv3/decoder.py; it has one separable decoder conv where the paper has two).
    ("deeplabv3plus", {}, 45.67e6),
    # Seg-S/16 mask, ADE20K (150 classes): the reference code's model has 26.42M, of which 0.385M is the
    # ViT's unused ImageNet head and 0.17M a 32x32 position grid (timm's 24x24 grid is interpolated here).
    ("segmenter", {"num_classes": 150}, 26.42e6),
    # SegFormer MiT-B0 / B2, ADE20K (150 classes): transformers' nvidia/segformer-b0 / b2 have 3.75M / 27.46M
    # (the paper prints 3.8M / 27.5M).
    ("segformer", {"num_classes": 150}, 3.753e6),
    ("segformer", {"num_classes": 150, "variant": "b2"}, 27.46e6),
    # UPerNet ConvNeXt-T with its auxiliary FCN head, ADE20K: transformers' UperNetForSemanticSegmentation has
    # 60,242,636 (the ConvNeXt paper: 60M).
    ("upernet", {"num_classes": 150, "aux": True}, 60.24e6),
    # Mask2Former, COCO panoptic (133 classes): Swin-T 47M and R50 44M in the paper's Table 1.
    ("mask2former", {"num_classes": 133}, 47.0e6),
    ("mask2former", {"num_classes": 133, "encoder": "resnet50"}, 44.0e6),
    # LR-ASPP MobileNetV3-Large, 21 classes: torchvision's lraspp_mobilenet_v3_large has 3,221,538.
    ("lraspp", {}, 3.221538e6),
    # PIDNet-S / L, Cityscapes (19 classes): the paper's 7.6M / 36.9M count the inference model without the P
    # and boundary heads (official get_pred_model). PIDNet-M is left out: the official configuration gives
    # 28.54M, not the paper's 34.4M (see pidnet.py).
    ("pidnet", {"num_classes": 19, "aux": False}, 7.6e6),
    ("pidnet", {"num_classes": 19, "variant": "l", "aux": False}, 36.9e6),
    # BiSeNet V2 without its booster heads, 19 classes: about 3.4M as mmsegmentation reports it.
    ("bisenetv2", {"num_classes": 19, "aux": False}, 3.4e6),
    # DDRNet-23-slim / DDRNet-23, Cityscapes (19 classes): the paper's 5.7M / 20.1M, without the aux head.
    ("ddrnet", {"num_classes": 19, "aux": False}, 5.7e6),
    ("ddrnet", {"num_classes": 19, "variant": "23", "aux": False}, 20.1e6),
    # Fast-SCNN, 19 classes, no aux heads: Tramac's PyTorch port (Tramac/Fast-SCNN-pytorch) has 1,138,051; the
    # paper's 1.11M is the same network less its batch norms' scale and shift (see fastscnn.py).
    ("fastscnn", {"num_classes": 19, "aux": False}, 1.138051e6),
]




def _out(y):
    return y["out"] if isinstance(y, dict) else y


def _all(y):
    """Every output as one tensor: panoptic models return a dict of named maps in eval mode too."""
    return torch.cat([y[k] for k in sorted(y)], 1) if isinstance(y, dict) else y


@pytest.mark.parametrize("name,kwargs", CASES, ids=[f"{n}-{'-'.join(map(str, k.values())) or 'default'}"
                                                     for n, k in CASES])
def test_model(name, kwargs, tmp_path):
    torch.manual_seed(0)
    num_classes = 3
    model = create_model(name, num_classes, **kwargs)
    arch = model.pixelwise_arch
    assert arch == json.loads(json.dumps(arch)) and arch["name"] == name

    # training: batch of 2 (batch norm after global pooling needs more than one value), odd size
    model.train()
    x = torch.randn(2, 3, 35, 45)
    y = model(x)
    target = torch.randint(0, num_classes, (2, 35, 45))
    if getattr(model, "mask_classification", False):  # (class, mask) pairs: the set criterion trains them
        assert y["pred_logits"].shape[-1] == num_classes + 1 and y["pred_masks"].shape[-2:] == (16, 16)
        loss = SemanticMaskLoss(num_classes)(y, target)
    else:
        assert _out(y).shape == (2, num_classes, 35, 45)
        loss = torch.nn.functional.cross_entropy(_out(y), target)
    if isinstance(y, dict) and not getattr(model, "mask_classification", False):
        for key, value in y.items():  # "aux": deep supervision; others (panoptic "center", "offset"): any loss
            if key == "aux":
                assert value.shape == (2, num_classes, 35, 45)
                loss = loss + 0.4 * torch.nn.functional.cross_entropy(value, target)
            elif key != "out":
                assert value.shape[0] == 2 and value.shape[-2:] == (35, 45)
                loss = loss + value.float().square().mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)

    # eval: tensor at the input size for odd and even sizes, deterministic
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
        assert (isinstance(out, torch.Tensor) or "aux" not in out) and _out(out).shape == (1, num_classes, 64, 64)
        x = torch.randn(1, 3, 67, 93)
        a, b = _all(model(x)), _all(model(x))
    assert _out(model(x)).shape == (1, num_classes, 67, 93) and torch.equal(a, b)

    # save / load through safetensors into a model rebuilt from its recorded architecture
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))
    fresh = create_model(**arch).eval()
    fresh.load_state_dict(load_file(str(path)))
    with torch.no_grad():
        assert torch.allclose(_all(fresh(x)), a, atol=1e-5)


@pytest.mark.parametrize("name,kwargs,reference", PAPER_PARAMS)
def test_paper_param_counts(name, kwargs, reference):
    kwargs = dict(kwargs)
    info = model_info(name, num_classes=kwargs.pop("num_classes", 21), **kwargs)
    print(f"{name} {kwargs}: {info['params'] / 1e6:.2f}M params (reference {reference / 1e6:.2f}M), "
          f"{info['gflops']:.1f} GFLOPs at 512x512")
    assert abs(info["params"] - reference) / reference < 0.025
    assert info["gflops"] > 0 and "arXiv" in info["paper"]


def test_registry_errors_and_options():
    assert list_models() == list(MODELS)
    with pytest.raises(ModelError, match="known models: .*unet"):
        create_model("no_such_net", 3)
    with pytest.raises(ModelError, match="'widht'"):
        create_model("unet", 3, widht=3)
    with pytest.raises(ModelError, match="num_classes"):
        create_model("unet", 0)
    for name, builder in MODELS.items():
        if "encoder" in builder.__code__.co_varnames:
            assert "pretrained" in builder.__code__.co_varnames, name
    model = create_model("unet", 2, base_channels=4, depth=2, pretrained=None)
    assert model.pixelwise_arch == {"name": "unet", "num_classes": 2, "kwargs": {"base_channels": 4, "depth": 2}}
    assert model.stride == 4


def test_encoder_channels_reductions_and_output_stride():
    enc = create_encoder("resnet18")
    assert enc.channels == [64, 64, 128, 256, 512] and enc.reductions == [2, 4, 8, 16, 32]
    feats = enc(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == enc.channels
    assert [64 // f.shape[-1] for f in feats] == enc.reductions
    dilated = create_encoder("resnet18", output_stride=8, out_indices=(1, 4))
    assert dilated.reductions == [4, 8] and dilated(torch.randn(1, 3, 64, 64))[-1].shape[-2:] == (8, 8)
    with pytest.raises(ModelError, match="output_stride=8"):
        create_encoder("vgg16", output_stride=8)
    with pytest.raises(ModelError, match="output_stride"):
        create_encoder("resnet18", output_stride=4)
    with pytest.raises(ModelError, match="unknown encoder"):
        create_encoder("resnet_does_not_exist")
    assert encoder_norm("vit_small_patch16_224") == ((0.5,) * 3, (0.5,) * 3)
    assert encoder_norm(None) == encoder_norm("resnet50") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_encoder_loads_local_weights(tmp_path):
    torch.manual_seed(1)
    source = timm.create_model("resnet18", num_classes=10).state_dict()  # a classifier that must be ignored
    st = tmp_path / "r18.safetensors"
    save_file({"module." + k: v for k, v in source.items()}, str(st))
    pth = tmp_path / "r18.pth"
    torch.save({"state_dict": source, "epoch": 3}, pth)
    for path in (st, pth, str(pth)):
        enc = create_encoder("resnet18", pretrained=path)
        loaded = enc.state_dict()
        assert torch.equal(loaded["model.conv1.weight"], source["conv1.weight"])
        assert torch.equal(loaded["model.layer4.1.bn2.running_var"], source["layer4.1.bn2.running_var"])
    # a U-Net's timm encoder takes the same file
    unet = create_model("unet", 2, encoder="resnet18", base_channels=4, pretrained=str(st))
    assert torch.equal(unet.encoder.model.layer1[0].conv1.weight, source["layer1.0.conv1.weight"])
    assert "pretrained" not in unet.pixelwise_arch["kwargs"]
    # one-channel input: the first conv is adapted (summed over RGB, as timm does)
    with pytest.warns(UserWarning, match="conv1.weight adapted from 3 to 1 input channels"):
        gray = create_encoder("resnet18", pretrained=st, in_chans=1)
    assert gray.model.conv1.weight.shape[1] == 1

    bad = tmp_path / "other.safetensors"
    save_file({"foo.weight": torch.zeros(3), "bar.bias": torch.zeros(2)}, str(bad))
    with pytest.raises(ModelError, match="0 of .* matched.*foo.weight"):
        create_encoder("resnet18", pretrained=bad)
    partial = tmp_path / "partial.safetensors"
    save_file({k: v for k, v in source.items() if not k.startswith("layer4")}, str(partial))
    with pytest.warns(UserWarning, match="layer4"):
        create_encoder("resnet18", pretrained=partial)
    with pytest.raises(ModelError, match="does not exist"):
        create_encoder("resnet18", pretrained=tmp_path / "missing.pth")


class Payload:
    """An arbitrary object: torch.load(weights_only=True) must refuse to rebuild it."""


def test_weights_are_never_unpickled(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": Payload()}, path)
    with pytest.raises(ModelError, match="plain tensors"):
        read_weights(path)


def test_fcn_fc6_fc7_from_vgg_classifier(tmp_path):
    # timm's VGG keeps fc6 / fc7 as convs "pre_logits.fc1/fc2" (a narrow stand-in for the 4096 wide ones)
    from pixelwise.models.fcn import FCNDecoder, _load_vgg_fc

    fc = 8
    decoder = FCNDecoder([512], [False], 3, fc_channels=fc)
    state = {"pre_logits.fc1.weight": torch.randn(fc, 512, 7, 7), "pre_logits.fc1.bias": torch.randn(fc),
             "pre_logits.fc2.weight": torch.randn(fc, fc, 1, 1), "pre_logits.fc2.bias": torch.randn(fc)}
    path = tmp_path / "vgg.pth"
    torch.save(state, path)
    _load_vgg_fc(decoder.fc, "vgg16", path)
    assert torch.equal(decoder.fc[0].weight, state["pre_logits.fc1.weight"])
    assert torch.equal(decoder.fc[3].bias, state["pre_logits.fc2.bias"])


def test_pretrained_download_failure_is_model_error(monkeypatch):
    import huggingface_hub.constants

    # no network here; offline mode makes the hub fail at once instead of retrying for a minute
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match="could not be downloaded.*pretrained=PATH"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        create_encoder("resnet18", pretrained=True)


def test_deeplab_structure():
    v1 = create_model("deeplabv1", 2, encoder="vgg11")
    assert v1.encoder(torch.randn(1, 3, 64, 64))[-1].shape == (1, 512, 8, 8)  # atrous VGG: output stride 8
    v3 = create_model("deeplabv3", 2, encoder="resnet18")  # multi-grid (1, 2, 4) x rate 2 at stride 16
    assert [block.conv2.dilation for block in v3.encoder.model.layer4] == [(2, 2), (4, 4)]
    assert v3.encoder(torch.randn(1, 3, 64, 64))[-1].shape[-1] == 4
    with pytest.raises(ModelError, match="multi_grid"):
        create_model("deeplabv3plus", 2, encoder="mobilenetv2_100", multi_grid=[1, 2, 4])
    with pytest.raises(ModelError, match="output_stride"):
        create_model("deeplabv3", 2, encoder="resnet18", output_stride=32)


def test_deeplab_fc_from_decimated_vgg_classifier(tmp_path):
    # DeepLab v1 keeps every 4th fc6/fc7 unit and fc6's 7x7 taps 0, 3, 6 (narrow stand-in for 4096 -> 1024)
    from pixelwise.models.deeplab import _fc_branch, _init_fc_from_vgg

    branch = _fc_branch(512, 3, rate=12, width=2)
    state = {"pre_logits.fc1.weight": torch.randn(8, 512, 7, 7), "pre_logits.fc1.bias": torch.randn(8),
             "pre_logits.fc2.weight": torch.randn(8, 8, 1, 1), "pre_logits.fc2.bias": torch.randn(8)}
    save_file(state, str(tmp_path / "vgg.safetensors"))
    _init_fc_from_vgg([branch], "vgg16", tmp_path / "vgg.safetensors")
    assert torch.equal(branch[0].weight, state["pre_logits.fc1.weight"][::4, :, ::3, ::3])
    assert torch.equal(branch[3].weight, state["pre_logits.fc2.weight"][::4, ::4])


def test_segmenter_loads_vit_weights_at_another_resolution(tmp_path):
    torch.manual_seed(2)
    source = timm.create_model("vit_tiny_patch16_224").state_dict()  # 14x14 position grid
    save_file(source, str(tmp_path / "vit.safetensors"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every encoder tensor must be found
        model = create_model("segmenter", 2, encoder="vit_tiny_patch16_384", pretrained=tmp_path / "vit.safetensors")
    vit = model.encoder.model.model
    assert vit.pos_embed.shape[1] == 1 + 24 * 24  # resampled by timm's checkpoint filter
    assert torch.equal(vit.blocks[5].mlp.fc2.weight, source["blocks.5.mlp.fc2.weight"])
    assert torch.equal(vit.norm.weight, source["norm.weight"])  # the final norm is kept
    assert model.stride == 16 and model.eval()(torch.randn(1, 3, 50, 70)).shape == (1, 2, 50, 70)
