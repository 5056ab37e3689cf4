"""`pixelwise serve`: a web page and a REST API around one saved model (FastAPI + uvicorn).

    from pixelwise.serve import ServeSettings, create_app, serve
    serve("runs/camvid/best", ServeSettings(port=8000))          # blocks; Ctrl-C stops it

FastAPI and uvicorn come with the `serve` extra: pip install 'pixelwise[serve]'.
"""
from __future__ import annotations

from pathlib import Path

from pixelwise.errors import PixelwiseError
from pixelwise.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app", "serve", "uvicorn_config"]


def create_app(model, settings: ServeSettings | None = None):
    """The FastAPI app for a model directory or a Predictor (see pixelwise.serve.app.create_app)."""
    try:
        from pixelwise.serve.app import create_app as _create
    except ImportError as exc:
        raise PixelwiseError(f"serving needs FastAPI, uvicorn and python-multipart ({exc}); "
                             "install them with: pip install 'pixelwise[serve]'") from None
    return _create(model, settings)


KEEP_ALIVE_S = 5  # uvicorn's timeout_keep_alive: an idle kept-alive connection is closed after this


def uvicorn_config(app, settings: ServeSettings | None = None, **overrides):
    """The uvicorn.Config that serve() runs `app` with; `overrides` (e.g. log_level) go to uvicorn.Config.

    The HTTP protocol is pixelwise.serve.protocol's: uvicorn's h11 one, plus a request-head timeout
    (settings.header_timeout_s) and a limit on requests in progress answered with JSON 503 + Retry-After.
    uvicorn's own limit_concurrency stays off: it counts idle connections and answers in plain text.
    """
    settings = settings or ServeSettings()
    import uvicorn

    from pixelwise.serve.protocol import guarded_protocol

    options = {"host": settings.host, "port": settings.port, "log_level": "info", "server_header": False,
               "timeout_keep_alive": KEEP_ALIVE_S, "http": guarded_protocol(settings), "limit_concurrency": None}
    return uvicorn.Config(app, **{**options, **overrides})


def serve(model: str | Path, settings: ServeSettings | None = None) -> None:
    """Load the model once and serve it with uvicorn until interrupted."""
    settings = settings or ServeSettings()
    try:
        import uvicorn
    except ImportError:
        raise PixelwiseError("serving needs uvicorn: pip install 'pixelwise[serve]'") from None
    from PIL import Image

    # PIL's own decompression-bomb guard at our limit (this process only serves); the header check in
    # codec.decode_image refuses such images first either way.
    Image.MAX_IMAGE_PIXELS = max(int(settings.max_pixels), 1)
    app = create_app(model, settings)
    server = uvicorn.Server(uvicorn_config(app, settings))
    try:
        server.run()
    except KeyboardInterrupt:  # as uvicorn.run
        pass
    if not server.started:
        raise PixelwiseError(f"the server did not start on {settings.host}:{settings.port} (see uvicorn's log above)")
