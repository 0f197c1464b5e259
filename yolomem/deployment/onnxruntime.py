"""ONNX Runtime with the CUDA execution provider, as Ultralytics creates its session (no provider
options: every default applies; ``deployment_memory.md`` section 3).

- **weights**: the initializers, FP32 (FP16 when exported with ``quantize=16`` on a GPU), planned into
  one buffer and taken with the arena's ``Reserve`` (exact size, outside its growth).
- **activations**: the memory pattern of a ``Run()`` (``enable_mem_pattern`` is on): a liveness plan
  over the ONNX graph, which ONNX Runtime does not fuse for SiLU (``yolomem.deployment.fusion``).
- **cuDNN workspace**: ``cudnn_conv_algo_search=EXHAUSTIVE`` with ``cudnn_conv_use_max_workspace=1``
  (the default since 1.14) benchmarks each convolution with the largest workspace any algorithm asks;
  the GEMM algorithm's im2col buffer (k*k*C_in*H_out*W_out per image) stands for it (high); 0 (low).
- **arena**: the BFC arena's regions after two runs (the first allocates tensor by tensor and records
  the pattern, the second takes the pattern as one block). ``kNextPowerOfTwo`` (the default) grows
  each new region to twice the last, from ``initial_chunk_size_bytes`` 1 MiB, capped at
  ``max_power_of_two_extend_bytes`` 1 GiB (PR 15983); ``kSameAsRequested`` grows by the request. A
  chunk is split when it is at least twice the request or leaves 128 MiB; regions are never returned.
- **CUDA context and libraries**: ORT 1.14.1 took 376 MB for a 70 KB model on a T4 (issue 15098):
  the figure; importing torch into the same process (Ultralytics does) raised one session from
  345 MB to 1031 MB (issue 9138): up to 686 MB more.
"""

from __future__ import annotations

from dataclasses import dataclass

from yolomem.config.models import ResolvedModel
from yolomem.deployment.fusion import Rules, element_bytes_for, materialize
from yolomem.deployment.graph import Graph, capture_graph, export_ready_model
from yolomem.deployment.liveness import aligned, plan
from yolomem.deployment.terms import Term

MiB = 1 << 20
MB = 10**6
INITIAL_CHUNK = 1 * MiB  # BFCArena initial_chunk_size_bytes (logged default 1048576)
MAX_POWER_OF_TWO_EXTEND = 1 << 30  # max_power_of_two_extend_bytes default (PR 15983)
MAX_INTERNAL_FRAGMENTATION = 128 * MiB  # split a chunk that would waste this much
MIN_ALLOCATION = 256  # kMinAllocationSize
ORT_RUNTIME_BYTES = 376 * MB  # T4, ORT 1.14.1, 70 KB model (issue 15098)
TORCH_IN_PROCESS_BYTES = (1031 - 345) * MB  # issue 9138
STRATEGIES = ("kNextPowerOfTwo", "kSameAsRequested")


class BfcArena:
    """Regions and chunks of ONNX Runtime's BFC arena (``onnxruntime/core/framework/bfc_arena.cc``)."""

    def __init__(self, strategy: str = "kNextPowerOfTwo"):
        if strategy not in STRATEGIES:
            raise ValueError(f"arena_extend_strategy {strategy!r} is not one of {STRATEGIES}")
        self.strategy = strategy
        self.region_size = INITIAL_CHUNK  # curr_region_allocation_bytes_
        self.regions: list[list[list]] = []  # each region: chunks [offset, size, free]
        self.reserved_bytes = 0  # Reserve(): exact blocks outside the regions

    @property
    def total_bytes(self) -> int:
        return self.reserved_bytes + sum(sum(c[1] for c in region) for region in self.regions)

    def reserve(self, nbytes: int) -> None:
        self.reserved_bytes += aligned(nbytes, MIN_ALLOCATION)

    def alloc(self, nbytes: int) -> tuple[int, int]:
        rounded = max(aligned(nbytes, MIN_ALLOCATION), MIN_ALLOCATION)
        found = self._best_fit(rounded)
        if found is None:
            self._extend(rounded)
            found = self._best_fit(rounded)
        region, index = found
        chunk = self.regions[region][index]
        if chunk[1] >= 2 * rounded or chunk[1] - rounded >= MAX_INTERNAL_FRAGMENTATION:
            self.regions[region].insert(index + 1, [chunk[0] + rounded, chunk[1] - rounded, True])
            chunk[1] = rounded
        chunk[2] = False
        return region, chunk[0]

    def free(self, handle: tuple[int, int]) -> None:
        region, offset = handle
        chunks = self.regions[region]
        index = next(i for i, c in enumerate(chunks) if c[0] == offset)
        chunks[index][2] = True
        if index + 1 < len(chunks) and chunks[index + 1][2]:  # merge with the next free chunk
            chunks[index][1] += chunks.pop(index + 1)[1]
        if index > 0 and chunks[index - 1][2]:  # and the previous one
            chunks[index - 1][1] += chunks.pop(index)[1]

    def _best_fit(self, rounded: int):
        best = None
        for r, region in enumerate(self.regions):
            for i, (_offset, size, free) in enumerate(region):
                if free and size >= rounded and (best is None or size < best[0]):
                    best = (size, r, i)
        return None if best is None else (best[1], best[2])

    def _extend(self, rounded: int) -> None:
        if self.strategy == "kSameAsRequested":
            size = rounded
        else:
            increased = False
            while rounded > self.region_size:
                self.region_size *= 2
                increased = True
            size = self.region_size
            if not increased:
                self.region_size = min(self.region_size * 2, max(MAX_POWER_OF_TWO_EXTEND, size))
        self.regions.append([[0, size, True]])


@dataclass(frozen=True)
class OrtMemory:
    runtime: tuple[Term, ...]
    arena_bytes: dict[str, int]  # strategy -> the arena's regions plus reserved blocks after two runs
    notes: tuple[str, ...]


def conv_workspaces(graph: Graph, element: int) -> dict[int, int]:
    """Node index -> the GEMM algorithm's im2col workspace of each convolution (bytes)."""
    sizes = {}
    for node in graph.nodes:
        if node.op != "convolution" or len(node.kernel) != 4 or not node.creates:
            continue
        _out, c_in, kh, kw = node.kernel
        batch, _c, h_out, w_out = graph.buffers[node.creates[0]].shape
        if kh * kw > 1:  # 1x1 convolutions are plain GEMMs
            sizes[node.index] = batch * c_in * kh * kw * h_out * w_out * element
    return sizes


def session_memory(resolved: ResolvedModel, batch: int, imgsz: int, precision: str, context_bytes: int,
                   strategy: str = "kNextPowerOfTwo", nc: int | None = None, channels: int = 3) -> OrtMemory:
    """The terms of an ONNX Runtime CUDA session of the exported model, run at (batch, channels, imgsz, imgsz)."""
    if precision not in ("fp32", "fp16"):
        raise ValueError("ONNX Runtime's CUDA EP: precision fp32 or fp16")
    model = export_ready_model(resolved, nc, (imgsz, imgsz), "onnx", False)
    graph = capture_graph(resolved, (batch, channels, imgsz, imgsz), model=model, fmt="onnx")
    element = 4 if precision == "fp32" else 2
    weights = sum(aligned(count * element, MIN_ALLOCATION) for _n, count, _r in graph.weight_tensors)
    materialized = materialize(graph, Rules.onnxruntime(), element_bytes_for(precision, graph.head_prefix))
    pattern = plan(materialized.tensors)
    workspaces = conv_workspaces(graph, element)
    largest_workspace = max(workspaces.values(), default=0)
    arenas = {name: _two_runs(weights, materialized.tensors, pattern.packed_bytes, workspaces, name)
              for name in STRATEGIES}  # fmt: skip
    arena_low = _two_runs(weights, materialized.tensors, pattern.packed_bytes, {}, strategy)
    arena = arenas[strategy]
    growth = arena - weights - pattern.packed_bytes - largest_workspace
    runtime = (
        Term.exact("weights", f"weights (initializers, {precision.upper()})", weights, "counted"),
        Term.exact("activations", "activations (memory pattern of one Run)", pattern.packed_bytes, "planned",
                   f"{len(materialized.tensors)} tensors: SiLU as Sigmoid + Mul, Split/Concat/Transpose copy"),
        Term("cudnn_workspace", "cuDNN workspace (EXHAUSTIVE search, max workspace)", largest_workspace, 0,
             largest_workspace, "planned", "largest im2col buffer of a convolution; 0 with HEURISTIC search"),
        # low: the arena without cuDNN workspaces; on small graphs the workspace's own region can leave less
        # growth beside it than that, so the low end is whichever is smaller
        Term("arena_growth", f"arena growth ({strategy})", max(growth, 0),
             min(max(arena_low - weights - pattern.packed_bytes, 0), max(growth, 0)), max(growth, 0), "planned",
             "regions beyond the live bytes after two runs"),
        Term.exact("cuda_context", "CUDA context", context_bytes, "assumed"),
        Term("ort_libraries", "ONNX Runtime's libraries (cuDNN, cuBLAS) beside torch", TORCH_IN_PROCESS_BYTES, 0,
             TORCH_IN_PROCESS_BYTES, "reported",
             "376 MB for a 70 KB model on a T4 (issue 15098, context included); +686 MB with torch imported (issue 9138)"),
    )  # fmt: skip
    notes = (f"arena reserved after two runs: {arenas['kNextPowerOfTwo'] / MiB:.0f} MiB with kNextPowerOfTwo, "
             f"{arenas['kSameAsRequested'] / MiB:.0f} MiB with kSameAsRequested",)  # fmt: skip
    return OrtMemory(runtime, arenas, notes)


def _two_runs(weights: int, tensors, pattern_bytes: int, workspaces: dict[int, int], strategy: str) -> int:
    """The arena's size after the session is created and run twice."""
    arena = BfcArena(strategy)
    arena.reserve(weights)
    starts: dict[int, list] = {}
    ends: dict[int, list] = {}
    for tensor in tensors:
        starts.setdefault(tensor.first, []).append(tensor)
        ends.setdefault(tensor.last, []).append(tensor)
    steps = sorted(set(starts) | set(ends) | set(workspaces))
    handles = {}
    for step in steps:  # run 1: tensor by tensor, as the pattern is recorded
        for tensor in starts.get(step, []):
            handles[tensor.name] = arena.alloc(tensor.nbytes)
        if step in workspaces:
            arena.free(arena.alloc(workspaces[step]))
        for tensor in ends.get(step, []):
            arena.free(handles.pop(tensor.name))
    block = arena.alloc(pattern_bytes)  # run 2: the pattern as one block
    for step in sorted(workspaces):
        arena.free(arena.alloc(workspaces[step]))
    arena.free(block)
    return arena.total_bytes
