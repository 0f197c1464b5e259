"""The one replay: allocation events through the simulated caching allocator.

Every memory figure yolomem gives comes from ``replay``: the estimate (``replay_trace``), whole epochs
(``yolomem.result.epochs``), the timeline of one iteration (``yolomem.result.timeline``) and the sweeps'
verdicts. What differs between them is only the stream they feed it:

- the stream is a sequence of *chunks*: a run of events (anything with ``op``, ``storage_id`` and
  ``nbytes``), a ``Copy`` of such a run with its storage ids shifted (one more iteration from the same
  template), or a ``Mark``, an action on the allocator between two events: note the reserved bytes at
  an iteration bound, or ``_clear_memory`` (``empty_cache``) before validation;
- ``on_event(index, allocator)`` runs after each event, for callers that keep a curve;
- ``upper``: each allocation at its upper-figure size (``size(upper=True)``: kernel workspaces at their
  upper rule, ``yolomem.result.upper``); ``without``: allocations of these categories left out (to
  measure what one of them adds).

Frees of ids never allocated (or of zero-byte storages, which get no block) are ignored; allocating a
live id twice is an error in the caller's stream. A ``SimulatedOOM`` ends the replay: the result says
where (``OomPoint``), and the figures are those up to that point.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from yolomem.allocator.caching import AllocatorStats, CachingAllocator, SimulatedOOM, parse_alloc_conf
from yolomem.trace.tracer import AllocationEvent, Trace

__all__ = ["Checkpoint", "Copy", "Mark", "OomPoint", "Replay", "ReplayEvent", "ReplayRun", "replay", "replay_trace",
           "replay_trace_and_prefix"]


class Event(Protocol):
    op: str  # "alloc" | "free"
    storage_id: int
    nbytes: int


@dataclass(frozen=True, slots=True)
class ReplayEvent:
    """The least an event needs for ``replay``; the tracer's events carry more."""

    op: str  # "alloc" or "free"
    storage_id: int  # unique among live allocations
    nbytes: int
    phase: str = ""
    upper_nbytes: int | None = None  # the size under the upper figure's rule (else as nbytes)

    def size(self, upper: bool = False) -> int:
        return self.upper_nbytes if upper and self.upper_nbytes is not None else self.nbytes


@dataclass(frozen=True)
class Mark:
    """An action on the allocator between two events (record a figure, ``empty_cache``)."""

    action: Callable[[CachingAllocator], None]


@dataclass(frozen=True)
class Checkpoint:
    """A point in the stream where ``replay`` notes what it has seen so far (``runs`` gets a ``ReplayRun``):
    one pass answers for the stream up to here and for all of it."""

    runs: list


@dataclass(frozen=True)
class Copy:
    """``events`` once more, each storage id plus ``offset`` (so the copy's storages are its own)."""

    events: Sequence
    offset: int


@dataclass(frozen=True)
class OomPoint:
    """Where the simulated device ran out: the allocation that failed, and the allocator's state then."""

    index: int  # position of the failing event in the stream (marks not counted)
    phase: str  # the failing event's phase ("" when it carries none)
    iteration: int | None  # the failing event's iteration, when it carries one
    requested_bytes: int
    segment_bytes: int  # what the allocator tried to get from the device
    allocated_bytes: int
    reserved_bytes: int
    capacity_bytes: int | None
    message: str

    def to_json(self) -> dict:
        return {
            "phase": self.phase, "iteration": self.iteration, "requested_bytes": self.requested_bytes,
            "segment_bytes": self.segment_bytes, "allocated_bytes": self.allocated_bytes,
            "reserved_bytes": self.reserved_bytes, "capacity_bytes": self.capacity_bytes, "message": self.message,
        }  # fmt: skip


@dataclass(frozen=True)
class ReplayRun:
    """What one pass of ``replay`` saw."""

    stats: AllocatorStats
    events: int  # events replayed (the failing one included)
    peak_allocated_index: int  # stream position of the allocation at which allocated bytes first peaked
    peak_reserved_event: Any = field(default=None, compare=False)  # the allocation at which reserved first peaked
    oom: OomPoint | None = None


def replay(
    stream: Iterable[Sequence[Event] | Copy | Mark],
    allocator: CachingAllocator,
    *,
    on_event: Callable[[int, CachingAllocator], None] | None = None,
    upper: bool = False,
    without: frozenset[str] = frozenset(),
) -> ReplayRun:
    """Feed the stream's events to ``allocator``, running its marks in order (see the module docstring)."""
    handles: dict[int, int] = {}
    malloc, free = allocator.malloc, allocator.free
    index = -1
    peak_allocated, peak_allocated_index = -1, 0
    peak_reserved, peak_reserved_event = 0, None
    event = None
    oom = None
    try:
        for chunk in stream:
            if isinstance(chunk, Mark):
                chunk.action(allocator)
                continue
            if isinstance(chunk, Checkpoint):
                chunk.runs.append(ReplayRun(allocator.stats(), index + 1, peak_allocated_index, peak_reserved_event))
                continue
            offset = 0
            if isinstance(chunk, Copy):
                chunk, offset = chunk.events, chunk.offset
            for event in chunk:
                index += 1
                op = event.op
                if op == "alloc":
                    if without and event.category in without:
                        continue
                    key = event.storage_id + offset
                    if key in handles:
                        raise ValueError(f"event {index}: storage {key} allocated twice")
                    handle = malloc(event.size(True) if upper else event.nbytes)
                    if handle is not None:  # zero-byte storages get no block
                        handles[key] = handle
                    # the counters themselves: a property call per event is a tenth of a replay's time
                    if allocator._allocated > peak_allocated:
                        peak_allocated, peak_allocated_index = allocator._allocated, index
                    if allocator._reserved > peak_reserved:
                        peak_reserved, peak_reserved_event = allocator._reserved, event
                elif op == "free":
                    handle = handles.pop(event.storage_id + offset, None)
                    if handle is not None:
                        free(handle)
                else:
                    raise ValueError(f"event {index}: op must be 'alloc' or 'free', got {op!r}")
                if on_event is not None:
                    on_event(index, allocator)
    except SimulatedOOM as error:
        oom = OomPoint(
            index=index, phase=getattr(event, "phase", ""), iteration=getattr(event, "iteration", None),
            requested_bytes=error.requested_bytes, segment_bytes=error.segment_bytes,
            allocated_bytes=error.allocated_bytes, reserved_bytes=error.reserved_bytes,
            capacity_bytes=error.capacity_bytes, message=str(error),
        )  # fmt: skip
    return ReplayRun(allocator.stats(), index + 1, peak_allocated_index, peak_reserved_event, oom)


# -- a trace's training iterations ----------------------------------------------------------------
@dataclass(frozen=True)
class Replay:
    """The allocator's view of a trace."""

    peak_allocated_bytes: int
    peak_reserved_bytes: int
    reserved_per_iteration: tuple[int, ...]
    peak_index: int  # event index at which allocated memory peaked
    live_at_peak: tuple[AllocationEvent, ...]
    num_alloc_retries: int
    oom: OomPoint | None


def replay_trace(trace: Trace, alloc_conf: str | None = None, capacity_bytes: int | None = None, *,
                 upper: bool = False, without: frozenset[str] = frozenset()) -> Replay:
    """Replay the trace's events; reserved bytes are noted at each iteration bound and at the end.
    ``upper`` and ``without`` as for ``replay``."""
    return replay_trace_and_prefix(trace, None, alloc_conf, capacity_bytes, upper=upper, without=without)[1]


def replay_trace_and_prefix(trace: Trace, prefix_iterations: int | None, alloc_conf: str | None = None,
                            capacity_bytes: int | None = None, *, upper: bool = False,
                            without: frozenset[str] = frozenset()) -> tuple[Replay | None, Replay]:  # fmt: skip
    """One pass for two figures: ``replay_trace`` of the trace's first ``prefix_iterations`` iterations
    (None: not asked, or the replay ran out before their end) and of the whole trace."""
    allocator = CachingAllocator(parse_alloc_conf(alloc_conf), capacity_bytes=capacity_bytes)
    reserved_per_iteration: list[int] = []
    note = Mark(lambda a: reserved_per_iteration.append(a.reserved_bytes))
    bounds = list(trace.iteration_bounds)
    prefix_end = bounds[prefix_iterations] if prefix_iterations is not None and len(bounds) > prefix_iterations else None
    checkpoint = Checkpoint([])
    chunks = _chunks(trace.events, bounds[1:], note, prefix_end, checkpoint)
    run = replay(chunks, allocator, upper=upper, without=without)
    reserved_per_iteration.append(allocator.reserved_bytes)
    prefix = None
    if checkpoint.runs:  # at the prefix's end the bound's note gave its final reserved bytes
        prefix = _replay_of(trace, checkpoint.runs[0], reserved_per_iteration[:prefix_iterations])
    return prefix, _replay_of(trace, run, reserved_per_iteration)


def _replay_of(trace: Trace, run: ReplayRun, reserved_per_iteration: list[int]) -> Replay:
    return Replay(
        peak_allocated_bytes=run.stats.peak_allocated_bytes,
        peak_reserved_bytes=run.stats.peak_reserved_bytes,
        reserved_per_iteration=tuple(reserved_per_iteration),
        peak_index=run.peak_allocated_index,
        live_at_peak=_live_at(trace.events, run.peak_allocated_index),  # rebuilt once: cheaper than at each new peak
        num_alloc_retries=run.stats.num_alloc_retries,
        oom=run.oom,
    )


def _chunks(events: list, bounds: Sequence[int], mark: Mark, checkpoint_at: int | None = None,
            checkpoint: Checkpoint | None = None) -> Iterable[Sequence[Event] | Mark | Checkpoint]:  # fmt: skip
    """``events`` cut at each bound, with ``mark`` before the events from that bound on, and
    ``checkpoint`` after the mark at ``checkpoint_at`` (a bound)."""
    start = 0
    for bound in sorted({b for b in bounds if 0 <= b < len(events)}):
        yield events[start:bound]
        yield mark
        if bound == checkpoint_at:
            yield checkpoint
        start = bound
    yield events[start:]


def _live_at(events: list[AllocationEvent], index: int) -> tuple[AllocationEvent, ...]:
    live: dict[int, AllocationEvent] = {}
    for event in events[: index + 1]:
        if event.op == "alloc":
            live[event.storage_id] = event
        else:
            live.pop(event.storage_id, None)
    return tuple(live.values())
