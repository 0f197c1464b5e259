"""User-facing errors: one line, naming the bad value, listing the valid ones, suggesting the nearest."""

from __future__ import annotations

import difflib
import re
import traceback
from collections.abc import Iterable
from pathlib import Path


class UserError(ValueError):
    """Bad input from the user. The CLI prints ``str(error)`` on one line and exits with code 2."""


def nearest(value: str, valid: Iterable[str], n: int = 3) -> list[str]:
    """The valid names closest to ``value``: those that contain it (``Orin``, ``kSame``), else the most
    alike by ``difflib``, ignoring case; none for a value of one character (``0`` is no card's name)."""
    value, valid = str(value), list(valid)
    if len(value) < 2:
        return []
    lowered = {name.lower(): name for name in valid}
    if len(value) >= 3:
        containing = [name for name in valid if value.lower() in name.lower() and name.lower() != value.lower()]
        if containing:
            return containing[:n]
    return [lowered[name] for name in difflib.get_close_matches(value.lower(), list(lowered), n=n, cutoff=0.5)]


def unknown(kind: str, value: object, valid: Iterable[str], show: int = 12, where: str = "") -> UserError:
    """``unknown model 'yolov8q.yaml'; did you mean 'yolov8s.yaml'? valid: ...`` (``where``: e.g.
    "in ultralytics 8.1.0", after the value)."""
    valid = sorted(set(valid))
    close = nearest(str(value), valid)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    listed = ", ".join(valid[:show]) + (f", ... ({len(valid)} in all)" if len(valid) > show else "")
    return UserError(f"unknown {kind} {value!r}{' ' + where if where else ''}{hint or ';'} valid: {listed}")


# torch's CPU allocator: "DefaultCPUAllocator: can't allocate memory: you tried to allocate 282240000000 bytes"
_TORCH_HOST_ALLOCATION = re.compile(r"can't allocate memory: you tried to allocate (\d+) bytes")
_TORCH_SIZE_OVERFLOW = "integer multiplication overflow"  # a tensor of more than 2^63 elements (c10's numel)


def too_large_error(error: BaseException) -> UserError | None:
    """The one-line error for a request too large to estimate here: more host memory than the machine
    has (numpy's ``MemoryError``, torch's CPU allocator), or a tensor size past torch's 64-bit element
    count; None for any other error."""
    if isinstance(error, MemoryError):
        what = f"more host memory than this machine has ({str(error) or 'an allocation failed'})"
    elif isinstance(error, RuntimeError) and (match := _TORCH_HOST_ALLOCATION.search(str(error))):
        what = f"more host memory than this machine has (torch could not allocate {int(match.group(1)) / (1 << 30):.1f} GiB)"
    elif isinstance(error, RuntimeError) and _TORCH_SIZE_OVERFLOW in str(error):
        what = "a tensor larger than torch can size (more than 2^63 elements)"
    else:
        return None
    return UserError(f"estimating this needs {what}; ask for a smaller batch or imgsz")


def missing_dependency_error(error: ModuleNotFoundError) -> UserError | None:
    """The one-line error for an installed package that cannot import a module it needs (an Ultralytics
    release installed without its dependencies: 8.2 imports ``tqdm``); None when the import failed in
    yolomem's own code (a bug, or an optional extra that names its install command itself)."""
    # the innermost frame outside the import machinery: the module whose import statement failed
    frames = [(str(f.f_globals.get("__name__", "")), f.f_globals.get("__file__")) for f, _ in traceback.walk_tb(error.__traceback__)]
    importer, path = next(((name, path) for name, path in reversed(frames)
                           if name and not name.startswith(("importlib", "<"))), ("", None))  # fmt: skip
    package = importer.split(".")[0]
    if not package or package in {"yolomem", "__main__"}:
        return None
    version = _version_beside(package, path)
    installed = f"{package} {version}" if version else package
    top = str(error.name).split(".")[0]
    return UserError(f"the installed {installed} needs the module {error.name!r}, which is not installed "
                     f"(pip install {_DISTRIBUTIONS.get(top, top)})")


def _version_beside(package: str, path: str | None) -> str | None:
    """The version in the ``dist-info`` folder next to the package the file belongs to (the copy that was
    imported, which need not be the first one importlib.metadata finds)."""
    if not path:
        return None
    root = Path(path).parent
    while root.name != package and root.parent != root:
        root = root.parent
    found = sorted(root.parent.glob(f"{package}-*.dist-info"))
    return found[0].name[len(package) + 1 : -len(".dist-info")] if found else None


# modules whose distribution has another name, among what Ultralytics imports
# pkg_resources (which Ultralytics 8.0 imports) left setuptools in release 81
_DISTRIBUTIONS = {"cv2": "opencv-python", "yaml": "pyyaml", "PIL": "pillow", "sklearn": "scikit-learn",
                  "pkg_resources": "'setuptools<81'"}
