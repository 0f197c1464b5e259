"""Headless Chromium for the page tests (the report, the calculator page). CI installs Debian's
``chromium``; without it those tests are skipped."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (CI installs it: apt-get install -y chromium)")


def run_chromium(profile_parent: Path, *args: str) -> subprocess.CompletedProcess:
    """Chromium with no network (nothing resolves) and console messages on stderr (a blocked load shows)."""
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # belt and braces: nothing resolves
        "--enable-logging=stderr", "--v=0", f"--user-data-dir={profile_parent / 'profile'}", *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def blocked_loads(stderr: str) -> list[str]:
    """Console lines where the page's Content-Security-Policy blocked a load."""
    return [line for line in stderr.splitlines() if "Content Security Policy" in line or "Refused to" in line]
