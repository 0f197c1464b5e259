"""The tracer's faster fake dispatch (``yolomem.trace.fake_cache`` and the tracer's shortcuts) changes nothing.

Truth we did not write: PyTorch's FakeTensorMode. With ``crosscheck`` on, every output built from a
meta kernel or the batch-norm rule is compared with what the fake mode itself returns for the same
call (dtype, shape, strides, offset, device); and a whole trace with the fast path is compared event
by event with a trace that sends every op through the fake mode.
"""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

from yolomem.trace import fake_cache, tracer as trace
from yolomem.config.settings import EstimateConfig
from yolomem.trace.fake_cache import FakeDispatchCache
from yolomem.loops import resolve_model
from yolomem.loops import trace_run

aten = torch.ops.aten


@pytest.fixture
def crosscheck(monkeypatch):
    monkeypatch.setattr(FakeDispatchCache, "entries", {})
    monkeypatch.setattr(FakeDispatchCache, "crosscheck", True)


def _events(trace_result):
    return [(e.op, e.storage_id, e.nbytes, e.dtype, e.category, e.phase) for e in trace_result.events]


@pytest.mark.parametrize(
    ("model", "framework", "amp"),
    [("yolov8n.yaml", "ultralytics", "fp16"), ("yolo11n-seg.yaml", "ultralytics", "bf16"),
     ("yolov5n", "yolov5", "fp16"), ("yolov4-tiny", "yolov5", "fp32")],
)  # fmt: skip
def test_meta_entries_equal_the_fake_modes_own(crosscheck, model, framework, amp):
    config = EstimateConfig(model=model, imgsz=128, batch=2, amp=amp, framework=framework)
    trace_run(config, resolve_model(config.model, framework), fake=True)  # raises AssertionError on any difference
    assert FakeDispatchCache.misses > 0


def test_trace_with_fast_path_equals_trace_through_the_fake_mode(monkeypatch):
    config = EstimateConfig(model="yolov8n.yaml", imgsz=128, batch=2, amp="fp16")
    resolved = resolve_model(config.model)
    torch.manual_seed(0)
    fast = trace_run(config, resolved, fake=True).trace

    # the slow path: every op through FakeTensorMode, no fused-op shortcut
    monkeypatch.setattr(FakeDispatchCache, "call", lambda self, func, args, kwargs: func(*args, **kwargs))
    monkeypatch.setattr(trace, "_is_fused_in_place", lambda func: False)
    torch.manual_seed(0)
    slow = trace_run(config, resolved, fake=True).trace
    assert _events(fast) == _events(slow)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("channels_last", [True, False])
def test_batch_norm_rule_equals_the_fake_mode(dtype, training, channels_last):
    mode = FakeTensorMode()
    with mode:
        x = torch.empty(2, 5, 7, 9, dtype=dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        weight, stats = torch.empty(5), torch.empty(5)
        args = (x, weight, weight, stats, stats, training, 0.1, 1e-5)
        theirs = aten.native_batch_norm.default(*args)
    entry = fake_cache._batch_norm_entry(args, {})
    ours = FakeDispatchCache(mode)._output(entry, aten.native_batch_norm.default, args)
    fake_cache._assert_same_metadata(aten.native_batch_norm.default, ours, theirs)


def test_a_mismatch_is_reported():
    mode = FakeTensorMode()
    with mode:
        a, b = torch.empty(3, 4), torch.empty(4, 3)
    with pytest.raises(AssertionError, match="meta kernel gave"):
        fake_cache._assert_same_metadata(aten.add.Tensor, a, b)


def test_ops_the_fake_mode_treats_specially_are_not_sent_to_meta():
    assert fake_cache._meta_routable(aten.silu_backward.default)
    assert fake_cache._meta_routable(aten.add.Tensor)
    assert fake_cache._meta_routable(aten._foreach_norm.Scalar)  # the fake mode's foreach rule is the meta kernel's
    for func in (aten.convolution.default, aten.index.Tensor, aten.nonzero.default, aten.view.default,
                 aten.add_.Tensor, aten._to_copy.default, aten.native_batch_norm.default, aten.rand_like.default):  # fmt: skip
        assert not fake_cache._meta_routable(func), func


def test_fused_in_place_ops_are_those_returning_nothing():
    assert trace._is_fused_in_place(aten._foreach_lerp_.Scalar)
    assert trace._is_fused_in_place(aten._fused_adamw_.default)
    assert not trace._is_fused_in_place(aten._foreach_norm.Scalar)  # returns new tensors
    assert not trace._is_fused_in_place(aten.add_.Tensor)


def _fake_facts(tensor):
    return (type(tensor), torch._C._dispatch_keys(tensor), tensor.device, tensor.dtype, tuple(tensor.shape),
            tensor.stride(), tensor.storage_offset(), tensor.requires_grad,
            {k: (id(v) if k == "fake_mode" else v) for k, v in tensor.__dict__.items()})  # fmt: skip


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_new_fake_makes_what_the_fake_tensor_constructor_makes(device, requires_grad):
    """``new_fake`` against ``FakeTensor(mode, elem, device)``: the same attributes, dispatch keys and
    metadata, and ops on either give the same answer. On this torch the fast path is the one taken."""
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        reference_device = torch.empty(1, device=device).fake_device  # normalized as the fake mode does it
    elem = torch.empty_strided((4, 3, 8), (24, 1, 3), dtype=torch.float16, device="meta", requires_grad=requires_grad)
    ours = fake_cache.new_fake(mode, elem, reference_device)
    theirs = FakeTensor(mode, elem, reference_device)
    assert fake_cache._TEMPLATES[(id(mode), reference_device)] is not False  # the fast path, not the constructor
    assert _fake_facts(ours) == _fake_facts(theirs)
    with mode:
        assert _fake_facts((ours * 2).sum(1)) == _fake_facts((theirs * 2).sum(1))


def test_new_fake_falls_back_to_the_constructor_where_the_fast_path_differs(monkeypatch):
    """Another torch whose FakeTensor the fast path does not reproduce: every tensor takes the constructor."""
    monkeypatch.setattr(fake_cache, "_FAST_PATH_OK", {})
    monkeypatch.setattr(fake_cache, "_TEMPLATES", {})
    monkeypatch.setattr(fake_cache, "_fast_path_agrees", lambda *args: False)
    made = []
    monkeypatch.setattr(fake_cache, "FakeTensor", lambda *args: made.append(args) or FakeTensor(*args))
    mode = FakeTensorMode()
    fake = fake_cache.new_fake(mode, torch.empty(2, device="meta"), torch.device("cpu"))
    assert fake_cache._TEMPLATES[(id(mode), torch.device("cpu"))] is False
    assert len(made) == 2 and isinstance(fake, FakeTensor)  # the template's reference, then this tensor
