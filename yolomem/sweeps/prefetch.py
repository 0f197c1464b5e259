"""Trace side by side the runs a sweep is sure to ask for, before it asks for them one by one."""

from __future__ import annotations

import contextlib

from yolomem.result.runs import _tell, default_jobs, default_source, worker_pool


def prefetch(configs, jobs: int | None = None) -> None:
    """Trace ``configs`` side by side before a sweep asks for them one by one: this process takes every
    ``jobs``-th, worker processes the others (each pays its imports once) and hand their runs back.
    Sweeps call it with the configurations they are sure to ask for; a config that fails is left for
    the sweep itself to meet (and report)."""
    from yolomem.result.estimate import estimate_config

    pending = list(dict.fromkeys(c.with_changes(notes=()) for c in configs))
    jobs = default_jobs() if jobs is None else jobs
    if jobs <= 1 or len(pending) < 2:
        return
    source = default_source()
    with contextlib.suppress(Exception):  # a config that fails is the sweep's to report
        pending = [c for c in pending if not source.known(c)]
    if len(pending) < 2:
        return
    mine, theirs = pending[::jobs], [c for i, c in enumerate(pending) if i % jobs]
    _tell(f"tracing {len(pending)} runs in {jobs} processes")
    with worker_pool(jobs - 1) as pool:
        futures = [pool.submit(_trace_elsewhere, config) for config in theirs]
        for config in mine:
            with contextlib.suppress(Exception):
                estimate_config(config)
        for future in futures:
            with contextlib.suppress(Exception):
                for digest, name, stored in future.result():
                    source.adopt(digest, name, stored)


def _trace_elsewhere(config) -> list:
    """In a worker process: the runs traced for ``config``'s estimate."""
    from yolomem.result.estimate import estimate_config

    source = default_source()
    source.recording = []
    estimate_config(config)
    return source.recording
