"""A real browser opens the report: headless Chromium renders it, screenshots it, and the numbers in its
DOM equal the JSON estimate. CI installs Debian's ``chromium``; without it the test is skipped."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess

import pytest

from yolomem.cli.main import main

from test_report import WORDS, check_numbers, parse

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (CI installs it: apt-get install -y chromium)"
)
WIDTH, HEIGHT = 1280, 2000


def _chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # belt and braces: nothing resolves
        "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp_path / 'profile'}", *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    page = folder / "report.html"
    assert main(["report", *WORDS, "batches=2", "gpu=T4", "-o", str(page)]) == 0
    return folder, page


def test_chromium_renders_the_report_and_numbers_match(report):
    folder, page = report
    payload = json.loads(parse(page.read_text()).json_text)
    run = _chromium(folder, "--dump-dom", page.as_uri())
    dom = run.stdout
    assert "<svg" in dom and 'id="estimate-json"' in dom
    assert check_numbers(dom, payload) >= 5 + len(payload["breakdown"])
    assert json.loads(parse(dom).json_text) == payload
    # with the page's Content-Security-Policy, any load is blocked and logged as a console message
    blocked = [line for line in run.stderr.splitlines() if "Content Security Policy" in line or "Refused to" in line]
    assert not blocked, f"the page tried to load something: {blocked}"


def test_chromium_screenshot(report):
    folder, page = report
    shot = folder / "report.png"
    _chromium(folder, f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}", "--hide-scrollbars", page.as_uri())
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    assert (width, height) == (WIDTH, HEIGHT)
    assert len(data) > 100_000  # text, tables and three figures; a blank page compresses to a few kB
