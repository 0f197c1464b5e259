"""The converted copy a reduction makes of its input (``yolomem.trace.kernel_temporaries``), against two
truths the project did not write: PyTorch's own CPU kernels, whose memory the profiler records below the
op (the same ``make_reduction`` code as CUDA's), and the H200's allocation history of the assigner."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from yolomem.config.settings import EstimateConfig
from yolomem.loops import resolve_model, trace_run
from yolomem.measure.history import read_history
from yolomem.trace.kernel_temporaries import converted_input_bytes
from yolomem.trace.tracer import Tracer

HISTORY = Path(__file__).resolve().parents[1] / "validation" / "results" / "h200-2026-12-04" / "yolov8s-b16-fp16-inst200.json.gz"
aten = torch.ops.aten


def _copied_by_kernel(fn, x) -> int:
    """Bytes the CPU kernel of ``fn(x)`` allocated for a converted copy of its input (``aten::_to_copy``
    below the op), as the profiler records them."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn(x)
    return sum(row.cpu_memory_usage for row in prof.key_averages() if row.key == "aten::_to_copy")


CASES = [
    ("int8 mask summed over a dim", aten.sum.dim_IntList, lambda t: t.sum(-2), torch.int8),
    ("bool mask summed whole", aten.sum.default, lambda t: t.sum(), torch.bool),
    ("int8 product", aten.prod.dim_int, lambda t: t.prod(1), torch.int8),
    ("int8 cumulative sum", aten.cumsum.default, lambda t: t.cumsum(-1), torch.int8),
    ("float32 sum: no copy", aten.sum.dim_IntList, lambda t: t.sum(-2), torch.float32),
    ("int64 cumulative sum: no copy", aten.cumsum.default, lambda t: t.cumsum(-1), torch.int64),
]


@pytest.mark.parametrize("name, op, fn, dtype", CASES, ids=[c[0] for c in CASES])
def test_the_rule_sizes_the_copy_the_kernel_makes(name, op, fn, dtype):
    x = torch.zeros(4, 50, 300, dtype=dtype)
    out = fn(x)
    assert converted_input_bytes(op, (x,), out) == _copied_by_kernel(fn, x)


def test_half_reduced_into_float32_is_not_copied_on_cuda():
    """CUDA's exception (``gpu_lowp_to_f32``); the CPU kernel, unlike CUDA's, does copy."""
    x = torch.zeros(4, 50, 300, dtype=torch.float16)
    out = torch.empty(4, 300, dtype=torch.float32)
    assert converted_input_bytes(aten.sum.dim_IntList, (x,), out) == 0
    assert _copied_by_kernel(lambda t: t.sum(-2, dtype=torch.float32), x) == x.numel() * 4  # the CPU's copy
    assert converted_input_bytes(aten.cumsum.default, (x,), out) == x.numel() * 4  # scans always copy


def test_the_tracer_records_the_copy_after_the_output_and_frees_it():
    with Tracer(fake=True) as tracer:
        mask = torch.empty(2, 30, 400, dtype=torch.int8)
        counts = mask.sum(-2)
        del counts
    events = [(e.op, e.nbytes, e.dtype) for e in tracer.result().events]
    assert events == [("alloc", 24000, "int8"), ("alloc", 2 * 400 * 8, "int64"), ("alloc", 24000 * 8, "int64"),
                      ("free", 24000 * 8, "int64"), ("free", 2 * 400 * 8, "int64")]  # fmt: skip


def test_the_assigner_mask_copy_matches_the_h200_history():
    """yolov8s, batch 16, 640, AMP, 200 objects in every image: the GPU copied the (16, 200, 8400) mask to
    int64 once per iteration in ``select_highest_overlaps``; the trace does the same, in the loss."""
    copy = 16 * 200 * 8400 * 8
    history = read_history(HISTORY)
    in_select = collections.Counter(e.where.split(" < ")[0].split(":")[-1] for e in history.events
                                    if e.action == "alloc" and e.size == copy)  # fmt: skip
    assert in_select == {"select_highest_overlaps": history.notes["iterations"]}

    config = EstimateConfig(model="yolov8s.yaml", batch=16, imgsz=640, iterations=2, instances=200, max_instances=200,
                            nc=80, mosaic=0.0)  # fmt: skip
    trace = trace_run(config, resolve_model(config.model), upper=False).trace
    traced = [(e.iteration, e.phase, e.dtype) for e in trace.events if e.op == "alloc" and e.nbytes == copy]
    assert traced == [(0, "loss", "int64"), (1, "loss", "int64")]
