"""CUDA autocast, emulated on CPU fake tensors, casts exactly as torch's real AutocastCUDA kernels do.

Truth: the same forward on *fake CUDA* tensors under CUDA autocast (possible without a GPU, since
nothing is computed). Our emulation runs on fake CPU tensors with ``CudaAutocastPolicy`` installed.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from yolomem.trace.autocast import CudaAutocastPolicy
from yolomem.trace.tracer import Tracer

KINDS = {
    "convolution": "convolution",
    "upsample": "upsample_nearest2d",
    "cat": "cat",
    "silu": "silu",
    "batch_norm": "batch_norm",
    "loss": "binary_cross_entropy_with_logits",
}


class _DtypeRecorder(TorchDispatchMode):
    """Output dtype of every op, grouped by op kind."""

    def __init__(self, device: str):
        super().__init__()
        self.device = device  # the emulation probes CUDA's kernels on the side: ignore those ops
        self.by_kind: dict[str, list[torch.dtype]] = {kind: [] for kind in KINDS}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.__name__
        first = out[0] if isinstance(out, (tuple, list)) else out
        for kind, fragment in KINDS.items():
            if fragment in name and isinstance(first, torch.Tensor) and first.device.type == self.device:
                self.by_kind[kind].append(first.dtype)
        return out


def _build(name: str):
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    return DetectionModel(name, verbose=False)


def _to_fake(model, mode: FakeTensorMode, device: str):
    for module in model.modules():
        for key, param in list(module._parameters.items()):
            if param is not None:
                fake = mode.from_tensor(param.detach()).to(device)
                module._parameters[key] = torch.nn.Parameter(fake, requires_grad=param.requires_grad)
        for key, buffer in list(module._buffers.items()):
            if buffer is not None:
                module._buffers[key] = mode.from_tensor(buffer).to(device)
    return model


def _reference_cuda(model_name: str, dtype: torch.dtype, run) -> dict:
    """``run(model, x)`` on fake CUDA tensors under torch's own CUDA autocast."""
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    recorder = _DtypeRecorder("cuda")
    real_model = _build(model_name) if model_name else None
    with mode:
        model = _to_fake(real_model, mode, "cuda") if model_name else None
        x = torch.empty(2, 3, 64, 64, device="cuda")
        torch.set_autocast_enabled("cuda", True)
        torch.set_autocast_dtype("cuda", dtype)
        try:
            with recorder:
                run(model, x)
        finally:
            torch.set_autocast_enabled("cuda", False)
            torch.clear_autocast_cache()
    return recorder.by_kind


def _emulated(model_name: str, dtype: torch.dtype, run) -> dict:
    """``run(model, x)`` on fake CPU tensors under yolomem's emulation of CUDA autocast."""
    tracer = Tracer(fake=True)
    recorder = _DtypeRecorder("cpu")
    real_model = _build(model_name) if model_name else None
    with tracer, CudaAutocastPolicy(tracer.fake_cuda_like, tracer.paused) as policy:
        model = _to_fake(real_model, tracer.fake_mode, "cpu") if model_name else None
        x = torch.empty(2, 3, 64, 64)
        with policy.region(dtype), recorder:
            run(model, x)
    return recorder.by_kind


def _forward(model, x):
    model.train()
    model(x)


@pytest.mark.parametrize("model_name", ["yolov8n.yaml", "yolo11n.yaml"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_model_forward_dtypes_match_cuda_autocast(model_name, dtype):
    reference = _reference_cuda(model_name, dtype, _forward)
    emulated = _emulated(model_name, dtype, _forward)
    for kind in ("convolution", "upsample", "cat", "silu", "batch_norm"):
        assert reference[kind], f"the reference forward ran no {kind} op"
        assert emulated[kind] == reference[kind], kind


def test_cuda_policy_differs_from_cpu_policy_where_torch_says_so():
    """CUDA runs upsample_nearest2d in float32 (so the neck's cat becomes float32); CPU autocast keeps
    float16. The emulation must follow CUDA, or it would be checking nothing."""
    emulated = _emulated("yolov8n.yaml", torch.float16, _forward)
    assert set(emulated["upsample"]) == {torch.float32}
    assert torch.float32 in emulated["cat"]

    cpu_recorder = _DtypeRecorder("cpu")
    real_model = _build("yolov8n.yaml")
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        model = _to_fake(real_model, mode, "cpu")
        with torch.autocast("cpu", dtype=torch.float16), cpu_recorder:
            _forward(model, torch.empty(2, 3, 64, 64))
    assert set(cpu_recorder.by_kind["upsample"]) == {torch.float16}


LOSS_OPS = {
    "bce_with_logits": lambda p, t: F.binary_cross_entropy_with_logits(p, t, reduction="none"),
    "softmax": lambda p, t: p.softmax(-1),
    "matmul": lambda p, t: p @ t.transpose(-1, -2),
    "sigmoid": lambda p, t: p.sigmoid(),
    "pow": lambda p, t: p.pow(6.0),
    "log": lambda p, t: torch.log(p.abs() + 1),
    "atan": lambda p, t: torch.atan(p),
    "cross_entropy": lambda p, t: F.cross_entropy(p.flatten(0, 1), t.flatten(0, 1).softmax(-1)),
}


@pytest.mark.parametrize("name", sorted(LOSS_OPS))
def test_loss_op_dtypes_match_cuda_autocast(name):
    """The ops Ultralytics' losses use, on a float16 prediction and a float32 target."""
    op = LOSS_OPS[name]

    def run(_model, _x, device):
        pred = torch.empty(2, 8, 16, dtype=torch.float16, device=device)
        target = torch.empty(2, 8, 16, dtype=torch.float32, device=device)
        return op(pred, target).dtype

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        torch.set_autocast_enabled("cuda", True)
        torch.set_autocast_dtype("cuda", torch.float16)
        try:
            expected = run(None, None, "cuda")
        finally:
            torch.set_autocast_enabled("cuda", False)
    tracer = Tracer(fake=True)
    with tracer, CudaAutocastPolicy(tracer.fake_cuda_like, tracer.paused) as policy, policy.region(torch.float16):
        got = run(None, None, "cpu")
    assert got == expected


def test_policy_is_installed_only_inside_its_context():
    """``exp`` is on CUDA's float32 list and not on CPU's. Inside the context CPU autocast follows
    CUDA; after it, torch's own CPU policy is back. Nothing leaks into the user's process."""
    x = torch.randn(2, 2).bfloat16()

    def exp_dtype():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return torch.exp(x).dtype

    assert exp_dtype() == torch.bfloat16
    tracer = Tracer(fake=True)
    with tracer, CudaAutocastPolicy(tracer.fake_cuda_like, tracer.paused):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            inside = torch.exp(tracer.fake_mode.from_tensor(x)).dtype
    assert inside == torch.float32
    assert exp_dtype() == torch.bfloat16


def test_a_dead_tensors_cast_is_never_handed_to_the_next_at_its_id():
    """CUDA's cast cache keys a tensor weakly, so no other tensor takes its address while the entry stands;
    a Python id outlives its object. AutoBatch's profiler makes each probe's input a leaf that requires
    grad, which autocast caches, and thop's forward runs without grad (no graph keeps the input alive):
    a later input born at a dead one's id must get its own copy (it got the old one, of another shape,
    and the probe failed), while the old copies stay cached until the region exits, as on a GPU."""
    tracer = Tracer(fake=True)
    with tracer, CudaAutocastPolicy(tracer.fake_cuda_like, tracer.paused) as policy, policy.region(torch.float16):
        weight = torch.empty(8, 3)
        seen, reused = set(), 0
        for step in range(300):
            rows = 1 + step % 7
            source = torch.empty(rows, 8, requires_grad=True)
            reused += id(source) in seen
            seen.add(id(source))
            with torch.no_grad():
                assert (source @ weight).shape == (rows, 3)
            del source
        assert reused  # the premise: CPython gave a new tensor a dead one's id
        cached = [r for r in tracer._records.values() if r.dtype == "float16" and r.nbytes % 16 == 0]
        assert len(cached) == 300  # every input's fp16 copy, until the region exits
        tracer.detach_finalizers()
