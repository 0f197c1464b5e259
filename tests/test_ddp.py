"""DDP's per-rank memory: the bucket plan matches torch's own Reducer, and the trace carries it."""

from __future__ import annotations

import torch
import torch.distributed as dist

from yolomem.loops.ddp import BUCKET_MODULE, plan_buckets
from yolomem.result.estimate import estimate
from yolomem.loops import resolve_model
from yolomem.loops.ultralytics.step import build_model, freeze_parameters


def _model():
    resolved = resolve_model("yolov8n.yaml")
    model = build_model(resolved.cfg, resolved.task, None)
    freeze_parameters(model, ())  # Ultralytics always freezes '.dfl' before wrapping in DDP
    return model


def test_bucket_plan_matches_torch_reducer(tmp_path):
    """A real DistributedDataParallel (gloo, one rank, Ultralytics' arguments) allocates exactly our buckets."""
    model = _model()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
        real = [b.buffer().numel() * b.buffer().element_size() for b in ddp.reducer._get_zeros_like_grad_buckets()]
    finally:
        dist.destroy_process_group()
    plan = plan_buckets(model)
    assert list(plan.bucket_bytes) == real
    assert len(real) >= 2  # the 1 MiB first bucket is separate from the 25 MiB ones
    assert plan.total_bytes == sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def test_ddp_trace_holds_buckets_as_a_second_copy_of_the_gradients():
    two = estimate("yolov8n.yaml", batch=4, imgsz=64, iterations=1, world_size=2)
    buckets = [e for e in two.trace.events if e.op == "alloc" and e.module == BUCKET_MODULE]
    frees = {e.storage_id for e in two.trace.events if e.op == "free"}
    grad_bytes = sum(p.numel() * p.element_size() for p in _model().parameters() if p.requires_grad)
    assert sum(e.nbytes for e in buckets) >= grad_bytes  # gradient_as_bucket_view=False: a full extra copy
    assert all(e.storage_id not in frees for e in buckets)  # alive for the whole run, like the Reducer's
    assert all(e.category == "gradient" for e in buckets)
    assert not any("not modelled" in note for note in two.notes)
    assert two.breakdown["gradient"] >= grad_bytes
