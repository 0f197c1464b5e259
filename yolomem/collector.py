"""Python's cycle collector, paused while yolomem builds many short-lived objects at once.

Why: a trace makes ~10k fake tensors an iteration; unpacking, deriving or replaying a run makes or
touches one object per event (~25k for yolov8x). Each burst sets off the collector over and over, and
its full passes walk the whole heap (torch, Ultralytics). Measured on yolov8x 640/16 (2026-12-05): a
trace 10-15 % faster without it, unpacking a cached run 76 -> 34 ms (``benchmarks/bench_speed.py``
times the commands). None of these bursts makes reference cycles that matter: reference
counting frees every object they drop, and with it every tensor a traced step drops, which is what a
trace records. A tensor that only a cycle held would be freed at the trace's end, later than on a GPU:
a higher figure, never a lower one. The real CPU runs the tests compare traces with keep the collector on.

The collector's full passes also walk everything imported: torch, Ultralytics and torch._dynamo are
~400k tracked objects, about 190 ms a pass, and a ``fit --explain`` ran 7 such passes. Those objects live
as long as the process, so after the first trace has imported them they are frozen out of the
collector's sight (``gc.freeze``, the standard library's means for long-lived objects).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


_imports_frozen = False


def freeze_imported_objects() -> None:
    """``gc.freeze()`` once a process, after the heavy imports: what is alive then is the imported
    modules and their objects (a cycle already unreachable then would never be collected: a bounded
    one-off, never a growing one)."""
    global _imports_frozen
    if not _imports_frozen:
        gc.freeze()
        _imports_frozen = True


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """The collector off inside (also as a decorator), as it was on exit."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
