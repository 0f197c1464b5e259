"""Traced runs on disk: a configuration is traced once per machine, then read back in milliseconds.

Where: the user cache folder (``platformdirs.user_cache_dir("yolomem")``, under ``traces/``), or
``$YOLOMEM_CACHE_DIR``. One folder per family (a configuration without its batch size), one file per
traced batch. ``yolomem cache`` shows the folder and its size, ``yolomem cache clear`` empties it, and
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
import shutil
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


def key_digest(key: dict) -> str:
    """A family's folder name: the SHA-256 of its key as canonical JSON (first 32 hex digits)."""
    return hashlib.sha256(canonical(key).encode()).hexdigest()[:32]


def canonical(key: dict) -> str:
    return json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)


PROBES = "probes"  # the file (in its own key's folder) of what was read from the installed packages' code


class TraceStore:
    """Files of traced runs under ``root``; ``enabled=False`` reads and writes nothing."""

    def __init__(self, root: Path | None = None, enabled: bool = True):
        self.root = Path(root) if root is not None else default_root()
        self.enabled = enabled

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
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=_SUFFIX)
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

    def kept_probe(self, key: dict, compute: Callable[[], Any], kind: type) -> Any:
        """The ``kind`` value stored under ``key`` (``load_probe``); else ``compute()``, stored there."""
        found = self.load_probe(key)
        if isinstance(found, kind):
            return found
        found = compute()
        self.save_probe(key, found)
        return found

    def info(self) -> CacheInfo:
        """Traced runs: probes are counted in the bytes only."""
        families = files = size = 0
        if self.root.is_dir():
            for folder in self.root.iterdir():
                if not folder.is_dir():
                    continue
                runs = [path for path in folder.iterdir() if path.is_file()]
                size += sum(path.stat().st_size for path in runs)
                runs = [path for path in runs if path.name != f"{PROBES}{_SUFFIX}"]
                families += bool(runs)
                files += len(runs)
        return CacheInfo(self.root, families, files, size)

    def clear(self) -> CacheInfo:
        """Delete every stored run; returns what there was."""
        before = self.info()
        if self.root.is_dir():
            for folder in self.root.iterdir():
                if folder.is_dir():
                    shutil.rmtree(folder, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        folder.unlink()
        return before


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
