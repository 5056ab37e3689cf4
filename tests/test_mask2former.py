"""Mask2Former: forward / backward of a small configuration, parity with transformers'
Mask2FormerForUniversalSegmentation on converted weights, converter errors."""
from __future__ import annotations

import json

import numpy as np

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from pixelwise.convert.mask2former import from_transformers
from pixelwise.errors import ModelError
from pixelwise.models import count_params
from pixelwise.models.mask2former import mask2former, masks_at_input, semantic_scores

SMALL = dict(encoder="resnet18", hidden_dim=64, num_queries=10, decoder_layers=3, encoder_layers=1,
             dim_feedforward=128)
STAGES = ["stage1", "stage2", "stage3", "stage4"]


def test_forward_backward_small():
    torch.manual_seed(0)
    model = mask2former(4, **SMALL).train()
    assert model.mask_classification and model.stride == model.pad_to == 32 and model.num_queries == 10
    x = torch.randn(2, 3, 70, 90)
    out = model(x)
    assert out["pred_logits"].shape == (2, 10, 5)
    assert out["pred_masks"].shape == (2, 10, 24, 24)  # 1/4 of the input padded to 96 x 96
    assert len(out["aux_outputs"]) == 3
    for aux in out["aux_outputs"]:
        assert aux["pred_logits"].shape == (2, 10, 5) and aux["pred_masks"].shape == (2, 10, 24, 24)
    loss = out["pred_logits"].logsumexp(-1).mean() + out["pred_masks"].sigmoid().mean()
    loss = loss + sum(a["pred_logits"].logsumexp(-1).mean() + a["pred_masks"].sigmoid().mean()
                      for a in out["aux_outputs"])
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.backbone.encoder.model.conv1.weight.grad.abs().sum() > 0  # the gradient reaches the encoder

    model.eval()
    with torch.no_grad():
        out = model.queries(x)
        assert set(out) == {"pred_logits", "pred_masks"}
        assert torch.equal(out["pred_masks"], model.queries(x)["pred_masks"])
        maps = model(x)  # eval forward: the per-pixel maps of the pixelwise contract
        assert set(maps) == {"out"} and maps["out"].shape == (2, 4, 70, 90)
        expected = semantic_scores(out["pred_logits"], masks_at_input(out["pred_masks"], (70, 90)))
        assert torch.allclose(maps["out"].exp(), expected.clamp_min(1e-6), atol=1e-6)
        model.query_outputs = True
        maps = model(x)
        assert maps["query_logits"].shape == (2, 10, 5) and maps["query_masks"].shape == (2, 10, 70, 90)
        model.query_outputs = False
        # padding is internal, right and bottom: the same as padding by hand
        padded = model.queries(F.pad(x, (0, 6, 0, 26)))
        assert torch.allclose(padded["pred_masks"], out["pred_masks"], atol=1e-5)
    scores = semantic_scores(out["pred_logits"], out["pred_masks"])
    assert scores.shape == (2, 4, 24, 24) and (scores >= 0).all()
    assert masks_at_input(out["pred_masks"], (70, 90)).shape == (2, 10, 70, 90)


def test_other_encoders_and_builder_errors():
    model = mask2former(3, **dict(SMALL, encoder="tf_efficientnet_lite0")).eval()
    with torch.no_grad():
        assert model.queries(torch.randn(1, 3, 40, 72))["pred_masks"].shape == (1, 10, 16, 24)
    with torch.device("meta"):  # the paper's Swin-T on COCO panoptic (133 classes): 47M parameters
        assert abs(count_params(mask2former(133)) / 47.4e6 - 1) < 0.01
    with pytest.raises(ModelError, match="strides"):
        mask2former(3, encoder="vit_tiny_patch16_224")
    with pytest.raises(ModelError, match="pixel_dim"):
        mask2former(3, **dict(SMALL, pixel_dim=48))
    with pytest.raises(ModelError, match="decoder_layers"):
        mask2former(3, **dict(SMALL, decoder_layers=0))


def _checkpoint(tmp_path, backbone_config, **options) -> tuple[dict, dict, torch.nn.Module]:
    """A random transformers Mask2Former, every tensor perturbed (zero-initialised offsets, unit norms and
    BN statistics would hide mapping errors), saved and read back as plain data."""
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation

    torch.manual_seed(0)
    config = Mask2FormerConfig(backbone_config=backbone_config, num_labels=5, num_queries=20, **options)
    ref = Mask2FormerForUniversalSegmentation(config).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.02 * torch.randn_like(p))
        for name, b in ref.named_buffers():
            if name.endswith("running_mean"):
                b.normal_(0, 0.1)
            elif name.endswith("running_var"):
                b.uniform_(0.5, 2.0)
    ref.save_pretrained(tmp_path, safe_serialization=True)
    config = json.loads((tmp_path / "config.json").read_text())
    return config, load_file(str(tmp_path / "model.safetensors")), ref


def _swin_config():
    from transformers import SwinConfig

    return SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                      out_features=STAGES)


def _resnet_config():
    from transformers import ResNetConfig

    return ResNetConfig(depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], layer_type="basic",
                        out_features=STAGES)


@pytest.mark.parametrize("backbone,options", [
    ("swin", dict(decoder_layers=10, encoder_layers=6)),  # transformers' defaults: 9 layers, 6 encoder layers
    ("resnet", dict(decoder_layers=4, encoder_layers=2)),
])
def test_parity_with_transformers(tmp_path, backbone, options):
    config, state, ref = _checkpoint(tmp_path, _swin_config() if backbone == "swin" else _resnet_config(),
                                     **options)
    converted = from_transformers(config, state)
    assert converted.arch == "mask2former" and converted.num_classes == 5 and len(converted.classes) == 5
    assert converted.kwargs["decoder_layers"] == options["decoder_layers"] - 1
    assert converted.kwargs["encoder"] == ("swin_tiny_patch4_window7_224" if backbone == "swin" else "resnet18")
    model = mask2former(converted.num_classes, **converted.kwargs).eval()
    model.load_state_dict(converted.state, strict=True)
    for size in [(64, 64), (96, 128)]:
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            expected, out = ref(pixel_values=x), model.queries(x)
        logits_diff = (expected.class_queries_logits - out["pred_logits"]).abs().max().item()
        masks_diff = (expected.masks_queries_logits - out["pred_masks"]).abs().max().item()
        agreement = (semantic_scores(expected.class_queries_logits, expected.masks_queries_logits).argmax(1)
                     == semantic_scores(out["pred_logits"], out["pred_masks"]).argmax(1)).float().mean().item()
        print(f"{backbone} {size}: max |diff| logits {logits_diff:.2e}, masks {masks_diff:.2e}; "
              f"semantic argmax agreement {agreement:.4%}")
        assert logits_diff < 1e-3 and masks_diff < 1e-3 and agreement >= 0.999
        positive = (out["pred_masks"] > 0).float().mean().item()
        assert 0.05 < positive < 0.95  # masks of both signs: the masked attention had something to mask


def test_converter_errors(tmp_path):
    config, state, _ = _checkpoint(tmp_path, _swin_config(), decoder_layers=3, encoder_layers=1)

    def fails(match, config=config, state=state):
        with pytest.raises(ModelError, match=match):
            from_transformers(config, state)

    backbone = config["backbone_config"]
    fails(r"backbone_config\.embed_dim=80", dict(config, backbone_config=dict(backbone, embed_dim=80)))
    fails(r"backbone_config\.window_size=9", dict(config, backbone_config=dict(backbone, window_size=9)))
    fails(r"backbone_config\.model_type='convnext'",
          dict(config, backbone_config=dict(backbone, model_type="convnext")))
    fails(r"backbone_config\.out_features", dict(config, backbone_config=dict(backbone, out_features=STAGES[1:])))
    fails(r"pre_norm=True", dict(config, pre_norm=True))
    fails(r"not understood: \['model.transformer_module.extra.weight'\]",
          state=dict(state, **{"model.transformer_module.extra.weight": torch.zeros(1)}))
    key = "model.transformer_module.decoder.layers.0.self_attn.k_proj.weight"
    fails(r"self_attn.in_proj_weight \(only q/v", state={k: v for k, v in state.items() if k != key})
    key = "model.pixel_level_module.decoder.mask_projection.bias"
    fails(r"missing \['pixel_decoder.mask_features.bias'\]", state={k: v for k, v in state.items() if k != key})



M2F_TINY = ("data: {format: synthetic, root: '5', crop_size: 64, num_workers: 0, limit: 4}\n"
            "model: {name: mask2former, encoder: resnet18, kwargs: {hidden_dim: 32, num_queries: 8, "
            "decoder_layers: 2, encoder_layers: 1, dim_feedforward: 64, num_heads: 4}}\n"
            "train: {epochs: 1, batch_size: 2, lr: 0.001}\n")


@pytest.mark.parametrize("task", ["panoptic", "semantic"])
def test_train_eval_predict_through_the_task_contract(task, tmp_path, capsys):
    """One path for every task: Mask2Former trains with its set criterion under the semantic and the panoptic
    task, validates, saves, and is read back by evaluate / predict as either task (per-query decoding for
    panoptic and instance, the semantic scores for semantic); options that cannot apply are refused."""
    import pixelwise as pw
    from PIL import Image

    from pixelwise.cli import main
    from pixelwise.config import load_config
    from pixelwise.errors import ConfigError, PixelwiseError

    (tmp_path / "r.yaml").write_text(M2F_TINY)
    cfg = load_config(tmp_path / "r.yaml", ["data.val_split=test", f"task.name={task}"])
    result = pw.train(cfg, tmp_path / "run", progress=False)
    assert result.best_key == ("pq" if task == "panoptic" else "miou") and 0 <= result.best_score <= 1
    val = pw.open_dataset("synthetic:5", "test").subset(range(2))
    for read_as in ("semantic", "panoptic", "instance"):
        scores = pw.evaluate(tmp_path / "run" / "best", val, device="cpu", task=read_as)
        assert 0 <= scores[{"semantic": "miou", "panoptic": "pq", "instance": "ap"}[read_as]] <= 1
    predictor = pw.Predictor.from_dir(tmp_path / "run" / "best", device="cpu", precision="fp32", task="panoptic")
    pred = predictor.predict(val[0].image)
    ids, segments = pred.panoptic
    assert ids.shape == val[0].image.shape[:2] and {s["id"] for s in segments} == set(np.unique(ids)) - {0}
    with pytest.raises(PixelwiseError, match="tile and tta do not apply"):
        pw.Predictor.from_dir(tmp_path / "run" / "best", device="cpu", precision="fp32", task="panoptic", tta="flip")
    tiled = pw.Predictor.from_dir(tmp_path / "run" / "best", device="cpu", precision="fp32", task="semantic",
                                  tile=32, tta="flip")  # the semantic scores are maps: tiles and TTA apply
    assert tiled.predict(val[0].image).semantic.shape == val[0].image.shape[:2]
    Image.fromarray(val[0].image).save(tmp_path / "a.png")
    try:
        main(["predict", str(tmp_path / "run"), str(tmp_path / "a.png"), "--out", str(tmp_path / "pred"),
              "--precision", "fp32", "--task", "panoptic"])
    except SystemExit as exc:
        assert not exc.code
    assert (tmp_path / "pred" / "panoptic.json").is_file()
    capsys.readouterr()
    with pytest.raises(ConfigError, match="train.loss"):
        pw.train(load_config(tmp_path / "r.yaml", [f"task.name={task}", "train.loss=dice"]), tmp_path / "bad")


def test_panoptic_and_instance_tasks_decode_per_query_outputs():
    """The panoptic task's decoding of a mask-classification model's queries: stuff queries of one class merge,
    each thing query is its own segment, "no object" and unsure queries drop, segments under the area limits
    become void; the instance task reads the thing segments."""
    from pixelwise.tasks import build_task

    h, w = 8, 8
    big = 10.0
    masks = torch.full((5, h, w), -big)
    masks[0, :4] = big          # stuff class 0, top half
    masks[1, 4:, :4] = big      # stuff class 0 again: merged with query 0
    masks[2, 4:, 4:6] = big     # thing class 1
    masks[3, 4:, 6:] = big      # thing class 1, a second instance
    masks[4] = big              # "no object"
    logits = torch.full((5, 3), -big)
    for q, c in enumerate([0, 0, 1, 1, 2]):  # class 2 of 3 (+ no object) is "no object" here: num_classes = 2
        logits[q, c] = big
    outputs = {"out": torch.zeros(2, h, w), "query_logits": logits, "query_masks": masks}
    task = build_task("panoptic", ["ground", "cell"], things=[1],
                      options={"stuff_area": 0, "min_thing_area": 1})
    pred = task.decode(outputs)
    ids, segments = pred.panoptic
    assert sorted((s["category_id"], s["area"]) for s in segments) == [(0, 48), (1, 8), (1, 8)]
    assert all(s["iscrowd"] == 0 and s["score"] > 0.99 for s in segments)
    labels, class_ids, _ = pred.instances
    assert labels.max() == 2 and class_ids.tolist() == [1, 1]
    small = build_task("panoptic", ["ground", "cell"], things=[1], options={"stuff_area": 0, "min_thing_area": 9})
    ids, segments = small.decode(outputs).panoptic
    assert [s["category_id"] for s in segments] == [0] and (ids[4:, 4:] == 0).all()
    instance = build_task("instance", ["ground", "cell"], things=[1], options={"stuff_area": 0})
    assert instance.decode(outputs).instances[1].tolist() == [1, 1]


def test_onnx_export_is_refused_in_one_line(tmp_path, capsys):
    """The tracer would fix the deformable attention's grid at one size: export says so instead of writing a
    graph that fails at every other size."""
    import pixelwise as pw
    from pixelwise.cli import main

    model = pw.create_model("mask2former", 3, encoder="resnet18", hidden_dim=32, num_queries=4, decoder_layers=1,
                            encoder_layers=1, dim_feedforward=32, num_heads=4)
    pw.save_model(model, tmp_path / "m", classes=["a", "b", "c"])
    with pytest.raises(SystemExit) as exc:
        main(["export", str(tmp_path / "m"), "--onnx", str(tmp_path / "m.onnx")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "ONNX export of mask2former is not supported" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()
