"""The FastAPI app behind `pixelwise serve`: a web page at `/` and a REST API under `/v1`.

    app = create_app("runs/camvid/best", ServeSettings(worker_threads=2))
    uvicorn.run(app, host="127.0.0.1", port=8000)

Routes: GET / (page), GET /static/{app.js,style.css}, POST /v1/segment, GET /v1/model, GET /healthz,
GET /openapi.json. Every error is JSON `{"error": "..."}` with a 4xx/5xx status. Requests never name files:
the page's three files are read once from the package when the app is built.
"""
from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from pixelwise.serve.codec import RequestError
from pixelwise.serve.limits import BodyLimit
from pixelwise.serve.pool import BoundedPool, Busy
from pixelwise.serve.schema import ErrorBody, ModelInfo, SegmentResponse
from pixelwise.serve.settings import ServeSettings
from pixelwise.serve.job import segment as segment_job

log = logging.getLogger("pixelwise.serve")
STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
# The page loads only its own files; images and masks come back as data: and blob: URLs.
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'")
ERRORS = {code: {"model": ErrorBody} for code in (400, 405, 413, 422, 503, 504)}


def load_predictor(model_dir: str | Path, settings: ServeSettings):
    """Predictor.from_dir with the settings' device, precision and tile size."""
    from pixelwise.inference.predictor import Predictor

    return Predictor.from_dir(model_dir, device=settings.device, precision=settings.precision, tile=settings.tile)


def task_predictors(predictor) -> dict:
    """{task name: Predictor} for the model's own task and every other task that reads its outputs (a
    panoptic model also answers semantic and instance requests), all sharing one prepared model."""
    from pixelwise.errors import PixelwiseError
    from pixelwise.tasks import TASKS

    out = {predictor.task.name: predictor}
    for name in TASKS:
        if name in out or not hasattr(predictor, "for_task"):
            continue
        try:
            out[name] = predictor.for_task(name)
        except PixelwiseError:  # this task cannot read the model (or lacks what it needs, e.g. thing classes)
            continue
    return out


def model_info(predictors: dict, settings: ServeSettings) -> dict:
    predictor = next(iter(predictors.values()))
    config = getattr(predictor, "config", {}) or {}
    arch = config.get("arch", {})
    return {
        "name": config.get("name") or arch.get("name", "model"),
        "arch": arch,
        "task": predictor.task.name,
        "tasks": list(predictors),
        "classes": list(predictor.classes),
        "palette": [[int(c) for c in color] for color in predictor.palette],
        "things": list(getattr(predictor.task, "things", [])),
        "preprocessing": config.get("preprocessing", {}),
        "limits": {"max_upload_mb": settings.max_upload_mb, "max_pixels": settings.max_pixels,
                   "timeout_s": settings.timeout_s, "worker_threads": settings.worker_threads,
                   "queue_size": settings.queue_size},
    }


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _page_files() -> dict[str, bytes]:
    root = resources.files("pixelwise.serve") / "static"
    return {name: (root / name).read_bytes() for name in ("index.html", *STATIC)}


def create_app(model, settings: ServeSettings | None = None) -> FastAPI:
    """Build the app around a model directory (str/Path) or an already built Predictor (anything with
    `predict(image) -> Prediction`, `task`, `classes`, `palette` and `config`)."""
    settings = settings or ServeSettings()
    predictor = load_predictor(model, settings) if isinstance(model, (str, Path)) else model
    predictors = task_predictors(predictor)
    info = model_info(predictors, settings)
    pool = BoundedPool(settings.worker_threads, settings.queue_size)
    page = _page_files()

    @asynccontextmanager
    async def lifespan(_app):
        yield
        pool.shutdown()

    # No /docs or /redoc: FastAPI's pages load their scripts from a CDN, and this server must work offline.
    app = FastAPI(title="pixelwise serve", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  description=f"Segmentation with model '{info['name']}' ({len(info['classes'])} classes).")
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes, max_mb=settings.max_upload_mb,
                       idle_s=settings.header_timeout_s, total_s=settings.timeout_s)
    app.state.settings, app.state.predictor, app.state.predictors, app.state.pool = settings, predictor, predictors, pool

    @app.exception_handler(RequestError)
    async def _request_error(_request, exc: RequestError):
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        where = f"{request.method} {request.url.path[:100]}"
        headers = {k.lower(): v for k, v in (getattr(exc, "headers", None) or {}).items()}
        allowed = headers.get("allow", "?")
        message = {404: f"not found: {where}",
                   405: f"method not allowed: {where} (allowed: {allowed})"}.get(exc.status_code, str(exc.detail))
        return _error(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request, exc: RequestValidationError):
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg')}"
                 for e in exc.errors()]
        return _error(422, "invalid request: " + "; ".join(parts))

    @app.exception_handler(Exception)
    async def _internal_error(_request, exc: Exception):
        log.exception("unexpected error")
        return _error(500, f"internal error ({type(exc).__name__})")

    def html_page() -> Response:
        return Response(page["index.html"], media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"})

    app.get("/", include_in_schema=False)(html_page)

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in STATIC:  # a fixed set of names: nothing else is ever looked up
            raise RequestError(404, f"no static file '{name[:64]}'")
        return Response(page[name], media_type=STATIC[name], headers={"X-Content-Type-Options": "nosniff"})

    @app.get("/healthz", summary="Liveness and load")
    def healthz() -> dict:
        return {"status": "ok", "model": info["name"], "in_flight": pool.in_flight, "capacity": pool.capacity}

    @app.get("/v1/model", response_model=ModelInfo, summary="The served model")
    def get_model() -> dict:
        return info

    @app.post("/v1/segment", summary="Segment one image", responses={200: {"model": SegmentResponse}, **ERRORS})
    async def segment(
        request: Request,
        image: UploadFile | None = File(None, description="The image file (PNG, JPEG, WebP, BMP, TIFF, ...)."),
        format: Literal["png", "rle"] = Query("png", description="png: one index PNG; rle: COCO RLE per class."),
        overlay: bool = Query(False, description="Also return the colour overlay as a PNG."),
        task: str | None = Query(None, description="The task to answer (default: the model's own; GET /v1/model "
                                                  "lists those it can answer)."),
    ):
        start = time.perf_counter()
        if image is None or not hasattr(image, "read"):
            form = await request.form()
            raise RequestError(400, "expected a multipart/form-data upload with the image in field 'image'"
                               + (f" (got fields: {', '.join(sorted(form.keys()))[:200]})" if form else ""))
        data = await image.read()
        await image.close()
        task = task or info["task"]
        if task not in predictors:
            raise RequestError(400, f"task={task[:40]}: model '{info['name']}' does not answer it "
                                    f"(it answers: {', '.join(info['tasks'])})")
        try:
            body = await pool.run(segment_job, predictors[task], data, settings, info["name"], format, overlay,
                                  timeout=settings.timeout_s)
        except Busy as exc:
            raise RequestError(503, f"server busy: {exc}; retry later",
                               {"Retry-After": str(settings.retry_after_s)}) from None
        except TimeoutError:
            raise RequestError(504, f"prediction did not finish within {settings.timeout_s:g} s") from None
        body["ms"] = round((time.perf_counter() - start) * 1000, 1)
        return JSONResponse(body)

    return app


def _version() -> str:
    from pixelwise import __version__

    return __version__
