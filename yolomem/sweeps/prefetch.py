"""Trace side by side the runs a sweep is sure to ask for, before it asks for them one by one."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

from yolomem.result.runs import _tell, default_source, worker_pool
from yolomem.workers import are_warm, default_jobs, side_by_side


def prefetch(configs, jobs: int | None = None, *, cold: bool = True, judge: Callable[[Any], Any] | None = None,
             remember: Callable[[Any, Any], None] | None = None) -> None:  # fmt: skip
    """Trace ``configs`` side by side before a sweep asks for them one by one: this process takes them
    from the front, ``jobs - 1`` worker processes from the back (``yolomem.workers.side_by_side``) and
    hand their runs back. Sweeps call it with the configurations they are sure to ask for; a config
    that fails (or a worker that dies) is left for the sweep itself to meet (and report).

    ``judge(config)``: what the sweep will ask of each config (a module-level function: workers get it
    by name), run where the config is traced, in place of its estimate; a worker's answer is handed to
    ``remember(config, answer)`` here. Without it this process would replay a worker's runs again for
    the same answer: seconds a config for whole epochs.

    ``cold=False``: only with the command's warm workers (``yolomem.workers.warm_workers``). For a couple
    of runs a worker started now pays off only for slow models: it imports for about 3 s first."""
    pending = list(dict.fromkeys(configs))  # notes do not tell configs apart; they stay with the figures found here
    jobs = default_jobs() if jobs is None else jobs
    if jobs <= 1 or len(pending) < 2 or not (cold or are_warm()):
        return
    source = default_source()
    with contextlib.suppress(Exception):  # a config that fails is the sweep's to report
        pending = [c for c in pending if not source.known(c)]
    if len(pending) < 2:
        return
    _tell(f"tracing {len(pending)} runs in {jobs} processes")

    def adopt(config, found: tuple[list, Any]) -> None:
        runs, answer = found
        source.adopt(runs)
        if remember is not None and answer is not None:
            remember(config, answer)

    with worker_pool(jobs - 1) as pool, contextlib.suppress(Exception):
        side_by_side(pool, pending, functools.partial(_trace_here, judge), functools.partial(_trace_elsewhere, judge), adopt)


def _answer(judge: Callable[[Any], Any] | None, config) -> Any:
    """``judge(config)``, or the config's estimate; None when it fails (the sweep meets the failure itself)."""
    from yolomem.result.estimate import estimate_config

    with contextlib.suppress(Exception):
        return judge(config) if judge is not None else estimate_config(config)
    return None


def _trace_here(judge, config) -> tuple[list, None]:
    _answer(judge, config)
    return [], None  # this process's own source holds its runs, and the judge its answer


def _trace_elsewhere(judge, config) -> tuple[list, Any]:
    """In a worker process: the runs traced for ``config`` and the judge's answer (None without one)."""
    source = default_source()
    source.recording = []
    answer = _answer(judge, config)
    return source.recording, answer if judge is not None else None

