"""Two-process DDP training on CPU (gloo) through torchrun, as a user launches it."""
import json
import os
import subprocess
import sys

import pytest

import pixelwise as pw

RECIPE = """
data: {format: synthetic, root: "11", crop_size: 48, num_workers: 0, limit: 8}
model: {name: unet, kwargs: {base_channels: 4, depth: 2}}
train: {epochs: 2, batch_size: 4, lr: 0.01, val_every: 1}
"""


@pytest.mark.slow
def test_torchrun_two_processes_train_and_evaluate(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "pixelwise", "train", str(recipe), "--out", str(tmp_path / "run"), "--no-report"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]  # written once, by rank 0
    # the validation figures of the 2-process run (each process scores half the images, the confusion
    # matrix is all-reduced) equal a one-process evaluation of the same weights exactly
    best = json.loads((tmp_path / "run" / "best" / "config.json").read_text())
    single = pw.evaluate(tmp_path / "run" / "best", pw.open_dataset("synthetic:11", "val"))
    assert single["miou"] == pytest.approx(best["metrics"]["miou"], abs=1e-9)
    assert single["confusion"] == best["metrics"]["confusion"]
