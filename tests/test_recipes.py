"""Every recipe in configs/ loads and builds its model; the dataset recipes of the accuracy work train one
short epoch on their real data (tiny subsets) through the same CLI a user runs."""
from pathlib import Path

import pytest
import torch

from conftest import run_cli, shared_dataset
from pixelwise.config import load_config
from pixelwise.data.formats import FORMATS
from pixelwise.demo import demo_config
from pixelwise.engine import tune
from pixelwise.engine.trainer import model_kwargs
from pixelwise.modeldir import read_model_config
from pixelwise.models import create_model
from pixelwise.tasks import native_task, task_class

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[str(p.relative_to(ROOT / "configs")) for p in RECIPES])
def test_recipe_states_its_budget_and_builds(recipe):
    """What the README promises of every recipe: a training budget in minutes, the command that trains it
    in its header, a known format, a task that trains this architecture, and a model that builds."""
    cfg = load_config(recipe)
    text = recipe.read_text()
    assert cfg.train.time_limit_min is not None and cfg.train.time_limit_min > 0, f"{recipe}: no train.time_limit_min"
    assert f"pixelwise train configs/{recipe.relative_to(ROOT / 'configs')}" in text, f"{recipe}: no usage line"
    assert cfg.data.format in FORMATS
    task = task_class(cfg.task.name or native_task(cfg.model.name))
    kwargs = model_kwargs(cfg)
    kwargs.pop("pretrained", None)  # weights are not needed to check the architecture
    with torch.device("meta"):
        model = create_model(cfg.model.name, 5, **kwargs)
    # a task trains its own architectures; a mask-classification model (Mask2Former) trains under any of them
    assert task.trainable and (not task.native_models or cfg.model.name in task.native_models
                               or getattr(model, "mask_classification", False))


def test_demo_recipe_file_is_the_demo():
    """configs/synthetic/unet.yaml says it is the demo's recipe as a file: it must stay so."""
    cfg, demo = load_config(ROOT / "configs" / "synthetic" / "unet.yaml"), demo_config()
    assert (cfg.model, cfg.train.lr, cfg.train.time_limit_min, cfg.data.crop_size) == \
        (demo.model, demo.train.lr, demo.train.time_limit_min, demo.data.crop_size)


@pytest.mark.parametrize("recipe, data, overrides, mean", [
    ("camvid/best.yaml", "camvid", ["data.limit=8", "data.val_split=val[:2]"], [0.5, 0.5, 0.5]),
    ("landcover/unet.yaml", "dubai_aerial_landcover", ["data.limit=4", "data.val_split=all[51:52]",
                                                      "data.crop_size=128"], [0.5, 0.5, 0.5]),
    ("isbi/unet.yaml", "isbi2012_membrane", ["data.limit=4", "data.val_split=all[23:]"], [0.485, 0.456, 0.406]),
])
def test_dataset_recipe_trains_on_real_data(recipe, data, overrides, mean, tmp_path, capsys):
    root = shared_dataset(data)
    out = tmp_path / "run"
    code, stdout, err = run_cli(["train", str(ROOT / "configs" / recipe), f"data.root={root}", "train.epochs=1",
                                 "train.batch_size=4", "data.num_workers=0", *overrides, "--out", str(out),
                                 "--no-report"], capsys)
    assert code == 0, err[-2000:]
    saved = read_model_config(out / "best")
    assert saved["preprocessing"]["mean"] == pytest.approx(mean)
    assert "ema" in saved or load_config(ROOT / "configs" / recipe).train.ema == 0
    infer = load_config(ROOT / "configs" / recipe).infer  # the recipe's TTA / CRF candidates, scored on val
    if tune.wants_tuning(infer.tta, infer.crf):
        tuned = saved["inference"]["tuned"]
        ttas, crfs = tune.check_candidates(infer.tta, infer.crf)
        assert len(tuned["candidates"]) == len(ttas) * len(crfs)
        assert "inference setting:" in stdout
