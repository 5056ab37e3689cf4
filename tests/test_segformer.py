"""SegFormer (arXiv 2105.15203): shapes at odd sizes, the paper's parameter counts, parity with transformers
through the converter, converter errors, MiT weight loading, and ONNX export."""
from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from timm.models import adapt_input_conv
from torch import nn

from pixelwise.convert.segformer import from_transformers
from pixelwise.errors import ModelError
from pixelwise.models.segformer import PAPER, VARIANTS, segformer

transformers = pytest.importorskip("transformers")
from transformers import SegformerConfig, SegformerForSemanticSegmentation  # noqa: E402

# Paper (Table 1 / 6) and transformers' nvidia/segformer-b* with 150 classes, in millions.
PAPER_MILLIONS = {"b0": 3.8, "b1": 13.7, "b2": 27.5, "b3": 47.3, "b4": 64.1, "b5": 84.7}


def _hf_config(variant: str, num_labels: int = 11) -> SegformerConfig:
    spec = VARIANTS[variant]
    return SegformerConfig(num_labels=num_labels, hidden_sizes=list(spec["widths"]), depths=list(spec["depths"]),
                           decoder_hidden_size=spec["decoder_dim"])


def _perturbed(model: nn.Module, seed: int = 0) -> nn.Module:
    """Randomise norms, biases and BN statistics too: at their default init (weight 1, bias 0, mean 0,
    var 1) a swapped LayerNorm or BN mapping would go unnoticed."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
            elif getattr(m, "bias", None) is not None and isinstance(m.bias, torch.Tensor):
                m.bias.copy_(0.05 * torch.randn(m.bias.shape, generator=gen))
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
    return model


def _saved_hf(tmp_path, variant: str, num_labels: int = 11, seed: int = 0):
    """A random transformers SegFormer saved with save_pretrained and read back as plain dict/tensors."""
    torch.manual_seed(seed)
    hf = _perturbed(SegformerForSemanticSegmentation(_hf_config(variant, num_labels)), seed).eval()
    with torch.no_grad():  # logits of order 1, not the classifier init's 0.02 scale: argmax agreement means something
        hf.decode_head.classifier.weight.normal_(0.0, 0.2)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    config = json.loads((tmp_path / "config.json").read_text())
    return hf, config, load_file(str(tmp_path / "model.safetensors"))


def test_forward_backward_odd_size_and_in_chans():
    torch.manual_seed(0)
    model = segformer(3, variant="b0")
    assert model.stride == 32 and model.num_classes == 3 and model.in_chans == 3 and model.encoder_name is None
    assert model.norm == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) and "arXiv 2105.15203" in PAPER
    x = torch.randn(2, 3, 65, 97)
    model.train()
    out = model(x)
    assert out.shape == (2, 3, 65, 97)
    out.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, no_grad
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a, b) and torch.isfinite(a).all()  # eval: no stochastic depth, no dropout
    four = segformer(2, variant="b0", in_chans=4).eval()
    with torch.no_grad():
        assert four(torch.randn(1, 4, 33, 40)).shape == (1, 2, 33, 40)
    with pytest.raises(ModelError, match="variant"):
        segformer(3, variant="b6")
    with pytest.raises(ModelError, match="drop_path"):
        segformer(3, drop_path=1.5)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_param_counts_match_paper_and_transformers(variant):
    with torch.device("meta"):
        ours = sum(p.numel() for p in segformer(150, variant=variant).parameters())
        theirs = sum(p.numel() for p in SegformerForSemanticSegmentation(_hf_config(variant, 150)).parameters())
    print(f"SegFormer-{variant.upper()}: {ours / 1e6:.3f}M (paper {PAPER_MILLIONS[variant]}M, transformers "
          f"{theirs / 1e6:.3f}M)")
    assert ours == theirs
    # within 1% of the paper's figure, or within its rounding to 0.1M (B0: 3.753M printed as 3.8M)
    reference = PAPER_MILLIONS[variant] * 1e6
    assert abs(ours - reference) <= max(0.01 * reference, 0.05e6)


@pytest.mark.parametrize("variant,sizes", [("b0", [(128, 128), (96, 160)]), ("b2", [(64, 64), (64, 96)])])
def test_parity_with_transformers(tmp_path, variant, sizes):
    hf, config, state = _saved_hf(tmp_path, variant)
    converted = from_transformers(config, state)
    assert converted.arch == "segformer" and converted.num_classes == 11
    assert converted.kwargs["variant"] == variant and converted.classes[3] == "LABEL_3"
    assert converted.norm == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    model = segformer(converted.num_classes, **converted.kwargs).eval()
    model.load_state_dict(converted.state, strict=True)
    torch.manual_seed(1)
    for h, w in sizes:
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            ref = F.interpolate(hf(pixel_values=x).logits, size=(h, w), mode="bilinear", align_corners=False)
            ours = model(x)
        diff = (ours - ref).abs().max().item()
        agree = (ours.argmax(1) == ref.argmax(1)).float().mean().item()
        print(f"SegFormer-{variant.upper()} {h}x{w}: max |diff| {diff:.2e}, argmax agreement {agree:.2%}, "
              f"logit range {ref.abs().max().item():.2f}")
        assert diff < 1e-4 and agree == 1.0
    # transformers v5 module names (the live model's state_dict) convert to the same tensors
    live = from_transformers(config, hf.state_dict())
    assert live.state.keys() == converted.state.keys()
    assert all(torch.equal(live.state[k], converted.state[k]) for k in live.state)


def test_converter_errors(tmp_path):
    _, config, state = _saved_hf(tmp_path, "b0", num_labels=5)
    cases = [({"hidden_sizes": [48, 96, 240, 384]}, "hidden_sizes"), ({"depths": [2, 2, 3, 2]}, "depths"),
             ({"hidden_sizes": [64, 128, 320, 512], "depths": [3, 4, 6, 3]}, "decoder_hidden_size"),
             ({"sr_ratios": [4, 2, 1, 1]}, "sr_ratios"), ({"num_attention_heads": [1, 2, 4, 8]}, "num_attention_heads"),
             ({"patch_sizes": [7, 3, 3, 5]}, "patch_sizes"), ({"strides": [4, 2, 2, 1]}, "strides"),
             ({"mlp_ratios": [8, 8, 4, 4]}, "mlp_ratios"), ({"architectures": ["SegformerForImageClassification"]},
                                                            "architectures"),
             ({"id2label": {"0": "a"}}, "id2label")]
    for change, field in cases:
        with pytest.raises(ModelError, match=field):
            from_transformers({**config, **change}, state)
    extra = {**state, "decode_head.aux.weight": torch.zeros(1)}
    with pytest.raises(ModelError, match=r"not converted \['decode_head.aux.weight'\]"):
        from_transformers(config, extra)
    key = "segformer.encoder.block.1.0.mlp.dense2.weight"
    with pytest.raises(ModelError, match=r"missing \['encoder.stages.1.blocks.0.mlp.fc2.weight'\]"):
        from_transformers(config, {k: v for k, v in state.items() if k != key})
    with pytest.raises(ModelError, match="wrong shape"):
        from_transformers(config, {**state, key: state[key][:, :-1]})
    # a checkpoint without num_batches_tracked still loads strictly
    trimmed = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    converted = from_transformers(config, trimmed)
    segformer(5, **converted.kwargs).load_state_dict(converted.state, strict=True)


def test_pretrained_mit_weights_adapted_to_in_chans(tmp_path):
    hf, _, state = _saved_hf(tmp_path, "b0")
    path = tmp_path / "mit.safetensors"
    save_file({k: v for k, v in state.items() if k.startswith("segformer.")}, str(path))
    with pytest.warns(UserWarning, match="adapted from 3 to 4"):
        model = segformer(2, variant="b0", in_chans=4, pretrained=str(path))
    ours = model.encoder.state_dict()
    first = state["segformer.encoder.patch_embeddings.0.proj.weight"]
    assert torch.equal(ours["stages.0.embed.proj.weight"], adapt_input_conv(4, first))
    assert torch.equal(ours["stages.2.blocks.1.attn.k.weight"],
                       state["segformer.encoder.block.2.1.attention.self.key.weight"])
    # a whole pixelwise model's state dict is read back too (its decoder and head are ignored)
    own = tmp_path / "own.safetensors"
    save_file(model.state_dict(), str(own))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = segformer(7, variant="b0", in_chans=4, pretrained=str(own))
    assert all(torch.equal(v, again.encoder.state_dict()[k]) for k, v in ours.items())
    with pytest.raises(ModelError, match="do not fit"):
        segformer(2, variant="b1", pretrained=str(path))
    with pytest.raises(ModelError, match="local weights file"):
        segformer(2, pretrained=True)


def test_onnx_export_and_onnxruntime_parity(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = segformer(4, variant="b0").eval()
    path = tmp_path / "segformer.onnx"
    axes = {"image": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch", 2: "height", 3: "width"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic
        torch.onnx.export(model, (torch.randn(1, 3, 64, 64),), str(path), input_names=["image"],
                          output_names=["logits"], dynamic_axes=axes, opset_version=17, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 64, 64), (2, 3, 96, 128)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            ref = model(x).numpy()
        got = session.run(None, {"image": x.numpy()})[0]
        diff = float(abs(got - ref).max())
        print(f"ONNX {shape}: max |diff| {diff:.2e}")
        assert got.shape == ref.shape and diff < 1e-4
