"""The memory DistributedDataParallel adds on each rank, as tracked allocations in a trace.

Ultralytics wraps the model in ``DistributedDataParallel`` in ``BaseTrainer._setup_train`` when it
trains on several GPUs (``yolo train device=0,1`` starts one process per GPU, or run it yourself with
``torchrun --nproc_per_node N your_train.py``). With Ultralytics' arguments (``find_unused_parameters=
True``, ``static_graph=False``, default ``bucket_cap_mb``, ``gradient_as_bucket_view=False``) DDP adds,
per rank:

1. Gradient buckets, for the whole run. ``DistributedDataParallel._ddp_init_helper``
   (torch/nn/parallel/distributed.py) assigns the parameters that require grad to buckets with
   ``dist._compute_bucket_assignment_by_size(params, [first_bucket_bytes_cap, bucket_bytes_cap])``:
   a first bucket of ``dist._DEFAULT_FIRST_BUCKET_BYTES`` (1 MiB) and 25 MiB buckets after it
   (``BucketCapacityConfig``), one group per dtype and device. ``Reducer::initialize_buckets``
   (torch/csrc/distributed/c10d/reducer.cpp) then allocates one flat ``bucket.gradients`` tensor per
   bucket. With ``gradient_as_bucket_view=False`` the ``.grad`` tensors stay separate and the reducer
   copies each gradient into its bucket view before the all-reduce (``mark_variable_ready_dense``) and
   back after it (``finalize_bucket_dense``): the buckets are a second copy of the gradients, alive
   from DDP's construction on. With ``find_unused_parameters=True`` the reducer never rebuilds its
   buckets (``Reducer::should_rebuild_buckets``), so the first assignment is the one that stays.
2. A transient at construction: ``_sync_module_states`` broadcasts parameters and buffers from rank 0
   with ``dist._broadcast_coalesced(..., broadcast_bucket_size=250 MiB)``, which flattens groups of up
   to 250 MiB into one tensor each (``broadcast_coalesced`` in torch/csrc/distributed/c10d/comm.cpp).
   The flat tensor is freed after each group, but the caching allocator keeps its segment.

Nothing else in the rank's step differs from one GPU at the per-rank batch (tests/test_ddp.py, both loops,
event for event), so every trace marks where its trainer wraps the model and what DDP would allocate
there (``wrap_in_ddp``), and a rank's run is made from the one-GPU run (``rank_trace``) instead of traced.

Not modelled: NCCL's own buffers (outside the caching allocator, like the CUDA context), and the
small per-parameter ``local_used_map`` of ``find_unused_parameters`` (4 bytes per parameter tensor).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from yolomem.trace.tracer import AllocationEvent, category_for_phase, dtype_name

BUCKET_CAP_BYTES = 25 << 20  # DistributedDataParallel(bucket_cap_mb=None) -> 25 MiB (distributed.py)
BROADCAST_BUCKET_BYTES = 250 << 20  # DistributedDataParallel.broadcast_bucket_size (distributed.py)
BUCKET_MODULE = "ddp.bucket"  # the module label bucket allocations carry in the trace
BROADCAST_MODULE = "ddp.broadcast"


def first_bucket_bytes() -> int:
    """``dist._DEFAULT_FIRST_BUCKET_BYTES`` of the installed torch (1 MiB in torch 2.x)."""
    import torch.distributed as dist

    return int(getattr(dist, "_DEFAULT_FIRST_BUCKET_BYTES", 1 << 20))


@dataclass(frozen=True)
class BucketPlan:
    """How DDP groups the trainable parameters: the size in bytes and dtype of each flat bucket."""

    bucket_bytes: tuple[int, ...]
    dtypes: tuple[torch.dtype, ...]

    @property
    def total_bytes(self) -> int:
        return sum(self.bucket_bytes)


def plan_buckets(model: torch.nn.Module, bucket_cap_bytes: int = BUCKET_CAP_BYTES) -> BucketPlan:
    """The buckets ``DistributedDataParallel(model, find_unused_parameters=True)`` allocates.

    Uses torch's own assignment function on meta stand-ins of the parameters, in the order
    ``_build_params_for_reducer`` lists them (module order, requires_grad only, no duplicates).
    """
    import torch.distributed as dist

    params, seen = [], set()
    for param in model.parameters():
        if param.requires_grad and id(param) not in seen:
            seen.add(id(param))
            params.append(param)
    if not params:
        return BucketPlan((), ())
    stand_ins = [torch.empty(p.shape, dtype=p.dtype, device="meta") for p in params]
    limits = [first_bucket_bytes(), bucket_cap_bytes]
    indices, _limits = dist._compute_bucket_assignment_by_size(stand_ins, limits, [False] * len(params))
    sizes, dtypes = [], []
    for bucket in reversed(indices):  # DDP passes list(reversed(bucket_indices)) to the Reducer
        dtype = params[bucket[0]].dtype
        numel = sum(params[i].numel() for i in bucket)
        sizes.append(numel * dtype.itemsize)
        dtypes.append(dtype)
    return BucketPlan(tuple(sizes), tuple(dtypes))


@dataclass(frozen=True)
class DdpBlock:
    """One allocation DDP makes at construction: a broadcast flat (freed at once) or a gradient bucket
    (kept for the whole run)."""

    module: str  # BROADCAST_MODULE | BUCKET_MODULE
    nbytes: int
    dtype: str  # as the trace names dtypes ("float32")

    @property
    def kept(self) -> bool:
        return self.module == BUCKET_MODULE


def ddp_blocks(model: torch.nn.Module, bucket_cap_bytes: int = BUCKET_CAP_BYTES) -> tuple[DdpBlock, ...]:
    """What ``DistributedDataParallel(model)`` allocates on each rank, in order: the broadcast flats of
    ``_sync_module_states``, then the Reducer's buckets. From sizes alone: no op runs."""
    flats = [DdpBlock(BROADCAST_MODULE, nbytes, dtype_name(dtype)) for nbytes, dtype in _broadcast_groups(model)]
    plan = plan_buckets(model, bucket_cap_bytes)
    buckets = [DdpBlock(BUCKET_MODULE, nbytes, dtype_name(dtype)) for nbytes, dtype in zip(plan.bucket_bytes, plan.dtypes)]
    return (*flats, *buckets)


def wrap_in_ddp(model: torch.nn.Module, tracer, world_size: int) -> list[torch.Tensor]:
    """Where a trainer wraps its model in DDP (``tracer`` active). The trace marks the point and what DDP
    would allocate there, at any world size: a rank's run is the one-GPU run at its share plus those
    blocks (``rank_trace``). With several GPUs they are also made here, in DDP's order, and the buckets
    returned: keep them alive for as long as the traced run, as the Reducer does."""
    with tracer.paused():  # planning makes meta stand-ins; they are not GPU memory
        blocks = ddp_blocks(model)
    tracer.mark_ddp_point(blocks)
    if world_size <= 1:
        return []
    buckets = []
    for block in blocks:
        tracer.module_stack.append(block.module)
        try:
            tensor = torch.empty(block.nbytes // _dtype(block.dtype).itemsize, dtype=_dtype(block.dtype))
        finally:
            tracer.module_stack.pop()
        if block.kept:
            buckets.append(tensor)
        del tensor  # a broadcast flat is freed once its group is broadcast and copied back
    tracer.label(buckets, "gradient")  # a second copy of the gradients
    return buckets


def rank_trace(trace):
    """A DDP rank's trace made from the one-GPU trace at its per-rank batch: DDP's blocks inserted where
    the trainer wraps the model, as ``wrap_in_ddp`` makes them with several GPUs (tests/test_ddp.py: equal
    to the rank's own trace, event for event). None where the loop did not mark the point."""
    at = trace.ddp_at
    if at is None:
        return None
    next_id = max((e.storage_id for e in trace.events), default=0) + 1
    iteration = trace.events[at - 1].iteration if at else 0
    inserted = []
    for offset, block in enumerate(trace.ddp_blocks):
        category = "gradient" if block.kept else category_for_phase("setup")  # as wrap_in_ddp's tensors are labelled
        alloc = AllocationEvent("alloc", next_id + offset, block.nbytes, block.dtype, category, block.module, "setup", iteration)
        inserted.append(alloc)
        if not block.kept:
            inserted.append(replace(alloc, op="free"))
    shift = len(inserted)
    answers = [replace(a, at=a.at + shift) if a.at >= at else a for a in trace.oracle_answers]
    bounds = [b + shift if b >= at else b for b in trace.iteration_bounds]
    return replace(trace, events=[*trace.events[:at], *inserted, *trace.events[at:]], oracle_answers=answers,
                   iteration_bounds=bounds, ddp_at=None, ddp_blocks=())  # fmt: skip


def _dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


def _broadcast_groups(model: torch.nn.Module) -> list[tuple[int, torch.dtype]]:
    """``take_tensors(states, 250 MiB)``: per dtype, tensors gathered until a group reaches the limit.

    Ultralytics passes ``broadcast_buffers=False`` (``forward_sync_buffers``) for the per-iteration
    sync, but the construction-time sync always includes buffers (``_sync_module_states``).
    """
    states = [*model.parameters(), *model.buffers()]
    open_groups: dict[torch.dtype, int] = {}
    groups: list[tuple[int, torch.dtype]] = []
    for tensor in states:
        size = tensor.numel() * tensor.element_size()
        open_groups[tensor.dtype] = open_groups.get(tensor.dtype, 0) + size
        if open_groups[tensor.dtype] >= BROADCAST_BUCKET_BYTES:
            groups.append((open_groups.pop(tensor.dtype), tensor.dtype))
    groups.extend((size, dtype) for dtype, size in open_groups.items() if size)
    return groups
