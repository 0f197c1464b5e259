"""The one replay: a trace's allocation events through the simulated caching allocator."""

from __future__ import annotations

from dataclasses import dataclass

from yolomem.allocator.caching import CachingAllocator, SimulatedOOM, parse_alloc_conf
from yolomem.trace.tracer import AllocationEvent, Trace


@dataclass(frozen=True)
class Replay:
    """The allocator's view of a trace."""

    peak_allocated_bytes: int
    peak_reserved_bytes: int
    reserved_per_iteration: tuple[int, ...]
    peak_index: int  # event index at which allocated memory peaked
    live_at_peak: tuple[AllocationEvent, ...]
    num_alloc_retries: int
    oom: str | None


def replay_trace(trace: Trace, alloc_conf: str | None = None, capacity_bytes: int | None = None, *,
                 upper: bool = False, without: frozenset[str] = frozenset()) -> Replay:
    """Replay the trace's events through the caching allocator model. ``upper``: kernel workspaces at
    their upper-figure size (``AllocationEvent.size``); ``without``: categories left out (to measure
    what one of them adds)."""
    allocator = CachingAllocator(parse_alloc_conf(alloc_conf), capacity_bytes=capacity_bytes)
    handles: dict[int, int] = {}
    bounds = set(trace.iteration_bounds[1:])
    reserved_per_iteration: list[int] = []
    peak, peak_index = -1, 0
    oom = None
    for index, event in enumerate(trace.events):
        if index in bounds:
            reserved_per_iteration.append(allocator.reserved_bytes)
        if event.op == "alloc":
            if without and event.category in without:
                continue
            try:
                handle = allocator.malloc(event.size(upper))
            except SimulatedOOM as error:
                oom = str(error)
                break
            if handle is not None:
                handles[event.storage_id] = handle
            if allocator.allocated_bytes > peak:
                peak, peak_index = allocator.allocated_bytes, index
        else:
            handle = handles.pop(event.storage_id, None)
            if handle is not None:
                allocator.free(handle)
    reserved_per_iteration.append(allocator.reserved_bytes)
    stats = allocator.stats()
    live_at_peak = _live_at(trace.events, peak_index)  # rebuilt once: cheaper than copying at each new peak
    return Replay(
        peak_allocated_bytes=stats.peak_allocated_bytes,
        peak_reserved_bytes=stats.peak_reserved_bytes,
        reserved_per_iteration=tuple(reserved_per_iteration),
        peak_index=peak_index,
        live_at_peak=live_at_peak,
        num_alloc_retries=stats.num_alloc_retries,
        oom=oom,
    )


def _live_at(events: list[AllocationEvent], index: int) -> tuple[AllocationEvent, ...]:
    live: dict[int, AllocationEvent] = {}
    for event in events[: index + 1]:
        if event.op == "alloc":
            live[event.storage_id] = event
        else:
            live.pop(event.storage_id, None)
    return tuple(live.values())
