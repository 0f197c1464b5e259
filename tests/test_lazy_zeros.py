"""The real predictions NMS reads take host memory only where their stand-in values are written.

Before ``lazy_zeros`` they were ``torch.zeros`` plus a copy of the score block: an estimate with
``epochs=2 batch=1024 imgsz=1280`` made (2048, 84, 33600) float32 on the host, 23 GB. The host memory is
read from the kernel (``/proc/self/statm``), so this checks what the process holds, not what the code
says it holds.
"""

from __future__ import annotations

import sys

import pytest
import torch

from yolomem.loops.val_pass import VAL_CONF, synthetic_predictions
from yolomem.trace.lazy_zeros import lazy_zeros

MiB = 1 << 20


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def test_lazy_zeros_are_writable_contiguous_zeros_of_any_dtype():
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.int64):
        for shape in ((3, 5), (4, 84, 8400)):  # below and above the mapping's threshold
            zeros = lazy_zeros(shape, dtype)
            assert zeros.shape == shape and zeros.dtype == dtype and zeros.is_contiguous()
            assert not zeros.any()
            zeros[(-1,) * len(shape)] = 1
            assert zeros.sum().item() == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the resident set from /proc")
def test_synthetic_predictions_hold_only_the_pages_written():
    batch, channels, anchors, candidates = 48, 84, 33600, 30000  # yolov8 at imgsz 1280, val batch 48
    total = batch * channels * anchors * 4  # 516 MiB
    before = _resident_bytes()
    predictions = synthetic_predictions((batch, channels, anchors), torch.float32, 80, candidates)
    written = _resident_bytes() - before
    passing = predictions[:, 4:].amax(1) > VAL_CONF  # what NMS reads first: every score of the batch
    after_read = _resident_bytes() - before

    # the values NMS decides by: boxes everywhere, `candidates` passing pairs in each image
    assert (predictions[:, 4:] > VAL_CONF).flatten(1).sum(1).tolist() == [candidates] * batch
    assert predictions[:, 2:4].eq(20).all()
    # held: the 4 box channels and the passing scores, about 6 % of the tensor (the page tables and
    # the (B, anchors) read result add a little); all of it before lazy_zeros
    assert written < 0.10 * total, f"{written / MiB:.0f} MiB of {total / MiB:.0f} MiB"
    assert after_read - written < passing.numel() * 5 + 16 * MiB  # reads take no pages beyond their result
