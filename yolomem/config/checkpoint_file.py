"""Read a training checkpoint (``.pt``) without the code that wrote it, and without running any of it.

A checkpoint pickles the model object itself: ``ultralytics.nn.tasks.DetectionModel`` from Ultralytics,
``models.yolo.DetectionModel`` from the yolov5 repo (``yolov5.models.yolo`` from its PyPI package).
``torch.load(weights_only=False)`` imports those classes, so it fails on a checkpoint of a release that is not
installed (a yolo11 checkpoint under Ultralytics 8.0, any yolov5 repo checkpoint), and it runs whatever the
pickle names. Here only torch's tensor rebuilders, a few standard containers and numpy's array rebuilders are
looked up for real; every other class or function the pickle names becomes an inert stand-in (``Inert``) that
keeps the attributes the pickle gives it. That is enough to read what an estimate needs: the model's ``yaml``
dict, its parameters' shapes, and the run's ``train_args`` (Ultralytics) or ``opt`` (the yolov5 repo).
"""

from __future__ import annotations

import functools
import pickle
import types
from dataclasses import dataclass
from pathlib import Path

from yolomem.errors import UserError

# Looked up for real: rebuilders of tensors and containers, which construct data and run nothing else.
_REAL = {
    "builtins": {"set", "frozenset", "slice", "complex", "bytearray", "range"},
    "collections": {"OrderedDict", "defaultdict", "deque"},
    "torch": {"Size", "device", "float32", "float16", "bfloat16", "float64", "int64", "int32", "int8", "uint8", "bool"},
    "torch._utils": {"_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
                     "_rebuild_parameter_with_state"},
    "numpy": {"dtype", "ndarray"},
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
}  # fmt: skip

# Module prefixes of the classes each trainer pickles its models as.
_WRITERS = {"ultralytics": ("ultralytics.",), "yolov5": ("models.", "yolov5.models.")}


class Inert:
    """A stand-in for a class the checkpoint names: made without running the class's code, with the
    attributes the pickle sets (``__dict__``); called, it returns another stand-in."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots), as pickle hands a class with __slots__
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)

    def __call__(self, *args, **kwargs) -> Inert:
        return Inert()


@functools.cache
def _stand_in(module: str, name: str) -> type:
    return types.new_class(name, (Inert,), exec_body=lambda ns: ns.update({"__module__": module, "__qualname__": name}))


class _InertUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if name in _REAL.get(module, ()):
            return super().find_class(module, name)
        return _stand_in(module, name)


# torch.load's ``pickle_module``: it subclasses the module's ``Unpickler`` (and reads a legacy file's
# headers with its ``load``) and asks for its ``__name__``
_INERT_PICKLE = types.ModuleType("yolomem_inert_pickle")
_INERT_PICKLE.Unpickler = _InertUnpickler
_INERT_PICKLE.load = lambda file, **kwargs: _InertUnpickler(file, **kwargs).load()


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint file holds, read inertly."""

    path: Path
    contents: dict
    model: object  # its ``ema`` or ``model`` entry: an ``Inert`` stand-in for the trainer's model class

    @property
    def model_class(self) -> str:
        """The model's class as the pickle names it, e.g. ``models.yolo.DetectionModel``."""
        kind = type(self.model)
        return f"{kind.__module__}.{kind.__qualname__}"

    @property
    def written_by(self) -> str | None:
        """The trainer whose model class it pickles: "ultralytics", "yolov5" (the repo or its package), or None."""
        return next((writer for writer, prefixes in _WRITERS.items() if self.model_class.startswith(prefixes)), None)

    @property
    def yaml(self) -> dict | None:
        """The model's architecture, as both trainers keep it on the model (``model.yaml``)."""
        cfg = getattr(self.model, "yaml", None)
        return dict(cfg) if isinstance(cfg, dict) else None

    def parameter_shapes(self) -> list[tuple[int, ...]]:
        """Every parameter's shape in the model's module tree, sorted: what identifies an architecture."""
        shapes, stack = [], [self.model]
        while stack:
            module = stack.pop()
            for tensor in (getattr(module, "_parameters", None) or {}).values():
                if tensor is not None:
                    shapes.append(tuple(tensor.shape))
            stack.extend(m for m in (getattr(module, "_modules", None) or {}).values() if m is not None)
        return sorted(shapes)


def read_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint at ``path``, read inertly; a file that is not one is the user's error, in one line."""
    path = Path(path)
    stat = path.stat()
    return _read(path.resolve(), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)  # a loop's ``owns`` and its ``resolve`` read the same file
def _read(path: Path, _mtime_ns: int, _size: int) -> Checkpoint:
    import torch

    try:
        contents = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_INERT_PICKLE)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the user's input error
        raise UserError(f"cannot read checkpoint {str(path)!r}: {type(error).__name__}: {error}".split("\n")[0]) from None
    if not isinstance(contents, dict):
        raise UserError(f"checkpoint {str(path)!r} holds a {type(contents).__name__}, not a training checkpoint's dict")
    model = contents.get("ema") or contents.get("model")
    return Checkpoint(path, contents, model)


def written_by(path: str | Path) -> str | None:
    """Which trainer wrote the ``.pt`` file at ``path`` (None: not a file, or not a checkpoint either writes)."""
    path = Path(path)
    if path.suffix != ".pt" or not path.is_file():
        return None
    try:
        return read_checkpoint(path).written_by
    except UserError:
        return None
