"""Traced runs on disk: a configuration is traced once per machine, then read back in milliseconds.

Where: the user cache folder (``platformdirs.user_cache_dir("yolomem")``, under ``traces/``), or
``$YOLOMEM_CACHE_DIR``. One folder per family (a configuration without its batch size), named by its
key's digest (32 hex digits), one ``.run`` file per traced batch (and per probe). ``yolomem cache`` shows
the folder and its size, ``yolomem cache clear`` empties it of those, and only those: anything else in
the folder (a mistyped ``$YOLOMEM_CACHE_DIR`` naming a folder of the user's) is left, and counted.
``--no-cache`` (or ``YOLOMEM_NO_CACHE=1``) turns it off for one command.

Trust: the key of a family holds the versions of yolomem (and a digest of its source files, so an
edited checkout never reads traces of the old code), torch, Ultralytics and Python, and every setting
that changes the trace. A file holds its own key and a SHA-256 of its contents; one that does not
read back whole, or whose key is not the one asked for, is ignored (and replaced by the next write),
never trusted. Writes go to a temporary file in the same folder, then ``os.replace`` it into place,
so a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import pickle
import re
import tempfile
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path
from typing import Any

FORMAT = 1  # bump when what is stored changes shape
CACHE_ENV = "YOLOMEM_CACHE_DIR"
OFF_ENV = "YOLOMEM_NO_CACHE"
_MAGIC = b"yolomem-trace\n"
_SUFFIX = ".run"
_FAMILY = re.compile(r"[0-9a-f]{32}")  # a family's folder: ``key_digest``
# what ``save`` writes in a family's folder: ``NAME.run``, and its temporary ``.tmp-XXXXXXXX.run`` until
# the ``os.replace`` (left behind by a process killed mid-write)
_TEMPORARY = ".tmp-"


def default_root() -> Path:
    """``$YOLOMEM_CACHE_DIR``, else the platform's user cache folder for yolomem, then ``traces``."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("yolomem")) / "traces"


@dataclass(frozen=True)
class CacheInfo:
    path: Path
    families: int
    files: int
    bytes: int
    foreign: tuple[str, ...] = ()  # files and folders in it that yolomem did not write (relative paths)


def key_digest(key: dict) -> str:
    """A family's folder name: the SHA-256 of its key as canonical JSON (first 32 hex digits)."""
    return hashlib.sha256(canonical(key).encode()).hexdigest()[:32]


def canonical(key: dict) -> str:
    return json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)


PROBES = "probes"  # the file (in its own key's folder) of what was read from the installed packages' code


class TraceStore:
    """Files of traced runs under ``root``; ``enabled=False`` reads and writes nothing on disk (probe
    values another process found for this one are still kept in memory: ``remember_probe``)."""

    def __init__(self, root: Path | None = None, enabled: bool = True):
        self.root = Path(root) if root is not None else default_root()
        self.enabled = enabled
        self._remembered: dict[str, Any] = {}  # key digest -> a probe value handed over by another process

    def _path(self, family: str, name: str) -> Path:
        return self.root / family / f"{name}{_SUFFIX}"

    def load(self, family_key: dict, name: str) -> Any | None:
        """What ``save`` stored under ``family_key`` and ``name``; None when absent, corrupt or stale."""
        if not self.enabled:
            return None
        path = self._path(key_digest(family_key), name)
        try:
            blob = path.read_bytes()
        except OSError:
            return None
        return _decode(blob, canonical(family_key), name)

    def names(self, family_key: dict) -> list[str]:
        """Names stored in a family (not yet checked: ``load`` checks each)."""
        if not self.enabled:
            return []
        folder = self.root / key_digest(family_key)
        try:
            return sorted(p.name[: -len(_SUFFIX)] for p in folder.iterdir() if p.name.endswith(_SUFFIX))
        except OSError:
            return []

    def save(self, family_key: dict, name: str, value: Any) -> None:
        """Store ``value``; a cache that cannot be written (read-only, full disk) is skipped silently."""
        if not self.enabled:
            return
        path = self._path(key_digest(family_key), name)
        temporary = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=_TEMPORARY, suffix=_SUFFIX)
            with os.fdopen(handle, "wb") as stream:
                stream.write(_encode(value, canonical(family_key), name))
            os.replace(temporary, path)
        except OSError:
            if temporary is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)

    def load_probe(self, key: dict) -> Any | None:
        """What ``save_probe`` stored under ``key`` (e.g. how the installed Ultralytics trains); None when
        absent, corrupt or stale."""
        return self.load(key, PROBES) if self.enabled else None

    def save_probe(self, key: dict, value: Any) -> None:
        self.save(key, PROBES, value)

    def remember_probe(self, key: dict, value: Any) -> None:
        """A probe value another process computed (a sweep's worker), for ``kept_probe`` in this one, with
        the cache on or off: this command asked for it, and recomputing it could take seconds."""
        self._remembered[key_digest(key)] = value

    def kept_probe(self, key: dict, compute: Callable[[], Any], kind: type) -> Any:
        """The ``kind`` value stored under ``key`` (``load_probe``) or handed over (``remember_probe``); else
        ``compute()``, stored there."""
        found = self._remembered.get(key_digest(key))
        if isinstance(found, kind):
            return found
        found = self.load_probe(key)
        if isinstance(found, kind):
            return found
        found = compute()
        self.save_probe(key, found)
        return found

    def problem(self) -> str | None:
        """Why the folder cannot hold the cache (a file stands at it or above it: every read and write
        would fail, silently); None when it can."""
        blocking = next((path for path in (self.root, *self.root.parents) if path.exists()), None)
        if blocking is None or blocking.is_dir():
            return None
        named = f" (${CACHE_ENV})" if os.environ.get(CACHE_ENV) else ""
        if blocking == self.root:
            return f"the trace cache folder {self.root}{named} is a file, not a folder"
        return f"the trace cache folder {self.root}{named} cannot be made: {blocking} is a file"

    def info(self) -> CacheInfo:
        """Traced runs: probes and temporary files are counted in the bytes only."""
        families = files = size = 0
        ours, foreign = self._contents()
        for folder, paths in ours.items():
            size += sum(path.stat().st_size for path in paths)
            runs = [p for p in paths if p.name != f"{PROBES}{_SUFFIX}" and not p.name.startswith(_TEMPORARY)]
            families += bool(runs)
            files += len(runs)
        return CacheInfo(self.root, families, files, size, foreign)

    def clear(self) -> CacheInfo:
        """Delete every stored run, probe and temporary file, and the family folders they leave empty;
        nothing else. Returns what there was (``foreign``: what is left)."""
        before = self.info()
        for folder, paths in self._contents()[0].items():
            for path in paths:
                with contextlib.suppress(OSError):
                    path.unlink()
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: it holds no foreign file
        return before

    def _contents(self) -> tuple[dict[Path, list[Path]], tuple[str, ...]]:
        """The files this store wrote, by family folder, and the paths (relative) of everything else in
        the folder: another file or folder beside the families, or in one."""
        ours: dict[Path, list[Path]] = {}
        foreign: list[str] = []
        if not self.root.is_dir():
            return ours, ()
        for folder in sorted(self.root.iterdir()):
            if not (_FAMILY.fullmatch(folder.name) and folder.is_dir() and not folder.is_symlink()):
                foreign.append(folder.name + ("/" if folder.is_dir() else ""))
                continue
            ours[folder] = []
            for path in sorted(folder.iterdir()):
                if path.name.endswith(_SUFFIX) and path.is_file() and not path.is_symlink():
                    ours[folder].append(path)
                else:
                    foreign.append(f"{folder.name}/{path.name}" + ("/" if path.is_dir() else ""))
        return ours, tuple(foreign)


_ACTIVE: TraceStore | None = None


def active_store() -> TraceStore:
    """The store this process reads and writes: the run source's (``yolomem.result.runs.configure``,
    ``--no-cache``), else the one the environment names."""
    global _ACTIVE
    if _ACTIVE is None:
        _ACTIVE = TraceStore(enabled=os.environ.get(OFF_ENV, "") in ("", "0"))
    return _ACTIVE


def activate(store: TraceStore) -> None:
    global _ACTIVE
    _ACTIVE = store


def _encode(value: Any, key: str, name: str) -> bytes:
    payload = pickle.dumps((FORMAT, key, name, value), protocol=pickle.HIGHEST_PROTOCOL)
    return _MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def _decode(blob: bytes, key: str, name: str) -> Any | None:
    if not blob.startswith(_MAGIC):
        return None
    digest, _, payload = blob[len(_MAGIC) :].partition(b"\n")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        return None  # cut short or changed on disk
    try:
        stored_format, stored_key, stored_name, value = pickle.loads(payload)
    except Exception:  # noqa: BLE001 - anything unpicklable is not ours to trust
        return None
    if stored_format != FORMAT or stored_key != key or stored_name != name:
        return None  # stale: written by another version, or for another configuration
    return value


def code_key() -> dict:
    """The code a stored value was computed by: yolomem (its version and a digest of its source), torch,
    Ultralytics (and where it is installed), numpy and Python. Part of every key in the store."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch
    import ultralytics

    from yolomem import __version__

    try:
        numpy = version("numpy")
    except PackageNotFoundError:
        numpy = "-"
    return {
        "yolomem": __version__, "source": source_digest(), "torch": torch.__version__,
        "ultralytics": ultralytics.__version__, "ultralytics_path": str(Path(ultralytics.__file__).parent),
        "numpy": numpy, "python": platform.python_version(),
    }  # fmt: skip


@functools.cache
def source_digest() -> str:
    """A digest of yolomem's own source files: traces from edited code are never read back."""
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        if path.suffix in {".py", ".yaml", ".cfg"} and path.is_file():
            digest.update(str(path.relative_to(package)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
