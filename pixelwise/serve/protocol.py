"""The HTTP/1.1 protocol `pixelwise serve` runs under uvicorn: uvicorn's h11 protocol plus two guards.

1. A request-head timeout. uvicorn times out idle keep-alive connections but never a request head that is
   slow to come: a client that opens a connection and sends nothing, or half a request line, holds it for
   as long as it likes. Here every connection has `header_timeout_s` to deliver a whole request head,
   counted from when it opened, or, on a kept-alive connection, from the first byte of the next request
   (a total, so trickling a byte at a time does not extend it). Then the server closes it: after a JSON 408
   when part of a head had come, silently when nothing had.
2. A limit on requests in progress whose answer is JSON. uvicorn's `limit_concurrency` counts open
   connections, idle ones included, and answers with a plain-text 503; it is left off. Instead a request
   that arrives while `max_active_requests` others are in progress (head received, answer not finished)
   gets `503 {"error": ...}` with Retry-After and Connection: close, like every other error of the server.
   Connections waiting for a request head do not count, so they cannot turn normal requests away.

Both run inside uvicorn's protocol (timers on the event loop, no extra tasks); uvicorn.Config takes the
class as `http=` (see pixelwise.serve.uvicorn_config).
"""
from __future__ import annotations

import json
import logging

import h11
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol

log = logging.getLogger("pixelwise.serve")


def active_request_limit(settings) -> int:
    """Requests in progress at once (reading an upload, waiting for or running a prediction, answering);
    more get a JSON 503. Well above the worker pool's capacity, whose own JSON 503 comes first."""
    return max(64, 4 * settings.capacity)


def guarded_protocol(settings) -> type[GuardedH11Protocol]:
    """GuardedH11Protocol with the settings' header timeout, request limit and Retry-After."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {
        "header_timeout_s": float(settings.header_timeout_s),
        "max_active_requests": active_request_limit(settings),
        "retry_after_s": int(settings.retry_after_s),
    })


def _json_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


class GuardedH11Protocol(H11Protocol):
    """uvicorn's H11Protocol with a request-head timeout and a JSON-answered limit on requests in progress
    (see the module docstring). Build one per settings with guarded_protocol()."""

    header_timeout_s: float = 10.0
    max_active_requests: int | None = 64
    retry_after_s: int = 2

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer = None
        self._inner_app = self.app
        if self.max_active_requests is not None:
            self.app = self._admit  # what handle_events runs for each request

    # --- the request-head timeout

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()  # also covers a client that never sends a byte

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            # A request head is complete (its request runs), or the connection failed or closed.
            self._cancel_head_timer()
        elif self._head_timer is None:
            # Waiting for a request head with no timer: the first bytes of a later request on a kept-alive
            # connection (uvicorn has just cancelled its keep-alive timer), or an idle connection after an
            # answer sent before the body was read, which uvicorn would otherwise leave without any timer.
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        received = len(self.conn.trailing_data[0])
        peer = "%s:%d" % self.client if self.client else "a client"
        try:
            if received:  # part of a request head came: say why it is refused
                log.info("%s sent %d bytes but no complete request head within %g s; closing the connection",
                         peer, received, self.header_timeout_s)
                body = _json_body(f"request head not received within {self.header_timeout_s:g} s")
                headers = self.server_state.default_headers + [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")]
                self.transport.write(self.conn.send(h11.Response(status_code=408, headers=headers,
                                                                 reason=STATUS_PHRASES[408])))
                self.transport.write(self.conn.send(h11.Data(data=body)))
                self.transport.write(self.conn.send(h11.EndOfMessage()))
            else:
                log.debug("%s sent nothing within %g s; closing the connection", peer, self.header_timeout_s)
            self.conn.send(h11.ConnectionClosed())
        except h11.LocalProtocolError:  # h11 would not send that in its present state: just close
            pass
        self.transport.close()

    # --- the limit on requests in progress

    async def _admit(self, scope, receive, send) -> None:
        # self.tasks (uvicorn's, server-wide) holds one task per request in progress, this one included.
        if scope["type"] == "http" and len(self.tasks) > self.max_active_requests:
            log.warning("%d requests in progress (limit %d): answering 503", len(self.tasks) - 1,
                        self.max_active_requests)
            body = _json_body(f"server busy: {len(self.tasks) - 1} requests in progress (limit "
                              f"{self.max_active_requests}); retry later")
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()),
                                    (b"retry-after", str(self.retry_after_s).encode()),
                                    (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        await self._inner_app(scope, receive, send)
