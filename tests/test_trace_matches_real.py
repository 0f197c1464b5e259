"""The fake trace allocates exactly what a real CPU execution of the same training step allocates.

Ground truth: the same Ultralytics iteration on real CPU tensors, recorded by the same Tracer with
``fake=False``. The only data-dependent answers the fake trace must assume (how many foreground
anchors the assigner picked) are taken from the real run for this comparison, so any difference
left would be a tracing error.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from yolomem.config.settings import EstimateConfig
from yolomem.loops import resolve_model
from yolomem.loops import trace_run
from yolomem.trace.tracer import DataOracle


class _NonzeroRecorder(TorchDispatchMode):
    """Records the size of every nonzero() result in a real run."""

    def __init__(self):
        super().__init__()
        self.counts: list[tuple[tuple[int, ...], int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten.nonzero.default:
            self.counts.append((tuple(args[0].shape), out.shape[0]))
        return out


class _ReplayOracle(DataOracle):
    """Answers each fake nonzero() with the count the real run produced for the same shape."""

    def __init__(self, counts):
        super().__init__()
        self._counts = list(counts)

    def nonzero_count(self, shape):
        for index, (recorded_shape, count) in enumerate(self._counts):
            if recorded_shape == tuple(shape):
                del self._counts[index]
                return count
        raise AssertionError(f"the fake trace asked about nonzero{tuple(shape)}, which the real run never computed")


def _streams(config: EstimateConfig):
    torch.manual_seed(0)
    resolved = resolve_model(config.model)
    recorder = _NonzeroRecorder()
    with recorder:
        real = trace_run(config, resolved, fake=False).trace
    fake = trace_run(config, resolved, fake=True, oracle=_ReplayOracle(recorder.counts)).trace
    return real, fake


def _sizes(trace):
    """Tensor storages only: kernel workspaces (yolomem.trace.workspaces) belong to CUDA kernels, which
    the fake trace adds and a CPU run cannot have."""
    return [(e.op, e.nbytes) for e in trace.events if not e.category.endswith("_workspace")]


def _categories(trace):
    return [e.category for e in trace.events if not e.category.endswith("_workspace")]


def _peak_live(trace) -> int:
    live = peak = 0
    for event in trace.events:
        if event.category.endswith("_workspace"):
            continue
        live += event.nbytes if event.op == "alloc" else -event.nbytes
        peak = max(peak, live)
    return peak


@pytest.mark.parametrize("imgsz", [64, 128])
def test_fp32_training_step_allocates_like_a_real_run(imgsz):
    config = EstimateConfig(model="yolov8n.yaml", batch=2, imgsz=imgsz, amp="fp32", iterations=2, instances=3)
    real, fake = _streams(config)
    assert len(real.events) > 1000  # a whole iteration was traced, not a stub
    assert _sizes(fake) == _sizes(real)
    assert _peak_live(fake) == _peak_live(real)
    assert _categories(fake) == _categories(real)


def test_real_run_sees_optimizer_state_and_gradients():
    config = EstimateConfig(model="yolov8n.yaml", batch=2, imgsz=64, amp="fp32", iterations=2, instances=3)
    real, _ = _streams(config)
    categories = {e.category for e in real.events if e.op == "alloc"}
    assert {"parameter", "gradient", "optimizer_state", "ema", "activation", "loss", "input"} <= categories
