"""A derived run equals a real trace, event for event, at a batch that was not traced.

Every task, both training loops, AMP and FP32, whole epochs (validation's per-image NMS loop
included): traced at batches 3, 4 and 6 (imgsz 128: seconds each), derived at 7, and traced at 7 to
compare. The estimates built on them must be the same too. Then families of two traced runs, the
least ``yolomem.result.runs`` derives from, derived far past them.

Why imgsz 128 and one object per image: the oracle assumes top-k foreground anchors per object, at
most the anchors of the tensor asked about. On a tiny grid (84 anchors per image at imgsz 64) that cap
switches on or off between batch 3 and 7, and a run past the switch is refused as underivable (the
guard ``tests/test_derive.py`` checks); at 128, with one object per image, no traced batch is near it.
"""

from __future__ import annotations

import logging

import pytest

import yolomem.loops
from yolomem.loops import val_pass
from yolomem.result import runs
from yolomem.result.estimate import estimate
from yolomem.trace.derive import compare_runs, RunFacts
from yolomem.trace.store import TraceStore

TRACED = (3, 4, 6)
DERIVED = 7
SIZE = {"imgsz": 128, "instances": 1}
CASES = [
    pytest.param("yolov8n.yaml", {"epochs": 2}, id="detect-amp-epochs"),
    pytest.param("yolov8n-seg.yaml", {"amp": "fp32"}, id="segment-fp32"),
    # NMS's candidates of one image (26880 x 38 float32, 4.1 MB) lie between the caps of batch 3 and 6
    pytest.param("yolov8n-seg.yaml", {"epochs": 2}, id="segment-amp-epochs"),
    pytest.param("yolov8n-pose.yaml", {}, id="pose-amp"),
    pytest.param("yolov8n-obb.yaml", {"amp": "fp32", "epochs": 2}, id="obb-fp32-epochs"),
    pytest.param("yolov8n-cls.yaml", {"amp": "fp32", "epochs": 2}, id="classify-fp32-epochs"),
    pytest.param("yolov5n", {"amp": "fp32", "epochs": 2}, id="yolov5-loop-fp32-epochs"),
    pytest.param("yolov5n", {}, id="yolov5-loop-amp"),
]


def _facts(result) -> RunFacts:
    return RunFacts(result.trace, result.params, result.config.imgsz, result.config.optimizer, result.notes, ())


@pytest.mark.parametrize(("model", "settings"), CASES)
def test_a_derived_run_equals_the_trace(model, settings, tmp_path, monkeypatch, caplog):
    # obb's rotated NMS computes its (n, n) matrices for real, image by image: 300 candidates an image
    # keep the code path at a hundredth of the work of the estimate's 3000 (most of this file's minutes)
    monkeypatch.setattr(val_pass, "ROTATED_NMS_CANDIDATES_PER_IMAGE", 300)
    previous = runs._SOURCE
    traced = []
    real_trace_run = yolomem.loops.trace_run
    monkeypatch.setattr(yolomem.loops, "trace_run", lambda c, r, **k: traced.append(c.batch) or real_trace_run(c, r, **k))
    try:
        runs._SOURCE = runs.RunSource(TraceStore(tmp_path), derive=False)  # each member traced, not derived
        for batch in TRACED:
            estimate(model, batch=batch, **SIZE, **settings)
        runs._SOURCE = runs.RunSource(TraceStore(tmp_path))
        with caplog.at_level(logging.INFO, logger="yolomem.runs"):
            derived = estimate(model, batch=DERIVED, **SIZE, **settings)
        assert traced == list(TRACED), caplog.text
        runs._SOURCE = runs.RunSource(TraceStore(None, enabled=False), derive=False)
        real = estimate(model, batch=DERIVED, **SIZE, **settings)
    finally:
        runs._SOURCE = previous
    assert traced == [*TRACED, DERIVED]
    assert compare_runs(_facts(derived), _facts(real)) is None
    left, right = derived.to_json(), real.to_json()
    left.pop("seconds"), right.pop("seconds")
    assert left == right


TWO = (3, 6)
FAR = 13  # past twice the larger traced batch: the line is extrapolated, not interpolated
TWO_CASES = [
    pytest.param("yolov8n.yaml", {}, True, id="detect-amp"),
    pytest.param("yolo11n.yaml", {"amp": "fp32"}, True, id="yolo11-attention-fp32"),
    pytest.param("yolov8n-pose.yaml", {}, True, id="pose-amp"),
    pytest.param("yolov8n-obb.yaml", {"amp": "fp32"}, True, id="obb-fp32"),
    pytest.param("yolov8n-cls.yaml", {}, True, id="classify-amp"),
    pytest.param("yolov5n", {}, True, id="yolov5-loop-amp"),
    pytest.param("yolov8n-seg.yaml", {}, False, id="segment-per-image-mask-loss"),
    pytest.param("yolov8n.yaml", {"epochs": 2}, False, id="detect-epochs-per-image-nms"),
]


@pytest.mark.parametrize(("model", "settings", "two_suffice"), TWO_CASES)
def test_two_traced_runs_derive_unless_a_block_repeats_per_image(model, settings, two_suffice, tmp_path, monkeypatch):
    """``MIN_TRACED`` is 2: a run derived from two traced batches equals its trace far past them. Where
    the stream repeats a block per image, two runs cannot place the blocks' numbers: the run is traced."""
    previous = runs._SOURCE
    traced = []
    real_trace_run = yolomem.loops.trace_run
    monkeypatch.setattr(yolomem.loops, "trace_run", lambda c, r, **k: traced.append(c.batch) or real_trace_run(c, r, **k))
    try:
        runs._SOURCE = runs.RunSource(TraceStore(tmp_path))
        for batch in TWO:
            estimate(model, batch=batch, **SIZE, **settings)
        derived = estimate(model, batch=FAR, **SIZE, **settings)
        assert traced == (list(TWO) if two_suffice else [*TWO, FAR])
        if not two_suffice:
            return
        runs._SOURCE = runs.RunSource(TraceStore(None, enabled=False), derive=False)
        real = estimate(model, batch=FAR, **SIZE, **settings)
    finally:
        runs._SOURCE = previous
    assert compare_runs(_facts(derived), _facts(real)) is None
    left, right = derived.to_json(), real.to_json()
    left.pop("seconds"), right.pop("seconds")
    assert left == right


FIRST_TRACE = """
import sys
assert "torchvision" not in sys.modules, "imported before the trace: the test would prove nothing"
from yolomem.result import runs
from yolomem.result.estimate import estimate
runs.configure(cache=False)
trace = estimate("yolov8n.yaml", batch=2, imgsz=64, epochs=2, instances=1).trace
batch = {e.storage_id for e in trace.events if e.op == "alloc" and e.phase == "val_preprocess"}
freed = {e.storage_id for e in trace.events if e.op == "free" and e.storage_id in batch}
print(len(batch), len(freed))
"""


def test_the_first_trace_of_a_process_frees_its_last_validation_batch():
    """The validator imports torchvision on first use; inside a trace (the collector paused) that import
    kept the validation step's frames, and its last batch, alive to the end: 4 of 10 storages, in the
    first whole-epoch trace of a process only (a CLI command's first), which then did not derive with
    the runs traced after it. A fresh process, as the CLI is: the tests before this one imported it."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", FIRST_TRACE], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    allocated, freed = map(int, done.stdout.split()[-2:])
    assert allocated >= 4 and freed == allocated
