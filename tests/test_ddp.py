"""DDP's per-rank memory: the bucket plan matches torch's own Reducer, and the trace carries it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from yolomem.config.settings import EstimateConfig
from yolomem.loops.ddp import BROADCAST_MODULE, BUCKET_MODULE, plan_buckets, rank_trace
from yolomem.result.estimate import estimate
from yolomem.loops import resolve_model, trace_run
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


@pytest.mark.parametrize(("model", "framework"), [("yolov8n.yaml", "ultralytics"), ("yolov5n", "yolov5"),
                                                  ("yolov5n-cls", "yolov5")])  # fmt: skip
def test_a_ddp_rank_runs_the_single_gpu_step_at_its_share_plus_ddps_state(model, framework):
    """Each trainer splits the batch over the ranks and wraps the model in DDP before the first batch: a
    rank's stream is the one-GPU stream at the per-rank batch, event for event, plus DDP's broadcast flats
    (made and freed at construction) and its buckets (a second copy of the trainable gradients, never
    freed). The yolov5 repo's smart_DDP included (train.py and classify/train.py)."""
    traces = {}
    for world_size in (1, 2):
        config = EstimateConfig(model=model, imgsz=64, batch=2 * world_size, iterations=1, world_size=world_size,
                                framework=framework)  # fmt: skip
        traces[world_size] = trace_run(config, resolve_model(config.model, framework), upper=False).trace
    streams = {world_size: trace.events for world_size, trace in traces.items()}
    ddp = [e for e in streams[2] if e.module in (BUCKET_MODULE, BROADCAST_MODULE)]
    rank = [(e.op, e.nbytes, e.category, e.phase) for e in streams[2] if e not in ddp]
    assert rank == [(e.op, e.nbytes, e.category, e.phase) for e in streams[1]]
    buckets = [e for e in ddp if e.module == BUCKET_MODULE]
    freed = {e.storage_id for e in ddp if e.op == "free"}
    gradients = sum(e.nbytes for e in streams[1] if e.op == "alloc" and e.category == "gradient" and e.iteration == 0)
    assert buckets and all(e.op == "alloc" and e.category == "gradient" and e.storage_id not in freed for e in buckets)
    assert sum(e.nbytes for e in buckets) == gradients  # one bucket byte for each gradient byte

    # so the run source makes a rank's run from the one-GPU run at its share, without tracing it
    made = rank_trace(traces[1])
    assert _numbered(made.events) == _numbered(streams[2])
    assert made.iteration_bounds == traces[2].iteration_bounds
    assert [(a.question, a.answer, a.at) for a in made.oracle_answers] == \
        [(a.question, a.answer, a.at) for a in traces[2].oracle_answers]  # fmt: skip


def _numbered(events) -> list[tuple]:
    """Events with storages numbered by first appearance (a made trace numbers DDP's blocks after the rest)."""
    ids: dict[int, int] = {}
    return [(e.op, ids.setdefault(e.storage_id, len(ids)), e.nbytes, e.dtype, e.category, e.module, e.phase,
             e.iteration, e.upper_nbytes) for e in events]  # fmt: skip


def test_a_batch_smaller_than_the_gpus_is_refused_in_one_line(capsys):
    """Ultralytics splits batch // world_size: batch 2 over 4 GPUs leaves each none (its DataLoader refuses
    batch_size=0). Before, the estimate quietly traced one image per GPU."""
    from yolomem.cli.main import main

    assert main(["estimate", "yolov8n.yaml", "batch=2", "world_size=4", "imgsz=64"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "batch=2 over world_size=4 leaves each GPU 0 images" in err, err


def test_the_yolov5_repo_refuses_a_batch_that_does_not_divide_over_the_gpus(capsys):
    """train.py (and segment/, classify/) asserts ``batch_size % WORLD_SIZE == 0`` under DDP; Ultralytics floors
    the split instead. Before, yolomem answered batch 17 over 2 GPUs for yolov5s with a per-rank batch of 8."""
    from yolomem.cli.main import main

    assert main(["estimate", "yolov5s", "batch=17", "world_size=2", "imgsz=64"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "must be multiple of WORLD_SIZE" in err and "use batch=16 or batch=18" in err, err
    assert main(["estimate", "yolov8n.yaml", "batch=17", "world_size=2", "imgsz=64", "--json"]) == 0  # floors


def test_the_repo_asserts_the_split_that_yolomem_refuses():
    """Outside truth for the refusal above: the yolov5 repo's three train scripts, as the PyPI package ships them."""
    from yolov5_reference import yolov5_or_reason

    yolov5, reason = yolov5_or_reason()
    if yolov5 is None:
        pytest.skip(reason)
    root = Path(yolov5.__file__).parent
    for script in ("train.py", "segment/train.py", "classify/train.py"):
        assert "assert opt.batch_size % WORLD_SIZE == 0" in (root / script).read_text(), script
