"""A trace in columns, for the disk cache: a few arrays and string tables instead of one object per event.

A run of yolov8x holds ~25k events; pickled as dataclasses that is megabytes and a tenth of a second to
read back. As columns (op, storage id, bytes, iteration as integers; dtype, category, module and phase
as indices into small tables) it is a quarter of that and reads back in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from yolomem.collector import cyclic_gc_paused
from yolomem.trace.tracer import AllocationEvent, OracleAnswer, Trace


@dataclass(frozen=True)
class PackedTrace:
    alloc: np.ndarray  # bool
    storage_id: np.ndarray  # int64
    nbytes: np.ndarray  # int64
    upper_nbytes: np.ndarray  # int64, -1 where an event has none (yolomem.trace.workspaces)
    iteration: np.ndarray  # int64
    labels: np.ndarray  # int32 (n, 4): indices into tables for dtype, category, module, phase
    tables: tuple[tuple[str, ...], ...]
    oracle_answers: tuple[tuple[str, str, str, tuple[int, ...], int], ...]
    iteration_bounds: tuple[int, ...]
    real_ids: tuple[int, ...]
    real_bytes_cap: int | None
    ddp_at: int | None = None
    ddp_blocks: tuple = ()


def pack(trace: Trace) -> PackedTrace:
    events = trace.events
    tables: list[dict[str, int]] = [{}, {}, {}, {}]
    labels = np.empty((len(events), 4), dtype=np.int32)
    for index, event in enumerate(events):
        for column, value in enumerate((event.dtype, event.category, event.module, event.phase)):
            table = tables[column]
            labels[index, column] = table.setdefault(value, len(table))
    return PackedTrace(
        alloc=np.fromiter((e.op == "alloc" for e in events), dtype=bool, count=len(events)),
        storage_id=np.fromiter((e.storage_id for e in events), dtype=np.int64, count=len(events)),
        nbytes=np.fromiter((e.nbytes for e in events), dtype=np.int64, count=len(events)),
        upper_nbytes=np.fromiter((-1 if e.upper_nbytes is None else e.upper_nbytes for e in events), dtype=np.int64,
                                 count=len(events)),  # fmt: skip
        iteration=np.fromiter((e.iteration for e in events), dtype=np.int64, count=len(events)),
        labels=labels,
        tables=tuple(tuple(table) for table in tables),
        oracle_answers=tuple((a.question, a.answer, a.phase, tuple(a.bounds), a.at) for a in trace.oracle_answers),
        iteration_bounds=tuple(trace.iteration_bounds),
        real_ids=tuple(sorted(trace.real_ids)),
        real_bytes_cap=trace.real_bytes_cap,
        ddp_at=trace.ddp_at,
        ddp_blocks=tuple(trace.ddp_blocks),
    )


@cyclic_gc_paused()  # one object per event (yolomem.collector)
def unpack(packed: PackedTrace) -> Trace:
    dtypes, categories, modules, phases = packed.tables
    events = [
        AllocationEvent("alloc" if alloc else "free", sid, nbytes, dtypes[d], categories[c], modules[m], phases[p], iteration,
                        None if upper < 0 else upper)
        for alloc, sid, nbytes, upper, iteration, (d, c, m, p) in zip(
            packed.alloc.tolist(), packed.storage_id.tolist(), packed.nbytes.tolist(), packed.upper_nbytes.tolist(),
            packed.iteration.tolist(), packed.labels.tolist(),
        )
    ]  # fmt: skip
    return Trace(
        events=events,
        oracle_answers=[OracleAnswer(*answer) for answer in packed.oracle_answers],
        iteration_bounds=list(packed.iteration_bounds),
        real_ids=frozenset(packed.real_ids),
        real_bytes_cap=packed.real_bytes_cap,
        ddp_at=packed.ddp_at,
        ddp_blocks=packed.ddp_blocks,
    )
