"""Kernel workspaces: the sizes PyTorch's C++ gives them (shared/reference/kernel_workspaces.md, checked
by hand here), and how the tracer records them."""

from __future__ import annotations

import pytest
import torch

from yolomem.trace.tracer import Tracer
from yolomem.trace.workspaces import (
    CUBLAS_DEFAULT_BYTES,
    KernelWorkspaces,
    WorkspaceRules,
    cublas_config_bytes,
    cublaslt_kind,
    rules_for,
)

MiB = 1 << 20


@pytest.mark.parametrize("value, expected", [
    (":4096:8", 33_554_432),  # 4096 KiB x 8: Ultralytics and yolov5 set it
    (":16:8", 131_072),
    (":4096:2:16:8", 8_519_680),  # the documented default, 8.125 MiB
    (":0:0", 0),  # allocate(0): nothing
])  # fmt: skip
def test_cublas_workspace_config_sums_size_times_count(value, expected):
    assert cublas_config_bytes(value, (8, 6), (2, 14)) == expected


@pytest.mark.parametrize("cc, torch_version, expected", [
    ((8, 6), (2, 14), CUBLAS_DEFAULT_BYTES),  # Ampere: 8,519,680
    ((7, 5), (2, 14), CUBLAS_DEFAULT_BYTES),  # T4
    ((9, 0), (2, 14), 32 * MiB),  # H100
    ((11, 0), (2, 14), 32 * MiB),  # 2.14 adds major 11
    ((11, 0), (2, 13), CUBLAS_DEFAULT_BYTES),  # 2.12-2.13: majors 9, 10, 12
    ((10, 0), (2, 12), 32 * MiB),
    ((10, 0), (2, 11), CUBLAS_DEFAULT_BYTES),  # up to 2.11: exactly 9.0
    ((9, 0), (2, 11), 32 * MiB),
])  # fmt: skip
def test_cublas_default_by_compute_capability_and_release(cc, torch_version, expected):
    assert cublas_config_bytes(None, cc, torch_version) == expected
    assert cublas_config_bytes("garbage", cc, torch_version) == expected  # unparsable: the default, with a warning


def test_cublaslt_workspace_by_release():
    assert [cublaslt_kind(v) for v in ((2, 5), (2, 8), (2, 9), (2, 11), (2, 12), (2, 14))] == [
        "per_call", "per_call", "persistent", "persistent", "unified", "unified"]  # fmt: skip


def _rules(**changes) -> WorkspaceRules:
    base = rules_for("2.14.1")
    return WorkspaceRules(**{**base.__dict__, **changes})


def _trace(fn, rules: WorkspaceRules | None = None, phase: str = "forward"):
    tracer = Tracer(fake=True, workspaces=KernelWorkspaces(rules or _rules()))
    with tracer:
        with tracer.phase(phase):
            fn(tracer)
    trace = tracer.result()
    tracer.detach_finalizers()
    return trace


def test_conv_forward_workspace_is_a_transient_block_after_the_output():
    """x (2, 8, 32, 32) fp32 = 65,536 B; 3x3 conv to 16 channels, stride 1, pad 1: y = 131,072 B.
    layout rule: x + y = 196,608 B; im2col: 8 * 3 * 3 * 32 * 32 * 2 * 4 = 589,824 B."""
    def run(_):
        x, w = torch.empty(2, 8, 32, 32), torch.empty(16, 8, 3, 3)
        torch.ops.aten.convolution.default(x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1)

    events = _trace(run, _rules(cudnn_expected="layout")).events
    blocks = [e for e in events if e.category == "cudnn_workspace"]
    assert [(e.op, e.nbytes, e.upper_nbytes) for e in blocks] == [("alloc", 196_608, 589_824), ("free", 196_608, 589_824)]
    output = next(e for e in events if e.op == "alloc" and e.nbytes == 131_072)
    assert events.index(output) < events.index(blocks[0])  # cuDNN allocates the output first


def test_conv_backward_has_a_dgrad_and_a_wgrad_workspace():
    """dgrad: dy (131,072) + dx (65,536); wgrad: x (65,536) + dy (131,072); both lower 589,824 B."""
    def run(_):
        x, w, dy = torch.empty(2, 8, 32, 32), torch.empty(16, 8, 3, 3), torch.empty(2, 16, 32, 32)
        torch.ops.aten.convolution_backward.default(dy, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                                    [True, True, False])  # fmt: skip

    rules = _rules(cudnn_expected="layout")
    blocks = [e for e in _trace(run, rules, phase="backward").events if e.category == "cudnn_workspace" and e.op == "alloc"]
    assert [(e.nbytes, e.upper_nbytes) for e in blocks] == [(196_608, 589_824), (196_608, 589_824)]


def test_expected_conv_workspace_is_none_as_the_h200_measured():
    """The default rules: no cuDNN workspace in the expected figure (an H200 took 131-400 bytes for most
    convolutions, validation/results/h200-2026-12-04/), the im2col matrix in the upper one."""
    def run(_):
        x, w = torch.empty(2, 8, 32, 32), torch.empty(16, 8, 3, 3)
        torch.ops.aten.convolution.default(x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1)

    blocks = [e for e in _trace(run).events if e.category == "cudnn_workspace"]
    assert [(e.op, e.nbytes, e.upper_nbytes) for e in blocks] == [("alloc", 0, 589_824), ("free", 0, 589_824)]


def test_channels_last_needs_no_layout_copy():
    def run(_):
        x = torch.empty(2, 8, 32, 32).to(memory_format=torch.channels_last)
        w = torch.empty(16, 8, 3, 3).to(memory_format=torch.channels_last)
        torch.ops.aten.convolution.default(x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1)

    block = next(e for e in _trace(run, _rules(cudnn_expected="layout")).events if e.category == "cudnn_workspace")
    assert block.nbytes == 0 and block.upper_nbytes == 589_824


def test_cublas_buffer_once_per_thread_and_kept():
    """Two matmuls in the forward share the Python thread's buffer; the backward's autograd thread gets
    its own; neither is ever freed."""
    def run(tracer):
        a = torch.empty(4, 8, requires_grad=True)
        b = torch.empty(8, 8)
        y = (a @ b) @ b
        with tracer.phase("backward"):
            y.sum().backward()

    events = [e for e in _trace(run).events if e.category == "cublas_workspace"]
    assert [(e.op, e.nbytes, e.phase) for e in events] == [("alloc", 32 * MiB, "forward"), ("alloc", 32 * MiB, "backward")]


def test_convolution_only_model_has_no_cublas_buffer():
    def run(_):
        conv = torch.nn.Conv2d(3, 4, 3)
        conv(torch.empty(1, 3, 8, 8)).sum().backward()

    assert not [e for e in _trace(run).events if e.category.startswith("cublas")]


def test_cublaslt_per_call_block_on_older_torch():
    """torch 2.4-2.8: a Linear with bias (addmm, 1-D bias) takes 1 MiB for the call."""
    def run(_):
        torch.nn.functional.linear(torch.empty(4, 8), torch.empty(3, 8), torch.empty(3))

    events = _trace(run, rules=_rules(cublaslt="per_call")).events
    lt = [(e.op, e.nbytes) for e in events if e.category == "cublaslt_workspace"]
    assert lt == [("alloc", MiB), ("free", MiB)]
    assert not [e for e in _trace(run).events if e.category == "cublaslt_workspace"]  # 2.14: unified, none


def test_real_cpu_runs_record_no_workspaces():
    """The tests' ground truth (a real CPU run) has no CUDA kernels: the estimator adds workspaces to
    fake traces only (yolomem.loops.base.tracing)."""
    from yolomem.config.settings import EstimateConfig
    from yolomem.loops.base import tracing

    with tracing(EstimateConfig(amp="fp32"), fake=False, oracle=None) as (tracer, _):
        assert tracer.workspaces is None
