"""The GPU's own allocation stream: torch.cuda.memory's history, written compactly for validation.

``measure`` can record every caching-allocator event of a real run (``torch.cuda.memory.
_record_memory_history``, Python stacks) from CUDA's start to the end of training iteration ``K``, then
write it as one gzipped JSON file. Compared with the estimator's trace of the same config it shows what
the trace cannot see: kernel workspaces (cuDNN, cuBLAS), the libraries' own buffers, and where the
allocator's segments really went. Written on the GPU machine, read anywhere (``read_history``).

File: ``{"version": 1, "frames": [text, ...], "events": [[action, addr, size, stream, frame], ...],
"segments": [[total_size, allocated_size, stream, pool], ...], "notes": {...}}``: ``action`` is the
snapshot's action name ("alloc", "free_requested", "free_completed", "segment_alloc", "segment_free",
...), ``frame`` an index into ``frames`` (the innermost Python frames, "file:line:function" joined by " < "),
``segments`` the allocator's segments when the history was written.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

VERSION = 1
MAX_ENTRIES = 3_000_000  # events kept by torch's ring buffer: far more than three iterations of any model
FRAMES_KEPT = 4


@dataclass(frozen=True)
class HistoryEvent:
    action: str
    addr: int
    size: int
    stream: int
    where: str


@dataclass(frozen=True)
class History:
    events: tuple[HistoryEvent, ...]
    segments: tuple[tuple[int, int, int, str], ...]
    notes: dict


def start_recording() -> None:
    """Record every allocator event from now on (CUDA only)."""
    import torch

    torch.cuda.memory._record_memory_history(max_entries=MAX_ENTRIES, stacks="python")


def _where(frames: list[dict]) -> str:
    return " < ".join(f"{Path(f.get('filename', '?')).name}:{f.get('line', 0)}:{f.get('name', '?')}" for f in frames[:FRAMES_KEPT])


def write_history(path: Path | str, notes: dict) -> int:
    """Stop recording and write what was recorded; returns the number of events."""
    import torch

    snapshot = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    body = compact(snapshot, notes)
    save_history(path, body)
    return len(body["events"])


def save_history(path: Path | str, body: dict) -> None:
    """Write a ``compact`` body as the history file."""
    with gzip.open(path, "wt") as handle:
        json.dump(body, handle)


def compact(snapshot: dict, notes: dict) -> dict:
    """``torch.cuda.memory._snapshot()`` -> the file's body (see the module docstring)."""
    frames: dict[str, int] = {}
    events = []
    for trace in snapshot.get("device_traces", []):
        for entry in trace:
            index = frames.setdefault(_where(entry.get("frames") or []), len(frames))
            events.append([entry.get("action"), int(entry.get("addr", 0)), int(entry.get("size", 0)),
                           int(entry.get("stream", 0)), index])  # fmt: skip
    segments = [[int(s.get("total_size", 0)), int(s.get("allocated_size", 0)), int(s.get("stream", 0)),
                 str(s.get("segment_type", ""))] for s in snapshot.get("segments", [])]  # fmt: skip
    return {"version": VERSION, "frames": list(frames), "events": events, "segments": segments, "notes": notes}


def read_history(path: Path | str) -> History:
    with gzip.open(path, "rt") as handle:
        body = json.load(handle)
    if body.get("version") != VERSION:
        raise ValueError(f"{path}: history version {body.get('version')!r}, expected {VERSION}")
    frames = body["frames"]
    events = tuple(HistoryEvent(a, addr, size, stream, frames[i]) for a, addr, size, stream, i in body["events"])
    return History(events, tuple(tuple(s) for s in body["segments"]), body.get("notes", {}))


def backend_settings() -> dict:
    """The settings that choose kernels and their workspaces, as the run had them."""
    import os

    import torch

    return {
        "cudnn_benchmark": torch.backends.cudnn.benchmark, "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32, "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_version": torch.backends.cudnn.version(),
        "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }  # fmt: skip
