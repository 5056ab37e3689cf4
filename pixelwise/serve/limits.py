"""Upload size and pace limits, enforced before any form parsing: a pure ASGI middleware.

A declared Content-Length over the limit is refused at once; a body without one (chunked) or with a false
one is counted as it streams and refused as soon as it passes the limit, so a large upload is never held
whole. A body that stalls (no chunk for `idle_s`) or drags on (not whole after `total_s`) gets a JSON 408
and the connection closes, so a client that sends its head and then nothing cannot hold a request slot.
Bodies under the limit are buffered (at most max_bytes) and replayed to the app.
"""
from __future__ import annotations

import asyncio
import json
import time

# Room for the multipart envelope (boundaries, part headers) around an image of exactly the limit.
ENVELOPE = 64 * 1024


class BodyLimit:
    def __init__(self, app, max_bytes: int, max_mb: float, idle_s: float = 10.0, total_s: float = 60.0):
        self.app, self.max_bytes, self.max_mb = app, max_bytes + ENVELOPE, max_mb
        self.idle_s, self.total_s = idle_s, total_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return await _reply(send, 400, f"invalid Content-Length header {declared[:32]!r}")
            if size > self.max_bytes:
                return await _reply(send, 413, f"upload too large: {size} bytes declared, over the limit of "
                                               f"{self.max_mb:g} MB (--max-upload-mb)")
        chunks, total, deadline = [], 0, time.monotonic() + self.total_s
        while True:
            wait = min(self.idle_s, deadline - time.monotonic())
            try:
                message = await asyncio.wait_for(receive(), timeout=max(wait, 0.001))
            except TimeoutError:
                return await _reply(send, 408, f"request body not received in time (no data for {self.idle_s:g} s, "
                                               f"or not whole after {self.total_s:g} s; {total} bytes came)")
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                return await _reply(send, 413, f"upload too large: over {self.max_mb:g} MB after {total} bytes "
                                               f"(--max-upload-mb)")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for a disconnect, as the server would

        return await self.app(scope, replay, send)


async def _reply(send, status: int, message: str) -> None:
    payload = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})
