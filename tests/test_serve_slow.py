"""pixelwise serve against slow and idle clients, on a real uvicorn server with the configuration serve() uses.

Connections that send half a request head, or nothing, must neither turn normal requests away (uvicorn's
limit_concurrency counted them and answered plain-text 503s) nor stay open past header_timeout_s; a flood
of requests in progress beyond the server's limit gets a JSON 503 with Retry-After.
"""
from __future__ import annotations

import io
import json
import selectors
import socket
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

from conftest import uvicorn_in_thread

pytest.importorskip("fastapi", reason="serving needs the 'serve' extra (fastapi, uvicorn, python-multipart)")
pytest.importorskip("python_multipart", reason="serving needs python-multipart")
httpx = pytest.importorskip("httpx")

import pixelwise as pw  # noqa: E402
from pixelwise.serve import ServeSettings, create_app, uvicorn_config  # noqa: E402
from pixelwise.serve.protocol import GuardedH11Protocol, active_request_limit  # noqa: E402

CLASSES = ["sky", "grass", "road", "disk", "box", "triangle"]
HEAD_TIMEOUT = 3.0  # seconds; short to keep the test fast, long enough for 20 requests to finish first
PARTIAL = b"POST /v1/segment HTTP/1.1\r\nHost: x\r\n"
N_PARTIAL, N_SILENT = 70, 4


@pytest.fixture(scope="module")
def settings():
    return ServeSettings(worker_threads=1, queue_size=2, timeout_s=30, header_timeout_s=HEAD_TIMEOUT)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model = pw.create_model("unet", 6, base_channels=4, depth=2)
    return pw.save_model(model, tmp_path_factory.mktemp("serve_slow") / "model", classes=CLASSES)


@contextmanager
def running(app, settings):
    """(port, uvicorn.Server) of `app` served in a thread on a free loopback port, configured as serve() does."""
    with uvicorn_in_thread(uvicorn_config(app, settings, log_level="warning")) as running_server:
        yield running_server


@pytest.fixture(scope="module")
def served(model_dir, settings):
    with running(create_app(model_dir, settings), settings) as (port, server):
        yield port, server


@pytest.fixture(scope="module")
def png():
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def read_until_closed(started: dict, timeout: float) -> dict:
    """{socket: (seconds from its start until the server closed it, bytes received)}; fails after timeout."""
    sel = selectors.DefaultSelector()
    received = {}
    for s in started:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        received[s] = b""
    closed, deadline = {}, time.monotonic() + timeout
    while len(closed) < len(started):
        left = deadline - time.monotonic()
        assert left > 0, f"{len(started) - len(closed)} of {len(started)} idle connections still open"
        for key, _ in sel.select(min(left, 0.5)):
            s = key.fileobj
            try:
                chunk = s.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                chunk = b""
            if chunk:
                received[s] += chunk
                continue
            closed[s] = (time.monotonic() - started[s], received[s])
            sel.unregister(s)
    sel.close()
    return closed


def http_get(sock: socket.socket, path: str = "/healthz") -> bytes:
    """One keep-alive GET on a raw socket; the whole response (read by its Content-Length)."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_serve_uses_the_guarded_protocol(model_dir, settings):
    config = uvicorn_config(create_app(model_dir, settings), settings)
    config.load()
    assert issubclass(config.http_protocol_class, GuardedH11Protocol)
    assert config.http_protocol_class.header_timeout_s == HEAD_TIMEOUT
    assert config.http_protocol_class.max_active_requests == active_request_limit(settings)
    assert config.limit_concurrency is None  # uvicorn's own limit (plain-text 503, counts idle connections) is off


def test_idle_connections_neither_block_requests_nor_stay(served, png):
    port, server = served
    open_socket = lambda: socket.create_connection(("127.0.0.1", port), timeout=10)  # noqa: E731
    started = {}
    partial = [open_socket() for _ in range(N_PARTIAL)]
    for s in partial:
        s.sendall(PARTIAL)
        started[s] = time.monotonic()
    silent = [open_socket() for _ in range(N_SILENT)]
    started.update({s: time.monotonic() for s in silent})
    # A kept-alive connection whose second request head never completes: guarded as well.
    kept = open_socket()
    assert http_get(kept).startswith(b"HTTP/1.1 200")
    kept.sendall(b"GET /healthz HTTP/1.1\r\n")
    started[kept] = time.monotonic()
    # A client trickling its head a byte at a time: the timeout is a total, so this does not extend it.
    trickle, stop = open_socket(), threading.Event()
    started[trickle] = time.monotonic()

    def drip():
        head = PARTIAL + b"X-Pad: " + b"a" * 1000
        for byte in head:
            if stop.wait(0.1):
                return
            try:
                trickle.send(bytes([byte]))
            except OSError:  # closed by the server
                return

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    idle = len(started)
    try:
        wait_for(lambda: len(server.server_state.connections) >= idle, 5, "the server to accept the idle connections")
        statuses = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as client:
            for i in range(20):
                if i % 2:
                    res = client.post("/v1/segment", files={"image": ("a.png", png, "image/png")})
                else:
                    res = client.get("/healthz")
                statuses.append(res.status_code)
        assert statuses == [200] * 20
        # ... and they were served while every idle connection was still held open
        assert len(server.server_state.connections) >= idle

        closed = read_until_closed(started, timeout=HEAD_TIMEOUT + 10)
    finally:
        stop.set()
        for s in started:
            s.close()
        dripper.join(5)

    for s in [*partial, kept, trickle]:
        seconds, data = closed[s]
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), data[:200]
        assert b"content-type: application/json" in head.lower() and b"connection: close" in head.lower()
        assert "request head not received" in json.loads(body)["error"]
        assert HEAD_TIMEOUT - 0.2 <= seconds <= HEAD_TIMEOUT + 3, seconds
    for s in silent:
        seconds, data = closed[s]
        assert data == b"" and HEAD_TIMEOUT - 0.2 <= seconds <= HEAD_TIMEOUT + 3, (seconds, data[:200])
    wait_for(lambda: len(server.server_state.connections) <= 1, 5, "the server to forget the closed connections")
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200


def test_requests_in_progress_beyond_the_limit_get_json_503(served, settings):
    port, server = served
    limit = active_request_limit(settings)
    # Whole heads announcing a body that never comes: each is a request in progress until its client leaves.
    head = (b"POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 100000\r\n\r\n")
    flood = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(limit)]
    try:
        for s in flood:
            s.sendall(head)
        wait_for(lambda: len(server.server_state.tasks) >= limit, 10, f"{limit} requests in progress")
        res = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        assert res.status_code == 503 and res.headers["content-type"] == "application/json"
        assert res.headers["retry-after"] == str(settings.retry_after_s)
        assert res.headers["connection"] == "close"
        assert json.loads(res.content)["error"].startswith(f"server busy: {limit} requests in progress")
    finally:
        for s in flood:
            s.close()
    wait_for(lambda: len(server.server_state.tasks) == 0, 10, "the abandoned requests to end")
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200


def test_a_head_whose_body_never_comes_gets_a_json_408(served, settings):
    """The head is whole, the announced body never arrives: after header_timeout_s without data the
    request ends with a JSON 408 and its slot is free (a slow body cannot hold the server)."""
    port, server = served
    sock = socket.create_connection(("127.0.0.1", port), timeout=settings.header_timeout_s + 10)
    try:
        start = time.monotonic()
        sock.sendall(b"POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 5000\r\n\r\n--b\r\n")
        data = b""
        while b"}" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        waited = time.monotonic() - start
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and b"application/json" in head
    assert "request body not received in time" in json.loads(body)["error"]
    assert settings.header_timeout_s - 0.5 <= waited <= settings.header_timeout_s + 5
    wait_for(lambda: len(server.server_state.tasks) == 0, 10, "the request to end")


def test_header_timeout_setting_and_cli(model_dir, monkeypatch, capsys):
    from pixelwise.cli import main
    from pixelwise.errors import ConfigError

    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="header_timeout_s"):
            ServeSettings(header_timeout_s=bad)
    assert ServeSettings().header_timeout_s == 10.0

    seen = []
    monkeypatch.setattr("pixelwise.serve.serve", lambda model, settings: seen.append(settings))
    main(["serve", str(model_dir), "--header-timeout", "2.5"])
    assert seen[0].header_timeout_s == 2.5
    try:
        main(["serve", "--help"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    assert "--header-timeout" in capsys.readouterr().out
