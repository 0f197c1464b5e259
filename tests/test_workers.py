"""Worker processes for sweeps (yolomem.workers): sharing items side by side, and a command's warm workers."""

from __future__ import annotations

import multiprocessing
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from yolomem import workers


class _Setting:
    """What a task carries to its worker: here, a record that it was adopted there."""

    adopted: list[str] = []

    def adopt(self) -> None:
        self.adopted.append(threading.current_thread().name)


def _threads(count: int):
    """A pool of threads standing in for worker processes (the sharing logic does not care which)."""
    return workers.Workers(ThreadPoolExecutor(count, thread_name_prefix="worker"), count, _Setting())


def test_side_by_side_runs_each_item_once_and_hands_every_result_back():
    here_started = threading.Event()
    ran: list[tuple[str, int]] = []

    def here(item: int) -> int:
        here_started.set()
        ran.append(("here", item))
        return item * 10

    def there(item: int) -> int:
        here_started.wait(5)  # this process has started its first item before the worker runs one
        ran.append(("there", item))
        return item * 10

    results = {}
    workers.side_by_side(_threads(1), list(range(8)), here, there, lambda item, result: results.setdefault(item, result))
    assert results == {item: item * 10 for item in range(8)}
    assert sorted(item for _, item in ran) == list(range(8))  # each once, by one side or the other
    assert ("here", 0) in ran and ("there", 7) in ran  # this process from the front, the worker from the back
    assert _Setting.adopted and all(name.startswith("worker") for name in _Setting.adopted)


def test_side_by_side_raises_a_workers_exception_here():
    def there(item: int) -> int:
        raise ValueError(f"item {item}")

    with pytest.raises(ValueError, match="item"):
        workers.side_by_side(_threads(1), [0, 1, 2], lambda item: item, there, lambda *_: None)


def test_side_by_side_on_a_pool_that_cannot_take_work_raises_instead_of_waiting():
    pool = _threads(1)
    pool._executor.shutdown()  # submit raises now, as on a broken process pool

    with pytest.raises(RuntimeError):
        workers.side_by_side(pool, [0, 1, 2], lambda item: item, lambda item: item, lambda *_: None)


def test_an_item_its_worker_has_not_started_is_taken_back_and_not_waited_for(monkeypatch):
    """A worker still importing (or busy with its last item) when this process has run out of items: this
    process runs the worker's item itself and returns; the worker later finds it taken and runs nothing."""
    claims = workers._Claims(multiprocessing.get_context("spawn"))
    monkeypatch.setattr(workers, "_CLAIMS", claims.array)  # what a pool's worker processes get at their start
    pool = workers.Workers(ThreadPoolExecutor(1, thread_name_prefix="worker"), 1, _Setting(), claims)
    importing = threading.Event()
    pool._executor.submit(importing.wait, 30)
    ran: list[tuple[str, int]] = []

    def run_on(side: str):
        return lambda item: ran.append((side, item)) or item * 10

    results = {}
    started = time.perf_counter()
    workers.side_by_side(pool, [0, 1, 2], run_on("here"), run_on("there"), lambda item, result: results.setdefault(item, result))
    assert time.perf_counter() - started < 10  # did not wait for the worker
    importing.set()
    pool._executor.shutdown(wait=True)
    assert results == {0: 0, 1: 10, 2: 20}
    assert ran == [("here", 0), ("here", 1), ("here", 2)]  # the worker found its item taken back


def test_warm_workers_serve_the_sweeps_inside_and_stop_on_exit(monkeypatch):
    monkeypatch.setattr(workers, "default_jobs", lambda: 2)
    monkeypatch.setattr(workers, "WARM_IMPORTS", ())  # the process itself is what is checked here
    monkeypatch.setattr(workers.os, "cpu_count", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with workers.warm_workers():
        assert workers.os.environ["OMP_NUM_THREADS"] == "1"  # a core each for torch's threads, workers too
        executor = workers._Warm.executor
        assert executor is not None and workers.are_warm()
        with workers.worker_pool(1, _Setting()) as pool:
            assert pool._executor is executor  # the warm workers, not new ones
            assert pool.submit(sum, [1, 2]).result() == 3
            # the claim slots reach the worker processes: an item is its worker's, or taken back before it starts
            assert pool.submit_claimed(pool.claims.new_slot(), sum, [1, 2]).result() == 3
            slot = pool.claims.new_slot()
            assert pool.claims.take_back(slot)
            assert isinstance(pool.submit_claimed(slot, sum, [1, 2]).result(), workers._Taken)
            assert not pool.claims.take_back(slot)  # taken once only
        processes = list(executor._processes.values())
        assert processes and all(process.is_alive() for process in processes)
    assert not workers.are_warm()
    assert not any(process.is_alive() for process in processes)
    assert "OMP_NUM_THREADS" not in workers.os.environ  # as it was


def test_warm_workers_keep_the_users_thread_count(monkeypatch):
    monkeypatch.setattr(workers, "default_jobs", lambda: 2)
    monkeypatch.setattr(workers, "WARM_IMPORTS", ())
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    with workers.warm_workers():
        assert workers.os.environ["OMP_NUM_THREADS"] == "3"
    assert workers.os.environ["OMP_NUM_THREADS"] == "3"


def test_no_warm_workers_on_one_core(monkeypatch):
    monkeypatch.setattr(workers, "default_jobs", lambda: 1)
    with workers.warm_workers():
        assert not workers.are_warm()


FROM_STDIN = """
import os
from yolomem import workers
from yolomem.result.runs import worker_pool

print(workers.can_spawn(), workers.default_jobs())
with worker_pool(2) as pool:
    done = {}
    workers.side_by_side(pool, [0, 1, 2], lambda item: os.getpid(), os.getpid, done.__setitem__)
    print(sorted(set(done.values())) == [os.getpid()], pool.submit(pow, 2, 5).result())
"""


def test_a_script_from_stdin_sweeps_in_its_own_process():
    """A spawned worker runs the main script again by its path, and ``python - <<EOF`` has none
    (``'<stdin>'``): each worker died at its start with FileNotFoundError, its traceback on stderr. Such a
    script now sweeps in its own process, quietly; the same code as a file spawns."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-"], input=FROM_STDIN, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr[-2000:]
    assert done.stdout.split() == ["False", "1", "True", "32"]


def test_a_script_from_a_file_can_spawn(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "sweep.py"
    script.write_text("from yolomem import workers\nprint(workers.can_spawn())\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.stdout.split() == ["True"], done.stderr[-2000:]
