"""A faster dispatch for fake tensors: a cache of output metadata, and meta kernels on a miss.

Why: a trace runs 10-30k aten ops on fake tensors. FakeTensorMode's own cache builds its key by
walking every argument through generic dataclass flattening (~0.3 ms an op, more than a hit saves),
and on a miss it runs Python decompositions op by op through its own dispatch (batch norm ~16 ms,
silu_backward ~6 ms). Those two costs were most of an estimate's time.

What this does instead, with FakeTensorMode's semantics kept:
- The key is a flat tuple of what decides an op's outputs: per fake tensor its dtype, shape, stride,
  storage offset and size, device, requires_grad, conj/neg bits and inference flag; per other
  argument its type and value; plus the global state upstream keys on (default dtype and device,
  inference mode). What the key cannot describe (a real tensor, a constant-carrying fake, a sparse
  layout) raises ``_Uncacheable`` and the op takes the fake mode's ordinary path.
- A miss on a functional op the fake mode has no special rule for (``_meta_routable``) runs the op's
  meta kernel on plain meta copies; ``native_batch_norm``, whose fake answer depends on the device,
  has its own small rule. Any other miss goes to the fake mode, and its ``_make_cache_entry`` decides
  what may be cached (no data-dependent outputs, no in-place views; views alias their input's
  storage, in-place ops return their input).
- A hit rebuilds the outputs as upstream's ``_get_output_tensor_from_cache_entry`` does.

``tests/test_fake_cache.py`` checks every meta and batch-norm answer against the fake mode's own
(``crosscheck``), and a whole trace event by event against one that sends every op to the fake mode.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_map_only
from torch._subclasses._fake_tensor_utils import _CacheKeyState
from torch._subclasses.fake_impls import (
    foreach_run_and_map_input_device,
    op_implementations_checks,
    op_implementations_dict,
)
from torch._subclasses.fake_tensor import (
    _DISPATCH_HANDLE_DIRECTLY,
    _DISPATCH_META_HANDLERS,
    FakeTensor,
    FakeTensorMode,
    _BypassDispatchCache,
    _DispatchCacheValidEntry,
)

_BYPASS = object()  # marks ops whose outputs upstream refuses to cache
_STRIDED = torch.strided
_PASS_THROUGH = frozenset(_DISPATCH_META_HANDLERS) | frozenset(_DISPATCH_HANDLE_DIRECTLY)


class _Uncacheable(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class _Output:
    """How to rebuild one output: an input returned as is, a constant, or a new tensor (a view of an
    input's storage when ``view_of`` is set)."""

    inplace_of: int | None = None
    constant: Any = None
    shape: tuple[int, ...] | None = None
    stride: tuple[int, ...] = ()
    storage_offset: int = 0
    dtype: torch.dtype | None = None
    device: torch.device | None = None
    requires_grad: bool = False
    view_of: int | None = None


@dataclasses.dataclass(frozen=True)
class _Entry:
    outputs: tuple[_Output, ...]
    container: type | None  # tuple or list; None for a single output


def _entry_from_upstream(entry: _DispatchCacheValidEntry, container: type | None):
    """Our compact form of an upstream entry; None where it holds anything unusual (symbolic sizes,
    conj/neg bits, a non-strided layout): then upstream's own entry rebuilds it."""
    outputs = []
    for info in entry.output_infos:
        if info.inplace_idx is not None:
            outputs.append(_Output(inplace_of=info.inplace_idx))
            continue
        metadata = info.metadata
        if metadata is None:
            outputs.append(_Output(constant=info.constant_value))
            continue
        sizes = (*metadata.shape, *metadata.stride, metadata.storage_offset)
        if (not all(type(v) is int for v in sizes) or metadata.is_conj or metadata.is_neg
                or metadata.layout is not _STRIDED):  # fmt: skip
            return None
        outputs.append(_Output(shape=tuple(metadata.shape), stride=tuple(metadata.stride),
                               storage_offset=metadata.storage_offset, dtype=metadata.dtype, device=metadata.device,
                               requires_grad=metadata.requires_grad, view_of=info.view_idx))  # fmt: skip
    return _Entry(tuple(outputs), container)


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
            upstream = self.fake_mode._make_cache_entry(self._state, None, func, args, kwargs, output)
            entry = _entry_from_upstream(upstream, tuple if upstream.is_output_tuple else None) or upstream
        except _BypassDispatchCache:
            entry = _BYPASS
        self.entries[key] = entry
        return output

    def _output(self, entry, func, args: tuple):
        if type(entry) is not _Entry:
            return self.fake_mode._output_from_cache_entry(self._state, entry, None, func, args)
        outputs = [self._rebuild(output, args) for output in entry.outputs]
        return outputs[0] if entry.container is None else entry.container(outputs)

    def _rebuild(self, output: _Output, args: tuple):
        """What upstream's ``_get_output_tensor_from_cache_entry`` does, for the plain cases only."""
        if output.inplace_of is not None:
            return args[output.inplace_of]
        if output.shape is None:
            return output.constant
        with torch._C._DisableTorchDispatch():
            empty = torch.empty_strided(output.shape, output.stride, dtype=output.dtype, device="meta",
                                        requires_grad=output.requires_grad)  # fmt: skip
            if output.view_of is not None:  # a view shares its input's storage
                empty.set_(args[output.view_of].untyped_storage(), output.storage_offset, output.shape, output.stride)
        return new_fake(self.fake_mode, empty, output.device)

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
        devices = {t.fake_device for t in tree_flatten((args, kwargs))[0] if isinstance(t, FakeTensor)}
        if len(devices) != 1:
            return None
        out = run_on_meta(func, args, kwargs)
        if out is None:  # let the fake mode raise or handle it its own way
            return None
        (device,) = devices
        outputs = out if isinstance(out, (tuple, list)) else (out,)
        rebuilt = []
        for tensor in outputs:
            if tensor is None:
                rebuilt.append(_Output())
            elif type(tensor) is torch.Tensor and tensor.is_meta and tensor.layout is _STRIDED:
                rebuilt.append(_fresh(tensor, device))
            else:
                return None
        return _Entry(tuple(rebuilt), type(out) if isinstance(out, (tuple, list)) else None)

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


def new_fake(mode: FakeTensorMode, elem: torch.Tensor, device: torch.device) -> FakeTensor:
    """``FakeTensor(mode, elem, device)`` for a meta ``elem`` and an already normalized ``device``.

    Why: a trace makes ~10k fake outputs an iteration, and ``FakeTensor.__new__`` spends most of its
    time on generic work: argument checks, device normalization, and five memo descriptors whose
    ``__set__`` each writes three attributes (1.6M descriptor calls in a 16-row table): 14 us a tensor
    here, 3.6 us this way. This makes the same tensor with torch's own ``_make_subclass`` and copies
    the attributes from a template that the real constructor made for this mode and device.
    ``_fast_path_agrees`` checks once per process that both give the same tensor; where they differ
    (another torch) every tensor takes the constructor."""
    template = _TEMPLATES.get((id(mode), device))
    if template is None:
        template = _template(mode, device)
    if template is False:
        return FakeTensor(mode, elem, device)
    return _from_template(template, elem, device)


_TEMPLATES: dict = {}  # (id(mode), device) -> (mutable-data-ptr guard, attributes), or False: use the constructor
_FAST_PATH_OK: dict = {}  # device -> whether the fast path agrees with the constructor (checked once)


def _from_template(template: tuple, elem: torch.Tensor, device: torch.device) -> FakeTensor:
    guard, attributes = template
    fake = torch.Tensor._make_subclass(FakeTensor, elem, elem.requires_grad, dispatch_device=True,
                                       device_for_backend_keys=device)  # fmt: skip
    guard(fake)
    fake.__dict__.update(attributes)
    return fake


def _template(mode: FakeTensorMode, device: torch.device):
    reference = FakeTensor(mode, torch.empty(0, device="meta"), device)
    guard = (torch._C._set_warn_deprecated_on_mutable_data_ptr if mode._allow_unsafe_data_ptr_access
             else torch._C._set_throw_on_mutable_data_ptr)  # fmt: skip
    template = (guard, dict(reference.__dict__))
    agrees = _FAST_PATH_OK.get(device)
    if agrees is None:
        agrees = _FAST_PATH_OK[device] = _fast_path_agrees(mode, device, template)
    if not agrees or reference.fake_device != device:
        template = False
    if len(_TEMPLATES) >= 8:  # a mode per trace; a template holds its mode: keep the last few
        _TEMPLATES.clear()
    _TEMPLATES[(id(mode), device)] = template
    return template


def _fast_path_agrees(mode: FakeTensorMode, device: torch.device, template: tuple) -> bool:
    """Whether the fast path makes what ``FakeTensor(mode, elem, device)`` makes: the same attributes,
    dispatch keys, device, dtype, sizes, strides and requires_grad, for a plain and a grad-requiring elem."""
    from torch._subclasses.fake_tensor import FakeTensorConfig

    def describe(t):
        return (type(t), torch._C._dispatch_keys(t), t.device, t.dtype, t.shape, t.stride(), t.requires_grad,
                {k: (id(v) if k == "fake_mode" else v) for k, v in t.__dict__.items()})  # fmt: skip

    agrees = not FakeTensorConfig.debug
    for requires_grad in (False, True):
        elem = torch.empty_strided((2, 3), (1, 2), dtype=torch.float16, device="meta", requires_grad=requires_grad)
        agrees = agrees and describe(FakeTensor(mode, elem, device)) == describe(_from_template(template, elem, device))
    return agrees


def run_on_meta(func, args, kwargs):
    """``func`` on plain meta copies of its tensors (real or fake alike), any device argument set to
    meta: its outputs' metadata without computing or allocating anything. None where that cannot be
    done (no meta kernel, a data-dependent size, a device passed positionally)."""
    schema_args = func._schema.arguments
    if any(arg.name == "device" and not arg.kwarg_only for arg in schema_args):
        return None
    with torch._C._DisableTorchDispatch():
        meta_args, meta_kwargs = tree_map_only(torch.Tensor, _meta_like, (args, dict(kwargs)))
        if any(arg.name == "device" for arg in schema_args):
            meta_kwargs["device"] = torch.device("meta")
        try:
            return func(*meta_args, **meta_kwargs)
        except Exception:  # noqa: BLE001 - any refusal sends the question to the fake mode
            return None


def _meta_like(tensor: torch.Tensor) -> torch.Tensor:
    return torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype, device="meta")


def _fresh(tensor: torch.Tensor, device: torch.device) -> _Output:
    return _Output(shape=tuple(tensor.shape), stride=tensor.stride(), storage_offset=tensor.storage_offset(),
                   dtype=tensor.dtype, device=device)  # fmt: skip


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
    out = _Output(shape=tuple(x.shape), stride=x.stride(), dtype=x.dtype, device=x.fake_device)
    stats = _Output(shape=(x.shape[1] if training else 0,), stride=(1,), dtype=x.dtype, device=x.fake_device)
    return _Entry((out, stats, stats), tuple)


# The fake mode's rule for foreach ops runs the meta kernel and puts each output on its inputs' device:
# what ``_entry_from_meta`` does where all inputs share one device. Its own path keys every tensor of
# the lists through generic flattening (``_foreach_norm`` over yolov8x's 355 gradients: ~50 ms a call).
_FOREACH_RULE = foreach_run_and_map_input_device
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
            and not any(check(func) for check, rule in op_implementations_checks if rule is not _FOREACH_RULE)
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
