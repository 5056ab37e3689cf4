"""pixelwise serve: every endpoint and every bad input through FastAPI's TestClient, the bounded pool
(503 + Retry-After, 504), the panoptic plug-in point, COCO RLE against pycocotools, and one real uvicorn run."""
from __future__ import annotations

import base64
import io
import json
import socket
import struct
import threading
import time
import zlib

import numpy as np
import torch
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="serving needs the 'serve' extra (fastapi, uvicorn, python-multipart)")
pytest.importorskip("python_multipart", reason="serving needs python-multipart")
from fastapi.testclient import TestClient  # noqa: E402

import pixelwise as pw  # noqa: E402
from pixelwise import rle  # noqa: E402
from pixelwise.serve import ServeSettings, create_app  # noqa: E402
from pixelwise.serve.app import model_info  # noqa: E402
from pixelwise.tasks import build_task  # noqa: E402

CLASSES = ["sky", "grass", "road", "disk", "box", "triangle"]
PALETTE = [(70, 130, 180), (107, 142, 35), (128, 64, 128), (220, 20, 60), (250, 170, 30), (0, 0, 230)]
MAX_PIXELS = 200 * 200


def encode(image: np.ndarray | Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_with_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but whose data is a few bytes: a decompression bomb's shape."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + png_chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model = pw.create_model("unet", 6, base_channels=4, depth=2)
    return pw.save_model(model, tmp_path_factory.mktemp("serve") / "model", classes=CLASSES, palette=PALETTE)


@pytest.fixture(scope="module")
def app(model_dir):
    return create_app(model_dir, ServeSettings(max_pixels=MAX_PIXELS, max_upload_mb=0.25, worker_threads=1,
                                               queue_size=4, timeout_s=30))


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    img = np.zeros((48, 64, 3), np.uint8)
    img[:20] = (120, 170, 230)
    img[20:] = (60, 150, 50)
    return (img + rng.integers(0, 30, img.shape)).astype(np.uint8)


def post(client, data: bytes, name="x.png", field="image", query="", mime="image/png"):
    return client.post(f"/v1/segment{query}", files={field: (name, data, mime)})


def decode_png_b64(data: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))


# --- the API on good input

def test_segment_png_matches_predictor(client, app, image):
    res = post(client, encode(image))
    assert res.status_code == 200, res.text
    body = res.json()
    assert list(body) == ["width", "height", "model", "task", "classes", "mask", "ms"]
    assert (body["width"], body["height"], body["model"], body["task"]) == (64, 48, "unet", "semantic")
    assert [c["name"] for c in body["classes"]] == CLASSES
    assert [tuple(c["color"]) for c in body["classes"]] == PALETTE
    assert [c["id"] for c in body["classes"]] == list(range(6))
    assert sum(c["pixels"] for c in body["classes"]) == 64 * 48
    assert body["mask"]["format"] == "png" and body["mask"]["encoding"] == "index" and body["ms"] > 0
    mask = Image.open(io.BytesIO(base64.b64decode(body["mask"]["data"])))
    assert mask.mode == "P" and mask.size == (64, 48)
    assert np.asarray(mask.getpalette()[:18]).reshape(6, 3).tolist() == [list(c) for c in PALETTE]
    expected = app.state.predictor.predict(image).semantic
    np.testing.assert_array_equal(np.asarray(mask), expected)
    counts = np.bincount(expected.ravel(), minlength=6)
    assert [c["pixels"] for c in body["classes"]] == counts.tolist()


def test_segment_rle_and_overlay(client, app, image):
    res = post(client, encode(image), query="?format=rle&overlay=1")
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["mask"]["format"] == "rle" and body["mask"]["size"] == [48, 64]
    labels = np.full((48, 64), -1)
    for seg in body["mask"]["segments"]:
        labels[rle.decode(seg["rle"])] = seg["id"]
    np.testing.assert_array_equal(labels, app.state.predictor.predict(image).semantic)
    overlay = decode_png_b64(body["overlay"]["data"])
    assert overlay.shape == (48, 64, 3) and body["overlay"]["format"] == "png"


def test_upload_filename_is_never_used_as_a_path(client, image, tmp_path):
    target = tmp_path / "written.png"
    res = post(client, encode(image), name=str(target))
    assert res.status_code == 200 and not target.exists()
    res = post(client, encode(image), name="../../../../etc/passwd")
    assert res.status_code == 200 and res.json()["width"] == 64


@pytest.mark.parametrize("kind", ["jpeg", "grey", "rgba", "16bit", "palette", "exif_rotated"])
def test_image_kinds(client, image, kind):
    h, w = image.shape[:2]
    if kind == "jpeg":
        data, size = encode(image, "JPEG", quality=90), (w, h)
    elif kind == "grey":
        data, size = encode(image[..., 0]), (w, h)
    elif kind == "rgba":
        data, size = encode(np.dstack([image, np.full((h, w), 128, np.uint8)])), (w, h)
    elif kind == "16bit":
        data, size = encode(Image.fromarray(image[..., 0].astype(np.uint16) * 200)), (w, h)
    elif kind == "palette":
        data, size = encode(Image.fromarray(image).quantize(8)), (w, h)
    else:  # EXIF orientation 6: the camera was turned; the answer is for the upright (rotated) image
        exif = Image.Exif()
        exif[0x0112] = 6
        data, size = encode(Image.fromarray(image), "JPEG", exif=exif), (h, w)
    res = post(client, data)
    assert res.status_code == 200, res.text
    assert (res.json()["width"], res.json()["height"]) == size


def test_model_health_openapi(client):
    info = client.get("/v1/model").json()
    assert info["classes"] == CLASSES and info["palette"] == [list(c) for c in PALETTE]
    assert info["arch"]["name"] == "unet" and "mean" in info["preprocessing"] and info["tasks"] == ["semantic"]
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    schema = client.get("/openapi.json").json()
    assert {"/v1/segment", "/v1/model", "/healthz"} <= set(schema["paths"])
    body = schema["paths"]["/v1/segment"]["post"]["requestBody"]["content"]
    ref = body["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert "image" in schema["components"]["schemas"][ref]["properties"]
    assert {"format", "overlay", "task"} <= {p["name"] for p in schema["paths"]["/v1/segment"]["post"]["parameters"]}


def test_page_is_self_contained(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name, mime in [("app.js", "javascript"), ("style.css", "text/css")]:
        res = client.get(f"/static/{name}")
        assert res.status_code == 200 and mime in res.headers["content-type"]
        assert "http://" not in res.text and "https://" not in res.text  # nothing fetched from elsewhere
    assert "https://" not in page.text and "http://" not in page.text
    assert client.get("/docs").status_code == 404  # FastAPI's docs page would load a CDN


# --- bad input: a 4xx JSON error naming the problem, and the server keeps serving

def _truncated(image) -> bytes:
    data = encode(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    return data[: len(data) // 2]


def _bomb() -> bytes:
    """A real one: 3000x3000 zeros, a few KB compressed, 9 MP decoded."""
    return encode(Image.new("L", (3000, 3000)), optimize=True)


BAD = {  # name: (request kwargs builder, status, words the error must contain)
    "not an image": (lambda img: {"data": b"hello, this is text"}, 400, "not an image"),
    "empty file": (lambda img: {"data": b""}, 400, "empty"),
    "truncated PNG": (lambda img: {"data": _truncated(img)}, 400, "truncated"),
    "truncated JPEG": (lambda img: {"data": encode(img, "JPEG")[:300], "mime": "image/jpeg"}, 400, "truncated"),
    "zero-size PNG": (lambda img: {"data": png_with_header(0, 10)}, 400, "zero-size"),
    "over max-pixels": (lambda img: {"data": encode(np.zeros((300, 300, 3), np.uint8))}, 413, "too large"),
    "bomb header 100000x100000": (lambda img: {"data": png_with_header(100_000, 100_000)}, 413, "too large"),
    "bomb 3000x3000 zeros": (lambda img: {"data": _bomb()}, 413, "too large"),
    "over max-upload-mb": (lambda img: {"data": b"\0" * 400_000}, 413, "upload too large"),
    "wrong field name": (lambda img: {"data": encode(img), "field": "file"}, 400, "field 'image'"),
    "format=xml": (lambda img: {"data": encode(img), "query": "?format=xml"}, 422, "format"),
    "task=panoptic on a model without thing classes": (lambda img: {"data": encode(img), "query": "?task=panoptic"},
                                                       400, "does not answer it"),
    "task=bogus": (lambda img: {"data": encode(img), "query": "?task=bogus"}, 400, "it answers: semantic"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_upload(client, image, name):
    build, status, words = BAD[name]
    res = post(client, **build(image))
    assert res.status_code == status, (name, res.status_code, res.text)
    assert res.headers["content-type"].startswith("application/json")
    assert words in res.json()["error"], res.json()
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("method, path, data, status, words", [
    ("GET", "/v1/segment", None, 405, "method not allowed"),
    ("PUT", "/v1/segment", None, 405, "allowed: POST"),
    ("DELETE", "/v1/model", None, 405, "method not allowed"),
    ("POST", "/healthz", None, 405, "method not allowed"),
    ("POST", "/v1/segment", None, 400, "field 'image'"),  # no body at all
    ("POST", "/v1/segment", {"image": "not a file"}, 422, "image"),  # the field, but as text
    ("GET", "/static/..%2F..%2Fcli.py", None, 404, "not"),
    ("GET", "/static/%2Fetc%2Fpasswd", None, 404, "not"),
    ("GET", "/etc/passwd", None, 404, "not found"),
])
def test_bad_request(client, method, path, data, status, words):
    res = client.request(method, path, data=data)
    assert res.status_code == status, res.text
    assert words in res.json()["error"]
    assert client.get("/healthz").status_code == 200


def test_upload_limit_streamed_without_length(client):
    """A chunked body (no Content-Length) is counted as it arrives."""
    def chunks():
        for _ in range(10):
            yield b"\0" * 50_000
    res = client.post("/v1/segment", content=chunks(),
                      headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert res.status_code == 413 and "upload too large" in res.json()["error"]


# --- the bounded pool: busy -> 503 + Retry-After, slow -> 504

class SlowPredictor:
    """Predictor-like: waits for `release` (or `delay` seconds) before answering with all zeros."""

    classes, palette = ["a", "b"], [(0, 0, 0), (255, 255, 255)]
    config = {"arch": {"name": "slow"}, "classes": ["a", "b"], "preprocessing": {}}
    task = build_task("semantic", classes, palette)

    def __init__(self, delay: float = 10.0):
        self.release, self.delay = threading.Event(), delay

    def predict(self, image, return_probs=False):
        self.release.wait(self.delay)
        return pw.Prediction(self.task, semantic=np.zeros(image.shape[:2], np.int64))


def test_busy_gives_503_with_retry_after(image):
    slow = SlowPredictor()
    app = create_app(slow, ServeSettings(worker_threads=1, queue_size=0, retry_after_s=3))
    first: dict = {}
    worker = threading.Thread(target=lambda: first.update(res=post(TestClient(app), encode(image))))
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while app.state.pool.in_flight < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        res = post(TestClient(app), encode(image))
        assert res.status_code == 503 and res.headers["retry-after"] == "3"
        assert "busy" in res.json()["error"]
        assert TestClient(app).get("/healthz").json()["in_flight"] == 1
    finally:
        slow.release.set()
        worker.join(10)
    assert first["res"].status_code == 200
    assert post(TestClient(app), encode(image)).status_code == 200  # the slot came back


def test_timeout_gives_504(image):
    slow = SlowPredictor(delay=1.0)
    client = TestClient(create_app(slow, ServeSettings(timeout_s=0.2)))
    res = post(client, encode(image))
    assert res.status_code == 504 and "0.2 s" in res.json()["error"]
    assert client.get("/healthz").status_code == 200


# --- a panoptic model answers panoptic (its own task), semantic and instance requests

@pytest.fixture(scope="module")
def panoptic_client(tmp_path_factory):
    torch.manual_seed(0)
    model = pw.create_model("panoptic_deeplab", 6, encoder="resnet18", aspp_channels=16, decoder_channels=16,
                            instance_decoder_channels=16, head_channels=8, stuff_area=16)
    directory = pw.save_model(model, tmp_path_factory.mktemp("pan") / "model", classes=CLASSES, palette=PALETTE,
                              extra={"task": "panoptic", "things": [3, 4, 5]})
    return TestClient(create_app(directory, ServeSettings(precision="fp32"))), directory


def test_panoptic_model_answers_its_segments(panoptic_client, image):
    client, directory = panoptic_client
    info = client.get("/v1/model").json()
    assert info["task"] == "panoptic" and info["tasks"] == ["panoptic", "semantic", "instance"]
    body = post(client, encode(image), query="?overlay=1").json()
    expected = pw.Predictor.from_dir(directory, device="cpu", precision="fp32").predict(image)
    ids, segments = expected.panoptic
    assert body["task"] == "panoptic" and len(body["segments"]) == len(segments)
    for got, seg in zip(body["segments"], segments):
        assert (got["id"], got["class"], got["area"]) == (seg["id"], seg["category_id"], seg["area"])
        np.testing.assert_array_equal(rle.decode(got["rle"]), ids == seg["id"])
    np.testing.assert_array_equal(decode_png_b64(body["segment_map"]["data"]), ids)
    classes = np.full(ids.shape, 255)
    for seg in segments:
        classes[ids == seg["id"]] = seg["category_id"]
    np.testing.assert_array_equal(decode_png_b64(body["mask"]["data"]), classes)  # the segments' classes
    assert sum(c["pixels"] for c in body["classes"]) == (ids > 0).sum()
    assert decode_png_b64(body["overlay"]["data"]).shape == image.shape
    semantic = post(client, encode(image), query="?task=semantic").json()
    np.testing.assert_array_equal(decode_png_b64(semantic["mask"]["data"]), expected.semantic)
    instance = post(client, encode(image), query="?task=instance").json()
    assert instance["task"] == "instance" and all(s["isthing"] for s in instance["segments"])


# --- COCO RLE: numpy encoder == pycocotools

@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode on numpy 2
def test_rle_numpy_matches_pycocotools():
    rng = np.random.default_rng(0)
    masks = [np.zeros((5, 7), bool), np.ones((5, 7), bool), np.eye(9, dtype=bool), np.ones((1, 1), bool)]
    masks += [rng.random((int(h), int(w))) < p for h, w, p in zip(rng.integers(1, 60, 40), rng.integers(1, 60, 40),
                                                                   rng.random(40))]
    big = np.zeros((600, 800), bool)
    big[50:500, 100:700] = True
    masks.append(big)
    try:
        from pycocotools import mask as coco
    except ImportError:
        coco = None
    for mask in masks:
        ours = rle.encode_numpy(mask)
        np.testing.assert_array_equal(rle.decode(ours), mask)
        if coco is not None:
            theirs = coco.encode(np.asfortranarray(mask.astype(np.uint8)))
            assert ours["counts"] == theirs["counts"].decode() and ours["size"] == list(theirs["size"])
            np.testing.assert_array_equal(coco.decode({**ours, "counts": ours["counts"].encode()}), mask)
    if coco is None:
        pytest.skip("pycocotools not installed: checked the numpy RLE against its own decoder only")


# --- settings, CLI, and a real uvicorn server

def test_settings_are_checked():
    from pixelwise.errors import ConfigError

    for bad in [{"worker_threads": 0}, {"queue_size": -1}, {"max_upload_mb": 0}, {"tile": 8}, {"timeout_s": 0}]:
        with pytest.raises(ConfigError):
            ServeSettings(**bad)
    assert ServeSettings().host == "127.0.0.1"  # loopback unless told otherwise


def test_cli_serve_help_and_bad_dir(tmp_path, capsys):
    from pixelwise.cli import main

    try:
        main(["serve", "--help"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    out = capsys.readouterr().out
    for option in ["--host", "--port", "--workers-threads", "--max-upload-mb", "--max-pixels", "--tile",
                   "--precision"]:
        assert option in out
    with pytest.raises(SystemExit) as exc:
        main(["serve", str(tmp_path / "missing")])
    assert exc.value.code == 2 and "not a pixelwise model directory" in capsys.readouterr().err


def test_real_server_declared_oversize_and_keeps_serving(app, image):
    import http.client

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        conn.putrequest("POST", "/v1/segment")
        conn.putheader("Content-Type", "multipart/form-data; boundary=xyz")
        conn.putheader("Content-Length", str(50 * 1024 * 1024))
        conn.endheaders()
        conn.send(b"\0" * 1024)  # the server answers from the header alone
        res = conn.getresponse()
        assert res.status == 413 and "upload too large" in json.loads(res.read())["error"]
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        boundary, payload = "xyz", encode(image)
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + payload + f"\r\n--{boundary}--\r\n".encode()
        conn.request("POST", "/v1/segment?format=rle", body,
                     {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        res = conn.getresponse()
        assert res.status == 200 and json.loads(res.read())["mask"]["format"] == "rle"
    finally:
        server.should_exit = True
        thread.join(10)


def test_model_info_lists_limits(app):
    info = model_info(app.state.predictors, app.state.settings)
    assert info["limits"]["max_pixels"] == MAX_PIXELS
