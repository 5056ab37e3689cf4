"""A bounded worker pool: N threads run predictions, at most `queue_size` more wait; the rest are refused.

A slot is taken before a job is queued and given back only when the job has finished (or was cancelled
before it started), so the bound holds even for requests that time out while their prediction still runs.
"""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future, ThreadPoolExecutor


class Busy(Exception):
    """Every worker is busy and the queue is full."""


class BoundedPool:
    def __init__(self, workers: int, queue_size: int):
        self.workers, self.capacity = workers, workers + queue_size
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pixelwise-serve")
        self._slots = threading.BoundedSemaphore(self.capacity)
        self._lock = threading.Lock()
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Jobs admitted and not yet finished (running + waiting)."""
        return self._in_flight

    def submit(self, fn, *args) -> Future:
        """Queue fn(*args); raises Busy instead of waiting when the pool is full."""
        if not self._slots.acquire(blocking=False):
            raise Busy(f"{self._in_flight} requests running or queued (capacity {self.capacity})")
        with self._lock:
            self._in_flight += 1
        try:
            future = self._executor.submit(fn, *args)
        except BaseException:
            self._release(None)
            raise
        future.add_done_callback(self._release)
        return future

    def _release(self, _future) -> None:
        with self._lock:
            self._in_flight -= 1
        self._slots.release()

    async def run(self, fn, *args, timeout: float):
        """Run fn(*args) in the pool and await it; raises Busy, or TimeoutError after `timeout` seconds
        (a job still waiting in the queue is then cancelled; a running one finishes and frees its slot)."""
        future = self.submit(fn, *args)
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
