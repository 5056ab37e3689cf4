"""Experiment tracking (train.log_to): a tiny training logged to TensorBoard and MLflow, read back with each
library's own reader; resume continues the MLflow run; bad names and failing backends."""
import sys

import pytest

from pixelwise.config import Config, DataConfig, ModelConfig, TrainConfig, load_config
from pixelwise.engine import tracking
from pixelwise.engine.trainer import train
from pixelwise.errors import ConfigError

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")


def tiny_config(**train_kw) -> Config:
    return Config(
        data=DataConfig(format="synthetic", root="7", crop_size=48, num_workers=0, limit=8, val_resize=48),
        model=ModelConfig(name="unet", kwargs={"base_channels": 4, "depth": 2}),
        train=TrainConfig(**{"epochs": 1, "batch_size": 4, "lr": 1e-2, "amp": "off", "log_every": 1,
                             "log_to": ["tensorboard", "mlflow"], "tracking_images": 2, **train_kw}),
    )


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """Session 1 is killed in epoch 2 after logging its first step; session 2 resumes (epochs raised to 3)
    from the epoch-1 checkpoint, continuing the same MLflow run and purging the killed steps in TensorBoard."""
    out = tmp_path_factory.mktemp("tracked") / "run"
    real = tracking.Trackers.train_step

    def killed(self, step, *args):
        real(self, step, *args)
        if self.epoch == 1 and step == 0:
            raise KeyboardInterrupt  # as if the process were killed

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tracking.Trackers, "train_step", killed)
        with pytest.raises(KeyboardInterrupt):
            train(tiny_config(epochs=2), out, progress=False)
    result = train(tiny_config(epochs=3), out, resume=True, progress=False)
    return out, result


def _events(out):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / tracking.TB_DIR), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_holds_scalars_images_and_hparams(tracked_run):
    out, result = tracked_run
    acc = _events(out)
    tags = acc.Tags()
    for tag in ("train/loss", "train/lr", "train/images_per_s", "train/step_loss", "val/miou", "val/pixel_acc",
                "best/miou"):
        assert tag in tags["scalars"], tag
    assert "val/per_class_iou/sky" in tags["scalars"]  # per-class scores by class name
    assert [e.step for e in acc.Scalars("train/loss")] == [2, 4, 6]  # 2 steps per epoch
    assert acc.Scalars("best/miou")[-1].value == pytest.approx(result.best_score, abs=1e-6)
    steps = [e.step for e in acc.Scalars("train/step_loss")]
    assert steps == [1, 2, 3, 4, 5, 6]  # the killed session's step 3 was purged, not logged twice
    assert {"val_overlays/0", "val_overlays/1"} <= set(tags["images"])
    image = acc.Images("val_overlays/0")[-1]
    assert image.width == 3 * image.height  # image | truth | prediction
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(
        acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["train.lr"].number_value == pytest.approx(0.01)
    assert start.hparams["model.name"].string_value == "unet"


def test_mlflow_run_has_metrics_params_overlays_and_the_model(tracked_run):
    from mlflow.tracking import MlflowClient

    out, result = tracked_run
    uri, _ = tracking.mlflow_uri(None, out)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("pixelwise").experiment_id])
    assert len(runs) == 1, "the resumed session continued the first session's run"
    run = runs[0]
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "val/miou")
    assert [m.step for m in history] == [2, 4, 6]
    assert history[-1].value == pytest.approx(result.last_val["miou"], abs=1e-6)
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 3
    params = run.data.params
    assert params["train.lr"] == "0.01" and params["model.name"] == "unet" and params["data.format"] == "synthetic"
    # epochs changed between the sessions: MLflow keeps the first value and the tag names the key
    assert params["train.epochs"] == "2" and "train.epochs" in run.data.tags["pixelwise.changed_on_resume"]
    model = {f.path for f in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/config.json", "model/model.safetensors"} <= model
    top = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "metrics.jsonl", "val_overlays"} <= top
    overlays = [f.path for f in client.list_artifacts(run.info.run_id, "val_overlays/0")]
    assert len(overlays) == 3  # one per validation
    local = client.download_artifacts(run.info.run_id, "model/config.json", str(out / "dl"))
    assert '"unet"' in open(local).read()


def test_unknown_backend_is_one_config_line():
    with pytest.raises(ConfigError, match=r"^config key 'train.log_to': 'wandb' is not one of tensorboard, mlflow$"):
        load_config(None, ["train.log_to=[tensorboard, wandb]"])
    assert load_config(None, []).train.log_to == []


def test_missing_package_stops_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    with pytest.raises(ConfigError, match=r"mlflow needs the mlflow package: pip install 'pixelwise\[track\]'"):
        train(tiny_config(log_to=["mlflow"]), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


class _Broken:
    name = "broken"

    def __init__(self):
        self.calls = 0

    def scalars(self, values, step):
        self.calls += 1
        raise OSError("disk full")


def test_failing_backend_warns_once_and_training_goes_on():
    broken = _Broken()
    trackers = tracking.Trackers([broken], steps=2, log_every=1)
    with pytest.warns(RuntimeWarning, match="broken tracking failed while logging a step .*training goes on"):
        trackers.train_step(0, 1.0, 0.1, 4)
    trackers.train_step(1, 1.0, 0.1, 4)
    trackers.epoch_end({"epoch": 1, "train_loss": 1.0})
    assert broken.calls == 1 and trackers.backends == []


def test_flatten_gives_dotted_scalar_params():
    flat = tracking.flatten({"train": {"lr": 0.1, "log_to": ["mlflow"], "border_weight": None},
                             "data": {"options": {"remap": {255: 1}}}})
    assert flat == {"train.lr": 0.1, "train.log_to": '["mlflow"]', "train.border_weight": "null",
                    "data.options.remap.255": 1}
