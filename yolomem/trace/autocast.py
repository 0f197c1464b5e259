"""CUDA's autocast policy, applied to CPU tensors.

The trace runs on fake *CPU* tensors, because the autograd engine refuses fake CUDA tensors on a
machine without a GPU. CPU autocast follows a different op list than CUDA autocast (in torch 2.14,
CUDA runs ``upsample_nearest2d`` in float32 and has no rule for ``cat``; CPU keeps both in float16).

So for the duration of a trace we install, on the ``AutocastCPU`` dispatch key, a Python kernel for
every op that *either* backend registers. The kernel does not carry a hand-kept policy table: the
first time it sees an (op, argument dtypes) pair it asks the installed torch's real ``AutocastCUDA``
kernel what it would do, by calling the op on fake CUDA copies of the arguments and watching which
arguments get cast to which dtype. It then applies exactly those casts to the CPU arguments (through
autograd, so backward sees them as it would on a GPU) and runs the op below the autocast key.

CUDA autocast caches the low-precision copy of each fp32 leaf tensor that requires grad (the
parameters, and an input made to require grad, as AutoBatch's profiler does) until the autocast region
exits (``cached_cast`` in aten/src/ATen/autocast_mode.cpp). We keep the same cache, so the fp16 copies
live exactly as long as they do on a GPU: also after their source dies, whose key the cache holds weakly
(a ``weak_intrusive_ptr``, so no other tensor takes that address while the entry stands).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_unflatten

_AUTOCAST_CPU = torch._C.DispatchKey.AutocastCPU


def _registered_ops() -> list[str]:
    """Every op that either autocast backend has a kernel for, e.g. 'aten::conv2d.padding'."""
    cuda = torch._C._dispatch_get_registrations_for_dispatch_key("AutocastCUDA")
    cpu = torch._C._dispatch_get_registrations_for_dispatch_key("AutocastCPU")
    return sorted(set(cuda) | set(cpu))


def _resolve(qualified: str) -> torch._ops.OpOverload | None:
    namespace, _, rest = qualified.partition("::")
    name, _, overload = rest.partition(".")
    packet = getattr(getattr(torch.ops, namespace), name, None)
    if packet is None:
        return None
    return getattr(packet, overload or "default", None)


# What torch's AutocastCUDA kernel does for (op, autocast dtype, argument dtypes). It depends only on
# the installed torch, so one process asks once; a failed probe is not remembered (it is reported).
_DECISIONS: dict[tuple, tuple[tuple[torch.dtype | None, ...], torch.dtype | None]] = {}


class _CastWatcher(TorchDispatchMode):
    """Records which of the watched tensors the AutocastCUDA kernel casts, and to what dtype."""

    def __init__(self, watched: list[torch.Tensor]):
        super().__init__()
        self.watched = watched
        self.cast_to: dict[int, torch.dtype] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default and args:
            for index, tensor in enumerate(self.watched):
                if args[0] is tensor and "dtype" in kwargs:
                    self.cast_to[index] = kwargs["dtype"]
        return func(*args, **kwargs)


class CudaAutocastPolicy:
    """Installs CUDA's autocast behaviour on the AutocastCPU key while active.

    Use as a context manager around the whole trace; the kernels are removed on exit.
    ``fake_cuda_like`` builds a fake CUDA tensor with the same metadata as a CPU tensor; the
    trace provides it, since only it knows its fake mode.
    """

    def __init__(self, fake_cuda_like, pause_recording):
        self._fake_cuda_like = fake_cuda_like
        self._pause_recording = pause_recording
        # id(source) -> (a weak reference to the source, its cast copy). An id outlives its tensor, unlike
        # CUDA's key: a dead source's entry moves to _orphaned casts, which stay until the region exits.
        self._weight_cache: dict[int, tuple[weakref.ref, torch.Tensor]] = {}
        self._orphaned_casts: list[torch.Tensor] = []
        self._library: torch.library.Library | None = None
        self.probe_failures: set[str] = set()
        self.probe_failures_ops: set = set()

    # -- installation ---------------------------------------------------------------------------
    def __enter__(self) -> CudaAutocastPolicy:
        import warnings

        self._library = torch.library.Library("aten", "IMPL")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Overriding a previously registered kernel" is the point
            for qualified in _registered_ops():
                op = _resolve(qualified)
                if op is None or not qualified.startswith("aten::"):
                    continue
                name = qualified.split("::", 1)[1]
                self._library.impl(name, self._kernel_for(op), "AutocastCPU")
        return self

    def __exit__(self, *exc) -> None:
        if self._library is not None:
            self._library._destroy()  # restores the original AutocastCPU kernels
            self._library = None
        self._clear_cast_cache()

    @contextlib.contextmanager
    def region(self, dtype: torch.dtype) -> Iterator[None]:
        """The equivalent of ``torch.autocast('cuda', dtype)``, for the CPU trace."""
        try:
            with torch.autocast("cpu", dtype=dtype):
                yield
        finally:
            self._clear_cast_cache()  # autocast's exit clears its cast cache

    def _clear_cast_cache(self) -> None:
        self._weight_cache.clear()
        self._orphaned_casts.clear()

    # -- the kernel -------------------------------------------------------------------------------
    def _kernel_for(self, op: torch._ops.OpOverload):
        dtype_position = next((i for i, a in enumerate(op._schema.arguments) if a.name == "dtype"), None)

        def kernel(*args: Any, **kwargs: Any) -> Any:
            flat, spec = tree_flatten((args, kwargs))
            targets, set_dtype = self._arrival_dtypes(op, flat, spec)
            for index, target in enumerate(targets):
                if target is not None:
                    flat[index] = self._cast(flat[index], target)
            args2, kwargs2 = tree_unflatten(flat, spec)
            if set_dtype is not None and dtype_position is not None:
                # the fp32_set_opt_dtype policy (softmax, cumsum, sum...): CUDA passes dtype=float32
                if len(args2) > dtype_position:
                    if args2[dtype_position] is None:
                        args2 = (*args2[:dtype_position], set_dtype, *args2[dtype_position + 1 :])
                elif kwargs2.get("dtype") is None:
                    kwargs2 = {**kwargs2, "dtype": set_dtype}
            with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(_AUTOCAST_CPU)):
                return op(*args2, **kwargs2)

        return kernel

    def _cast(self, tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        # Mirrors cached_cast(): fp32 leaf tensors that require grad are cast once per autocast region.
        cacheable = tensor.is_leaf and tensor.requires_grad and tensor.dtype == torch.float32
        if cacheable:
            entry = self._weight_cache.get(id(tensor))
            if entry is not None:
                source, cast = entry
                if source() is tensor:
                    return cast
                self._orphaned_casts.append(cast)  # another tensor at a dead one's id: its copy stays cached
        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(_AUTOCAST_CPU)):
            cast = tensor.to(dtype)
        if cacheable:
            self._weight_cache[id(tensor)] = (weakref.ref(tensor), cast)
        return cast

    def _arrival_dtypes(self, op, flat: list, spec) -> tuple[tuple[torch.dtype | None, ...], torch.dtype | None]:
        """For each flat argument: the dtype CUDA autocast casts it to, or None if left alone; and the
        ``dtype=`` CUDA autocast sets on ops that take one, or None."""
        key = (op, torch.get_autocast_dtype("cpu"), tuple(x.dtype if isinstance(x, torch.Tensor) else None for x in flat))
        decision = _DECISIONS.get(key)
        if decision is None:
            decision = self._probe(op, flat, spec)
            if op not in self.probe_failures_ops:
                _DECISIONS[key] = decision
        return decision

    def _probe(self, op, flat: list, spec) -> tuple[tuple[torch.dtype | None, ...], torch.dtype | None]:
        tensor_positions = [i for i, x in enumerate(flat) if isinstance(x, torch.Tensor)]
        with self._pause_recording(), torch.no_grad():
            cuda_flat = list(flat)
            for i in tensor_positions:
                cuda_flat[i] = self._fake_cuda_like(flat[i])
            watcher = _CastWatcher([cuda_flat[i] for i in tensor_positions])
            args, kwargs = tree_unflatten(cuda_flat, spec)
            cuda_was = torch.is_autocast_enabled("cuda")
            cuda_dtype = torch.get_autocast_dtype("cuda")
            torch.set_autocast_enabled("cuda", True)
            torch.set_autocast_dtype("cuda", torch.get_autocast_dtype("cpu"))
            try:
                with watcher:
                    out = op(*args, **kwargs)
            except Exception:  # an op the fake CUDA path cannot run: leave its arguments as they are
                self.probe_failures.add(str(op))
                self.probe_failures_ops.add(op)
                return tuple(None for _ in flat), None
            finally:
                torch.set_autocast_enabled("cuda", cuda_was)
                torch.set_autocast_dtype("cuda", cuda_dtype)
        result: list[torch.dtype | None] = [None] * len(flat)
        for watched_index, dtype in watcher.cast_to.items():
            position = tensor_positions[watched_index]
            if flat[position].dtype != dtype:
                result[position] = dtype
        first = out[0] if isinstance(out, (tuple, list)) and out else out
        input_dtypes = {flat[i].dtype for i in tensor_positions}
        set_dtype = None
        if not watcher.cast_to and isinstance(first, torch.Tensor) and first.dtype not in input_dtypes:
            set_dtype = first.dtype if first.dtype.is_floating_point else None
        return tuple(result), set_dtype
