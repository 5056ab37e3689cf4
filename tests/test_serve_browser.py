"""The serve page in a real browser: Debian's headless Chromium driven by Playwright for Python.

Starts uvicorn on a free loopback port, uploads an image through the page, waits for the overlay, checks
the legend, the decoded mask and the opacity slider, and saves a screenshot as a test artifact:
$PIXELWISE_ARTIFACTS/serve_page.png (else in pytest's tmp_path). With PIXELWISE_UPDATE_DOCS=1 the
screenshot is also copied to docs/serve_screenshot.png; PIXELWISE_SERVE_MODEL=DIR serves that model
instead of an untrained one and PIXELWISE_SERVE_IMAGE=FILE uploads that image instead of a synthetic
scene (a trained model on a real photo makes a more telling picture).

The same for a panoptic model (class fill + instance outlines + instance counts; serve_panoptic.png, with
PIXELWISE_UPDATE_DOCS=1 also docs/serve_panoptic_screenshot.png; PIXELWISE_SERVE_PANOPTIC_MODEL=DIR serves
a trained one, as an untrained one may find no instances) and a multi-label one (overlapping classes;
serve_multilabel.png). The outlines are also checked exactly on a panoptic answer built from a synthetic
scene's ground truth, which the test hands to the page in place of the server's (serve_panoptic_truth.png).

Skips with the reason when Playwright or /usr/bin/chromium is missing, except under CI=true, where it
must run (.ci/run installs chromium). Playwright's own browser download is never used.
"""
from __future__ import annotations

import base64
import io
import json
import os
import shutil
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import uvicorn_in_thread

CHROMIUM = Path(os.environ.get("PIXELWISE_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
DOCS = Path(__file__).resolve().parents[1] / "docs"
DOCS_SHOT = DOCS / "serve_screenshot.png"
DOCS_PANOPTIC_SHOT = DOCS / "serve_panoptic_screenshot.png"
THINGS = [3, 4, 5]  # disk, box, triangle in pixelwise.data.synthetic


def _require_browser():
    missing = []
    for module, package in [("playwright.sync_api", "playwright"), ("fastapi", "fastapi"),
                            ("uvicorn", "uvicorn"), ("python_multipart", "python-multipart")]:
        try:
            __import__(module)
        except ImportError:
            missing.append(f"{package} is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} is missing (apt-get install chromium)")
    if missing:
        reason = "browser test needs: " + "; ".join(missing)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)


@contextmanager
def _server(model_dir):
    """Base URL of a uvicorn server for `model_dir` in a thread, on a free loopback port."""
    import uvicorn

    from pixelwise.serve import ServeSettings, create_app

    app = create_app(model_dir, ServeSettings(worker_threads=1, queue_size=2, timeout_s=30))
    with uvicorn_in_thread(uvicorn.Config(app, log_level="warning")) as (port, _server):
        yield f"http://127.0.0.1:{port}", app


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base URL, predictor) of a uvicorn server in a thread, on a free loopback port."""
    _require_browser()
    import pixelwise as pw
    from pixelwise.data.synthetic import CLASSES, PALETTE

    model_dir = os.environ.get("PIXELWISE_SERVE_MODEL")
    if not model_dir:
        model = pw.create_model("unet", len(CLASSES), base_channels=4, depth=2)
        model_dir = pw.save_model(model, tmp_path_factory.mktemp("browser") / "model", classes=CLASSES,
                                  palette=PALETTE)
    with _server(model_dir) as (url, app):
        yield url, app.state.predictor


@pytest.fixture(scope="module")
def served_panoptic(tmp_path_factory):
    """Base URL of a server for a panoptic model (untrained and tiny unless PIXELWISE_SERVE_PANOPTIC_MODEL)."""
    _require_browser()
    import torch

    import pixelwise as pw
    from pixelwise.data.synthetic import CLASSES, PALETTE

    model_dir = os.environ.get("PIXELWISE_SERVE_PANOPTIC_MODEL")
    if not model_dir:
        torch.manual_seed(0)
        model = pw.create_model("panoptic_deeplab", len(CLASSES), encoder="resnet18", aspp_channels=16,
                                decoder_channels=16, instance_decoder_channels=16, head_channels=8, stuff_area=16)
        model_dir = pw.save_model(model, tmp_path_factory.mktemp("browser_pan") / "model", classes=CLASSES,
                                  palette=PALETTE, extra={"task": "panoptic", "things": THINGS})
    with _server(model_dir) as (url, _app):
        yield url


@pytest.fixture(scope="module")
def served_multilabel(tmp_path_factory):
    """Base URL of a server for a tiny untrained multi-label model: the scene's classes + "thing" (their union)."""
    _require_browser()
    import torch

    import pixelwise as pw
    from pixelwise.data.synthetic import CLASSES, PALETTE

    torch.manual_seed(0)
    model = pw.create_model("unet", len(CLASSES) + 1, base_channels=4, depth=2)
    model_dir = pw.save_model(model, tmp_path_factory.mktemp("browser_ml") / "model", classes=CLASSES + ["thing"],
                              palette=list(PALETTE) + [(255, 0, 255)],
                              extra={"task": "multilabel",
                                     "task_options": {"unions": {"thing": ["disk", "box", "triangle"]}}})
    with _server(model_dir) as (url, _app):
        yield url


@pytest.fixture
def artifacts(tmp_path) -> Path:
    out = Path(os.environ.get("PIXELWISE_ARTIFACTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _canvas_pixels(page) -> list[int]:
    return page.evaluate("""() => { const c = document.getElementById('view');
        const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        return Array.from(data.filter((_, i) => i % 97 == 0)); }""")


def _canvas(page, which: str = "document.getElementById('view')") -> np.ndarray:
    """The whole canvas (the page's, or e.g. `view.overlay`) as uint8 (H, W, 4)."""
    w, h, data = page.evaluate(f"""() => {{ const c = {which};
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let s = ''; for (let i = 0; i < d.length; i += 8192) s += String.fromCharCode(...d.subarray(i, i + 8192));
        return [c.width, c.height, btoa(s)]; }}""")
    return np.frombuffer(base64.b64decode(data), np.uint8).reshape(h, w, 4)


def _png(data: str) -> np.ndarray:
    """A base64 index PNG of the answer -> its raw values (palette indices or 16-bit grey)."""
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))


def _post(url: str, path: Path) -> dict:
    """POST /v1/segment with the file, as the page does (the model's own task, format png)."""
    boundary = "pixelwise-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{path.name}\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url + "/v1/segment", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=60) as res:
        return json.loads(res.read())


def _scene(tmp_path: Path, seed: int, size: int = 192):
    from pixelwise.data.synthetic import make_scene

    sample = make_scene(seed, size=size)
    path = tmp_path / f"scene_{seed}.png"
    Image.fromarray(sample.image).save(path)
    return sample, path


def _edges(ids: np.ndarray) -> np.ndarray:
    """Outline pixels as the page defines them: id > 0 and a 4-neighbour with another id."""
    edge = np.zeros(ids.shape, bool)
    edge[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    edge[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    edge[1:, :] |= ids[1:, :] != ids[:-1, :]
    edge[:-1, :] |= ids[:-1, :] != ids[1:, :]
    return edge & (ids > 0)


def _dark(color) -> np.ndarray:
    return np.floor(np.asarray(color) * 0.45 + 0.5).astype(np.uint8)  # the page's outline colour (Math.round)


def _share(pixels: int, total: int) -> str:
    """The page's share of a class, as text."""
    share = 100 * pixels / total
    return "—" if not pixels else f"{share:.2f}%" if share < 0.1 else f"{share:.1f}%"


def _legend(page) -> dict[str, str]:
    names = page.locator("#legend tbody .name").all_inner_texts()
    return dict(zip(names, page.locator("#legend tbody td.num").all_inner_texts()))


@contextmanager
def _page(url: str):
    """(page, errors) of a fresh headless Chromium on the served page, the model information loaded."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            # bypass_csp: Playwright's own polling of wait_for_function evaluates strings, which the page's
            # Content-Security-Policy (script-src 'self') forbids when a poll goes past the first check
            page = browser.new_page(viewport={"width": 1100, "height": 720}, bypass_csp=True)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(url + "/")
            page.wait_for_function("document.getElementById('model-info').textContent.startsWith('model ')")
            yield page, errors
        finally:
            browser.close()


def _upload(page, path: Path) -> None:
    page.set_input_files("#file", str(path))
    page.wait_for_selector("body[data-state='done']", timeout=60_000)


def _toggle(page, class_id: int) -> None:
    page.click(f"#legend tbody tr[data-class-id='{class_id}'] input")


def _shot(page, artifacts: Path, name: str, docs: Path | None = None) -> None:
    shot = artifacts / name
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if docs is not None and os.environ.get("PIXELWISE_UPDATE_DOCS") == "1":
        docs.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, docs)


def test_page_upload_overlay_legend_slider(served, artifacts, tmp_path):
    from pixelwise.data.synthetic import make_scene

    url, predictor = served
    if os.environ.get("PIXELWISE_SERVE_IMAGE"):  # e.g. a real photo for the docs screenshot
        from pixelwise.data.io import read_image

        path = Path(os.environ["PIXELWISE_SERVE_IMAGE"])
        image = read_image(path)
    else:
        image = make_scene(7, size=192).image
        path = tmp_path / "scene.png"
        Image.fromarray(image).save(path)
    expected = np.bincount(predictor.predict(image).semantic.ravel(), minlength=len(predictor.classes))

    with _page(url) as (page, errors):
        page.set_input_files("#file", str(path))
        page.wait_for_selector("body[data-state='done']", timeout=30_000)
        assert page.is_visible("#view")
        size = page.evaluate("[document.getElementById('view').width, document.getElementById('view').height]")
        assert size == [image.shape[1], image.shape[0]]

        names = page.locator("#legend tbody .name").all_inner_texts()
        assert sorted(names) == sorted(predictor.classes)
        shares = page.locator("#legend tbody td.num").all_inner_texts()
        assert sum(float(s.rstrip("%")) for s in shares if s.endswith("%")) == pytest.approx(100, abs=1.0)
        # the page's own PNG decoder recovers the server's class ids exactly
        counts = page.evaluate("""() => { const c = new Array(view.classes.length).fill(0);
            for (const v of view.labels) c[v]++; return c; }""")
        assert counts == expected.tolist()
        assert "ms on the server" in page.inner_text("#timing")
        assert "task semantic" in page.inner_text("#model-info") and page.inner_text("#legend-num") == "share"
        assert not page.is_visible("#dl-segments")  # a semantic answer has no segment map
        assert not page.is_visible("#summary")

        # drag the opacity slider near its left end: the label and the picture change
        before = _canvas_pixels(page)
        box = page.locator("#opacity").bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.1, box["y"] + box["height"] / 2)
        assert int(page.inner_text("#opacity-value").rstrip("%")) < 25
        assert _canvas_pixels(page) != before
        # hide every class: the picture is the bare image; show them again
        page.click("#all-off")
        assert page.locator("#legend tbody input:checked").count() == 0
        page.click("#all-on")
        page.fill("#opacity", "60")
        assert page.inner_text("#opacity-value") == "60%"
        assert page.get_attribute("#dl-mask", "href").startswith("data:image/png;base64,")

        shot = artifacts / "serve_page.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        if os.environ.get("PIXELWISE_UPDATE_DOCS") == "1":
            DOCS_SHOT.parent.mkdir(exist_ok=True)
            shutil.copyfile(shot, DOCS_SHOT)

        # a bad upload shows the server's error and leaves the page usable
        bad = tmp_path / "notes.png"
        bad.write_text("not an image at all")
        page.set_input_files("#file", str(bad))
        page.wait_for_selector("body[data-state='error']", timeout=30_000)
        assert "not an image" in page.inner_text("#status")
        assert not [e for e in errors if "400" not in e], errors  # the 400 itself is logged by Chromium


# --- panoptic: the class fill from "mask", instance outlines from "segment_map", counts in the legend

def test_panoptic_page_fill_outlines_counts(served_panoptic, artifacts, tmp_path):
    from pixelwise.data.synthetic import CLASSES

    url = served_panoptic
    if os.environ.get("PIXELWISE_SERVE_IMAGE"):
        path = Path(os.environ["PIXELWISE_SERVE_IMAGE"])
    else:
        path = _scene(tmp_path, 7)[1]
    answer = _post(url, path)  # what the server answers for this upload (it is deterministic)
    assert answer["task"] == "panoptic"
    ids = _png(answer["segment_map"]["data"]).astype(np.int64)
    semantic = _png(answer["mask"]["data"]).astype(np.int64)
    segments = answer["segments"]
    total = answer["width"] * answer["height"]

    with _page(url) as (page, errors):
        assert "task panoptic" in page.inner_text("#model-info")
        _upload(page, path)
        assert "task panoptic" in page.inner_text("#caption")
        assert page.get_attribute("body", "data-task") == "panoptic"
        # the page holds the server's segments, and its decoder recovers the segment map and the semantic map
        assert page.evaluate("view.segments.length") == len(segments)
        words = page.inner_text("#summary")
        assert words.startswith(f"{len(segments)} segment"), words
        areas = page.evaluate("""() => { const c = {}; for (const v of view.segMap) c[v] = (c[v] || 0) + 1;
            return c; }""")
        assert {int(k): v for k, v in areas.items() if k != "0"} == {s["id"]: s["area"] for s in segments}
        counts = page.evaluate("""() => { const c = new Array(view.classes.length).fill(0);
            for (const v of view.labels) if (v < c.length) c[v]++; return c; }""")
        assert counts == [c["pixels"] for c in answer["classes"]]

        # the legend: every class; thing classes count their instances, stuff classes show their share
        legend = _legend(page)
        assert sorted(legend) == sorted(CLASSES)
        for row in answer["classes"]:
            if row["instances"] is None:
                assert legend[row["name"]] == _share(row["pixels"], total), row
            else:
                n = row["instances"]
                want = f"{n} instance{'' if n == 1 else 's'}" if n or row["pixels"] else "—"
                assert legend[row["name"]] == want, row
        assert page.inner_text("#legend-num") == "share / count"

        full = _canvas(page)
        assert full.shape[:2] == ids.shape
        page.click("#all-off")
        bare = _canvas(page)
        drawn = semantic < len(CLASSES)
        assert (full != bare).any(-1)[drawn].mean() > 0.5  # the overlay shows where a class is drawn
        page.click("#all-on")
        np.testing.assert_array_equal(_canvas(page), full)

        # outlines, where the model found more than one segment: opaque, in the darkened class colour
        edges = _edges(ids)
        colors = {row["id"]: row["color"] for row in answer["classes"]}
        seg_class = {s["id"]: s["class"] for s in segments}
        if edges.any():
            for sid, cls in seg_class.items():
                mask = edges & (ids == sid)
                assert (full[mask] == [*_dark(colors[cls]), 255]).all(), f"outline of segment {sid}"
            # hiding a class hides its outlines
            cls = seg_class[int(ids[edges][0])]
            _toggle(page, cls)
            mask = edges & np.isin(ids, [sid for sid, c in seg_class.items() if c == cls])
            assert ((_canvas(page)[mask][:, :3] != _dark(colors[cls])).any(-1)).mean() > 0.99
            _toggle(page, cls)

        assert page.get_attribute("#dl-mask", "href") == "data:image/png;base64," + answer["mask"]["data"]
        assert page.is_visible("#dl-segments")
        assert page.get_attribute("#dl-segments", "href") == "data:image/png;base64," + answer["segment_map"]["data"]
        _shot(page, artifacts, "serve_panoptic.png", DOCS_PANOPTIC_SHOT)
        assert not errors, errors


def _truth_answer(sample, classes, palette) -> tuple[dict, np.ndarray]:
    """(answer, segment ids): the /v1/segment panoptic answer for a synthetic scene's ground truth, encoded
    as the server does: one segment per stuff class present and per counted object."""
    from pixelwise.data.io import index_png_bytes
    from pixelwise.tasks.semantic.task import class_table

    semantic = np.asarray(sample.semantic, np.int64)
    ids = np.zeros(semantic.shape, np.int64)
    segments = []
    objects = np.zeros(semantic.shape, bool)
    for mask in sample.instances.masks:
        objects |= mask
    for cls in range(len(classes)):
        if cls in THINGS or not ((semantic == cls) & ~objects).any():
            continue
        segments.append({"class": cls, "isthing": False, "mask": (semantic == cls) & ~objects})
    for mask, cls in zip(sample.instances.masks, sample.instances.class_ids):
        segments.append({"class": int(cls), "isthing": True, "mask": mask})
    for k, seg in enumerate(segments, 1):
        ids[seg.pop("mask")] = k
        seg.update(id=k, name=classes[seg["class"]], area=int((ids == k).sum()), score=1.0,
                   rle={"size": list(ids.shape), "counts": ""})  # the page does not read the RLE
    table = class_table(semantic, classes, palette)
    for row in table:
        row["instances"] = sum(s["isthing"] and s["class"] == row["id"] for s in segments) \
            if row["id"] in THINGS else None
    b64 = lambda data: base64.b64encode(data).decode("ascii")  # noqa: E731
    return {"width": ids.shape[1], "height": ids.shape[0], "model": "ground truth", "task": "panoptic",
            "classes": table, "segments": segments, "ms": 1.0,
            "mask": {"format": "png", "encoding": "index", "data": b64(index_png_bytes(semantic, palette))},
            "segment_map": {"format": "png", "encoding": "index", "data": b64(index_png_bytes(ids))}}, ids


def test_panoptic_page_outlines_and_shades_exactly(served_panoptic, artifacts, tmp_path):
    """An answer with known instances (a scene's ground truth, handed to the page in place of the server's):
    every outline pixel and only those carry the darkened class colour, each object of a class has its own
    shade, and hiding a class removes its fill and its outlines."""
    from pixelwise.data.synthetic import CLASSES, PALETTE

    sample, path = _scene(tmp_path, 13)  # two disks, two boxes, two triangles
    answer, ids = _truth_answer(sample, CLASSES, PALETTE)
    edges = _edges(ids)
    seg_class = {s["id"]: s["class"] for s in answer["segments"]}
    class_of = np.vectorize(lambda k: seg_class.get(int(k), -1))(ids)
    dark = np.array([_dark(c) for c in PALETTE] + [[0, 0, 0]], np.uint8)[class_of]

    with _page(served_panoptic) as (page, errors):
        page.route("**/v1/segment", lambda route: route.fulfill(status=200, content_type="application/json",
                                                                body=json.dumps(answer)))
        _upload(page, path)
        full = _canvas(page)
        np.testing.assert_array_equal(full[edges][:, :3], dark[edges])
        assert (full[edges][:, 3] == 255).all()
        inner = ~edges
        assert (full[inner][:, :3] == dark[inner]).all(-1).mean() < 0.01  # elsewhere: image + fill

        legend = _legend(page)
        for cls in THINGS:
            assert legend[CLASSES[cls]] == "2 instances"
        summary = f"{len(answer['segments'])} segments, 6 of them counted objects (outlined)"
        assert page.inner_text("#summary") == summary

        # each object of a class in its own shade (the first in the class colour), inside its outline
        overlay = _canvas(page, "view.overlay")
        for cls in THINGS:
            shades = []
            for sid in [s["id"] for s in answer["segments"] if s["class"] == cls]:
                inside = overlay[(ids == sid) & inner]
                assert len(np.unique(inside.reshape(-1, 4), axis=0)) == 1, f"segment {sid} in one colour"
                shades.append(tuple(inside[0]))
            assert shades[0] == (*PALETTE[cls], 255) and len(set(shades)) == len(shades), shades

        # hide the boxes: no fill and no outline where they were; the other outlines stay
        page.click("#all-off")
        bare = _canvas(page)
        assert (bare[..., :3] != dark).all(-1)[edges].mean() > 0.99
        page.click("#all-on")
        _toggle(page, 4)
        now = _canvas(page)
        boxes = class_of == 4
        np.testing.assert_array_equal(now[boxes & (sample.semantic == 4)], bare[boxes & (sample.semantic == 4)])
        np.testing.assert_array_equal(now[edges & ~boxes], full[edges & ~boxes])
        assert (_canvas(page, "view.overlay")[boxes][:, 3] == 0).all()
        _toggle(page, 4)
        np.testing.assert_array_equal(_canvas(page), full)
        _shot(page, artifacts, "serve_panoptic_truth.png")
        assert not errors, errors


# --- multi-label: overlapping classes, each pixel in the mean colour of the classes present

def _mean_colors(bits: np.ndarray, colors, shown: list[int]) -> np.ndarray:
    """The page's overlay of a bits mask: RGBA, the rounded mean colour of the shown classes present."""
    on = np.stack([(bits >> c) & 1 for c in shown], -1).astype(np.int64)  # (H, W, K)
    n = on.sum(-1, keepdims=True)
    rgb = np.floor(on @ np.array([colors[c] for c in shown], np.int64) / np.maximum(n, 1) + 0.5)
    return np.concatenate([np.where(n > 0, rgb, 0), np.where(n > 0, 255, 0)], -1).astype(np.uint8)


def test_multilabel_page_overlapping_classes(served_multilabel, artifacts, tmp_path):
    from pixelwise.data.synthetic import CLASSES

    url = served_multilabel
    path = _scene(tmp_path, 7)[1]
    answer = _post(url, path)
    assert answer["task"] == "multilabel" and answer["mask"]["encoding"] == "bits"
    bits = _png(answer["mask"]["data"]).astype(np.int64)
    total = answer["width"] * answer["height"]
    colors = [row["color"] for row in answer["classes"]]

    with _page(url) as (page, errors):
        assert "task multilabel" in page.inner_text("#model-info")
        _upload(page, path)
        assert "task multilabel" in page.inner_text("#caption")
        legend = _legend(page)
        assert sorted(legend) == sorted(CLASSES + ["thing"])
        assert "sum past 100%" in page.inner_text("#summary")
        assert legend == {row["name"]: _share(row["pixels"], total) for row in answer["classes"]}
        # the page's decoder recovers the bits: per class, the pixels where it is present
        counts = page.evaluate("""() => view.classes.map((c) => {
            let n = 0; for (const v of view.labels) n += (v >> c.id) & 1; return n; })""")
        assert counts == [row["pixels"] for row in answer["classes"]] == [int(((bits >> c) & 1).sum())
                                                                         for c in range(len(colors))]
        shown = list(range(len(colors)))
        np.testing.assert_array_equal(_canvas(page, "view.overlay"), _mean_colors(bits, colors, shown))

        # hiding the most common class changes the picture: the others' mean is left where it was present
        before = _canvas(page)
        top = max(answer["classes"], key=lambda row: row["pixels"])
        assert top["pixels"] > 0
        _toggle(page, top["id"])
        assert page.locator("#legend tbody input:checked").count() == len(colors) - 1
        shown.remove(top["id"])
        np.testing.assert_array_equal(_canvas(page, "view.overlay"), _mean_colors(bits, colors, shown))
        assert (_canvas(page) != before).any()
        _toggle(page, top["id"])
        np.testing.assert_array_equal(_canvas(page), before)
        assert page.get_attribute("#dl-mask", "href") == "data:image/png;base64," + answer["mask"]["data"]
        assert not page.is_visible("#dl-segments")
        _shot(page, artifacts, "serve_multilabel.png")
        assert not errors, errors


# --- a multi-band model: the page uploads a 4-band GeoTIFF and draws the server's RGB composite under the mask

@pytest.fixture(scope="module")
def served_bands(tmp_path_factory):
    """(base URL, predictor) of a server for a tiny untrained 4-band model (blue, green, red, nir + ndvi)."""
    _require_browser()
    pytest.importorskip("rasterio")
    import torch

    import pixelwise as pw
    from pixelwise.data.bands import BandSpec
    from pixelwise.data.spectral import CLASSES, PALETTE

    torch.manual_seed(0)
    spec = BandSpec.build(["blue", "green", "red", "nir"], 4, "uint16", indices=["ndvi"], max_value=10000)
    model = pw.create_model("unet", len(CLASSES), base_channels=4, depth=2, in_chans=spec.channels)
    pre = {"mean": [0.1] * spec.channels, "std": [0.1] * spec.channels, "bands": spec.to_dict()}
    model_dir = pw.save_model(model, tmp_path_factory.mktemp("browser_bands") / "model", classes=CLASSES,
                              palette=PALETTE, preprocessing=pre)
    with _server(model_dir) as (url, app):
        yield url, app.state.predictor


def test_multi_band_page_draws_the_composite(served_bands, artifacts, tmp_path):
    from pixelwise.data.formats import open_dataset
    from pixelwise.data.raster import write_geotiff

    url, predictor = served_bands
    sample = open_dataset("spectral:default", "test", bands=4, size=96, count=1)[0]
    path = write_geotiff(tmp_path / "scene.tif", sample.image, sample.meta["raster"])
    composite = predictor.display(sample.image)
    with _page(url) as (page, errors):
        _upload(page, path)
        assert "cannot show the image" not in page.inner_text("#caption")
        size = page.evaluate("[document.getElementById('view').width, document.getElementById('view').height]")
        assert size == [96, 96]
        page.click("#all-off")  # every class hidden: the canvas is the composite itself
        drawn = _canvas(page)[..., :3].astype(int)
        assert np.abs(drawn - composite.astype(int)).max() <= 2
        counts = page.evaluate("""() => { const c = new Array(view.classes.length).fill(0);
            for (const v of view.labels) c[v]++; return c; }""")
        expected = np.bincount(predictor.predict(sample.image).semantic.ravel(), minlength=len(predictor.classes))
        assert counts == expected.tolist()
        _shot(page, artifacts, "serve_bands.png")
        assert not errors, errors
