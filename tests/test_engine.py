"""Training loop, checkpoints, resume, NaN guard, evaluation and prediction on tiny synthetic data."""
import json

import numpy as np
import pytest
import torch

import pixelwise as pw
from pixelwise.config import Config, DataConfig, ModelConfig, TrainConfig
from pixelwise import modeldir
from pixelwise.engine import checkpoint as ckpt
from pixelwise.engine.logging import read_jsonl
from pixelwise.engine.schedules import lr_factor
from pixelwise.engine.trainer import train
from pixelwise.errors import ConfigError, ModelError, TrainingError


def tiny_config(**train_kw) -> Config:
    return Config(
        data=DataConfig(format="synthetic", root="7", crop_size=48, num_workers=0, limit=8),
        model=ModelConfig(name="unet", kwargs={"base_channels": 4, "depth": 2}),
        train=TrainConfig(**{"epochs": 2, "batch_size": 4, "lr": 1e-2, "val_every": 1, **train_kw}),
    )


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = tiny_config()
    cfg.data.val_split = "val"
    result = train(cfg, out, progress=False)
    return out, result


def test_training_writes_a_complete_run(trained_run):
    out, result = trained_run
    assert result.epochs_done == 2 and 0 <= result.best_miou <= 1
    for name in ("config.yaml", "metrics.jsonl", "training_curves.png"):
        assert (out / name).is_file()
    for d in ("best", "last"):
        assert (out / d / "config.json").is_file() and (out / d / "model.safetensors").is_file()
    assert (out / "last" / "train_state.pt").is_file()
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]
    assert all("val" in r and 0 <= r["val"]["miou"] <= 1 for r in records)
    config = json.loads((out / "best" / "config.json").read_text())
    assert config["classes"][0] == "sky" and config["arch"]["name"] == "unet"


def test_existing_run_is_not_overwritten_and_resume_continues(trained_run, tmp_path):
    out, _ = trained_run
    with pytest.raises(ConfigError, match="--resume"):
        train(tiny_config(), out, progress=False)
    # resume into a copy and extend to 3 epochs: continues at epoch 3, reproducing the optimizer state
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    result = train(tiny_config(epochs=3), copy, resume=True, progress=False)
    assert result.epochs_done == 3
    assert [r["epoch"] for r in read_jsonl(copy / "metrics.jsonl")] == [1, 2, 3]
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(tiny_config(), tmp_path / "fresh", resume=True, progress=False)


def test_resume_equals_uninterrupted_training(tmp_path, monkeypatch):
    from pixelwise.engine import trainer

    straight = train(tiny_config(epochs=2, ema=0.9), tmp_path / "a", progress=False)
    real_epoch, calls = trainer._train_epoch, []

    def killed_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if the process were killed during epoch 2
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(trainer, "_train_epoch", killed_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(epochs=2, ema=0.9), tmp_path / "b", progress=False)
    monkeypatch.setattr(trainer, "_train_epoch", real_epoch)
    resumed = train(tiny_config(epochs=2, ema=0.9), tmp_path / "b", resume=True, progress=False)
    for sub in ("last", "best"):  # the live weights, and the weight average (EMA) that best/ keeps
        a = ckpt.load_file_state(tmp_path / "a" / sub)
        b = ckpt.load_file_state(tmp_path / "b" / sub)
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    assert straight.best_miou == pytest.approx(resumed.best_miou, abs=1e-6)


def test_nan_loss_stops_with_a_clear_message(tmp_path):
    with pytest.raises(TrainingError, match="NaN"):
        train(tiny_config(lr=1e30, clip_grad=None, optimizer="sgd", epochs=3), tmp_path / "nan", progress=False)


def test_interrupted_save_keeps_the_previous_checkpoint(trained_run, tmp_path, monkeypatch):
    out, _ = trained_run
    model = pw.load_model(out / "best")
    config = model.pixelwise_config
    target = tmp_path / "m"
    pw.save_model(model, target, classes=config["classes"])
    before = (target / "model.safetensors").read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(modeldir, "save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        pw.save_model(model, target, classes=config["classes"])
    assert (target / "model.safetensors").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_load_model_errors(tmp_path):
    with pytest.raises(ModelError, match="not a pixelwise model"):
        pw.load_model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        pw.load_model(tmp_path)


def test_predictor_and_evaluate_agree(trained_run):
    out, result = trained_run
    predictor = pw.Predictor.from_dir(out / "best", device="cpu")
    ds = pw.open_dataset("synthetic:7", "val")
    image = ds[0].image
    pred = predictor.predict(image, return_probs=True)
    assert pred.semantic.shape == image.shape[:2] and pred.probs.shape == (6, 128, 128)
    np.testing.assert_allclose(pred.probs.sum(0), 1, atol=1e-4)
    assert pred.overlay(image).shape[0] == 128
    scores = pw.evaluate(out / "best", ds)
    assert scores["miou"] == pytest.approx(result.best_miou, abs=1e-6)  # same val split, same preset
    for key in ("miou", "pixel_acc", "mean_acc", "per_class_iou"):
        assert key in scores


def test_predictor_rejects_bad_images(trained_run):
    predictor = pw.Predictor.from_dir(trained_run[0] / "best")
    with pytest.raises(pw_error(), match="uint8"):
        predictor.predict(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(pw_error(), match="zero size"):
        predictor.predict(np.zeros((0, 8, 3), np.uint8))
    assert predictor.predict(np.zeros((9, 11), np.uint8)).semantic.shape == (9, 11)


def pw_error():
    from pixelwise.errors import PixelwiseError

    return PixelwiseError


def test_schedules():
    assert lr_factor(0, 100, "poly", warmup=10) == pytest.approx(0.1)
    assert lr_factor(9, 100, "poly", warmup=10) == pytest.approx(1.0)
    assert lr_factor(100, 100, "poly") == pytest.approx(0.0)
    assert lr_factor(50, 100, "cosine") == pytest.approx(0.5)


def test_budget_scheduler_decays_by_time_and_resumes():
    from pixelwise.engine.schedules import BudgetScheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = BudgetScheduler(opt, total=1000, schedule="poly", power=1.0, budget_s=10.0)
    sched.step(elapsed=5.0)  # 1 step of 1000, but half the time: LR follows time
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5, abs=1e-3)
    assert not sched.done
    state = sched.state_dict()
    again = BudgetScheduler(opt, total=1000, schedule="poly", power=1.0, budget_s=10.0)
    again.load_state_dict(state)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5, abs=1e-3) and again.elapsed == 5.0
    again.step(elapsed=10.5)
    assert again.done and opt.param_groups[0]["lr"] == pytest.approx(0.0)


def test_time_budget_stops_training_and_validates(tmp_path):
    cfg = tiny_config(epochs=1000, time_limit_min=0.05)
    cfg.train.val_every = 500
    result = train(cfg, tmp_path / "t", progress=False)
    assert result.epochs_done < 1000
    assert result.best_epoch == result.epochs_done  # the final epoch was validated
