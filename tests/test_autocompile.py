"""train.compile: the measured choice pays the compile within the budget or stays eager; measuring leaves
the model as it was; a compiled run trains and saves like an eager one."""
import pytest
import torch

from pixelwise.engine import autocompile
from pixelwise.engine.logging import read_jsonl
from pixelwise.engine.trainer import train
from pixelwise.modeldir import read_model_config

from test_engine import tiny_config


def test_pays_only_when_the_budget_covers_the_compile():
    assert autocompile.pays(compile_s=50, eager_ms=400, compiled_ms=350, budget_s=1800)      # 4997 > 4500 steps
    assert not autocompile.pays(compile_s=50, eager_ms=400, compiled_ms=350, budget_s=300)  # 714 < 750 steps
    assert not autocompile.pays(compile_s=1, eager_ms=400, compiled_ms=420, budget_s=10**6)  # slower: never


def test_auto_measures_keeps_the_model_and_caches(tmp_path, monkeypatch):
    calls = []
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m, **k: calls.append(1) or real_compile(m, **k))
    torch.manual_seed(0)
    from pixelwise.models import create_model

    model = create_model("unet", 3, base_channels=4, depth=2).train()
    model.pixelwise_arch = {"name": "compile-test", "id": id(model)}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    make = lambda m: torch.optim.AdamW(m.parameters(), 1e-3)  # noqa: E731
    module, decision = autocompile.measure(model, make, torch.nn.CrossEntropyLoss(), x, y, None, 10**6, 10**7)
    assert decision["compile_s"] > 0 and decision["eager_ms"] > 0 and not decision["cached"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics restored
    assert all(p.grad is None for p in model.parameters())
    assert (module is not model) == decision["compiled"]
    _, again = autocompile.measure(model, make, torch.nn.CrossEntropyLoss(), x, y, None, 10**6, 10**7)
    assert again["cached"] and again["compiled"] == decision["compiled"]
    assert "train.compile auto" in autocompile.describe({**again, "asked": "auto"})


def test_a_short_run_stays_eager_without_compiling(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("a short run must not compile"))
    from pixelwise.models import create_model

    model = create_model("unet", 3, base_channels=4, depth=2).train()
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    module, decision = autocompile.measure(model, lambda m: torch.optim.AdamW(m.parameters()),
                                           torch.nn.CrossEntropyLoss(), x, y, None, 1800, 20)
    assert module is model and not decision["compiled"] and "too short" in autocompile.describe(
        {**decision, "asked": "auto"})


def test_a_compiled_run_trains_and_saves_plain_weights(tmp_path):
    result = train(tiny_config(epochs=1, compile="on", amp="off"), tmp_path / "run", progress=False)
    assert result.epochs_done == 1 and result.best_score == result.best_score  # a finite score, not NaN
    saved = read_model_config(tmp_path / "run" / "best")
    assert saved["train_compile"] == {"asked": "on", "compiled": True}
    assert len(read_jsonl(tmp_path / "run" / "metrics.jsonl")) == 1
    from pixelwise.modeldir import load_model

    load_model(tmp_path / "run" / "best")  # the state dict has the model's own keys (no compile wrapper)


def test_compile_is_a_checked_key():
    from pixelwise.config import load_config
    from pixelwise.errors import ConfigError

    assert load_config(None, ["train.compile=auto"]).train.compile == "auto"
    with pytest.raises(ConfigError, match="train.compile"):
        load_config(None, ["train.compile=fast"])
