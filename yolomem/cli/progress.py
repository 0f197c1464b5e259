"""One progress display for every command: a rich bar on stderr that shows up only when the work has
taken ``DELAY`` seconds (a cached answer prints without one), and goes away when it is done.

Computing code knows nothing of it: it calls the plain callbacks it is given (``message(text)``,
``step(done, total, text)``, ``advance(text)``), and the run source says what it is tracing
(``yolomem.result.runs.watching``). ``--json`` and a stderr that is not a terminal turn it off.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

DELAY = 2.0  # seconds before the bar appears


class ProgressDisplay:
    """A transient bar with a description, done/total when known, and the elapsed time."""

    def __init__(self, label: str, total: int | None = None, enabled: bool = True):
        self.label = label
        self._enabled = enabled
        self._bar = None
        self._task = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=Console(stderr=True), transient=True,
            )  # fmt: skip
            self._task = self._bar.add_task(label, total=total)
            self._timer = threading.Timer(DELAY, self._show)
            self._timer.daemon = True
            self._timer.start()

    def _show(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.start()

    def close(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            if self._bar is not None:
                self._bar.stop()
                self._bar = None

    # -- the callbacks computing code is given ----------------------------------------------------
    def message(self, text: str) -> None:
        """What is being done now (fit's and pick's ``progress(text)``)."""
        if self._bar is not None:
            self._bar.update(self._task, description=f"{self.label}: {text}")

    def step(self, done: int, total: int, text: str) -> None:
        """``done`` of ``total`` (the figures' ``progress(done, total, text)``)."""
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total, description=f"{self.label}: {text}")

    def advance(self, text: str) -> None:
        """One more done (the table's ``progress(text)``)."""
        if self._bar is not None:
            self._bar.update(self._task, advance=1, description=f"{self.label}: {text}")

    def activity(self, text: str) -> None:
        """What the run source is doing (tracing, deriving): shown after the label's own step."""
        if self._bar is not None:
            task = self._bar.tasks[0]
            head = task.description.split(" | ")[0]
            self._bar.update(self._task, description=f"{head} | {text}")


@contextlib.contextmanager
def progress_display(label: str, *, quiet: bool = False, total: int | None = None) -> Iterator[ProgressDisplay]:
    """A ``ProgressDisplay`` for the block, fed with the run source's activity; off for ``quiet``
    (``--json``) and when stderr is not a terminal."""
    from yolomem.result.runs import watching

    display = ProgressDisplay(label, total, enabled=not quiet and sys.stderr.isatty())
    try:
        with watching(display.activity):
            yield display
    finally:
        display.close()
