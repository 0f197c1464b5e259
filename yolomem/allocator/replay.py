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
from yolomem.collector import cyclic_gc_paused
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
    """``events`` once more, each storage id plus ``offset`` (so the copy's storages are its own).
    ``self_contained``: every storage the events allocate they also free, and they free no other; such
    a copy replayed from an allocator state seen before is taken from ``replay``'s memo."""

    events: Sequence
    offset: int
    self_contained: bool = False


@dataclass(frozen=True)
class _Played:
    """What a self-contained copy did from one allocator state: the state after it, the most allocated
    and reserved bytes within it (with the first event reaching each) and its cumulative counters."""

    after: tuple  # the allocator's snapshot after it
    change: tuple  # CachingAllocator.change_between the states before and after
    events: int
    max_allocated: int
    max_allocated_at: int  # events into the copy
    max_reserved: int
    max_reserved_event: Any
    allocator_peaks: tuple[int, int]  # the allocator's own peaks within it (allocated, reserved)
    counters: tuple[int, ...]  # increments of CachingAllocator.CUMULATIVE_COUNTERS


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

    @property
    def where(self) -> str:
        """'loss of iteration 1': the failing event's phase, and its iteration where it carries one."""
        return self.phase + (f" of iteration {self.iteration}" if self.iteration is not None else "")

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


@cyclic_gc_paused()  # a block object per allocation (yolomem.collector)
def replay(
    stream: Iterable[Sequence[Event] | Copy | Mark],
    allocator: CachingAllocator,
    *,
    on_event: Callable[[int, CachingAllocator], None] | None = None,
    upper: bool = False,
    without: frozenset[str] = frozenset(),
    memo: dict | None = None,
) -> ReplayRun:
    """Feed the stream's events to ``allocator``, running its marks in order (see the module docstring).

    ``memo``: a dict kept by the caller across replays of the same templates (same allocator config,
    capacity and ``upper``): a self-contained ``Copy`` (whole epochs repeat a few iterations many times)
    met again at an allocator state seen before is not replayed; the allocator takes the state it
    reached then, and the peaks and counters what it saw then. The figures are the same, event for event."""
    feed = _Feed(allocator, on_event, upper, without)
    try:
        for chunk in stream:
            if isinstance(chunk, Mark):
                chunk.action(allocator)
                feed.known = None
            elif isinstance(chunk, Checkpoint):
                chunk.runs.append(ReplayRun(allocator.stats(), feed.index + 1, feed.peak_allocated_index,
                                            feed.peak_reserved_event))  # fmt: skip
            elif isinstance(chunk, Copy):
                if memo is not None and chunk.self_contained and on_event is None and not without:
                    feed.memoized(chunk, memo)
                else:
                    feed.events(chunk.events, chunk.offset)
            else:
                feed.events(chunk, 0)
    except SimulatedOOM as error:
        event = feed.event
        feed.oom = OomPoint(
            index=feed.index, phase=getattr(event, "phase", ""), iteration=getattr(event, "iteration", None),
            requested_bytes=error.requested_bytes, segment_bytes=error.segment_bytes,
            allocated_bytes=error.allocated_bytes, reserved_bytes=error.reserved_bytes,
            capacity_bytes=error.capacity_bytes, message=str(error),
        )  # fmt: skip
    return ReplayRun(allocator.stats(), feed.index + 1, feed.peak_allocated_index, feed.peak_reserved_event, feed.oom)


class _Feed:
    """``replay``'s state: the handles of live storages, the stream position and the peaks seen."""

    def __init__(self, allocator: CachingAllocator, on_event, upper: bool, without: frozenset[str]) -> None:
        self.allocator, self.on_event, self.upper, self.without = allocator, on_event, upper, without
        self.handles: dict[int, int] = {}
        self.index = -1
        self.peak_allocated, self.peak_allocated_index = -1, 0
        self.peak_reserved, self.peak_reserved_event = 0, None
        self.event = None
        self.oom: OomPoint | None = None
        self.known: tuple | None = None  # the allocator's snapshot, while nothing has changed it since

    def events(self, chunk: Sequence[Event], offset: int) -> None:
        allocator, handles, on_event, upper, without = self.allocator, self.handles, self.on_event, self.upper, self.without
        malloc, free = allocator.malloc, allocator.free
        self.known = None
        index = self.index
        peak_allocated, peak_allocated_index = self.peak_allocated, self.peak_allocated_index
        peak_reserved, peak_reserved_event = self.peak_reserved, self.peak_reserved_event
        event = None
        try:
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
        finally:
            self.index, self.event = index, event
            self.peak_allocated, self.peak_allocated_index = peak_allocated, peak_allocated_index
            self.peak_reserved, self.peak_reserved_event = peak_reserved, peak_reserved_event

    def memoized(self, chunk: Copy, memo: dict) -> None:
        """A self-contained copy, from the memo when its events already ran from this allocator state."""
        allocator = self.allocator
        before = self.known if self.known is not None else allocator.snapshot()
        key = (id(chunk.events), before)
        played = memo.get(key)
        if played is None:
            memo[key] = played = self._record(chunk, before)
            self.known = played.after
            return
        allocator.apply_change(played.change)
        self.known = played.after
        for name, increment in zip(allocator.CUMULATIVE_COUNTERS, played.counters):
            setattr(allocator, name, getattr(allocator, name) + increment)
        start = self.index + 1
        self.index += played.events
        if played.events:
            self.event = chunk.events[-1]
        self._merge(played.max_allocated, start + played.max_allocated_at, played.max_reserved,
                    played.max_reserved_event, played.allocator_peaks)  # fmt: skip

    def _record(self, chunk: Copy, before: tuple) -> _Played:
        """Replay the copy with its peaks counted from its start, and keep what it did."""
        allocator = self.allocator
        counters = [getattr(allocator, name) for name in allocator.CUMULATIVE_COUNTERS]
        kept = (self.peak_allocated, self.peak_allocated_index, self.peak_reserved, self.peak_reserved_event,
                (allocator._peak_allocated, allocator._peak_reserved))  # fmt: skip
        start = self.index + 1
        self.peak_allocated, self.peak_reserved = -1, -1
        allocator.reset_peak_stats()
        try:
            self.events(chunk.events, chunk.offset)  # a SimulatedOOM leaves nothing in the memo
        finally:
            local = (self.peak_allocated, self.peak_allocated_index, self.peak_reserved, self.peak_reserved_event,
                     (allocator._peak_allocated, allocator._peak_reserved))  # fmt: skip
            self.peak_allocated, self.peak_allocated_index, self.peak_reserved, self.peak_reserved_event = kept[:4]
            allocator._peak_allocated, allocator._peak_reserved = kept[4]
            self._merge(*local)
        after = allocator.snapshot()
        increments = tuple(getattr(allocator, name) - at_start for name, at_start in zip(allocator.CUMULATIVE_COUNTERS, counters))
        return _Played(
            after=after, change=allocator.change_between(before, after), events=self.index + 1 - start,
            max_allocated=local[0], max_allocated_at=local[1] - start, max_reserved=local[2],
            max_reserved_event=local[3], allocator_peaks=local[4], counters=increments,
        )  # fmt: skip

    def _merge(self, max_allocated: int, max_allocated_index: int, max_reserved: int, max_reserved_event,
               allocator_peaks: tuple[int, int]) -> None:  # fmt: skip
        """Peaks seen within a copy, after those before it: the last new running maximum within the copy
        is the first event that reached its maximum."""
        if max_allocated > self.peak_allocated:
            self.peak_allocated, self.peak_allocated_index = max_allocated, max_allocated_index
        if max_reserved > self.peak_reserved:
            self.peak_reserved, self.peak_reserved_event = max_reserved, max_reserved_event
        allocator = self.allocator
        allocator._peak_allocated = max(allocator._peak_allocated, allocator_peaks[0])
        allocator._peak_reserved = max(allocator._peak_reserved, allocator_peaks[1])


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
                 upper: bool = False, without: frozenset[str] = frozenset(), large_segments_descending: bool = True) -> Replay:
    """Replay the trace's events; reserved bytes are noted at each iteration bound and at the end.
    ``upper`` and ``without`` as for ``replay``; ``large_segments_descending`` as for ``CachingAllocator``."""
    return replay_trace_and_prefix(trace, None, alloc_conf, capacity_bytes, upper=upper, without=without,
                                   large_segments_descending=large_segments_descending)[1]  # fmt: skip


def replay_trace_and_prefix(trace: Trace, prefix_iterations: int | None, alloc_conf: str | None = None,
                            capacity_bytes: int | None = None, *, upper: bool = False,
                            without: frozenset[str] = frozenset(), large_segments_descending: bool = True,
                            ) -> tuple[Replay | None, Replay]:  # fmt: skip
    """One pass for two figures: ``replay_trace`` of the trace's first ``prefix_iterations`` iterations
    (None: not asked, or the replay ran out before their end) and of the whole trace."""
    allocator = CachingAllocator(parse_alloc_conf(alloc_conf), capacity_bytes=capacity_bytes,
                                 large_segments_descending=large_segments_descending)  # fmt: skip
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
