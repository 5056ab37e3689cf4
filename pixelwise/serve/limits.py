"""Upload size limit, enforced before any form parsing: a pure ASGI middleware.

A declared Content-Length over the limit is refused at once; a body without one (chunked) or with a false
one is counted as it streams and refused as soon as it passes the limit, so a large upload is never held
whole. Bodies under the limit are buffered (at most max_bytes) and replayed to the app.
"""
from __future__ import annotations

import json

# Room for the multipart envelope (boundaries, part headers) around an image of exactly the limit.
ENVELOPE = 64 * 1024


class BodyLimit:
    def __init__(self, app, max_bytes: int, max_mb: float):
        self.app, self.max_bytes, self.max_mb = app, max_bytes + ENVELOPE, max_mb

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
        chunks, total = [], 0
        while True:
            message = await receive()
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
