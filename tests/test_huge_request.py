"""A huge request must never allocate real memory: yolov8x at batch 4096, imgsz 1280."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

GiB = 1 << 30
pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc (Linux)")

# The peak resident set of this process's own memory: VmHWM. Not getrusage's ru_maxrss, which Linux carries
# over an exec from the process that spawned it (a pytest process of 3.8 GiB made this test fail).
_SCRIPT = """
import json, re
from yolomem.result.estimate import estimate
e = estimate("yolov8x.yaml", batch=4096, imgsz=1280, iterations=1)
peak_kib = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
print(json.dumps({"rss_kib": peak_kib, "peak": e.peak_reserved_bytes}))
"""


def test_yolov8x_batch_4096_imgsz_1280_stays_small_in_host_memory():
    result = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    import json

    figures = json.loads(result.stdout.strip().splitlines()[-1])
    # The estimate describes terabytes of GPU memory...
    assert figures["peak"] > 1000 * GiB
    # ...while this process stays far below (torch + ultralytics alone take ~0.6 GiB).
    assert figures["rss_kib"] * 1024 < 3 * GiB
