"""User-facing errors: one line, naming the bad value, listing the valid ones, suggesting the nearest."""

from __future__ import annotations

import difflib
import re
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


# torch's CPU allocator: "DefaultCPUAllocator: can't allocate memory: you tried to allocate 282240000000 bytes"
_TORCH_HOST_ALLOCATION = re.compile(r"can't allocate memory: you tried to allocate (\d+) bytes")


def host_memory_error(error: BaseException) -> UserError | None:
    """The one-line error for a request whose estimate the host's memory cannot hold (numpy's
    ``MemoryError``, torch's CPU allocator), or None for any other error."""
    if isinstance(error, MemoryError):
        detail = str(error) or "an allocation failed"
    elif isinstance(error, RuntimeError) and (match := _TORCH_HOST_ALLOCATION.search(str(error))):
        detail = f"torch could not allocate {int(match.group(1)) / (1 << 30):.1f} GiB"
    else:
        return None
    return UserError(f"estimating this needs more host memory than this machine has ({detail}); ask for a smaller "
                     "batch or imgsz")
