"""A liveness plan: tensors with lifetimes, placed at offsets in one block of device memory.

This is what an inference runtime does with the activations of a static graph. TensorRT sizes each
execution context's block this way (its build log: ``[BlockAssignment] ... assign N blocks to M
nodes requiring X bytes``); ONNX Runtime's memory pattern does the same for each input shape.

- ``peak_live_bytes``: the largest sum of tensors alive at one step. No placement can use less.
- ``packed_bytes``: the block a placement needs. Tensors are placed largest first, each at the lowest
  offset where it overlaps, in time, no tensor already placed at overlapping addresses (greedy
  by-size first fit, the usual heuristic for this NP-hard packing). It is at least the peak, and the
  figure a runtime gets is near it; TensorRT's own heuristic (``ShiftNTopDown``) is not published.

Each tensor is rounded up to ``ALIGNMENT`` bytes first.
"""

from __future__ import annotations

from dataclasses import dataclass

ALIGNMENT = 256  # bytes; cudaMalloc's alignment, assumed for the runtime's sub-allocations too


@dataclass(frozen=True)
class PlannedTensor:
    """One activation: its size and the first and last step (node index) that touch it."""

    name: str
    nbytes: int
    first: int
    last: int

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise ValueError(f"tensor {self.name!r} dies (step {self.last}) before it is made (step {self.first})")


@dataclass(frozen=True)
class Plan:
    tensors: tuple[PlannedTensor, ...]
    offsets: tuple[int, ...]  # byte offset of each tensor in the block
    peak_live_bytes: int
    packed_bytes: int
    peak_step: int  # a step at which peak_live_bytes are alive

    def live_at(self, step: int) -> tuple[PlannedTensor, ...]:
        return tuple(t for t in self.tensors if t.first <= step <= t.last)


def aligned(nbytes: int, alignment: int = ALIGNMENT) -> int:
    return -(-nbytes // alignment) * alignment


def plan(tensors: list[PlannedTensor] | tuple[PlannedTensor, ...], alignment: int = ALIGNMENT) -> Plan:
    """Peak and packed size of ``tensors``. Two tensors conflict when their [first, last] steps overlap."""
    tensors = tuple(tensors)
    sizes = [aligned(t.nbytes, alignment) for t in tensors]
    peak, peak_step = _peak(tensors, sizes)
    offsets = [0] * len(tensors)
    placed: list[int] = []
    for i in sorted(range(len(tensors)), key=lambda i: (-sizes[i], tensors[i].first, i)):
        busy = sorted((offsets[j], offsets[j] + sizes[j]) for j in placed if _overlap(tensors[i], tensors[j]))
        offset = 0
        for start, end in busy:  # first gap from the bottom that holds the tensor
            if offset + sizes[i] <= start:
                break
            offset = max(offset, end)
        offsets[i] = offset
        placed.append(i)
    packed = max((offsets[i] + sizes[i] for i in range(len(tensors))), default=0)
    return Plan(tensors, tuple(offsets), peak, packed, peak_step)


def _overlap(a: PlannedTensor, b: PlannedTensor) -> bool:
    return a.first <= b.last and b.first <= a.last


def _peak(tensors: tuple[PlannedTensor, ...], sizes: list[int]) -> tuple[int, int]:
    changes: dict[int, int] = {}
    for tensor, size in zip(tensors, sizes):
        changes[tensor.first] = changes.get(tensor.first, 0) + size
        changes[tensor.last + 1] = changes.get(tensor.last + 1, 0) - size
    live = peak = 0
    peak_step = 0
    for step in sorted(changes):
        live += changes[step]
        if live > peak:
            peak, peak_step = live, step
    return peak, peak_step
