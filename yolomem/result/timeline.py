"""The memory timeline of one training iteration: allocated and reserved bytes after every event.

The trace is replayed from its first event (the model, optimizer state and EMA that setup leaves on
the device) through the chosen iteration with the same caching-allocator model and allocator settings
as ``estimate()`` and, like it, without a capacity: the curves reach the estimate's numbers. The x
axis is the event sequence (one storage allocated or freed), not time: a cheap op and a long kernel
take one step each.

Known limits: the same as the estimate's (no cuDNN/cuBLAS workspaces, no validation pass). Given a
``capacity_bytes``, a simulated device that runs out of memory stops the timeline at that event, and
``oom`` says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from yolomem.allocator.caching import CachingAllocator, parse_alloc_conf
from yolomem.allocator.replay import replay
from yolomem.result.estimate import Estimate, _layer_of
from yolomem.errors import UserError
from yolomem.trace.tracer import Trace

# Inside backward, autograd runs a few ops that carry the forward/loss tag of the module they belong to
# (1-3 events each). Shading every such run would stripe the backward band; runs shorter than this are
# drawn as part of the run before them. ``Timeline.phases`` keeps the exact runs.
SHADING_MIN_EVENTS = 16


@dataclass(frozen=True)
class PhaseSpan:
    """A run of consecutive events of one phase, as offsets into the timeline (``stop`` exclusive)."""

    phase: str  # preprocess | forward | loss | backward | optimizer | ema
    start: int
    stop: int


@dataclass(frozen=True)
class Timeline:
    """Allocated and reserved bytes after each event of one iteration; offsets count from its start."""

    iteration: int  # 0-based, as in AllocationEvent.iteration
    first_event: int  # index into Trace.events of offset 0
    allocated_bytes: tuple[int, ...]
    reserved_bytes: tuple[int, ...]
    phases: tuple[PhaseSpan, ...]  # exact: every run of one phase, as it ran (``_phases_as_run``)
    shading: tuple[PhaseSpan, ...]  # for the eye: runs shorter than SHADING_MIN_EVENTS joined to the one before
    peak_offset: int  # offset of the event that brought allocated memory to its peak in this iteration
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    peak_phase: str
    peak_layer: str  # YAML layer ("model.4") whose op made the peak allocation; "" when none was running
    oom: str | None = None  # set when the simulated device ran out before the iteration ended

    @property
    def steps(self) -> int:
        return len(self.allocated_bytes)


def iteration_timeline(
    trace: Trace,
    *,
    iteration: int = -1,
    alloc_conf: str | None = None,
    capacity_bytes: int | None = None,
) -> Timeline:
    """Replay ``trace`` and keep the allocator's counters over one iteration (default: the last)."""
    bounds = list(trace.iteration_bounds)
    if not bounds:
        raise UserError("the trace has no training iterations to draw a timeline of")
    index = iteration if iteration >= 0 else len(bounds) + iteration
    if not 0 <= index < len(bounds):
        raise UserError(f"iteration={iteration} is out of range; the trace has {len(bounds)} iteration(s)")
    first = bounds[index]
    stop = bounds[index + 1] if index + 1 < len(bounds) else len(trace.events)

    allocated: list[int] = []
    reserved: list[int] = []

    def record(event_index: int, allocator: CachingAllocator) -> None:
        if event_index >= first:
            allocated.append(allocator.allocated_bytes)
            reserved.append(allocator.reserved_bytes)

    allocator = CachingAllocator(parse_alloc_conf(alloc_conf), capacity_bytes=capacity_bytes)
    run = replay([trace.events[:stop]], allocator, on_event=record)
    oom = run.oom.message if run.oom else None
    events = trace.events[first : first + len(allocated)]
    if not events:
        raise UserError(f"the simulated device ran out of memory before iteration {index} started: {oom}")
    spans = _phase_spans(_phases_as_run(events))
    peak_offset = max(range(len(allocated)), key=allocated.__getitem__)  # first offset at the maximum
    peak_event = events[peak_offset]
    return Timeline(
        iteration=index,
        first_event=first,
        allocated_bytes=tuple(allocated),
        reserved_bytes=tuple(reserved),
        phases=spans,
        shading=_shading(spans),
        peak_offset=peak_offset,
        peak_allocated_bytes=allocated[peak_offset],
        peak_reserved_bytes=max(reserved),
        peak_phase=peak_event.phase,
        peak_layer=_layer_of(peak_event.module) if peak_event.module else "",
        oom=oom,
    )


def estimate_timeline(estimate: Estimate, iteration: int = -1) -> Timeline:
    """The timeline of an estimate's own trace, under the estimate's allocator settings. Like the
    estimate's figures it is the full requirement: the card (``gpu=``) does not cut it short. The default
    is the last configured iteration (epoch 1's densest batch); the upper figure's iteration and the
    epoch levels traced after it are reachable by index."""
    if estimate.trace is None:
        raise UserError("this estimate carries no trace (it was loaded from JSON?); run estimate() again")
    config = estimate.config
    if iteration == -1:
        iteration = config.iterations - 1
    return iteration_timeline(estimate.trace, iteration=iteration, alloc_conf=config.alloc_conf)


def _phases_as_run(events) -> list[str]:
    """The phase running at each event. A free carries the phase that allocated its storage (a gradient's
    is the backward's, though ``zero_grad`` frees it inside the optimizer step), so a free takes the phase
    of the allocation before it."""
    running, phases = events[0].phase if events else "", []
    for event in events:
        if event.op == "alloc":
            running = event.phase
        phases.append(running)
    return phases


def _phase_spans(phases: list[str]) -> tuple[PhaseSpan, ...]:
    spans: list[PhaseSpan] = []
    start = 0
    for offset in range(1, len(phases) + 1):
        if offset == len(phases) or phases[offset] != phases[start]:
            spans.append(PhaseSpan(phases[start], start, offset))
            start = offset
    return tuple(spans)


def _shading(spans: tuple[PhaseSpan, ...]) -> tuple[PhaseSpan, ...]:
    merged: list[PhaseSpan] = []
    for span in spans:
        if merged and (span.stop - span.start < SHADING_MIN_EVENTS or span.phase == merged[-1].phase):
            merged[-1] = PhaseSpan(merged[-1].phase, merged[-1].start, span.stop)
        else:
            merged.append(span)
    return tuple(merged)


__all__ = ["PhaseSpan", "Timeline", "estimate_timeline", "iteration_timeline"]
