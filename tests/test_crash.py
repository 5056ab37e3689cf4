"""Training killed (SIGKILL) right after each step of the checkpoint protocol, twice in a row in every
order, then resumed: last/ and best/ always load, metrics.jsonl has each epoch once, and the final weights
equal an uninterrupted run's.

Each run is a forked child process (torch is imported once, in the parent), so a kill is a real SIGKILL of
a process in the middle of its save, and the next child starts from what the disk holds, as a user's
`pixelwise train --resume` would.
"""
from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from pixelwise import atomicdir
from pixelwise.config import Config, DataConfig, ModelConfig, TrainConfig
from pixelwise.engine import trainer  # imported here, once: every forked child inherits it
from pixelwise.engine.logging import read_jsonl
from pixelwise.modeldir import load_model

EPOCHS = 6
# (module, function) after whose call the child is killed; the last one is the log append that follows a
# checkpoint (killed before it runs: the checkpoint is saved, its epoch not yet logged)
STEPS = [(atomicdir, "write_files"), (atomicdir, "mark_complete"), (atomicdir, "move_aside"),
         (atomicdir, "move_in"), (atomicdir, "drop_old"), ("trainer", "append_jsonl")]


def recipe() -> Config:
    return Config(data=DataConfig(format="synthetic", root="crash", options={"count": 8, "size": 48}, crop_size=32,
                                  num_workers=0, val_split="val[:3]", scale_range=(1.0, 1.0), color_jitter=0.0),
                  model=ModelConfig(name="unet", kwargs={"base_channels": 4, "depth": 2}),
                  train=TrainConfig(epochs=EPOCHS, batch_size=4, lr=0.01, val_every=1, seed=3))


def _child(out: str, step: int | None, at_call: int) -> None:
    """Train (resuming when a checkpoint exists); with `step`, SIGKILL this process right after the
    at_call-th call of that protocol step (before it, for the log append)."""
    torch.set_num_threads(1)
    trainer.plot_curves = lambda *args, **kwargs: None  # matplotlib every epoch: the slowest part, and not on trial
    if step is not None:
        module, name = STEPS[step]
        module = trainer if module == "trainer" else module
        original, calls = getattr(module, name), [0]

        def killing(*args, **kwargs):
            calls[0] += 1
            if name == "append_jsonl" and calls[0] == at_call:
                os.kill(os.getpid(), signal.SIGKILL)
            result = original(*args, **kwargs)
            if calls[0] == at_call:
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        setattr(module, name, killing)
    resume = atomicdir.newest(os.path.join(out, "last")) is not None
    trainer.train(recipe(), out, resume=resume, progress=False, device="cpu")


def run(out, step=None, at_call=1) -> int:
    proc = mp.get_context("fork").Process(target=_child, args=(str(out), step, at_call))
    proc.start()
    proc.join(120)
    return proc.exitcode


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("crash") / "straight"
    assert run(out) == 0
    return out


def weights(directory) -> dict:
    return load_file(str(directory / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("first, second", list(itertools.product(range(len(STEPS)), repeat=2)),
                         ids=lambda i: STEPS[i][1])
def test_two_kills_in_the_checkpoint_protocol_then_resume(reference, tmp_path, first, second):
    out = tmp_path / "run"
    # first kill: the 2nd call of the step (a save of epoch 1 or 2, last/ or best/); second: the 2nd call in
    # the resumed run, which has 4 or more epochs to go
    assert run(out, first, at_call=2) == -signal.SIGKILL
    for name in ("last", "best"):  # what the disk holds between the kills is a loadable model
        found = atomicdir.newest(out / name)
        assert found is None or load_model(found) is not None
    assert run(out, second, at_call=2) == -signal.SIGKILL
    assert run(out) == 0  # resumes to the end
    assert [r["epoch"] for r in read_jsonl(out / "metrics.jsonl")] == list(range(1, EPOCHS + 1))
    for name in ("last", "best"):
        load_model(out / name)
        a, b = weights(out / name), weights(reference / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    leftovers = sorted(p.name for p in out.iterdir() if ".tmp-" in p.name or p.name.endswith(".old"))
    assert not leftovers
    straight = [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")}
                for r in read_jsonl(reference / "metrics.jsonl")]
    resumed = [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")}
               for r in read_jsonl(out / "metrics.jsonl")]
    assert resumed == straight  # the same epochs, losses and validation scores
