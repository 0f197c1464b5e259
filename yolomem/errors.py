"""User-facing errors: one line, naming the bad value, listing the valid ones, suggesting the nearest."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(ValueError):
    """Bad input from the user. The CLI prints ``str(error)`` on one line and exits with code 2."""


def nearest(value: str, valid: Iterable[str], n: int = 3) -> list[str]:
    return difflib.get_close_matches(str(value), list(valid), n=n, cutoff=0.5)


def unknown(kind: str, value: object, valid: Iterable[str], show: int = 12, where: str = "") -> UserError:
    """``unknown model 'yolov8q.yaml'; did you mean 'yolov8s.yaml'? valid: ...`` (``where``: e.g.
    "in ultralytics 8.1.0", after the value)."""
    valid = sorted(set(valid))
    close = nearest(str(value), valid)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    listed = ", ".join(valid[:show]) + (f", ... ({len(valid)} in all)" if len(valid) > show else "")
    return UserError(f"unknown {kind} {value!r}{' ' + where if where else ''}{hint} valid: {listed}")
