"""Training quality and fine-tuning: EMA, layer-wise LR groups, encoder freezing, init_from with a new
class list, normalisation carried from the starting weights, elastic deformation."""
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from pixelwise.config import Config, DataConfig, ModelConfig, TrainConfig, apply_overrides, load_config
from pixelwise.data.sample import Sample
from pixelwise.data.transforms import build_transform
from pixelwise.modeldir import read_model_config, save_model
from pixelwise.engine.ema import ModelEMA
from pixelwise.engine.finetune import (encoder_lr_mult, load_init, param_groups, resolve_normalisation,
                                       set_encoder_frozen)
from pixelwise.engine.trainer import train
from pixelwise.errors import ConfigError, ModelError
from pixelwise.models import create_model
from test_formats import make_folder


def tiny_unet(num_classes=3, **kw):
    return create_model("unet", num_classes, base_channels=4, depth=2, **kw)


def test_ema_follows_the_formula_by_hand():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = ModelEMA(net, decay=0.9)
    w0 = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net[1].num_batches_tracked += 5
    ema.update(net)  # decay warm-up: min(0.9, 1/10) = 0.1
    assert torch.allclose(ema.module[0].weight, 0.1 * w0 + 0.9 * (w0 + 1))
    assert int(ema.module[1].num_batches_tracked) == 5  # integer buffers are copied
    for _ in range(200):
        ema.update(net)
    assert ema.current_decay() == 0.9
    assert torch.allclose(ema.module[0].weight, w0 + 1, atol=1e-6)  # converged onto a constant model
    state = ema.state_dict()
    other = ModelEMA(net, 0.9)
    other.load_state_dict(state)
    assert other.updates == 201 and torch.equal(other.module[0].weight, ema.module[0].weight)
    with pytest.raises(ValueError):
        ModelEMA(net, 1.0)


def test_param_groups_split_encoder_and_decay():
    model = tiny_unet()
    groups = param_groups(model, lr=1.0, weight_decay=0.01, encoder_lr_mult=0.1)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"encoder", "encoder/no_decay", "decoder+head", "decoder+head/no_decay"}
    assert by_name["encoder"]["lr"] == pytest.approx(0.1) and by_name["decoder+head"]["lr"] == 1.0
    assert by_name["encoder/no_decay"]["weight_decay"] == 0.0 and by_name["encoder"]["weight_decay"] == 0.01
    enc = {id(p) for p in model.encoder.parameters()}
    assert all(id(p) in enc for p in by_name["encoder"]["params"] + by_name["encoder/no_decay"]["params"])
    assert all(p.ndim <= 1 for p in by_name["decoder+head/no_decay"]["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_encoder_lr_mult_defaults_lower_for_pretrained_parts():
    assert encoder_lr_mult(Config()) == 1.0
    assert encoder_lr_mult(Config(model=ModelConfig(encoder="efficientnet_lite0", pretrained="pypi"))) == 0.1
    assert encoder_lr_mult(Config(train=TrainConfig(init_from="x"))) == 0.1
    assert encoder_lr_mult(Config(train=TrainConfig(init_from="x", encoder_lr_mult=0.5))) == 0.5


def test_frozen_encoder_gets_no_update_and_keeps_its_statistics():
    torch.manual_seed(0)
    model = tiny_unet().train()
    set_encoder_frozen(model, True)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    dec_before = model.head.weight.detach().clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = model(torch.randn(2, 3, 16, 16)).square().mean()
    loss.backward()
    opt.step()
    after = model.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm running stats
    assert not torch.equal(dec_before, model.head.weight)
    set_encoder_frozen(model, False)
    assert all(p.requires_grad for p in model.encoder.parameters()) and model.encoder.training


def _save(model, path, classes):
    return save_model(model, path, classes, preprocessing={"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]})


def test_init_from_replaces_only_the_classifier(tmp_path):
    torch.manual_seed(0)
    src = tiny_unet(3)
    _save(src, tmp_path / "m", ["a", "b", "c"])
    same = tiny_unet(3)
    report = load_init(same, tmp_path / "m", "unet")
    assert report.reinitialised == [] and report.loaded == len(src.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), same.state_dict().values()))
    torch.manual_seed(1)
    new = tiny_unet(5)
    fresh_head = new.head.weight.detach().clone()
    report = load_init(new, tmp_path / "m", "unet")
    assert sorted(report.reinitialised) == ["head.bias", "head.weight"]
    assert torch.equal(new.head.weight, fresh_head)
    for key, value in new.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(value, src.state_dict()[key]), key
    assert report.preprocessing["mean"] == [0.1, 0.2, 0.3] and report.classes == ["a", "b", "c"]


def test_init_from_rejects_another_architecture(tmp_path):
    _save(tiny_unet(3), tmp_path / "m", ["a", "b", "c"])
    with pytest.raises(ConfigError, match="holds a 'unet' model"):
        load_init(create_model("fcn32s", 3, encoder="resnet18"), tmp_path / "m", "fcn32s")
    with pytest.raises(ModelError, match="model.kwargs"):
        load_init(create_model("unet", 3, base_channels=8, depth=2), tmp_path / "m", "unet")
    with pytest.raises(ModelError, match="not a pixelwise model directory"):
        load_init(tiny_unet(3), tmp_path / "nowhere", "unet")


def test_normalisation_comes_from_the_starting_weights():
    scratch = resolve_normalisation(Config(), tiny_unet(), None)
    assert scratch.data.mean == (0.485, 0.456, 0.406)
    lite = create_model("unet", 3, encoder="efficientnet_lite0", base_channels=4)
    lite.norm = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert resolve_normalisation(Config(), lite, None).data.std == (0.5, 0.5, 0.5)
    explicit = Config(data=DataConfig(mean=(0.1, 0.1, 0.1), std=(0.2, 0.2, 0.2)))
    assert resolve_normalisation(explicit, lite, None) is explicit


def test_init_from_is_a_top_level_override(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {name: unet}\n")
    assert load_config(recipe, ["init_from=/runs/x/best"]).train.init_from == "/runs/x/best"
    assert apply_overrides({}, ["init_from=a"]) == {"train": {"init_from": "a"}}
    with pytest.raises(ConfigError, match="train.ema"):
        load_config(recipe, ["train.ema=1.5"])


def test_elastic_deformation_keeps_labels_discrete():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (70, 70, 3), dtype=np.uint8)
    labels = np.zeros((70, 70), np.int64)
    labels[20:50, 20:50] = 1
    t = build_transform(DataConfig(crop_size=64, scale_range=(1.0, 1.0), elastic=6.0, elastic_grid=3,
                                   hflip=False, color_jitter=0.0, mean=(0.0,) * 3, std=(1.0,) * 3), train=True)
    torch.manual_seed(0)
    x, y = t(Sample(image=image, semantic=labels))
    assert set(y.unique().tolist()) <= {0, 1, 255} and (y == 1).sum() > 300
    plain = build_transform(DataConfig(crop_size=64, scale_range=(1.0, 1.0), hflip=False, color_jitter=0.0,
                                       mean=(0.0,) * 3, std=(1.0,) * 3), train=True)
    torch.manual_seed(0)
    _, y0 = plain(Sample(image=image, semantic=labels))
    assert (y != y0).float().mean() > 0.01  # the deformation moved the boundary


def test_fine_tune_a_saved_model_on_new_classes_end_to_end(tmp_path):
    base = Config(data=DataConfig(format="synthetic", root="7", crop_size=32, num_workers=0, limit=4),
                  model=ModelConfig(name="unet", kwargs={"base_channels": 4, "depth": 2}),
                  train=TrainConfig(epochs=1, batch_size=2, val_every=1, ema=0.9))
    train(base, tmp_path / "src", progress=False)
    folder = make_folder(tmp_path / "folder", stems=("a", "b", "c", "d"), classes=("bg", "fg"))
    tuned = Config(data=DataConfig(format="folder", root=str(folder), train_split="all[:3]", val_split="all[3:]",
                                   crop_size=8, scale_range=(1.0, 1.0), num_workers=0),
                   model=dataclasses.replace(base.model),
                   train=TrainConfig(epochs=2, batch_size=2, init_from=str(tmp_path / "src" / "best"),
                                     freeze_encoder_epochs=1))
    result = train(tuned, tmp_path / "tuned", progress=False)
    assert result.epochs_done == 2
    saved = read_model_config(tmp_path / "tuned" / "best")
    assert saved["arch"]["num_classes"] == 2 and saved["classes"] == ["bg", "fg"]
    assert sorted(saved["init_from"]["reinitialised"]) == ["head.bias", "head.weight"]
    src_pre = read_model_config(tmp_path / "src" / "best")["preprocessing"]
    assert saved["preprocessing"]["mean"] == src_pre["mean"]


def test_eval_takes_reader_options_from_the_recipe_or_the_command_line(tmp_path, capsys):
    from conftest import run_cli

    folder = make_folder(tmp_path / "set", stems=("a", "b", "c"), classes=None)  # no classes.txt
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data: {{format: folder, root: {folder}, train_split: 'all[:2]', val_split: 'all[2:]', "
                      "crop_size: 8, scale_range: [1.0, 1.0], num_workers: 0, options: {classes: [bg, fg]}}\n"
                      "model: {name: unet, kwargs: {base_channels: 4, depth: 2}}\ntrain: {epochs: 1, batch_size: 2}\n")
    code, _, err = run_cli(["train", str(recipe), "--out", str(tmp_path / "run"), "--no-report"], capsys)
    assert code == 0, err
    model = str(tmp_path / "run" / "best")
    code, out, err = run_cli(["eval", model, "--data", f"folder:{folder}", "--split", "all[2:]"], capsys)
    assert code == 0 and "reader options from the model's recipe" in err and "mIoU" in out
    code, out, err = run_cli(["eval", model, "--data", f"folder:{folder}", "--split", "all[2:]",
                              "--data-option", "classes=[bg, fg]"], capsys)
    assert code == 0 and "from the model's recipe" not in err and "mIoU" in out
    code, out, err = run_cli(["eval", model, "--data", "synthetic:1"], capsys)
    assert code != 0 and "classes" in err  # other format: no recipe options; the class mismatch is named


def test_report_example_strips_are_capped_in_width():
    from pixelwise.report import _grid

    big = np.zeros((1480, 3 * 2149, 3), np.uint8)
    small = np.zeros((100, 300, 3), np.uint8)
    grid = _grid([big, small])
    assert grid.shape[1] == 1800 and grid.shape[0] == round(1480 * 1800 / (3 * 2149)) + 4 + 100 + 4
