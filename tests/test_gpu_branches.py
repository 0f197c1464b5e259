"""Where Ultralytics picks a dtype by device type, the trace takes the GPU's branch (``gpu_branches``).

Ground truth for the rewrite itself: the method compiled again from its source keeps what the original
does (here a zero-argument ``super()`` call and its line numbers) but for the device test. For YOLO26-seg's
assigner (8.4.190): its decoded-mask blocks are fp16 in the trace, as on a GPU, even in an FP32 run.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from yolomem.config.settings import EstimateConfig
from yolomem.loops import resolve_model, trace_run
from yolomem.loops.ultralytics.gpu_branches import _on_gpu


class _Base:
    def blocks(self, x):
        return "base"


class _Assigner(_Base):
    def blocks(self, x):
        dtype = torch.half if x.device.type == "cuda" else torch.float
        return super().blocks(x), dtype, inspect.currentframe().f_lineno


def test_a_rewritten_method_takes_the_gpu_branch_and_keeps_the_rest():
    original = _Assigner().blocks(torch.ones(1))
    rewritten = _on_gpu(_Assigner, _Assigner.blocks, 'x.device.type == "cuda"')
    assert original[:2] == ("base", torch.float)
    assert rewritten(_Assigner(), torch.ones(1)) == ("base", torch.half, original[2])  # super() works, same line
    assert _on_gpu(_Assigner, _Assigner.blocks, 'x.device.type == "mps"') is None  # no such test: left alone


def test_yolo26_seg_assigner_decodes_masks_in_fp16_as_on_a_gpu():
    from ultralytics.utils import tal

    if not hasattr(tal, "SegTaskAlignedAssigner"):
        pytest.skip("the installed ultralytics has no mask-IoU assigner (8.4.190+)")
    original = tal.SegTaskAlignedAssigner.pair_overlaps
    config = EstimateConfig(model="yolo26n-seg.yaml", batch=2, imgsz=128, amp="fp32", iterations=1, instances=3)
    trace = trace_run(config, resolve_model(config.model)).trace
    assert tal.SegTaskAlignedAssigner.pair_overlaps is original  # put back after the trace
    loss_dtypes = {e.dtype for e in trace.events if e.op == "alloc" and e.phase == "loss"}
    assert "float16" in loss_dtypes  # FP32 training: only the assigner's GPU branch makes fp16
