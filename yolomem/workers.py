"""Worker processes for sweeps that trace side by side, started as early as a command can start them.

Why early: a spawned worker imports torch, torch._dynamo and Ultralytics (about 3 s here) before its
first trace. Started by ``yolomem.sweeps.prefetch`` or the table, it imported while this process was
already tracing, and this process then waited for it (``fit --explain``: about 2.4 s idle, 2026-12-05).
A command that sweeps (``fit``, ``pick``, ``table``) starts its workers before it imports anything
itself (``warm_workers``): both processes import at once, on two cores.

Light on purpose: the CLI imports this module before torch. Each task carries the run source's settings
(``setting.adopt()``, ``yolomem.result.runs``): a warm worker started before ``--no-cache`` was read.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import multiprocessing
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

# What a worker's first trace imports (measured: without these, a first trace took 3.6 s, with them 1.9 s).
WARM_IMPORTS = (
    "yolomem.result.estimate", "yolomem.result.prepare", "yolomem.trace.tracer", "yolomem.trace.workspaces",
    "torch._dynamo", "ultralytics.models", "yolomem.loops.ultralytics.runner", "yolomem.loops.yolov5.loop",
    "yolomem.sweeps.prefetch", "yolomem.sweeps.table",
)  # fmt: skip


_THREADS = "OMP_NUM_THREADS"  # torch's intra-op threads, read when torch is imported


def default_jobs() -> int:
    """Processes that trace side by side: the machine's cores, at most 2 (each holds a model's trace); one
    where no worker can start (``can_spawn``)."""
    return max(1, min(os.cpu_count() or 1, 2)) if can_spawn() else 1


def can_spawn() -> bool:
    """Whether a spawned worker can start. It first runs this process's main again: by module name
    (``python -m``, the ``yolomem`` command) or by the script's path. A script read from stdin (``python -
    <<EOF``, whose ``__file__`` is ``'<stdin>'``) has no file to run, and each worker would die at its start
    (FileNotFoundError, its traceback on stderr) before the sweep went on without it."""
    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None) is not None:
        return True
    path = getattr(main, "__file__", None)  # none: an interactive session or a notebook, nothing to run again
    return path is None or os.path.isfile(os.path.join(multiprocessing.process.ORIGINAL_DIR or "", path))


class _Warm:
    executor: ProcessPoolExecutor | None = None
    claims: _Claims | None = None
    size = 0


_SLOTS = 1024  # claim slots, reused in turn: a slot is handed again only long after its item ended


class _Claims:
    """Who runs each item handed to a worker, decided once: its worker when it starts it (1), or this
    process taking it back before that (2). An array in memory the pool's processes share (given to each
    at its start: ``_remember_claims``)."""

    def __init__(self, context) -> None:
        self.array = context.Array("b", _SLOTS)
        self._next = 0

    def new_slot(self) -> int:
        with self.array.get_lock():
            slot, self._next = self._next, (self._next + 1) % _SLOTS
            self.array[slot] = 0
        return slot

    def take_back(self, slot: int) -> bool:
        """Claim the item of ``slot`` for this process: False when its worker has started it."""
        with self.array.get_lock():
            if self.array[slot]:
                return False
            self.array[slot] = 2
            return True


class _Taken:
    """A worker's answer for an item this process took back before the worker started it."""


_CLAIMS = None  # in a worker: the claim slots of its pool (``_remember_claims``)


@contextlib.contextmanager
def warm_workers(enabled: bool = True) -> Iterator[None]:
    """Start the workers of this command's sweeps now (``default_jobs() - 1`` of them), importing what a
    trace needs while this process imports its own; every ``worker_pool`` inside takes them. Nothing
    starts on one core, when not ``enabled``, or inside another such block.

    On exit they are stopped at once: whatever they still run then is their warm-up (a command answered
    from the cache, or one that failed on its arguments, need not wait for their imports) or work nobody
    will collect (the command failed); every sweep collects all it gave them before it returns."""
    workers = default_jobs() - 1
    if not enabled or workers < 1 or _Warm.executor is not None:
        yield
        return
    # Each process its share of the cores for torch's own threads (the real CPU model build, the loss's
    # small real ops): with two OpenMP threads in each of two processes on two cores, their spinning
    # slowed this process's model build from 1.5 to 2.4 s while the worker imported (fit --explain,
    # 2026-12-05). Set before torch is imported here and in the workers; a value the user set stays.
    threads_before = os.environ.get(_THREADS)
    if threads_before is None:
        os.environ[_THREADS] = str(max(1, (os.cpu_count() or 1) // (workers + 1)))
    (_Warm.executor, _Warm.claims), _Warm.size = _executor(workers), workers
    for _ in range(workers):
        _Warm.executor.submit(_import_for_tracing)  # spawns a process per task while there are fewer than ``workers``
    try:
        yield
    finally:
        executor, _Warm.executor, _Warm.claims, _Warm.size = _Warm.executor, None, None, 0
        _stop_now(executor)
        if threads_before is None:
            os.environ.pop(_THREADS, None)


def are_warm() -> bool:
    """Whether this command started its workers (``warm_workers``): a worker's first task runs at once."""
    return _Warm.executor is not None


class Workers:
    """Worker processes; ``submit`` runs ``fn(*args)`` in one of them under ``setting`` (``setting.adopt()``
    first: the run source of the process that submits). With ``claims`` (the pool's: ``_executor``),
    ``submit_claimed`` hands an item this process may take back until a worker starts it."""

    def __init__(self, executor: ProcessPoolExecutor | None, workers: int, setting: Any, claims: _Claims | None = None):
        self._executor, self.workers, self._setting, self.claims = executor, workers, setting, claims

    def submit(self, fn: Callable, *args) -> Future:
        if self._executor is None:  # no worker can start (``can_spawn``): here, at once
            future: Future = Future()
            try:
                future.set_result(fn(*args))
            except Exception as error:  # noqa: BLE001 - raised where the result is collected, as a worker's
                future.set_exception(error)
            return future
        return self._executor.submit(_under, self._setting, fn, *args)

    def submit_claimed(self, slot: int, fn: Callable, *args) -> Future:
        return self._executor.submit(_claimed_under, slot, self._setting, fn, *args)


@contextlib.contextmanager
def worker_pool(jobs: int, setting: Any) -> Iterator[Workers]:
    """``jobs`` worker processes: the warm ones when ``warm_workers`` started enough, else new ones (shut
    down on exit, after their tasks)."""
    if _Warm.executor is not None and jobs <= _Warm.size:
        yield Workers(_Warm.executor, jobs, setting, _Warm.claims)
        return
    if not can_spawn():
        yield Workers(None, 0, setting)  # side_by_side then runs every item here
        return
    executor, claims = _executor(jobs)
    try:
        yield Workers(executor, jobs, setting, claims)
    finally:
        executor.shutdown(wait=True)


def side_by_side(pool: Workers, items: Sequence, here: Callable, there: Callable, done: Callable[[Any, Any], None]) -> None:
    """Each item once: ``here(item)`` in this process or ``there(item)`` in a worker, and ``done(item,
    result)`` in this process as each ends (an exception of either is raised here). This process takes
    items from the front, the workers from the back, each the next one nobody has started: neither waits
    for a share fixed in advance (a worker still importing, a model that traces slower).

    A worker is handed its next item as it finishes one (a future's callback), never ahead: an executor
    queues submitted tasks beyond its workers where nobody can take them back. An item handed to a
    worker that has not started it (still importing, or busy with what it was handed before) is taken
    back once this process has run out of items (``Workers.claims``): ``fit --explain`` from the cache
    otherwise waited for its worker's imports, about 1.5 s, for items it answers in milliseconds."""
    left = collections.deque(range(len(items)))
    lock = threading.Lock()
    finished: queue.SimpleQueue = queue.SimpleQueue()  # (index, future) of the workers' items
    handed: dict[int, int | None] = {}  # index -> claim slot, of items a worker still has to answer

    def hand_one(_finished: Future | None = None) -> None:
        with lock:
            if not left:
                return
            index = left.pop()
            handed[index] = slot = pool.claims.new_slot() if pool.claims is not None else None
        try:
            future = pool.submit(there, items[index]) if slot is None else pool.submit_claimed(slot, there, items[index])
        except Exception as error:  # noqa: BLE001 - a broken pool: raised where the result is collected
            future = Future()
            future.set_exception(error)
        future.add_done_callback(lambda f, index=index: (finished.put((index, f)), hand_one()))

    def take_back() -> int | None:
        with lock:
            for index, slot in handed.items():
                if slot is not None and pool.claims.take_back(slot):
                    del handed[index]  # its worker will answer _Taken, which nobody waits for
                    return index
        return None

    def collect(block: bool) -> None:
        while True:
            with lock:
                if not handed or not (block or not finished.empty()):
                    return
            index, future = finished.get()
            with lock:
                ours = handed.pop(index, False) is not False
            if ours:
                done(items[index], future.result())

    for _ in range(pool.workers):
        hand_one()
    while True:
        with lock:
            index = left.popleft() if left else None
        if index is None and (index := take_back()) is None:
            break
        done(items[index], here(items[index]))
        collect(block=False)
    collect(block=True)


def _stop_now(executor: ProcessPoolExecutor) -> None:
    """Shut the pool down and end its processes without waiting for what they run. The processes are
    the executor's own (``_processes``: the standard library has no public way to them before Python
    3.14's ``terminate_workers``), taken before ``shutdown`` drops them, as is its manager thread.
    That thread joins the same processes once woken: a process it reaps first can look alive to
    another thread's ``join`` (``waitpid`` fails there before the reaper records the exit code), so it
    finishes before the processes are joined here."""
    processes = list((getattr(executor, "_processes", None) or {}).values())
    manager = getattr(executor, "_executor_manager_thread", None)
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    if manager is not None:
        manager.join()
    for process in processes:
        process.join()


def _executor(workers: int) -> tuple[ProcessPoolExecutor, _Claims]:
    context = multiprocessing.get_context("spawn")  # spawned: no forked torch state
    claims = _Claims(context)
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_remember_claims,
                                   initargs=(claims.array,))  # fmt: skip
    return executor, claims


def _remember_claims(array) -> None:
    global _CLAIMS
    _CLAIMS = array


def _import_for_tracing() -> None:
    for name in WARM_IMPORTS:
        with contextlib.suppress(ImportError):  # another torch or Ultralytics: that trace imports what it needs
            importlib.import_module(name)


def _under(setting: Any, fn: Callable, *args):
    setting.adopt()
    return fn(*args)


def _claimed_under(slot: int, setting: Any, fn: Callable, *args):
    """In a worker: ``_under(setting, fn, *args)``, unless the process that handed it took it back first."""
    with _CLAIMS.get_lock():
        if _CLAIMS[slot]:
            return _Taken()
        _CLAIMS[slot] = 1
    return _under(setting, fn, *args)
