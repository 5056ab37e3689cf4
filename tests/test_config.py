import pytest

from pixelwise.config import Config, load_config
from pixelwise.errors import ConfigError


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data:\n  format: camvid\n  root: /x\nmodel:\n  name: unet\ntrain:\n  epochs: 3\n")
    cfg = load_config(path, ["data.root=/y", "train.lr=0.01"])
    assert isinstance(cfg, Config)
    assert cfg.data.root == "/y" and cfg.train.lr == 0.01 and cfg.train.epochs == 3
    assert cfg.data.format == "camvid"  # the file's own value, where no override touches it
    with pytest.raises(ConfigError, match=r"'train\.lr_unused_check' does not exist"):  # overrides are checked too
        load_config(path, ["train.lr=0.01", "train.lr_unused_check=1"])
    cfg = load_config(path, ["model.kwargs={base_channels: 8}", "data.scale_range=[0.5, 2]", "train.lr=1",
                             "task.name=multilabel", "task.options.threshold=0.4"])
    assert cfg.model.kwargs == {"base_channels": 8}
    assert cfg.task.name == "multilabel" and cfg.task.options == {"threshold": 0.4}
    assert cfg.data.scale_range == (0.5, 2.0)
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)


@pytest.mark.parametrize("override, fragment", [
    (["train.epochz=3"], "train.epochz' does not exist"),
    (["train.epochs=three"], "train.epochs"),
    (["train.epochs=true"], "train.epochs"),
    (["bogus.x=1"], "'bogus' does not exist"),
    (["train.optimizer=adam"], "train.optimizer"),
    (["data.scale_range=[1, 2, 3]"], "data.scale_range"),
    (["train.batch_size=0"], "train.batch_size"),
    (["noequals"], "expected KEY=VALUE"),
])
def test_bad_keys_and_types_name_the_key(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.").replace("'", "'")):
        load_config(None, override)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)
