"""The serve page in a real browser: Debian's headless Chromium driven by Playwright for Python.

Starts uvicorn on a free loopback port, uploads an image through the page, waits for the overlay, checks
the legend, the decoded mask and the opacity slider, and saves a screenshot as a test artifact:
$PIXELWISE_ARTIFACTS/serve_page.png (else in pytest's tmp_path). With PIXELWISE_UPDATE_DOCS=1 the
screenshot is also copied to docs/serve_screenshot.png; PIXELWISE_SERVE_MODEL=DIR serves that model
instead of an untrained one and PIXELWISE_SERVE_IMAGE=FILE uploads that image instead of a synthetic
scene (a trained model on a real photo makes a more telling picture).

Skips with the reason when Playwright or /usr/bin/chromium is missing, except under CI=true, where it
must run (.ci/run installs chromium). Playwright's own browser download is never used.
"""
from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path(os.environ.get("PIXELWISE_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
DOCS_SHOT = Path(__file__).resolve().parents[1] / "docs" / "serve_screenshot.png"


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


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base URL, predictor) of a uvicorn server in a thread, on a free loopback port."""
    _require_browser()
    import uvicorn

    import pixelwise as pw
    from pixelwise.data.synthetic import CLASSES, PALETTE
    from pixelwise.serve import ServeSettings, create_app

    model_dir = os.environ.get("PIXELWISE_SERVE_MODEL")
    if not model_dir:
        model = pw.create_model("unet", len(CLASSES), base_channels=4, depth=2)
        model_dir = pw.save_model(model, tmp_path_factory.mktemp("browser") / "model", classes=CLASSES,
                                  palette=PALETTE)
    app = create_app(model_dir, ServeSettings(worker_threads=1, queue_size=2, timeout_s=30))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start within 30 s"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", app.state.predictor
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def artifacts(tmp_path) -> Path:
    out = Path(os.environ.get("PIXELWISE_ARTIFACTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _canvas_pixels(page) -> list[int]:
    return page.evaluate("""() => { const c = document.getElementById('view');
        const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        return Array.from(data.filter((_, i) => i % 97 == 0)); }""")


def test_page_upload_overlay_legend_slider(served, artifacts, tmp_path):
    from playwright.sync_api import sync_playwright

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
        finally:
            browser.close()
