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


# AutoBatch builds its host image batches first (torch.empty(b, 3, imgsz, imgsz) for each b probed): on an
# 80 GiB card, 1 to 64 images at 4096 would be 25.8 GB of host memory if they were real.
_AUTOBATCH_SCRIPT = """
import json, re
from yolomem.config.gpus import find_gpu
from yolomem.config.settings import EstimateConfig
from yolomem.loops import resolve_model
from yolomem.loops.ultralytics.autobatch import pick_batch
config = EstimateConfig(model="yolov8n.yaml", imgsz=4096)
pick = pick_batch(config, resolve_model(config.model), find_gpu("H100-80GB"), -1, 10, None)
peak_kib = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
print(json.dumps({"rss_kib": peak_kib, "probes": [p.batch for p in pick.probes]}))
"""


def test_autobatch_at_imgsz_4096_builds_no_host_batches():
    result = subprocess.run([sys.executable, "-c", _AUTOBATCH_SCRIPT], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    import json

    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["probes"][-1] == 64  # the release probed up to 64 images: a card of 16 GiB or more
    assert figures["rss_kib"] * 1024 < 3 * GiB
