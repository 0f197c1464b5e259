"""Trace side by side the runs a sweep is sure to ask for, before it asks for them one by one."""

from __future__ import annotations

import contextlib

from yolomem.result.runs import _tell, default_source, worker_pool
from yolomem.workers import are_warm, default_jobs, side_by_side


def prefetch(configs, jobs: int | None = None, *, cold: bool = True) -> None:
    """Trace ``configs`` side by side before a sweep asks for them one by one: this process takes them
    from the front, ``jobs - 1`` worker processes from the back (``yolomem.workers.side_by_side``) and
    hand their runs back. Sweeps call it with the configurations they are sure to ask for; a config
    that fails (or a worker that dies) is left for the sweep itself to meet (and report).

    ``cold=False``: only with the command's warm workers (``yolomem.workers.warm_workers``). For a couple
    of runs a worker started now pays off only for slow models: it imports for about 3 s first."""
    pending = list(dict.fromkeys(c.with_changes(notes=()) for c in configs))
    jobs = default_jobs() if jobs is None else jobs
    if jobs <= 1 or len(pending) < 2 or not (cold or are_warm()):
        return
    source = default_source()
    with contextlib.suppress(Exception):  # a config that fails is the sweep's to report
        pending = [c for c in pending if not source.known(c)]
    if len(pending) < 2:
        return
    _tell(f"tracing {len(pending)} runs in {jobs} processes")
    with worker_pool(jobs - 1) as pool, contextlib.suppress(Exception):
        side_by_side(pool, pending, _trace_here, _trace_elsewhere, lambda _config, runs: source.adopt(runs))


def _trace_here(config) -> list:
    from yolomem.result.estimate import estimate_config

    with contextlib.suppress(Exception):  # a config that fails is the sweep's to report
        estimate_config(config)
    return []  # this process's own source holds its runs


def _trace_elsewhere(config) -> list:
    """In a worker process: the runs traced for ``config``'s estimate (none when it fails: the sweep
    meets the failure itself)."""
    from yolomem.result.estimate import estimate_config

    source = default_source()
    source.recording = []
    with contextlib.suppress(Exception):
        estimate_config(config)
    return source.recording

