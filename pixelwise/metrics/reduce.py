"""How a streaming metric is summed over processes, without metrics knowing about process groups.

Every metric's `all_reduce(reducer)` hands its running totals to a `Reducer`: `sum` returns a tensor
summed over all processes (on the device and in the dtype it was given), `gather` returns every
process's Python object in rank order. `LOCAL` is the one-process reducer (identity);
`pixelwise.engine.distributed.reducer()` gives the one for the initialised process group, which moves
tensors to the device its backend reduces on (CUDA for NCCL) and back.
"""
from __future__ import annotations

from typing import Any, Protocol

import torch


class Reducer(Protocol):
    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` summed elementwise over every process; same shape, dtype and device as given."""

    def gather(self, obj: Any) -> list[Any]:
        """[obj of process 0, obj of process 1, ...] (picklable objects)."""


class _Local:
    """The single-process reducer: totals are already complete."""

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def gather(self, obj: Any) -> list[Any]:
        return [obj]


LOCAL: Reducer = _Local()
