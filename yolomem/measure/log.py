"""Append-only JSON Lines files: one JSON object per line, never rewritten.

Measurement results are expensive (a GPU, minutes), so the file that holds them is only ever appended
to. Two guarantees:

- Concurrent appends stay whole. Each record is written with one ``os.write`` on a descriptor opened
  with ``O_APPEND`` (the kernel moves to the end and writes atomically for regular files), and the
  write happens under an exclusive ``flock`` so that the "does the file end with a newline?" check
  and the write cannot interleave with another writer's.
- A torn last line (a writer killed mid-write, a full disk) is tolerated. Reading skips any line that
  is not a JSON object and reports it as a ``SkippedLine``; the next append first writes the missing
  newline, so the torn fragment stays alone on its own line and the new record starts clean.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

try:  # POSIX only; on other systems appends rely on O_APPEND alone
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


@dataclass(frozen=True)
class SkippedLine:
    """A line that could not be read back as a JSON object."""

    line_number: int  # 1-based
    reason: str  # e.g. "truncated last line (no newline; a writer was interrupted)"
    text: str  # the first 80 characters, for the message

    def describe(self, path: Path | str) -> str:
        return f"{path}:{self.line_number}: {self.reason}; skipped ({self.text!r})"


@dataclass(frozen=True)
class JsonlContents:
    records: tuple[dict, ...]
    skipped: tuple[SkippedLine, ...]
    line_numbers: tuple[int, ...] = ()  # the file line (1-based) of each record


class NotJsonLines(ValueError):
    """The file is binary: not a JSON Lines file at all."""


def encode_line(record: dict) -> bytes:
    """One record as one line. ``json.dumps`` escapes newlines inside strings, so a record is one line."""
    if not isinstance(record, dict):
        raise TypeError(f"a JSONL record must be a dict, not {type(record).__name__}")
    return (json.dumps(record, sort_keys=False, separators=(",", ":"), allow_nan=False) + "\n").encode()


def append_record(path: Path | str, record: dict) -> None:
    """Append ``record`` as one line to ``path`` (created if missing). Safe across threads and processes."""
    data = encode_line(record)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        with _locked(fd):
            if _ends_without_newline(path):
                data = b"\n" + data  # close the torn line left by an interrupted writer
            view = memoryview(data)
            while view:  # a regular-file write is whole in practice; loop for the partial-write contract
                written = os.write(fd, view)
                view = view[written:]
    finally:
        os.close(fd)


def read_records(path: Path | str) -> JsonlContents:
    """Every JSON object in ``path``, in order, plus the lines that had to be skipped (with why).
    Raises ``NotJsonLines`` for a binary file (a NUL byte, or bytes that are not UTF-8)."""
    raw = Path(path).read_bytes()
    nul = raw.find(b"\0")
    if nul >= 0:
        raise NotJsonLines(f"{str(path)!r} holds binary data (a NUL byte at offset {nul})")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise NotJsonLines(f"{str(path)!r} is not UTF-8 text (byte {error.start})") from None
    lines = raw.split(b"\n")
    complete = raw.endswith(b"\n") or raw == b""
    records: list[dict] = []
    numbers: list[int] = []
    skipped: list[SkippedLine] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        last = number == len(lines)
        text = line.decode(errors="replace")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            reason = "truncated last line (no newline; a writer was interrupted)" if last and not complete else "not valid JSON"
            skipped.append(SkippedLine(number, reason, text[:80]))
            continue
        if not isinstance(value, dict):
            skipped.append(SkippedLine(number, f"a JSON {type(value).__name__}, not an object", text[:80]))
            continue
        records.append(value)
        numbers.append(number)
    return JsonlContents(tuple(records), tuple(skipped), tuple(numbers))


@contextlib.contextmanager
def _locked(fd: int):
    if fcntl is None:  # pragma: no cover
        yield
        return
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _ends_without_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() == 0:
            return False
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) != b"\n"


__all__ = ["JsonlContents", "NotJsonLines", "SkippedLine", "append_record", "read_records"]
