"""Load test for `pixelwise serve`: a fixed number of requests at a fixed concurrency, on loopback only.

    python benchmarks/serve_load.py                       # 200 requests, 8 clients, queue 4 and 8
    python benchmarks/serve_load.py --requests 50 --no-write

Starts `pixelwise serve` (the real CLI, uvicorn) on a free 127.0.0.1 port with a small untrained U-Net,
sends `--requests` POST /v1/segment calls from `--concurrency` client threads, and checks that every answer
is 200 or 503 (busy, with Retry-After) and never anything else. Prints p50/p95 latency and throughput and
replaces its own section of benchmarks/RESULTS.md. Exits 1 if any answer was not 200/503 or the time limit
was hit. One server per `--queue` value: a queue smaller than the clients shows the 503 back-pressure.
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
HEADING = "## Serve: load test"
BOUNDARY = "pixelwiseloadtest"


def make_model(directory: Path) -> Path:
    import pixelwise as pw
    from pixelwise.data.synthetic import CLASSES, PALETTE

    model = pw.create_model("unet", len(CLASSES), base_channels=8, depth=3)
    return pw.save_model(model, directory / "model", classes=CLASSES, palette=PALETTE)


def make_body(size: int) -> bytes:
    from pixelwise.data.synthetic import make_scene

    buf = io.BytesIO()
    Image.fromarray(make_scene(1, size=size).image).save(buf, format="PNG")
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"scene.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + buf.getvalue() + f"\r\n--{BOUNDARY}--\r\n".encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model_dir: Path, port: int, workers: int, queue: int, timeout: float) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pixelwise", "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
           "--workers-threads", str(workers), "--queue", str(queue), "--timeout", str(timeout), "--precision", "fp32"]
    return launch(cmd, port)


def launch(cmd: list[str], port: int) -> subprocess.Popen:
    """Start a server command and wait (up to 120 s) until it answers GET /healthz on `port`."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not answer /healthz within 120 s")


def run_load(port: int, body: bytes, requests: int, concurrency: int, time_limit: float, backoff: float = 0.0) -> dict:
    """Send the requests; return statuses, latencies (s), wall time and whether the time limit was hit.
    A client that got 503 waits `backoff` seconds before its next request (the 503 one is not retried)."""
    local = threading.local()
    start = time.monotonic()
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}

    def one(_i):
        if time.monotonic() - start > time_limit:
            return "not sent", 0.0, True
        conn = getattr(local, "conn", None) or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        local.conn = conn
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/v1/segment", body, headers)
            res = conn.getresponse()
            payload = res.read()
            status = res.status
            if status == 503 and not res.getheader("Retry-After"):
                status = "503 without Retry-After"
            elif status != 200 and not json.loads(payload).get("error"):
                status = f"{status} without a JSON error"
            if res.getheader("Connection", "").lower() == "close":
                conn.close()
                local.conn = None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            local.conn = None
            status = f"client error {type(exc).__name__}"
        latency = time.perf_counter() - t0
        if status == 503:
            time.sleep(backoff)
        return status, latency, False

    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(requests)))
    return {"results": results, "wall": time.monotonic() - start,
            "timed_out": any(skipped for _, _, skipped in results)}


def summarize(run: dict, queue: int, workers: int, concurrency: int) -> dict:
    statuses = [s for s, _, _ in run["results"]]
    ok = np.array([t for s, t, _ in run["results"] if s == 200]) * 1000
    answered = np.array([t for s, t, _ in run["results"] if s in (200, 503)]) * 1000
    pct = (lambda a, q: float(np.percentile(a, q)) if a.size else float("nan"))
    return {
        "workers": workers, "queue": queue, "concurrency": concurrency, "requests": len(statuses),
        "n200": statuses.count(200), "n503": statuses.count(503),
        "other": {str(s): statuses.count(s) for s in set(statuses) if s not in (200, 503)},
        "p50_ok": pct(ok, 50), "p95_ok": pct(ok, 95), "p50_all": pct(answered, 50), "p95_all": pct(answered, 95),
        "rps_ok": statuses.count(200) / run["wall"], "rps_all": len(answered) / run["wall"], "wall": run["wall"],
        "timed_out": run["timed_out"],
    }


def table(rows: list[dict]) -> str:
    lines = ["| workers | queue | clients | requests | 200 | 503 | other | p50 ms (200) | p95 ms (200) | "
             "p50 ms (all) | p95 ms (all) | 200/s | answers/s | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        other = ", ".join(f"{k}: {v}" for k, v in r["other"].items()) or "0"
        lines.append(f"| {r['workers']} | {r['queue']} | {r['concurrency']} | {r['requests']} | {r['n200']} | "
                     f"{r['n503']} | {other} | {r['p50_ok']:.0f} | {r['p95_ok']:.0f} | {r['p50_all']:.0f} | "
                     f"{r['p95_all']:.0f} | {r['rps_ok']:.1f} | {r['rps_all']:.1f} | {r['wall']:.1f} |")
    return "\n".join(lines)


def write_section(text: str, heading: str = HEADING) -> None:
    """Replace the section of RESULTS.md under `heading` (or append it); other sections stay as they are."""
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start = old.find(heading)
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    else:
        end = old.find("\n## ", start + len(heading))
        new = old[:start] + text + ("\n" + old[end:] if end >= 0 else "\n")
    RESULTS.write_text(new)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="server --workers-threads")
    parser.add_argument("--queue", type=int, action="append", help="server --queue (repeatable; default 4 and 8)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--backoff", type=float, default=0.1, help="seconds a client waits after a 503")
    parser.add_argument("--time-limit", type=float, default=240.0, help="seconds per run; later requests are not sent")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    queues = args.queue or [4, 8]

    from pixelwise.hardware import describe_cpu

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, body = make_model(Path(tmp)), make_body(args.size)
        for queue in queues:
            port = free_port()
            server = start_server(model_dir, port, args.workers, queue, timeout=60)
            try:
                run_load(port, body, min(4, args.requests), 1, args.time_limit)  # warm-up, not counted
                row = summarize(run_load(port, body, args.requests, args.concurrency, args.time_limit, args.backoff),
                                queue, args.workers, args.concurrency)
            finally:
                server.terminate()
                server.wait(20)
            rows.append(row)
            print(f"queue {queue}: {row['n200']} x 200, {row['n503']} x 503, other {row['other'] or 0}; "
                  f"p50 {row['p50_ok']:.0f} ms, p95 {row['p95_ok']:.0f} ms (200s); {row['rps_ok']:.1f} answers 200/s; "
                  f"{row['wall']:.1f} s", flush=True)

    command = "python benchmarks/serve_load.py " + " ".join(sys.argv[1:])
    text = (f"{HEADING}\n\nFrom `benchmarks/serve_load.py`: `pixelwise serve` (uvicorn, loopback) with an "
            f"untrained U-Net (base 8, depth 3, 6 classes, fp32), {args.size}x{args.size} PNG uploads (POST /v1/segment, "
            f"PNG mask), {args.requests} requests from {args.concurrency} keep-alive client threads after 4 warm-up "
            f"requests. With a queue smaller than the clients, the surplus gets 503 + Retry-After at once; "
            f"such a client waits {args.backoff:g} s and sends its next request (a 503 is not retried, so the "
            f"200 column counts the requests served). Latency is client-side, per request; 'all' counts 200s "
            f"and 503s.\n\n"
            f"CPU: {describe_cpu()} (client process; shared with other jobs while measured). "
            f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Command: `{command.strip()}`.\n\n{table(rows)}\n")
    print(text)
    if not args.no_write:
        write_section(text)
        print(f"wrote the '{HEADING}' section of {RESULTS}")
    bad = [r for r in rows if r["other"] or r["timed_out"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
