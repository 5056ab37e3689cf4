"""Settings of `pixelwise serve`: one typed dataclass, checked when it is built."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from pixelwise.errors import ConfigError


@dataclass
class ServeSettings:
    """How the server binds, how much work it accepts and how large an upload may be.

    worker_threads: predictions run at the same time; queue_size: requests that may wait for a worker
    beyond those (more get 503 + Retry-After); timeout_s: a request not answered by then gets 504.
    max_pixels counts width x height as read from the image header, before any decoding.
    header_timeout_s: a connection that has not sent a whole request head by then (counted from when it
    opened, or from the first byte of a later request on a kept-alive connection) is closed, so silent or
    slow clients cannot pile up; idle keep-alive connections keep uvicorn's own 5 s timeout.
    tile: passed to the Predictor when it supports tiled inference (None: whole images).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    worker_threads: int = 1
    queue_size: int = 8
    timeout_s: float = 60.0
    header_timeout_s: float = 10.0
    retry_after_s: int = 2
    max_upload_mb: float = 20.0
    max_pixels: int = 50_000_000
    tile: int | None = 1024
    precision: str = "auto"
    device: str | None = None
    overlay_alpha: float = 0.5

    def __post_init__(self) -> None:
        self.max_pixels = int(self.max_pixels)
        checks = [
            (self.worker_threads >= 1, "worker_threads must be at least 1"),
            (self.queue_size >= 0, "queue_size must be 0 or more"),
            (self.timeout_s > 0, "timeout_s must be positive"),
            (self.header_timeout_s > 0, "header_timeout_s must be positive"),
            (self.retry_after_s >= 0, "retry_after_s must be 0 or more"),
            (self.max_upload_mb > 0, "max_upload_mb must be positive"),
            (self.max_pixels > 0, "max_pixels must be positive"),
            (self.tile is None or self.tile >= 32, "tile must be at least 32 pixels (or None)"),
            (0 <= self.port <= 65535, "port must lie in 0..65535"),
            (0.0 <= self.overlay_alpha <= 1.0, "overlay_alpha must lie in 0..1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"serve settings: {message}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def capacity(self) -> int:
        """Requests admitted at once: those running plus those waiting."""
        return self.worker_threads + self.queue_size

    def to_dict(self) -> dict:
        return asdict(self)
