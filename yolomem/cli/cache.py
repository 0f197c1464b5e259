"""``yolomem cache``: where the trace cache is and how big; ``yolomem cache clear`` empties it.

    yolomem cache          # folder, families (configurations), files, size
    yolomem cache clear    # delete every stored run (and only what yolomem wrote there)

The cache itself: ``yolomem.trace.store``; how estimates use it: ``yolomem.result.runs``.
"""

from __future__ import annotations

import argparse

from yolomem.cli.registry import JSON, command
from yolomem.errors import UserError, unknown

ACTIONS = ("clear",)


@command(
    "cache", "where the trace cache is and how big it is; 'cache clear' empties it", words="[clear]", flags=(JSON,),
    examples=("yolomem cache", "yolomem cache clear"), traces=False,
    more="Traced runs are kept per configuration and batch; estimates read them back, or derive other batches "
         "from them. YOLOMEM_CACHE_DIR moves the folder; --no-cache on a command leaves it alone.",
)  # fmt: skip
def cache_command(options: argparse.Namespace) -> int:
    from yolomem.result.runs import default_source

    words = options.words or []
    if len(words) > 1:
        raise UserError(f"cache takes at most one word ('clear'), got {len(words)}: {' '.join(words)}")
    if words and words[0] not in ACTIONS:
        raise unknown("cache action", words[0], ACTIONS)
    store = default_source().store
    problem = store.problem()
    if problem:
        raise UserError(problem)
    info = store.clear() if words else store.info()
    if options.json:
        from yolomem.render.json_output import dumps

        payload = {"path": str(info.path), "families": info.families, "files": info.files, "bytes": info.bytes,
                   "enabled": store.enabled, "cleared": bool(words), "foreign": list(info.foreign)}  # fmt: skip
        print(dumps(payload), file=options.stdout)
        return 0
    size = _size(info.bytes)
    if words:
        print(f"cleared {info.files} traced runs ({size}) from {info.path}{_foreign(info.foreign, 'left ')}")
    else:
        state = "" if store.enabled else " (off for this command: --no-cache or YOLOMEM_NO_CACHE)"
        print(f"trace cache: {info.path}{state}")
        print(f"{info.families} configurations, {info.files} traced runs, {size}{_foreign(info.foreign, 'also ')}")
    return 0


def _foreign(paths: tuple[str, ...], verb: str, show: int = 3) -> str:
    """``; left 2 files or folders that are not yolomem's: notes.txt, sub/`` (empty when there are none)."""
    if not paths:
        return ""
    listed = ", ".join(paths[:show]) + (", ..." if len(paths) > show else "")
    return f"; {verb}{len(paths)} files or folders that are not yolomem's: {listed}"


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"
