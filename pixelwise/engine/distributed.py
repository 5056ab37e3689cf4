"""Distributed data parallel through torchrun: gloo on CPU; on CUDA, NCCL for CUDA tensors and gloo for CPU ones.

`torchrun --nproc_per_node=2 -m pixelwise train ...` sets RANK/WORLD_SIZE/LOCAL_RANK; `setup()` reads them.
Every reduction goes through `all_reduce_sum`, which reduces on the process group's own device (the
current CUDA device under NCCL) and hands the result back on the tensor's device, so a metric kept on the
CPU reduces under NCCL too. `reducer()` wraps it for the metrics (pixelwise.metrics.reduce). Validation
shards the dataset by stride (rank::world, no padding or repeats), so scores equal a one-process run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from pixelwise.metrics.reduce import LOCAL, Reducer


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: str | None = None) -> DistInfo:
    """Initialise the process group when launched by torchrun; pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world, local, dev)


def teardown() -> None:
    if initialized():
        dist.destroy_process_group()


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if initialized():
        dist.barrier()


def reduction_device() -> torch.device:
    """Where the process group reduces: the current CUDA device when NCCL is in the backend, else the CPU."""
    if initialized() and "nccl" in str(dist.get_backend()) and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` summed over all processes, returned on its own device (the input is left unchanged);
    the tensor itself without a process group."""
    if not initialized():
        return tensor
    work = tensor.detach().to(reduction_device(), copy=True)
    dist.all_reduce(work)
    return work.to(tensor.device)


def all_gather(obj: Any) -> list[Any]:
    """Every process's picklable object, in rank order."""
    if not initialized():
        return [obj]
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, obj)
    return parts


class _GroupReducer:
    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return all_reduce_sum(tensor)

    def gather(self, obj: Any) -> list[Any]:
        return all_gather(obj)


def reducer() -> Reducer:
    """The metrics' reducer for this process: the process group's, or the one-process identity."""
    return _GroupReducer() if initialized() else LOCAL


def all_reduce_mean(value: float) -> float:
    """A number averaged over processes."""
    if not initialized():
        return value
    return float(all_reduce_sum(torch.tensor([value], dtype=torch.float64)).item()) / dist.get_world_size()


def broadcast_value(value: float) -> float:
    """Rank 0's value on every rank."""
    if not initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=reduction_device())
    dist.broadcast(t, 0)
    return float(t.item())
