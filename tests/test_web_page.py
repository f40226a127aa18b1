"""The web page in a real headless Chromium: upload, class, overlay, slider, phone width, no egress."""

import os
import shutil
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import uvicorn
from PIL import Image
from test_export import CLASSES, make_run

from mediscan.predict import Classifier
from mediscan.serve.app import create_app

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]


def chromium_or_skip() -> str:
    """Debian's chromium; missing is a failure in CI (`make browser` installs it), else a skip."""
    path = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    if path:
        return path
    message = "chromium is not installed (apt-get install chromium, or `make browser`)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    """The app on a free loopback port, served by uvicorn in a background thread."""
    run = make_run(tmp_path_factory.mktemp("runs") / "web")
    app = create_app(Classifier.load(run, device="cpu"), run_dir=run)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "scan.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 110), dtype=np.uint8)).save(path)
    return path


def open_page(browser, base_url, **context_options):
    """A fresh page on `/`, recording every request URL and any page/console error."""
    page = browser.new_context(**context_options).new_page()
    page.requests, page.errors = [], []
    page.on("request", lambda request: page.requests.append(request.url))
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("console", lambda msg: msg.type == "error" and page.errors.append(msg.text))
    page.goto(base_url)
    page.wait_for_selector("#card dd")  # the model card has loaded
    return page


def wait_until(page, expression: str, timeout: float = 20.0) -> None:
    """Poll `expression` with page.evaluate (wait_for_function's eval is blocked by the CSP)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.05)


def upload_and_wait(page, path):
    page.set_input_files("#file", str(path))
    wait_until(page, "document.getElementById('predicted-class').textContent.length > 0")
    wait_until(page, "document.getElementById('overlay').naturalWidth > 0")


def assert_loopback_only(page):
    for url in page.requests:
        parsed = urlparse(url)
        assert parsed.scheme == "data" or parsed.hostname == "127.0.0.1", url
    assert not page.errors, page.errors


def test_upload_shows_class_bars_overlay_and_slider(browser, base_url, scan):
    page = open_page(browser, base_url)
    assert "Not a medical device" in page.inner_text("header")
    assert "research" in page.inner_text("#card").lower()
    upload_and_wait(page, scan)
    assert page.inner_text("#predicted-class") in CLASSES
    assert page.locator("#bars li").count() == len(CLASSES)
    assert page.locator("#overlay").is_visible() and page.locator("#image").is_visible()
    before = page.eval_on_selector("#overlay", "el => el.style.opacity")
    page.focus("#opacity")
    page.keyboard.press("Home")
    after = page.eval_on_selector("#overlay", "el => el.style.opacity")
    assert before == "1" and after == "0"
    page.keyboard.press("ArrowRight")
    assert float(page.eval_on_selector("#overlay", "el => el.style.opacity")) == pytest.approx(0.05)
    assert page.get_by_label("Overlay opacity").count() == 1
    assert_loopback_only(page)
    page.context.close()


def test_phone_viewport_has_no_horizontal_scroll(browser, base_url, scan):
    page = open_page(browser, base_url, viewport={"width": 390, "height": 844},
                     device_scale_factor=2, is_mobile=True, has_touch=True)
    upload_and_wait(page, scan)
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], widths
    assert page.locator("#overlay").bounding_box()["width"] <= 390
    assert_loopback_only(page)
    page.context.close()


def test_server_error_message_is_shown(browser, base_url, tmp_path):
    page = open_page(browser, base_url)
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    page.set_input_files("#file", str(text))
    wait_until(page, "document.getElementById('status').classList.contains('error')")
    assert "not a supported image" in page.inner_text("#status")
    page.errors.clear()  # the browser logs the 415 response itself
    assert_loopback_only(page)
    page.context.close()
