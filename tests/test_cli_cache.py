"""``yolomem cache`` / ``cache clear``, and ``--no-cache`` / ``--verbose`` on the commands that trace."""

from __future__ import annotations

import pytest

from yolomem.cli.main import main
from yolomem.result import runs
from yolomem.trace.store import CACHE_ENV, OFF_ENV

ESTIMATE = ["estimate", "yolov8n.yaml", "imgsz=64", "batch=2", "iterations=1", "--json"]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """The process's run source on a temporary folder (rebuilt from the environment, as in a new process)."""
    previous = runs._SOURCE
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(OFF_ENV, "")  # a YOLOMEM_NO_CACHE in the environment would turn the cache off
    runs._SOURCE = None
    yield tmp_path / "cache"
    runs._SOURCE = previous


def test_cache_shows_where_and_how_much_then_clears(cache_dir, capsys):
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert str(cache_dir) in out and "0 configurations, 0 traced runs" in out
    assert main(ESTIMATE) == 0
    capsys.readouterr()
    assert main(["cache"]) == 0
    assert "1 configurations, 1 traced runs" in capsys.readouterr().out
    assert main(["cache", "clear"]) == 0
    assert "cleared 1 traced runs" in capsys.readouterr().out
    assert main(["cache", "--json"]) == 0
    assert '"files": 0' in capsys.readouterr().out


def test_clear_leaves_files_that_are_not_the_caches_and_says_so(cache_dir, capsys):
    (cache_dir / "sub").mkdir(parents=True)
    (cache_dir / "notes.txt").write_text("important")
    (cache_dir / "sub" / "a.json").write_text("x")
    assert main(["cache", "clear"]) == 0
    out = capsys.readouterr().out
    assert "cleared 0 traced runs" in out and "left 2 files or folders that are not yolomem's: notes.txt, sub/" in out
    assert (cache_dir / "notes.txt").read_text() == "important" and (cache_dir / "sub" / "a.json").exists()


@pytest.mark.parametrize("words", [["cache"], ["cache", "clear"], ["cache", "--json"]])
def test_a_file_as_the_cache_folder_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, words):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "notes.txt"))
    monkeypatch.setattr(runs, "_SOURCE", None)
    (tmp_path / "notes.txt").write_text("important")
    assert main(words) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert f"{tmp_path / 'notes.txt'} ($YOLOMEM_CACHE_DIR) is a file, not a folder" in captured.err
    assert (tmp_path / "notes.txt").read_text() == "important"


def test_an_estimate_warns_of_a_file_as_the_cache_folder(tmp_path, monkeypatch, capsys):
    from yolomem.trace import store

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "notes.txt"))
    monkeypatch.setenv(OFF_ENV, "")
    monkeypatch.setattr(runs, "_SOURCE", None)
    monkeypatch.setattr(store, "_ACTIVE", None)
    (tmp_path / "notes.txt").write_text("important")
    assert main(ESTIMATE) == 0
    err = capsys.readouterr().err
    assert "yolomem: warning: the trace cache folder" in err and "running without the trace cache" in err
    assert main([*ESTIMATE, "--no-cache"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_an_unknown_cache_action_is_one_line_and_exit_2(cache_dir, capsys):
    assert main(["cache", "clr"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'clear'" in err and err.count("\n") == 1


def test_no_cache_neither_reads_nor_writes(cache_dir, capsys):
    assert main([*ESTIMATE, "--no-cache"]) == 0
    assert not cache_dir.exists()


def test_verbose_says_where_the_run_came_from(cache_dir, capsys):
    assert main([*ESTIMATE, "-v"]) == 0
    assert "yolov8n.yaml batch=2 imgsz=64: traced" in capsys.readouterr().err
    assert main([*ESTIMATE, "-v"]) == 0  # the same process: its figures are still in memory
    assert "yolov8n.yaml batch=2 imgsz=64: estimated earlier, its figures kept in memory" in capsys.readouterr().err
    runs._SOURCE = None  # a new process
    assert main([*ESTIMATE, "--verbose"]) == 0
    assert "traced run from the cache" in capsys.readouterr().err
