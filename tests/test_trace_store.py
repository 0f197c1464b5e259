"""The trace cache on disk (yolomem.trace.store): round trips, corrupt and stale files, clearing, off."""

from __future__ import annotations

import os

import pytest

from yolomem.trace import store as store_module
from yolomem.trace.packed import pack, unpack
from yolomem.trace.store import TraceStore, key_digest
from yolomem.trace.tracer import AllocationEvent, OracleAnswer, Trace

KEY = {"model": "yolov8n", "config": {"imgsz": 64, "amp": "fp16"}}


def _file(store: TraceStore, key: dict, name: str):
    return store.root / key_digest(key) / f"{name}.run"


def test_a_stored_value_reads_back(tmp_path):
    store = TraceStore(tmp_path)
    store.save(KEY, "b2", {"peak": 123})
    assert store.load(KEY, "b2") == {"peak": 123}
    assert store.names(KEY) == ["b2"]


def test_a_corrupt_file_is_ignored_then_replaced(tmp_path):
    store = TraceStore(tmp_path)
    store.save(KEY, "b2", [1, 2, 3])
    path = _file(store, KEY, "b2")
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0xFF  # one flipped byte in the payload
    path.write_bytes(bytes(blob))
    assert store.load(KEY, "b2") is None
    path.write_bytes(path.read_bytes()[:20])  # cut short
    assert store.load(KEY, "b2") is None
    store.save(KEY, "b2", [4])
    assert store.load(KEY, "b2") == [4]


def test_an_entry_of_another_key_or_format_is_stale(tmp_path, monkeypatch):
    store = TraceStore(tmp_path)
    store.save(KEY, "b2", "old")
    other = {**KEY, "config": {"imgsz": 64, "amp": "fp32"}}
    _file(store, other, "b2").parent.mkdir(parents=True)
    os.replace(_file(store, KEY, "b2"), _file(store, other, "b2"))  # a file under the wrong key's folder
    assert store.load(other, "b2") is None
    store.save(KEY, "b2", "old")
    monkeypatch.setattr(store_module, "FORMAT", store_module.FORMAT + 1)  # written by another version
    assert store.load(KEY, "b2") is None


def test_writes_leave_no_temporary_files(tmp_path):
    store = TraceStore(tmp_path)
    for value in range(3):
        store.save(KEY, "b2", value)
    assert [p.name for p in _file(store, KEY, "b2").parent.iterdir()] == ["b2.run"]


def test_info_and_clear(tmp_path):
    store = TraceStore(tmp_path / "traces")
    store.save(KEY, "b2", "x" * 1000)
    store.save({"other": 1}, "b4", "y")
    info = store.info()
    assert (info.path, info.families, info.files) == (tmp_path / "traces", 2, 2)
    assert info.bytes > 1000
    assert store.clear().files == 2
    assert store.info().files == 0 and store.load(KEY, "b2") is None


def test_clear_removes_only_what_the_store_wrote(tmp_path):
    """A folder of the user's named as the cache (a mistyped YOLOMEM_CACHE_DIR) keeps its files."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "notes.txt").write_text("important")
    (tmp_path / "sub" / "a.json").write_text("x")
    (tmp_path / "sub" / "b.run").write_text("not in a family's folder")
    store = TraceStore(tmp_path)
    store.save(KEY, "b2", "x" * 1000)
    store.save_probe({"probe": 1}, "found")
    family = _file(store, KEY, "b2").parent
    (family / ".tmp-abc123.run").write_bytes(b"yolomem-trace\n")  # a writer killed before its os.replace
    shared = _file(store, {"other": 1}, "b4").parent
    shared.mkdir()
    (shared / "mine.txt").write_text("a user's file in a folder named like a family")
    info = store.info()
    assert (info.families, info.files) == (1, 1)
    assert sorted(info.foreign) == sorted(["notes.txt", "sub/", f"{shared.name}/mine.txt"])
    cleared = store.clear()
    assert cleared.files == 1 and cleared.foreign == info.foreign
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert left == sorted(["notes.txt", "sub", "sub/a.json", "sub/b.run", shared.name, f"{shared.name}/mine.txt"])
    assert store.info() == type(info)(tmp_path, 0, 0, 0, info.foreign)


def test_a_file_where_the_folder_should_be_is_a_problem(tmp_path):
    (tmp_path / "file").write_text("x")
    assert TraceStore(tmp_path).problem() is None and TraceStore(tmp_path / "new" / "traces").problem() is None
    assert "is a file, not a folder" in TraceStore(tmp_path / "file").problem()
    assert f"{tmp_path / 'file'} is a file" in TraceStore(tmp_path / "file" / "traces").problem()


def test_a_disabled_store_reads_and_writes_nothing(tmp_path):
    store = TraceStore(tmp_path, enabled=False)
    store.save(KEY, "b2", 1)
    assert store.load(KEY, "b2") is None and not any(tmp_path.iterdir())


def test_the_folder_comes_from_the_environment_or_platformdirs(monkeypatch, tmp_path):
    monkeypatch.setenv(store_module.CACHE_ENV, str(tmp_path / "mine"))
    assert store_module.default_root() == tmp_path / "mine"
    monkeypatch.delenv(store_module.CACHE_ENV)
    import platformdirs

    assert store_module.default_root() == platformdirs.user_cache_path("yolomem") / "traces"


def test_a_packed_trace_unpacks_to_the_same_trace():
    events = [
        AllocationEvent("alloc", 5, 512, "float16", "activation", "model.0.conv", "forward", 0),
        AllocationEvent("alloc", 6, 96, "int64", "loss", "", "loss", 0),
        AllocationEvent("free", 5, 512, "float16", "activation", "model.0.conv", "forward", 0),
    ]
    events.append(AllocationEvent("alloc", 7, 0, "uint8", "cudnn_workspace", "model.0.conv", "forward", 0, 4096))
    trace = Trace(events, [OracleAnswer("nonzero(bool[2, 84])", "168", "loss", (168, 210), 1)], [0], frozenset({6}), 1 << 26)
    back = unpack(pack(trace))
    assert back == trace


@pytest.mark.parametrize("bad", [b"", b"not a trace", b"yolomem-trace\nabc\n\x80\x05"])
def test_garbage_is_never_trusted(tmp_path, bad):
    store = TraceStore(tmp_path)
    path = _file(store, KEY, "b2")
    path.parent.mkdir(parents=True)
    path.write_bytes(bad)
    assert store.load(KEY, "b2") is None
