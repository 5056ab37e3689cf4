"""Slow and idle clients against `pixelwise serve`: do normal requests still get through? Loopback only.

    python benchmarks/slow_clients.py                     # 70 half-sent request heads held 30 s, 20 requests
    python benchmarks/slow_clients.py --reconnect --baseline   # also: idle connections reopened; the old server

Starts `pixelwise serve` (the real CLI, uvicorn) on a free 127.0.0.1 port with a small untrained U-Net,
opens `--connections` TCP connections that each send a partial request head
("POST /v1/segment HTTP/1.1\\r\\nHost: x\\r\\n") and then nothing, plus `--silent` that send nothing at all,
and holds them `--hold` seconds while `--requests` normal requests (alternately GET /healthz and a PNG
upload to POST /v1/segment, each on a new connection) are spread evenly over that time. Records every
status, the client-side latency, and when the server closed each idle connection (and whether it said
408 first). Prints a table and replaces its own section of benchmarks/RESULTS.md. Exits 1 if a request
got anything but 200 from `pixelwise serve`.

--reconnect adds a run in which every idle connection the server closes is opened again at once, so the
idle connections stay for the whole hold, as a client bent on exhausting the server would keep them.
--baseline adds a row for the configuration `pixelwise serve` had before its request-head timeout: stock
uvicorn (h11) with limit_concurrency=max(64, 4 x capacity) and no limit on how long a request head may take.
"""
from __future__ import annotations

import argparse
import http.client
import selectors
import socket
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from serve_load import BOUNDARY, free_port, launch, make_body, make_model, write_section  # benchmarks/ beside

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
HEADING = "## Serve: slow and idle clients"
PARTIAL = b"POST /v1/segment HTTP/1.1\r\nHost: x\r\n"
# The server `pixelwise serve` ran before the request-head timeout (for --baseline).
BASELINE = """
import sys, uvicorn
from pixelwise.serve import ServeSettings, create_app
settings = ServeSettings(port=int(sys.argv[2]), worker_threads=int(sys.argv[3]), queue_size=int(sys.argv[4]),
                         precision="fp32")
uvicorn.run(create_app(sys.argv[1], settings), host="127.0.0.1", port=settings.port, log_level="warning",
            server_header=False, timeout_keep_alive=5, limit_concurrency=max(64, 4 * settings.capacity))
"""


class IdleClients:
    """Connections that send `first` (maybe nothing) and then stay silent; a thread notes when the server
    closes each one (EOF or reset) and what it sent before closing. With reconnect, each connection the
    server closes is opened again at once, as a client bent on holding connections would."""

    def __init__(self, port: int, first: list[bytes], reconnect: bool = False):
        self.port, self.reconnect = port, reconnect
        self.opened, self.first, self.said, self.closed = {}, {}, {}, []  # closed: (seconds open, said)
        self._sel = selectors.DefaultSelector()
        for data in first:
            self._open(data)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _open(self, data: bytes) -> None:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        if data:
            s.sendall(data)
        s.setblocking(False)
        self.opened[s], self.first[s], self.said[s] = time.monotonic(), data, b""
        self._sel.register(s, selectors.EVENT_READ)

    @property
    def open_now(self) -> int:
        return len(self.opened)

    def _watch(self) -> None:
        while not self._stop.is_set() and self.opened:
            for key, _ in self._sel.select(0.2):
                s = key.fileobj
                try:
                    chunk = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if chunk:
                    self.said[s] += chunk
                    continue
                self._sel.unregister(s)
                self.closed.append((time.monotonic() - self.opened.pop(s), self.said.pop(s)))
                data = self.first.pop(s)
                s.close()
                if self.reconnect and not self._stop.is_set():
                    self._open(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in list(self.opened):
            s.close()
        self._sel.close()


def one_request(port: int, i: int, body: bytes) -> tuple[str, float]:
    """Request i (even: GET /healthz, odd: POST /v1/segment) on a new connection: (status, seconds)."""
    t0 = time.perf_counter()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        if i % 2:
            conn.request("POST", "/v1/segment", body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        else:
            conn.request("GET", "/healthz")
        res = conn.getresponse()
        res.read()
        status = str(res.status)
        if res.status != 200:
            status += f" ({res.getheader('Content-Type', 'no content type').split(';')[0]})"
        conn.close()
    except (OSError, http.client.HTTPException) as exc:
        status = f"client error {type(exc).__name__}"
    return status, time.perf_counter() - t0


def measure(port: int, body: bytes, args, reconnect: bool) -> dict:
    idle = IdleClients(port, [PARTIAL] * args.connections + [b""] * args.silent, reconnect)
    n_idle = idle.open_now
    start = time.monotonic()
    results, open_at_request = [], []
    try:
        for i in range(args.requests):
            time.sleep(max(0.0, start + (i + 0.5) * args.hold / args.requests - time.monotonic()))
            open_at_request.append(idle.open_now)
            results.append(one_request(port, i, body))
        time.sleep(max(0.0, start + args.hold - time.monotonic()))
    finally:
        idle.close()
    latencies = np.array([t for _, t in results]) * 1000
    statuses = [s for s, _ in results]
    return {"statuses": {s: statuses.count(s) for s in sorted(set(statuses))}, "n200": statuses.count("200"),
            "requests": len(results), "p50": float(np.median(latencies)), "max": float(latencies.max()),
            "idle": n_idle, "closed": sorted(t for t, _ in idle.closed), "reconnect": reconnect,
            "said_408": sum(1 for _, said in idle.closed if said.startswith(b"HTTP/1.1 408")),
            "open_at_request": (min(open_at_request), max(open_at_request))}


def table(rows: list[dict], args) -> str:
    lines = ["| server | idle connections | hold s | header timeout s | requests | idle open at each request | "
             "statuses | latency median ms | latency max ms | idle closed by the server | "
             "closed at (s after opening) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        statuses = ", ".join(f"{k}: {v}" for k, v in r["statuses"].items())
        closed = r["closed"]
        when = (f"{closed[0]:.2f} to {closed[-1]:.2f} (median {np.median(closed):.2f})" if closed else "never")
        said = f", {r['said_408']} after a JSON 408" if r["said_408"] else ""
        lo, hi = r["open_at_request"]
        open_at = str(lo) if lo == hi else f"{lo} to {hi}"
        held = f"{args.connections} half-sent heads + {args.silent} silent"
        n_closed = f"{len(closed)} of {r['idle']}"
        if r["reconnect"]:
            held, n_closed = held + ", each reopened when closed", f"{len(closed)} (reopened each time)"
        lines.append(f"| {r['server']} | {held} | {args.hold:g} | {r['timeout']} | {r['requests']} | {open_at} | "
                     f"{statuses} | {r['p50']:.0f} | {r['max']:.0f} | {n_closed}{said} | {when} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=70, help="idle connections with a half-sent head")
    parser.add_argument("--silent", type=int, default=5, help="idle connections that send nothing")
    parser.add_argument("--hold", type=float, default=30.0, help="seconds the idle connections are held")
    parser.add_argument("--requests", type=int, default=20, help="normal requests, spread over --hold")
    parser.add_argument("--header-timeout", type=float, default=10.0, help="server --header-timeout")
    parser.add_argument("--workers", type=int, default=1, help="server --workers-threads")
    parser.add_argument("--queue", type=int, default=8, help="server --queue")
    parser.add_argument("--size", type=int, default=128, help="uploaded image side in pixels")
    parser.add_argument("--reconnect", action="store_true",
                        help="also a run where each idle connection the server closes is opened again at once")
    parser.add_argument("--baseline", action="store_true", help="also measure the configuration before the fix")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    from pixelwise.hardware import describe_cpu

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, body = make_model(Path(tmp)), make_body(args.size)
        serve = [sys.executable, "-m", "pixelwise", "serve", str(model_dir), "--host", "127.0.0.1", "--port",
                 "{port}", "--workers-threads", str(args.workers), "--queue", str(args.queue),
                 "--header-timeout", str(args.header_timeout), "--precision", "fp32"]
        servers = [("`pixelwise serve`", f"{args.header_timeout:g}", serve, False)]
        if args.reconnect:
            servers.append(("`pixelwise serve`", f"{args.header_timeout:g}", serve, True))
        if args.baseline:
            servers.append(("before: uvicorn h11, limit_concurrency=64", "none",
                            [sys.executable, "-c", BASELINE, str(model_dir), "{port}", str(args.workers),
                             str(args.queue)], False))
        for name, timeout, cmd, reconnect in servers:
            port = free_port()
            server = launch([c.replace("{port}", str(port)) for c in cmd], port)
            try:
                one_request(port, 1, body)  # warm-up, not counted
                row = {"server": name, "timeout": timeout, **measure(port, body, args, reconnect)}
            finally:
                server.terminate()
                server.wait(20)
            rows.append(row)
            print(f"{name}: {row['statuses']}; latency median {row['p50']:.0f} ms, max {row['max']:.0f} ms; "
                  f"{len(row['closed'])} of {row['idle']} idle connections closed by the server", flush=True)

    command = "python benchmarks/slow_clients.py " + " ".join(sys.argv[1:])
    text = (f"{HEADING}\n\nFrom `benchmarks/slow_clients.py`: `pixelwise serve` (uvicorn, loopback, "
            f"--workers-threads {args.workers} --queue {args.queue}) with an untrained U-Net (base 8, depth 3, "
            f"6 classes, fp32). {args.connections} connections send a partial request head "
            f"(`POST /v1/segment HTTP/1.1`, `Host: x`, no blank line) and {args.silent} send nothing; all are "
            f"held {args.hold:g} s while {args.requests} requests, spread evenly over that time and each on a new "
            f"connection, alternate GET /healthz and POST /v1/segment with a {args.size}x{args.size} PNG. "
            f"Latency is client-side; 'closed at' is when the server closed an idle connection, counted from "
            f"when it was opened.\n\n"
            f"CPU: {describe_cpu()} (client and server; shared with other jobs while measured). "
            f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Command: `{command.strip()}`.\n\n"
            f"{table(rows, args)}\n")
    print(text)
    if not args.no_write:
        write_section(text, HEADING)
        print(f"wrote the '{HEADING}' section of {RESULTS}")
    ours = [r for r in rows if r["timeout"] != "none"]
    return 0 if all(r["n200"] == r["requests"] for r in ours) else 1


if __name__ == "__main__":
    sys.exit(main())
