"""Shared fixtures. Real datasets live in ../shared/data beside the checkout; tests that need them skip
with a reason on a user's machine, and fail under CI (CI=true), where the data must be present."""
from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Unit tests use tiny tensors: extra intra-op threads only add synchronisation (about 10x slower on a busy
# 2-core machine). Benchmarks, not tests, measure multi-threaded speed.
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _precision_cache(tmp_path_factory):
    """precision='auto' decisions are cached per test session, never in the user's ~/.cache."""
    os.environ["PIXELWISE_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield


def shared_dataset(name: str) -> Path:
    """Path to ../shared/data/NAME, or skip (fail under CI) when it is missing."""
    path = SHARED_DATA / name
    if not path.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but the real dataset {path} is missing")
        pytest.skip(f"real dataset {path} not present (it sits in ../shared/data beside the checkout)")
    return path


@pytest.fixture
def camvid_root() -> Path:
    return shared_dataset("camvid")


@contextmanager
def uvicorn_in_thread(config):
    """(port, uvicorn.Server) of a uvicorn.Config served in a daemon thread on a free loopback port."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start within 30 s"
    try:
        yield sock.getsockname()[1], server
    finally:
        server.should_exit = True
        thread.join(10)


def run_cli(argv, capsys):
    """Run the `pixelwise` CLI in-process: (exit code, stdout, stderr)."""
    from pixelwise.cli import main

    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code or 0
    cap = capsys.readouterr()
    return code, cap.out, cap.err
