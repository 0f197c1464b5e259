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

Not modelled: NCCL's own buffers (outside the caching allocator, like the CUDA context), and the
small per-parameter ``local_used_map`` of ``find_unused_parameters`` (4 bytes per parameter tensor).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

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


def allocate_ddp_state(model: torch.nn.Module, tracer, bucket_cap_bytes: int = BUCKET_CAP_BYTES) -> list[torch.Tensor]:
    """Make DDP's allocations inside ``tracer`` (which must be active), in the order DDP makes them.

    Returns the bucket tensors: keep them alive for as long as the traced run, as the Reducer does.
    The broadcast flats are made and dropped here (allocation + free in the trace, phase ``setup``).
    """
    tracer.module_stack.append(BROADCAST_MODULE)
    try:
        for group_bytes, dtype in _broadcast_groups(model):
            flat = torch.empty(group_bytes // dtype.itemsize, dtype=dtype)
            del flat  # freed once the group is broadcast and copied back
    finally:
        tracer.module_stack.pop()
    with tracer.paused():  # planning makes meta stand-ins; they are not GPU memory
        plan = plan_buckets(model, bucket_cap_bytes)
    buckets = []
    tracer.module_stack.append(BUCKET_MODULE)
    try:
        for nbytes, dtype in zip(plan.bucket_bytes, plan.dtypes):
            buckets.append(torch.empty(nbytes // dtype.itemsize, dtype=dtype))
    finally:
        tracer.module_stack.pop()
    tracer.label(buckets, "gradient")  # a second copy of the gradients
    return buckets


def _broadcast_groups(model: torch.nn.Module) -> list[tuple[int, torch.dtype]]:
    """``take_tensors(states, 250 MiB)``: per dtype, tensors gathered until a group reaches the limit.

    Ultralytics passes ``broadcast_buffers=False`` (``forward_sync_buffers``) for the per-iteration
    sync, but the construction-time sync always includes buffers (``_sync_module_states``).
    """
    states = [p.detach() for p in model.parameters()] + [b.detach() for b in model.buffers()]
    open_groups: dict[torch.dtype, int] = {}
    groups: list[tuple[int, torch.dtype]] = []
    for tensor in states:
        size = tensor.numel() * tensor.element_size()
        open_groups[tensor.dtype] = open_groups.get(tensor.dtype, 0) + size
        if open_groups[tensor.dtype] >= BROADCAST_BUCKET_BYTES:
            groups.append((open_groups.pop(tensor.dtype), tensor.dtype))
    groups.extend((size, dtype) for dtype, size in open_groups.items() if size)
    return groups
