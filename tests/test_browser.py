"""The study report as a reader sees it: headless Chromium (Debian's, via Selenium).

Uses the system's ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` (packages ``chromium`` and
``chromium-driver``); nothing is downloaded at run time. CI installs them (``.ci/run``) and sets
``DECAYLAB_REQUIRE_BROWSER=1``, so there a missing browser fails the test instead of skipping it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import pytest

from _report_results import rendered_report

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
REQUIRED = os.environ.get("DECAYLAB_REQUIRE_BROWSER") == "1"
# Printable area of an A4 page with the print stylesheet's 14 mm × 12 mm margins, in CSS px.
PRINT_WIDTH_PX = round((210 - 24) / 25.4 * 96)
PRINT_HEIGHT_PX = round((297 - 28) / 25.4 * 96)


def _need(condition: bool, why: str) -> None:
    if condition:
        return
    message = f"{why}; install with `apt-get install -y chromium chromium-driver` (make browser)"
    if REQUIRED:
        pytest.fail(message + " [DECAYLAB_REQUIRE_BROWSER=1: this test must run]")
    pytest.skip(message)


@pytest.fixture(scope="module")
def driver():
    _need(
        Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(),
        f"{CHROMIUM} or {CHROMEDRIVER} is missing",
    )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _need(False, "selenium is not installed (pip install -e '.[dev]')")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1366,768",
        "--hide-scrollbars",
        "--no-first-run",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    browser.set_page_load_timeout(60)
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def report() -> Path:
    return rendered_report()


def _open(driver, url: str) -> None:
    """Load ``url`` with empty logs, and wait until every image has finished (or failed)."""
    driver.get_log("browser")
    driver.get_log("performance")
    driver.get(url)
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "Promise.all(Array.from(document.images).map(i => i.complete ? 0 :"
        " new Promise(r => { i.onload = r; i.onerror = r; }))).then(() => done(0));"
    )


def _requested_urls(driver) -> list[str]:
    """Every URL the page asked the network stack for (DevTools Network events)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    urls += driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    return urls


def _leaving(urls: list[str]) -> list[str]:
    return [u for u in urls if not u.startswith(("data:", "file:"))]


def _errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _images(driver) -> list[dict]:
    return driver.execute_script(
        "return Array.from(document.images).map(i => ({complete: i.complete,"
        " width: i.naturalWidth, height: i.naturalHeight, src: i.src.slice(0, 22)}))"
    )


def test_report_loads_offline_without_errors(driver, report, tmp_path):
    """Every figure decodes, no console error, no request leaves the file; screenshots saved."""
    _open(driver, report.as_uri())
    images = _images(driver)
    assert len(images) == 7
    for image in images:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
        assert image["src"].startswith("data:image/png;base64")
    assert _errors(driver) == []
    urls = _requested_urls(driver)
    assert report.as_uri() in urls  # the log is live: it saw the page itself
    assert _leaving(urls) == []

    headings = driver.execute_script(
        "return Array.from(document.querySelectorAll('h1, h2')).map(h => h.textContent.trim())"
    )
    assert headings[0] == "decaylab study: digits-mlp"
    for name in (
        "Summary",
        "Curvature at w₀",
        "Weight decay (L2)",
        "L1",
        "Early stopping",
        "The weight-decay picture",
        "Notes and warnings",
        "Timings",
    ):
        assert name in headings
    captions = driver.execute_script(
        "return Array.from(document.querySelectorAll('figure figcaption')).map(c => c.innerText)"
    )
    assert [c.split(".")[0] for c in captions] == [f"Figure {i}" for i in range(1, 8)]
    assert all(len(c) > 200 for c in captions)
    assert "3.16×10⁻⁴" in captions[2]  # the trust region of the fixture, in words
    # a laptop screen: nothing wider than the window
    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")

    driver.save_screenshot(str(tmp_path / "report_laptop.png"))
    full = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
    )
    (tmp_path / "report_full.png").write_bytes(base64.b64decode(full["data"]))
    assert (tmp_path / "report_laptop.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "report_full.png").stat().st_size > 50_000


def test_print_layout_keeps_figures_whole(driver, report, tmp_path):
    """Under the print stylesheet, no figure is split and each fits one A4 page."""
    _open(driver, report.as_uri())
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {
            "width": PRINT_WIDTH_PX,
            "height": PRINT_HEIGHT_PX,
            "deviceScaleFactor": 1,
            "mobile": False,
        },
    )
    try:
        boxes = driver.execute_script(
            "return Array.from(document.querySelectorAll('figure')).map(f => ({"
            " brk: getComputedStyle(f).breakInside, h: f.getBoundingClientRect().height,"
            " w: f.getBoundingClientRect().width}))"
        )
        nav = driver.execute_script(
            "return getComputedStyle(document.querySelector('nav')).display"
        )
        driver.save_screenshot(str(tmp_path / "report_print_view.png"))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
    assert len(boxes) == 7
    for box in boxes:
        assert box["brk"] == "avoid", box
        assert 0 < box["h"] <= PRINT_HEIGHT_PX and box["w"] <= PRINT_WIDTH_PX, box
    assert nav == "none"
    pdf = base64.b64decode(driver.print_page())
    (tmp_path / "report.pdf").write_bytes(pdf)
    assert pdf[:5] == b"%PDF-"


def test_the_checks_catch_a_leaking_page(driver, tmp_path):
    """Negative control: a remote image, a broken image and a console error are all caught."""
    page = tmp_path / "leaky.html"
    page.write_text(
        "<!DOCTYPE html><html><body><h1>x</h1>"
        "<img src='https://example.invalid/figure.png'>"
        "<img src='data:image/png;base64,AAAA'>"
        "<script>console.error('boom')</script></body></html>",
        encoding="utf-8",
    )
    _open(driver, page.as_uri())
    images = _images(driver)
    assert [i["width"] for i in images] == [0, 0]
    assert any("example.invalid" in u for u in _leaving(_requested_urls(driver)))
    assert any("boom" in e for e in _errors(driver))
