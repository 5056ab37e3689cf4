"""`pixelwise serve`: a web page and a REST API around one saved model (FastAPI + uvicorn).

    from pixelwise.serve import ServeSettings, create_app, serve
    serve("runs/camvid/best", ServeSettings(port=8000))          # blocks; Ctrl-C stops it

FastAPI and uvicorn come with the `serve` extra: pip install 'pixelwise[serve]'.
"""
from __future__ import annotations

from pathlib import Path

from pixelwise.errors import PixelwiseError
from pixelwise.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app", "serve"]


def create_app(model, settings: ServeSettings | None = None):
    """The FastAPI app for a model directory or a Predictor (see pixelwise.serve.app.create_app)."""
    try:
        from pixelwise.serve.app import create_app as _create
    except ImportError as exc:
        raise PixelwiseError(f"serving needs FastAPI, uvicorn and python-multipart ({exc}); "
                             "install them with: pip install 'pixelwise[serve]'") from None
    return _create(model, settings)


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
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", server_header=False,
                timeout_keep_alive=5, limit_concurrency=max(64, 4 * settings.capacity))
