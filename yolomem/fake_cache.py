"""A cheaper front for FakeTensorMode's dispatch cache.

Why: a trace runs ~10-30k aten ops on fake tensors, and most of them repeat an op already seen with
the same metadata. FakeTensorMode caches those, but building its cache key walks every argument
through generic dataclass flattening and costs more than the hit saves (about 0.3 ms per op, the
largest single cost of an estimate). This module keys the same cache entries on a flat tuple of
the metadata that decides an op's output, and on a hit rebuilds the output with FakeTensorMode's own
``_output_from_cache_entry``. Entries are made by FakeTensorMode's own ``_make_cache_entry``, so what
may be cached (no data-dependent outputs, no in-place views, views alias their input's storage,
in-place ops return their input) is exactly upstream's rule; only the key is ours.

The key holds, per fake tensor: dtype, shape, stride, storage offset and size, device,
requires_grad, conj/neg bits and inference flag; per other argument: its type and value; plus the
global state upstream keys on (default dtype and device, inference mode). Anything the key cannot
describe (a real tensor, a constant-carrying fake, a sparse layout) raises ``_Uncacheable`` and the
op takes the ordinary path. ``tests/test_fake_cache.py`` checks outputs against the ordinary path.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch._subclasses._fake_tensor_utils import _CacheKeyState
from torch._subclasses.fake_impls import op_implementations_checks, op_implementations_dict
from torch._subclasses.fake_tensor import (
    _DISPATCH_HANDLE_DIRECTLY,
    _DISPATCH_META_HANDLERS,
    FakeTensor,
    FakeTensorMode,
    _BypassDispatchCache,
    _DispatchCacheEntryOutputInfo,
    _DispatchCacheValidEntry,
    extract_tensor_metadata,
)

_BYPASS = object()  # marks ops whose outputs upstream refuses to cache
_STRIDED = torch.strided
_PASS_THROUGH = frozenset(_DISPATCH_META_HANDLERS) | frozenset(_DISPATCH_HANDLE_DIRECTLY)


class _Uncacheable(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class _ListEntry:
    """An op that returns a list of tensors (``_foreach_norm``): upstream caches tuples only."""

    entry: _DispatchCacheValidEntry


class FakeDispatchCache:
    """Process-wide: entries hold metadata only, never tensors, so traces in one process share them."""

    entries: dict[tuple, Any] = {}
    hits = 0
    misses = 0
    crosscheck = False  # tests: check every meta-kernel entry against the fake mode's own output

    def __init__(self, fake_mode: FakeTensorMode):
        self.fake_mode = fake_mode
        self._state = _CacheKeyState(None)

    def call(self, func, args: tuple, kwargs: dict):
        """``func(*args, **kwargs)`` under the fake mode (which must be active), served from the cache."""
        if func in _PASS_THROUGH:
            return func(*args, **kwargs)
        try:
            key = self._key(func, args, kwargs)
            entry = self.entries.get(key)
        except (_Uncacheable, TypeError):  # TypeError: an unhashable argument
            return func(*args, **kwargs)
        if entry is _BYPASS:
            return func(*args, **kwargs)
        if entry is not None:
            FakeDispatchCache.hits += 1
            return self._output(entry, func, args)
        FakeDispatchCache.misses += 1
        if func is _BATCH_NORM:
            entry = _batch_norm_entry(args, kwargs)
        else:
            entry = self._entry_from_meta(func, args, kwargs) if _meta_routable(func) else None
        if entry is not None:
            self.entries[key] = entry
            output = self._output(entry, func, args)
            if self.crosscheck:
                _assert_same_metadata(func, output, self._upstream(func, args, kwargs))
            return output
        output = self._upstream(func, args, kwargs)
        try:
            entry = self.fake_mode._make_cache_entry(self._state, None, func, args, kwargs, output)
        except _BypassDispatchCache:
            entry = _BYPASS
        self.entries[key] = entry
        return output

    def _output(self, entry, func, args: tuple):
        if isinstance(entry, _ListEntry):
            return list(self.fake_mode._output_from_cache_entry(self._state, entry.entry, None, func, args))
        return self.fake_mode._output_from_cache_entry(self._state, entry, None, func, args)

    def _upstream(self, func, args: tuple, kwargs: dict):
        """The fake mode's own dispatch, its cache off (our entry replaces its entry: key once)."""
        mode = self.fake_mode
        upstream, mode.cache_enabled = mode.cache_enabled, False
        try:
            return func(*args, **kwargs)
        finally:
            mode.cache_enabled = upstream

    def _entry_from_meta(self, func, args: tuple, kwargs: dict):
        """Run the op's meta kernel on plain meta copies and describe its outputs as a cache entry.

        Why: on a miss the fake mode runs a Python decomposition through its own dispatch op by op
        (batch norm ~16 ms, silu_backward ~6 ms); the same meta kernel on plain meta tensors is 5-50x
        cheaper. Only for functional ops the fake mode has no special rule for (``_meta_routable``)."""
        devices = set()

        def to_meta(value):
            if isinstance(value, FakeTensor):
                devices.add(value.fake_device)
                return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device="meta")
            if isinstance(value, (list, tuple)):
                return type(value)(to_meta(v) for v in value)
            return value

        with torch._C._DisableTorchDispatch():
            meta_args = tuple(to_meta(v) for v in args)
            meta_kwargs = {name: to_meta(v) for name, v in kwargs.items()}
            if len(devices) != 1:
                return None
            try:
                out = func(*meta_args, **meta_kwargs)
            except Exception:  # noqa: BLE001 - let the fake mode raise or handle it its own way
                return None
        (device,) = devices
        outputs = out if isinstance(out, (tuple, list)) else (out,)
        infos = []
        for tensor in outputs:
            if tensor is None:
                infos.append(_DispatchCacheEntryOutputInfo(inplace_idx=None, metadata=None, view_idx=None,
                                                           constant_value=None))  # fmt: skip
            elif type(tensor) is torch.Tensor and tensor.is_meta:
                metadata = dataclasses.replace(extract_tensor_metadata(tensor), device=device, requires_grad=False)
                infos.append(_DispatchCacheEntryOutputInfo(inplace_idx=None, metadata=metadata, view_idx=None))
            else:
                return None
        entry = _DispatchCacheValidEntry(output_infos=tuple(infos), is_output_tuple=isinstance(out, (tuple, list)))
        return _ListEntry(entry) if isinstance(out, list) else entry

    def _key(self, func, args: tuple, kwargs: dict) -> tuple:
        key: list = [func, torch.get_default_dtype(), torch._C._get_default_device(),
                     torch.is_inference_mode_enabled()]  # fmt: skip
        self._add(key, args)
        if kwargs:
            for name, value in kwargs.items():
                key.append(name)
                self._add(key, (value,))
        return tuple(key)

    def _add(self, key: list, values) -> None:
        mode = self.fake_mode
        for value in values:
            if isinstance(value, FakeTensor):
                if value.fake_mode is not mode or value.constant is not None or value.layout is not _STRIDED:
                    raise _Uncacheable
                key.append((value.dtype, value.shape, value.stride(), value.storage_offset(),
                            value.untyped_storage().nbytes(), value.fake_device, value.requires_grad,
                            value.is_conj(), value.is_neg(), value.is_inference()))  # fmt: skip
            elif isinstance(value, torch.Tensor):
                raise _Uncacheable
            elif isinstance(value, (list, tuple)):
                key.append((type(value), len(value)))
                self._add(key, value)
            elif isinstance(value, (torch.SymInt, torch.SymFloat, torch.SymBool)) or callable(value):
                raise _Uncacheable
            else:
                key.append(type(value))  # 1 and 1.0 hash alike but give different dtypes
                key.append(value)


_ROUTABLE: dict = {}
_BATCH_NORM = torch.ops.aten.native_batch_norm.default
# Ops whose fake result depends on the device, which a meta kernel cannot know (found by the crosscheck).
_DEVICE_DEPENDENT = {_BATCH_NORM}


def _batch_norm_entry(args: tuple, kwargs: dict):
    """native_batch_norm on a CPU fake tensor, as the fake mode's decomposition answers it (~16 ms a
    shape there): the output like the input; mean and inverse std in the input's dtype, of one value
    per channel when training and empty in eval mode. None (ask the fake mode) outside that case."""
    if kwargs or len(args) < 6:
        return None
    x, training = args[0], args[5]
    if x.fake_device.type != "cpu" or x.dim() < 2 or not isinstance(training, bool):
        return None
    if not (x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))):
        return None
    with torch._C._DisableTorchDispatch():
        out = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="meta")
        stats = torch.empty((x.shape[1] if training else 0,), dtype=x.dtype, device="meta")

    def info(tensor):
        metadata = dataclasses.replace(extract_tensor_metadata(tensor), device=x.fake_device, requires_grad=False)
        return _DispatchCacheEntryOutputInfo(inplace_idx=None, metadata=metadata, view_idx=None)

    return _DispatchCacheValidEntry(output_infos=(info(out), info(stats), info(stats)), is_output_tuple=True)
_REFUSING_TAGS = (torch.Tag.dynamic_output_shape, torch.Tag.data_dependent_output, torch.Tag.nondeterministic_seeded,
                  torch.Tag.inplace_view)  # fmt: skip


def _meta_routable(func) -> bool:
    """A functional aten op (no views, no writes, no device argument, no data-dependent size) that the
    fake mode has no rule of its own for: its meta kernel alone decides its outputs."""
    known = _ROUTABLE.get(func)
    if known is None:
        schema = func._schema
        known = _ROUTABLE[func] = (
            func.namespace == "aten"
            and not func.is_view
            and not schema.is_mutable
            and all(ret.alias_info is None for ret in schema.returns)
            and not any(tag in func.tags for tag in _REFUSING_TAGS)
            and not any(arg.name == "device" for arg in schema.arguments)
            and func not in op_implementations_dict
            and func not in _PASS_THROUGH
            and func not in _DEVICE_DEPENDENT
            and not any(check(func) for check, _impl in op_implementations_checks)
        )
    return known


def _assert_same_metadata(func, ours, theirs) -> None:
    ours = ours if isinstance(ours, (tuple, list)) else (ours,)
    theirs = theirs if isinstance(theirs, (tuple, list)) else (theirs,)

    def describe(t):
        return None if t is None else (t.dtype, tuple(t.shape), t.stride(), t.storage_offset(), t.device)

    mine, upstream = [describe(t) for t in ours], [describe(t) for t in theirs]
    if mine != upstream:
        raise AssertionError(f"{func}: meta kernel gave {mine}, the fake mode {upstream}")
