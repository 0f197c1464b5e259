"""Append-only JSONL: concurrent appends stay whole; a torn last line is skipped and then closed."""

from __future__ import annotations

import json
import multiprocessing
import threading

from yolomem.measure.log import append_record, read_records

WRITERS, PER_WRITER = 6, 40
PAYLOAD = "x" * 5000  # lines longer than a pipe buffer (4 KiB) make torn writes likely if appends were not atomic


def _append_many(path: str, writer: int) -> None:
    for i in range(PER_WRITER):
        append_record(path, {"writer": writer, "i": i, "payload": PAYLOAD})


def _check_all_intact(path) -> None:
    raw = open(path, "rb").read()
    lines = raw.split(b"\n")
    assert lines[-1] == b""  # file ends with a newline
    seen = {(json.loads(line)["writer"], json.loads(line)["i"]) for line in lines[:-1]}  # every line parses alone
    assert len(lines) - 1 == WRITERS * PER_WRITER
    assert seen == {(w, i) for w in range(WRITERS) for i in range(PER_WRITER)}


def test_concurrent_appends_from_processes_keep_every_line_intact(tmp_path):
    path = str(tmp_path / "results.jsonl")
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_append_many, args=(path, w)) for w in range(WRITERS)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(30)
        assert p.exitcode == 0
    _check_all_intact(path)


def test_concurrent_appends_from_threads_keep_every_line_intact(tmp_path):
    path = str(tmp_path / "results.jsonl")
    threads = [threading.Thread(target=_append_many, args=(path, w)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    _check_all_intact(path)
    contents = read_records(path)
    assert len(contents.records) == WRITERS * PER_WRITER and contents.skipped == ()


def test_truncated_last_line_is_skipped_with_a_warning_and_next_append_starts_a_new_line(tmp_path):
    path = tmp_path / "results.jsonl"
    append_record(path, {"run": 1})
    append_record(path, {"run": 2})
    full = path.read_bytes()
    path.write_bytes(full[:-6])  # a writer died mid-line: '{"run":' with no newline
    contents = read_records(path)
    assert [r["run"] for r in contents.records] == [1]
    assert len(contents.skipped) == 1
    skipped = contents.skipped[0]
    assert skipped.line_number == 2 and "truncated" in skipped.reason
    assert "results.jsonl:2" in skipped.describe(path)

    append_record(path, {"run": 3})
    raw = path.read_bytes()
    assert raw.startswith(full[:-6] + b"\n")  # nothing was rewritten, the torn line was closed
    assert raw.endswith(b'{"run":3}\n')
    again = read_records(path)
    assert [r["run"] for r in again.records] == [1, 3]
    assert [s.reason for s in again.skipped] == ["not valid JSON"]  # now a complete but broken line


def test_non_object_lines_are_reported_not_returned(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('[1, 2]\n\n{"ok": true}\n')
    contents = read_records(path)
    assert contents.records == ({"ok": True},)
    assert "list" in contents.skipped[0].reason and contents.skipped[0].line_number == 1


def test_record_with_newlines_in_strings_stays_one_line(tmp_path):
    path = tmp_path / "r.jsonl"
    append_record(path, {"error": "line one\nline two"})
    assert path.read_text().count("\n") == 1
    assert read_records(path).records[0]["error"] == "line one\nline two"
