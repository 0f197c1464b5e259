"""A real browser opens the report: headless Chromium renders it, screenshots it, and the numbers in its
DOM equal the JSON estimate. CI installs Debian's ``chromium``; without it the test is skipped."""

from __future__ import annotations

import json
import struct

import pytest

from yolomem.cli.main import main

from chromium import blocked_loads, needs_chromium, run_chromium
from test_report import WORDS, check_numbers, parse

pytestmark = needs_chromium
WIDTH, HEIGHT = 1280, 2000


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    page = folder / "report.html"
    assert main(["report", *WORDS, "batches=2", "gpu=T4", "-o", str(page)]) == 0
    return folder, page


def test_chromium_renders_the_report_and_numbers_match(report):
    folder, page = report
    payload = json.loads(parse(page.read_text()).json_text)
    run = run_chromium(folder, "--dump-dom", page.as_uri())
    dom = run.stdout
    assert "<svg" in dom and 'id="estimate-json"' in dom
    assert check_numbers(dom, payload) >= 5 + len(payload["breakdown"])
    assert json.loads(parse(dom).json_text) == payload
    # with the page's Content-Security-Policy, any load is blocked and logged as a console message
    blocked = blocked_loads(run.stderr)
    assert not blocked, f"the page tried to load something: {blocked}"


def test_chromium_screenshot(report):
    folder, page = report
    shot = folder / "report.png"
    run_chromium(folder, f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}", "--hide-scrollbars", page.as_uri())
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    assert (width, height) == (WIDTH, HEIGHT)
    assert len(data) > 100_000  # text, tables and three figures; a blank page compresses to a few kB
