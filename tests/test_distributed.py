"""Two-process DDP training through torchrun, as a user launches it: on CPU (gloo), and with NCCL where two
GPUs are at hand (metrics kept on the CPU must still reduce)."""
import json
import os
import subprocess
import sys
from pathlib import Path

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


MULTI_NODE_RECIPE = RECIPE.replace("val_every: 1}", "val_every: 1, amp: auto, compile: auto}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_meet_at_a_c10d_rendezvous_and_train_the_recipe_unchanged(tmp_path):
    """docs/multinode.md's launch: one torchrun per node (--nnodes=2, --node-rank, c10d rendezvous at node 0),
    here both on this host with one process each; a recipe with amp/compile "auto" runs as written (compile
    is single-process only: auto becomes eager, said in the log) and rank 0 alone writes the shared run."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(MULTI_NODE_RECIPE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    endpoint = f"127.0.0.1:{_free_port()}"
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={rank}",
                               "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}",
                               "--rdzv-id=pixelwise-test", "-m", "pixelwise", "train", str(recipe), "--out",
                               str(tmp_path / "run"), "--no-report"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for rank in (0, 1)]
    outputs = [node.communicate(timeout=600) for node in nodes]
    for node, (_, err) in zip(nodes, outputs):
        assert node.returncode == 0, err[-3000:]
    assert "train.compile auto: eager (torch.compile is applied in single-process runs only" in outputs[0][0]
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert json.loads((tmp_path / "run" / "best" / "config.json").read_text())["metrics"]["miou"] >= 0


def _nccl_worker(rank: int, world: int, init: str, out: str) -> None:
    """One NCCL rank: metrics kept on the CPU (as the evaluation loop keeps them) reduced through the
    engine's reducer, which must move them to this rank's GPU and back."""
    import numpy as np
    import torch
    import torch.distributed as dist

    from pixelwise.engine.distributed import reducer
    from pixelwise.tasks import Prediction, build_task

    torch.cuda.set_device(rank)
    dist.init_process_group("cpu:gloo,cuda:nccl", init_method=init, rank=rank, world_size=world)
    try:
        task = build_task("semantic", ["a", "b"])
        metric = task.metric()
        truth = np.array([[0, 1], [1, 1]])
        pred = truth if rank == 0 else np.zeros_like(truth)
        metric.update(Prediction(task, semantic=pred), Prediction(task, semantic=truth))
        metric.all_reduce(reducer())
        assert metric.cm.mat.device.type == "cpu"
        gathered = reducer().gather({"rank": rank})
        if rank == 0:
            Path(out).write_text(json.dumps({"confusion": metric.compute()["confusion"], "gathered": gathered}))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not __import__("torch").cuda.is_available() or __import__("torch").cuda.device_count() < 2,
                    reason="needs two CUDA GPUs (NCCL); run it whenever a GPU machine is at hand")
def test_nccl_reduces_cpu_metrics_and_trains_two_processes(tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "r.json"
    mp.spawn(_nccl_worker, args=(2, f"file://{tmp_path / 'init'}", str(out)), nprocs=2)
    r = json.loads(out.read_text())
    assert r["confusion"] == [[2, 0], [3, 3]] and r["gathered"] == [{"rank": 0}, {"rank": 1}]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "pixelwise", "train", str(recipe), "--out", str(tmp_path / "run"), "--no-report"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]  # validation all-reduces under NCCL, every epoch
    best = json.loads((tmp_path / "run" / "best" / "config.json").read_text())
    single = pw.evaluate(tmp_path / "run" / "best", pw.open_dataset("synthetic:11", "val"), device="cuda:0")
    assert single["confusion"] == best["metrics"]["confusion"]
