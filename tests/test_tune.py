"""The stored inference setting: TTA / CRF candidates scored on val (`pixelwise.engine.tune`), written into
the model directory, used by the Predictor unless told otherwise."""
import json

import pytest
import torch

import pixelwise as pw
from conftest import run_cli
from pixelwise.config import Config, DataConfig, InferConfig, ModelConfig, TrainConfig
from pixelwise.engine import tune
from pixelwise.engine.evaluate import evaluate
from pixelwise.engine.trainer import train
from pixelwise.errors import ConfigError, ModelError, PixelwiseError
from pixelwise.inference.predictor import Predictor
from pixelwise.modeldir import store_inference


def rows(*items):
    return [{"tta": t, "crf": c, "score": s, "ms": ms} for t, c, s, ms in items]


def test_choose_keeps_the_cheapest_candidate_within_min_gain_of_the_best():
    r = rows(("none", "none", 0.60, 10), ("flip", "none", 0.62, 20), ("flip,0.75,1,1.25", "none", 0.625, 60))
    assert tune.choose(r, 0.002)["tta"] == "flip,0.75,1,1.25"
    assert tune.choose(r, 0.01)["tta"] == "flip"       # 0.62 is within 0.01 of 0.625 and costs a third
    assert tune.choose(r, 0.05)["tta"] == "none"       # no gain worth 0.05
    # a skipped candidate is no candidate; on a tie the plain pass wins whatever the timing noise
    r = rows(("none", "none", 0.5, 12), ("flip", "none", 0.5, 11)) + [{"tta": "d4", "crf": "none", "skipped": "x"}]
    assert tune.choose(r, 0.0)["tta"] == "none"


def test_candidates_are_normalised_and_a_typo_names_the_key():
    assert tune.check_candidates(["flip", "0.75,1,1.25,flip"], ["default"]) == (
        ["none", "flip", "flip,0.75,1,1.25"], ["none", "default"])
    assert not tune.wants_tuning(["none"], ["none"]) and tune.wants_tuning(["none"], ["default"])
    with pytest.raises(ConfigError, match="infer.tta.*flop"):
        tune.check_candidates(["flop"], [])
    with pytest.raises(ConfigError, match="infer.crf.*strong"):
        tune.check_candidates([], ["strong"])


def tiny_config(infer: InferConfig) -> Config:
    return Config(
        data=DataConfig(format="synthetic", root="7", crop_size=64, num_workers=0, limit=16, val_split="val"),
        model=ModelConfig(name="unet", kwargs={"base_channels": 8, "depth": 2}),
        train=TrainConfig(epochs=6, batch_size=4, lr=1e-2, val_every=100),  # long enough to tell views apart
        infer=infer)


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tuned")
    result = train(tiny_config(InferConfig(tta=["none", "flip", "flips"], min_gain=0.0)), out, progress=False)
    return out, result


def test_training_stores_the_setting_eval_reproduces_and_uses(tuned_run):
    out, result = tuned_run
    stored = json.loads((out / "best" / "config.json").read_text())["inference"]
    tuned = stored["tuned"]
    assert result.inference["tta"] == stored["tta"] and tuned["metric"] == "miou"
    scores = {r["tta"]: r["score"] for r in tuned["candidates"]}
    assert set(scores) == {"none", "flip", "flips"} and all(r["ms"] > 0 for r in tuned["candidates"])
    assert len(set(scores.values())) > 1  # the model has learnt enough for the views to differ
    # each candidate's score is what `eval` gives with that TTA asked for explicitly
    ds = pw.open_dataset("synthetic:7", "val")
    for tta, score in scores.items():
        got = evaluate(out / "best", ds, precision=tuned["precision"], predictor_options={"tta": tta})["miou"]
        assert got == pytest.approx(score, abs=1e-4), tta
    best = max(scores.values())
    assert scores[stored["tta"]] == best and tuned["gain"] == pytest.approx(best - scores["none"], abs=1e-5)
    # not told otherwise, the Predictor runs the stored setting; none turns it off
    default = evaluate(out / "best", ds, precision=tuned["precision"])["miou"]
    assert default == pytest.approx(scores[stored["tta"]], abs=1e-4)
    p = Predictor.from_dir(out / "best", precision="fp32")
    assert ("stored" in p.describe()) == (stored["tta"] != "none")
    assert "TTA" not in Predictor.from_dir(out / "best", precision="fp32", tta=None).describe()


def test_tune_cli_dry_run_stores_nothing_and_min_gain_one_keeps_the_plain_pass(tuned_run, capsys):
    out, _ = tuned_run
    before = (out / "best" / "config.json").read_text()
    code, text, _ = run_cli(["tune", str(out / "best"), "--tta", "flip", "--images", "4", "--dry-run"], capsys)
    assert code == 0 and "tta flip" in text and "dry run" in text
    assert (out / "best" / "config.json").read_text() == before
    code, text, _ = run_cli(["tune", str(out), "--tta", "flip", "--min-gain", "1", "--images", "4"], capsys)
    assert code == 0 and "plain pass kept" in text
    assert json.loads((out / "best" / "config.json").read_text())["inference"]["tta"] == "none"
    code, _, err = run_cli(["eval", str(out / "best"), "--data", "synthetic:7", "--tta", "none", "--crf", "none",
                            "--precision", "fp32"], capsys)
    assert code == 0 and "stored" not in err
    (out / "best" / "config.json").write_text(before)


def test_tune_needs_a_dataset_when_the_model_names_none(tmp_path, capsys):
    d = pw.save_model(pw.create_model("unet", 3, base_channels=4, depth=2), tmp_path / "m", classes=["a", "b", "c"])
    code, _, err = run_cli(["tune", str(d)], capsys)
    assert code == 2 and "names no training set" in err and "--data" in err


def test_a_stored_option_the_task_cannot_honour_is_left_out_but_an_asked_one_is_an_error(tmp_path):
    model = pw.create_model("unet", 3, base_channels=4, depth=2)
    d = pw.save_model(model, tmp_path / "ml", classes=["a", "b", "c"], extra={"task": "multilabel"})
    store_inference(d, {"tta": "flip", "crf": "default"})  # multilabel takes tta, not the CRF
    p = Predictor.from_dir(d, precision="fp32")
    assert p.stored == {"tta": "flip"} and p.crf is None and "TTA flip (the model's stored setting)" in p.describe()
    with pytest.raises(PixelwiseError, match="--crf does not apply to the multilabel task"):
        Predictor.from_dir(d, precision="fp32", crf="default")


def test_a_bad_stored_setting_names_the_file_and_key(tmp_path):
    d = pw.save_model(pw.create_model("unet", 3, base_channels=4, depth=2), tmp_path / "m", classes=["a", "b", "c"])
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, "inference": {"tta": 3}}))
    with pytest.raises(ModelError, match=r"config.json: key 'inference.tta' must be a spelling"):
        Predictor.from_dir(d)
