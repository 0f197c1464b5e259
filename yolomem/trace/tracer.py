"""Record every tensor storage allocated and freed while a training step runs.

A ``Tracer`` is a ``TorchDispatchMode``. It sees each aten op below autograd, so it sees the forward
ops, the backward ops the autograd engine runs, the loss, the optimizer and the EMA alike. After each
op it looks at the storages of the outputs: a storage it has not seen before is an allocation of
``storage.nbytes()`` bytes; a weakref on the storage tells it when the storage dies (a free).

The same tracer runs on real CPU tensors (for tests: the ground truth) and on fake tensors (for
estimates: no memory, no compute). With ``fake=True`` the tracer sits on top of a ``FakeTensorMode``.

Data-dependent steps. The loss asks the data questions (``unique``, ``nonzero``, ``.item()``). Fake
tensors cannot answer them, so the tracer keeps *small* tensors that derive only from the targets and
from shapes (anchor grids, padded targets, candidate masks) real: an op whose tensor inputs are all
real runs for real, and in the loss phase a factory op (``zeros``, ``arange``, ``new_full``...) makes a
real tensor when it is at most ``real_bytes_cap``. Thus the number of objects per image drives the
assigner exactly as on a GPU. A real tensor that a fake op writes into is "tainted" and counts as fake
from then on, so stale values never steer a decision. What is left, questions about fake values (how
many anchors the assigner picked as foreground, whether an inf was found), goes to a ``DataOracle``,
and every such answer is listed in ``Trace.oracle_answers`` so the estimate can say what it assumed.

Not seen: memory a kernel takes internally without returning it as a tensor (cuDNN/cuBLAS workspace,
a reduction's converted copy of its input, a convolution's contiguous copy), the CUDA context, and NCCL
buffers. The tracer adds the kernels' blocks around each op's outputs (``yolomem.trace.workspaces``,
``yolomem.trace.kernel_temporaries``); the estimator accounts for the rest with named terms.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_flatten, tree_map

from yolomem.trace.fake_cache import FakeDispatchCache, run_on_meta
from yolomem.trace.kernel_temporaries import input_copies, temporaries

REAL_BYTES_CAP = 64 << 20  # loss-phase factories and all-real ops stay real up to this output size
# Training traces scale the cap with the batch, so that a tensor of the loss (the assigner's
# (B, objects, anchors) masks) is real or fake alike at every batch: runs at different batches then stay
# one family (``yolomem.trace.derive``), up to batch 256. No cap passes REAL_BYTES_MAX, so a huge batch
# never computes (or holds) more on the host than that per tensor. 1 MiB per image against the fixed
# 64 MiB before: the same figures, byte for byte, for 12 models (all tasks, both loops, RT-DETR) at
# batch 8, 16, 32 and 48, with less computed for real (traces up to 15 % faster).
REAL_BYTES_PER_IMAGE = 1 << 20
REAL_BYTES_MAX = 256 << 20
# NMS works image by image on real predictions (yolomem.loops.val_pass): its tensors are one image's
# candidates (30000 x 38 float32 = 4.6 MB for segmentation), the same at every batch. Under the per-image
# cap they were fake below batch 5 and real above, so a traced batch 4 made no family with batch 16.
FIXED_CAP_PHASES = frozenset({"val_nms"})


def real_cap_in(phase: str, cap: int) -> int:
    """The real-tensor cap of a training trace with cap ``cap`` in ``phase``."""
    return REAL_BYTES_MAX if phase in FIXED_CAP_PHASES else cap


def real_bytes_cap_for(batch: int) -> int:
    """The real-tensor cap of a training trace at ``batch`` images per GPU."""
    return min(REAL_BYTES_PER_IMAGE * max(batch, 1), REAL_BYTES_MAX)


def real_cap_is_fixed(batch: int) -> bool:
    """Whether the cap at ``batch`` is REAL_BYTES_MAX rather than a share per image. Runs on either side of
    the turn make no family: their caps lie on no one line (``StreamFamily.run_at`` checks it)."""
    return REAL_BYTES_PER_IMAGE * max(batch, 1) > REAL_BYTES_MAX


def dtype_name(dtype: torch.dtype) -> str:
    """A dtype as traces name it ("float32")."""
    return str(dtype).replace("torch.", "")


def category_for_phase(phase: str) -> str:
    """The category of a new storage that nothing labelled, by the phase it was made in."""
    return {"preprocess": "input", "forward": "activation", "backward": "activation", "loss": "loss"}.get(phase, "other")


CATEGORIES = ("parameter", "gradient", "optimizer_state", "ema", "activation", "loss", "input", "other",
              "cublas_workspace", "cublaslt_workspace", "cudnn_workspace")  # the last three: yolomem.trace.workspaces

aten = torch.ops.aten

# Ops that take a tensor only for its dtype/device: they are factories for the real/fake decision.
_LIKE_FACTORIES = {
    aten.new_full.default, aten.new_zeros.default, aten.new_ones.default, aten.new_empty.default,
    aten.new_empty_strided.default, aten.zeros_like.default, aten.ones_like.default,
    aten.empty_like.default, aten.full_like.default,
}  # fmt: skip
_DATA_DEPENDENT_SHAPE = {aten.nonzero.default, aten._unique2.default, aten.unique_dim.default,
                         aten.unique_consecutive.default, aten.masked_select.default,
                         aten.bincount.default}  # fmt: skip
_SCALAR_READ = {aten._local_scalar_dense.default}
# Indexing ops whose boolean-mask indices the kernel turns into integer indices (ATen's expandTensors)
_MASK_INDEXED = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default}
_DEVICE_QUERY = torch.ops.prim.device.default
# Ops with no CUDA kernel whose composite (CompositeExplicitAutograd) kernel makes temporaries: the fake
# mode's meta kernel gives only the output, so they run by their composite with this mode re-entered
# and the temporaries are traced as the GPU makes them. Found by the H200 allocation history of
# 2026-12-04 (validation/results/): binary_cross_entropy_with_logits (ATen Loss.cpp) holds log_sigmoid's
# output, the input's size in float32, beside its own; the peak of the YOLOv8 loss is there.
_TRACED_COMPOSITES = frozenset({aten.binary_cross_entropy_with_logits.default})
# Outputs a CUDA kernel returns empty where the CPU kernel fills them (a real CPU run must not count them):
# log_sigmoid_forward's buffer (ATen LogSigmoid: the CUDA kernel recomputes it in the backward).
_EMPTY_ON_CUDA = {aten.log_sigmoid_forward.default: 1}
# Queries that allocate nothing (device, sizes, strides): answered without bookkeeping.
_METADATA_QUERIES = frozenset({_DEVICE_QUERY, aten.size.default, aten.stride.default,
                               aten.storage_offset.default, aten.sym_size.int, aten.sym_stride.int})  # fmt: skip


# Not frozen: a frozen dataclass sets each field through object.__setattr__, and runs are rebuilt one
# event at a time (~25k for yolov8x) whenever they are unpacked or derived: 1.4 -> 0.23 us an event with
# slots. Nothing changes an event after it is made (dataclasses.replace makes a new one).
@dataclass(slots=True, unsafe_hash=True)
class AllocationEvent:
    """One allocation or free of a tensor storage, in program order."""

    op: str  # "alloc" | "free"
    storage_id: int
    nbytes: int
    dtype: str
    category: str
    module: str  # module path of the layer running when the storage was allocated, or ""
    phase: str  # preprocess | forward | loss | backward | optimizer | ema | setup
    iteration: int
    upper_nbytes: int | None = None  # a kernel workspace's size under the upper figure's rule (else as nbytes)

    def size(self, upper: bool = False) -> int:
        """Bytes of this allocation for the expected figure, or for the upper figure."""
        return self.upper_nbytes if upper and self.upper_nbytes is not None else self.nbytes


@dataclass(frozen=True)
class OracleAnswer:
    question: str  # e.g. "nonzero(bool[16, 8400])"
    answer: str
    phase: str
    # the oracle's answer is the least of these (a count: the tensor's elements, the assumed positives);
    # yolomem.trace.derive checks that the same one stays the least at a derived batch
    bounds: tuple[int, ...] = ()
    at: int = -1  # events recorded before it was asked (where in the stream; -1: not known)


@dataclass
class DataOracle:
    """Answers the data-dependent questions about fake values.

    ``positives`` is the number of nonzero entries assumed for a fake tensor, such as the foreground
    anchors the assigner selects; the training step sets it from the batch (assigner top-k x objects).
    A scalar read returns ``scalar_for(tensor)``: ``scalar`` by default (0: no inf/NaN found, no early
    exit taken); a training loop may answer by dtype instead.
    """

    positives: int = 0
    scalar: float = 0.0
    # the positives of each image, where a question is about one image's row of a (B, n) tensor (the
    # segmentation loss's loop over the images of ``fg_mask``)
    per_image: tuple[int, ...] = ()

    def scalar_for(self, tensor: torch.Tensor) -> float:
        """The value a ``.item()`` or ``bool()`` of the fake ``tensor`` reads."""
        return self.scalar

    def expect_foreground(self, per_image) -> None:
        """The foreground each image of the batch is assumed to have (``per_image``); the batch's is their sum."""
        self.per_image = tuple(int(n) for n in per_image)
        self.positives = sum(self.per_image)

    def nonzero_count(self, shape: torch.Size, image: int | None = None) -> int:
        return min(self.nonzero_bounds(shape, image))

    def unique_count(self, shape: torch.Size) -> int:
        """Distinct values of a fake tensor: every element distinct, the most there can be."""
        return _numel(shape)

    def nonzero_bounds(self, shape: torch.Size, image: int | None = None) -> tuple[int, int]:
        """What the count is the least of: the tensor's elements, and the assumed positives (of the whole
        batch, or of ``image`` when the tensor is that image's row)."""
        numel = _numel(shape)
        if image is not None and image < len(self.per_image):
            return numel, self.per_image[image]
        return numel, self.positives


@dataclass
class _Record:
    storage_id: int
    nbytes: int
    dtype: str
    category: str
    module: str
    phase: str
    iteration: int
    upper_nbytes: int | None = None
    real: bool = False  # the output of an op the tracer ran for real (small, from targets and shapes)


@dataclass
class Trace:
    """What a traced run produced: events in order, plus notes on what was assumed."""

    events: list[AllocationEvent]
    oracle_answers: list[OracleAnswer]
    iteration_bounds: list[int] = field(default_factory=list)  # event index where each iteration starts
    # storages the tracer made by running an op for real, and the output size up to which it does: a
    # larger one would have been fake (yolomem.trace.derive checks that a derived batch stays below it)
    real_ids: frozenset[int] = frozenset()
    real_bytes_cap: int | None = None
    # where the trainer wraps the model in DDP (an event index) and what DDP allocates there
    # (``yolomem.loops.ddp``): a rank's trace is this one-GPU trace with those blocks inserted
    ddp_at: int | None = None
    ddp_blocks: tuple = ()


class Tracer(TorchDispatchMode):
    """Context manager that records allocations of every op run inside it."""

    def __init__(self, *, fake: bool, oracle: DataOracle | None = None, real_bytes_cap: int = REAL_BYTES_CAP,
                 workspaces=None):
        """``workspaces``: a ``yolomem.trace.workspaces.KernelWorkspaces`` that names the scratch blocks
        the CUDA kernels of each op would take; recorded after the op's outputs."""
        super().__init__()
        self.fake = fake
        self.workspaces = workspaces
        self.fake_mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else None
        self._fake_cache = FakeDispatchCache(self.fake_mode) if fake else None
        self.oracle = oracle or DataOracle()
        self.real_bytes_cap = real_bytes_cap
        self.phase_name = "setup"
        self.iteration = 0
        self.module_stack: list[str] = []
        self._records: dict[int, _Record] = {}  # live storage id -> record
        self._log: list[tuple[str, _Record]] = []
        self._category_override: dict[int, str] = {}  # storage id -> category, set after the fact
        # storage key -> weak reference whose callback records the free (a plain weakref: weakref.finalize
        # costs ~10 us each, and a step makes ~10k storages); dropping the reference detaches it
        self._finalizers: dict[int, weakref.ref] = {}
        self._twin_refs: dict[int, weakref.ref] = {}
        self._aliases: dict[int, _Record] = {}  # fake twin storage -> the real allocation it stands for
        self._twins: dict[int, set[int]] = {}  # allocation id -> storage keys of its live fake twins
        self._orphans: dict[int, _Record] = {}  # allocation id -> record whose real storage died first
        self._tainted: set[int] = set()
        self._paused = 0
        self._real_factories = 0
        self._in_composite = 0  # inside a traced composite's own ops (_TRACED_COMPOSITES)
        self._next_id = 0
        self._iteration_bounds: list[int] = []
        self._ddp: tuple[int | None, tuple] = (None, ())
        self.oracle_answers: list[OracleAnswer] = []
        self._stack = contextlib.ExitStack()

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        """False: TorchDispatchMode then leaves ``__torch_dispatch__`` unwrapped. Its dynamo-disable
        wrapper only matters under torch.compile, which never runs in a trace, and it costs two Python
        frames and two eval-frame swaps on every op (~10k an iteration)."""
        return False

    # -- context ------------------------------------------------------------------------------
    def __enter__(self) -> Tracer:
        if self.fake_mode is not None:
            self._stack.enter_context(self.fake_mode)
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        self._stack.close()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        previous, self.phase_name = self.phase_name, name
        try:
            yield
        finally:
            self.phase_name = previous

    def start_iteration(self, iteration: int) -> None:
        self.iteration = iteration
        self._iteration_bounds.append(len(self._log))

    def mark_ddp_point(self, blocks: tuple) -> None:
        """Here the trainer wraps its model in DDP, which allocates ``blocks`` (``yolomem.loops.ddp``)."""
        self._ddp = (len(self._log), tuple(blocks))

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Ops run inside are executed but not recorded (used by the autocast probe)."""
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    @contextlib.contextmanager
    def real_factories(self) -> Iterator[None]:
        """Small factory ops make real tensors inside, whatever the phase (e.g. NMS bookkeeping)."""
        self._real_factories += 1
        try:
            yield
        finally:
            self._real_factories -= 1

    def fake_cuda_like(self, tensor: torch.Tensor) -> torch.Tensor:
        """A fake CUDA tensor with ``tensor``'s metadata; only for asking CUDA's autocast kernel."""
        mode = self.fake_mode or FakeTensorMode()
        with mode:
            return torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype, device="cuda")

    def substitute(self, fake: torch.Tensor, real: torch.Tensor) -> None:
        """``real`` takes over ``fake``'s allocation: on the GPU they are one tensor, given real values
        here so that code deciding by value (NMS) can run. No event; the allocation ends when ``real``
        dies (``fake`` dying records nothing)."""
        key = self._storage_key(fake)
        record = self._records.pop(key, None)
        if record is None:  # not traced (made outside the tracer): the real one is new
            self._see(real)
            return
        self._finalizers.pop(key, None)
        new = self._storage_key(real)
        self._records[new] = record
        self._watch(real.untyped_storage(), new)

    def forget(self) -> None:
        """Drop everything recorded so far (e.g. while the model was being built on the host)."""
        self.detach_finalizers()
        self._records.clear()
        self._log.clear()
        self._category_override.clear()
        self._iteration_bounds.clear()
        self._ddp = (None, ())
        self.oracle_answers.clear()
        self._aliases.clear()
        self._twins.clear()
        self._orphans.clear()
        self._tainted.clear()
        if self.workspaces is not None:
            self.workspaces.reset()

    def assume(self, question: str, answer: str) -> None:
        """List an assumption a stand-in made for data the trace does not have (where in the stream it
        was made, as the oracle's own answers are)."""
        self.oracle_answers.append(OracleAnswer(question, answer, self.phase_name, (), len(self._log)))

    # -- registration of tensors that exist before the step -----------------------------------
    def track_existing(self, tensors, category: str, module: str = "") -> None:
        for tensor in tensors:
            if isinstance(tensor, torch.Tensor):
                self._see(tensor, category_hint=category, module=module)

    def label(self, tensors, category: str) -> None:
        """Give the storages of ``tensors`` a category after the fact (e.g. a new ``.grad``)."""
        for tensor in tensors:
            if isinstance(tensor, torch.Tensor):
                sid = self._storage_key(tensor)
                record = self._aliases.get(sid) or self._records.get(sid)
                if record is not None:
                    self._category_override[record.storage_id] = category

    # -- the dispatch hook ----------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is _DEVICE_QUERY and type(args[0]) is FakeTensor and not args[0].fake_mode.in_kernel_invocation:
            return args[0].fake_device  # the fake mode's own answer; the autograd engine asks ~10k times a step
        kwargs = kwargs or {}
        if self._paused or func in _METADATA_QUERIES:
            return func(*args, **kwargs)
        if func in _TRACED_COMPOSITES:
            # the composite's own ops come back through this mode: push it again, without __enter__'s setup
            TorchDispatchMode.__enter__(self)
            self._in_composite += 1
            try:
                return func._op_dk(torch._C.DispatchKey.CompositeExplicitAutograd, *args, **kwargs)
            finally:
                self._in_composite -= 1
                TorchDispatchMode.__exit__(self, None, None, None)
        # inputs the CUDA kernel copies before making its outputs (kernel_temporaries.input_copies)
        copies = [self._kernel_block(nbytes, dtype_name(dtype), self._category_for_phase(), transient=False)
                  for nbytes, dtype in input_copies(func, args)]  # fmt: skip
        if not self.fake:
            out = func(*args, **kwargs)
        else:
            out = self._dispatch_fake(func, args, kwargs)
        if isinstance(out, torch.Tensor):
            self._see(out)
        elif isinstance(out, (tuple, list)):
            seen = out
            if func in _EMPTY_ON_CUDA:
                seen = [t for i, t in enumerate(out) if i != _EMPTY_ON_CUDA[func]]
            for tensor in _tensors_in(seen):
                self._see(tensor)
        for nbytes in temporaries(func, args, out):
            self._kernel_block(nbytes, dtype_name(out.dtype), self._category_for_phase())
        if self.workspaces is not None:
            for block in self.workspaces.after(func, args, out, self.phase_name):
                if block.nbytes > 0 or block.upper_nbytes > 0:
                    self._kernel_block(block.nbytes, "uint8", block.category, block.upper_nbytes, block.transient)
        for record in copies:  # the kernel's input copies live until it returns
            self._log.append(("free", record))
        return out

    def _kernel_block(self, nbytes: int, dtype: str, category: str, upper_nbytes: int | None = None,
                      transient: bool = True) -> _Record:
        """Memory a kernel takes besides its outputs (a scratch block, a converted copy of an input),
        allocated now, and freed at once when ``transient`` (else by the caller, with the record)."""
        self._next_id += 1
        record = _Record(self._next_id, nbytes, dtype, category, self.module_stack[-1] if self.module_stack else "",
                         self.phase_name, self.iteration, upper_nbytes if upper_nbytes != nbytes else None)  # fmt: skip
        self._log.append(("alloc", record))
        if transient:
            self._log.append(("free", record))
        return record

    def _dispatch_fake(self, func, args, kwargs):
        if func in _MASK_INDEXED:
            args = self._mask_indices_to_positions(args)
        tensors = _tensors_in(args)
        if kwargs:
            tensors += _tensors_in(kwargs.values())
        fakes = [self._is_fake_like(t) for t in tensors]
        if tensors and all(fakes):  # only fake values (or real ones a fake op wrote into)
            if func in _SCALAR_READ:  # the oracle answers data questions about fake values
                return self._answer_scalar(tensors[0])
            if func in _DATA_DEPENDENT_SHAPE:
                args, kwargs = self._fakeify_inputs(func, args, kwargs)
                return self._answer_data_dependent(func, args, kwargs)
            plain = all(isinstance(t, FakeTensor) for t in tensors)
            if plain and _is_fused_in_place(func):
                return None  # allocates nothing and changes no shape: only values, which fakes lack
            if plain and not (func in _LIKE_FACTORIES and self._loss_makes_real()):
                return self._fake_cache.call(func, args, kwargs)  # the common case: a model op on fake tensors
        elif func in _SCALAR_READ:  # a real value: read it
            with _disable_current_modes():
                return func(*args, **kwargs)
        if self._runs_real(func, args, kwargs, tensors, any(fakes)):
            if func in _LIKE_FACTORIES:  # the reference tensor may be fake: give it a real stand-in
                args = (_real_stand_in(func, args[0]), *args[1:])
            with _disable_current_modes():
                return func(*args, **kwargs)
        if tensors:  # mixed, tainted, or real but too big to compute: hand the fake mode our twins
            # (a fake mode given only real tensors would run the op for real)
            args, kwargs = self._fakeify_inputs(func, args, kwargs)
        return self._fake_cache.call(func, args, kwargs)

    def _mask_indices_to_positions(self, args):
        """``x[mask]`` / ``x[mask] = v`` with a fake ``x``, ``v`` or ``mask``: index with the mask's
        positions instead (what the kernel does itself, ATen's ``expandTensors``: a k-dim mask becomes
        k integer index tensors, from a ``nonzero`` no dispatch tracer sees, on the GPU as here); a
        fake mode cannot size a boolean index. A real mask's positions are computed; a fake mask's
        count is the oracle's ``nonzero`` answer, listed with the trace's assumptions (Ultralytics'
        assigner and loss up to 8.4.133: ``pd_scores[...][mask_gt]``, ``pred_dist[fg_mask]``)."""
        target, indices = args[0], args[1]
        values = args[2] if len(args) > 2 and isinstance(args[2], torch.Tensor) else None
        masks = [i for i in indices if isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8)]
        if not masks:
            return args
        fake_masks = any(self._is_fake_like(m) for m in masks)
        if not (fake_masks or self._is_fake_like(target) or (values is not None and self._is_fake_like(values))):
            return args  # all real: runs for real, mask and all
        expanded = []
        for index in indices:
            if not (isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8)):
                expanded.append(index)
            elif self._is_fake_like(index):
                found = self._answer_data_dependent(aten.nonzero.default, (self._to_fake(index),), {})
                with self.fake_mode:
                    expanded.extend(found.unbind(1))
            else:
                with _disable_current_modes():
                    expanded.extend(index.nonzero().unbind(1))
        return (target, expanded, *args[2:])

    # -- real/fake policy -----------------------------------------------------------------------
    def _is_fake_like(self, tensor: torch.Tensor) -> bool:
        return isinstance(tensor, FakeTensor) or (bool(self._tainted) and self._storage_key(tensor) in self._tainted)

    def _runs_real(self, func, args, kwargs, tensors, any_fake: bool) -> bool:
        factory = not tensors or (func in _LIKE_FACTORIES and self._loss_makes_real())
        cap = real_cap_in(self.phase_name, self.real_bytes_cap)
        if factory:
            # real only in the loss's own code (anchor grids, padded targets), and only when small
            wanted = self._loss_makes_real() or self._real_factories
            return bool(wanted) and self._output_bytes(func, args, kwargs) <= cap
        if any_fake:
            return False
        if func in _DATA_DEPENDENT_SHAPE or _has_mask_index(func, args):
            return True  # a fake mode cannot size it: run it, the real inputs (already in memory) bound it
        return self._output_bytes(func, args, kwargs) <= cap

    def _loss_makes_real(self) -> bool:
        """Whether factories may make real tensors: in the loss, where the Python code fills them with
        label data (padded targets). Not inside a traced composite: its buffers are kernel internals
        that meet only its own inputs. Why: binary_cross_entropy_with_logits on fake inputs
        made a real buffer of its input's size, and the segmentation loss calls it once per image
        ((n, 160, 160) float32, ~9 MB): batch 256 filled 2.4 GB of host memory an iteration."""
        return self.phase_name == "loss" and not self._in_composite

    def _output_bytes(self, func, args, kwargs) -> int:
        """Bytes the op would return, found on meta or fake copies of its inputs (nothing is computed)."""
        if all(ret.alias_info is not None for ret in func._schema.returns):
            return 0  # in-place, out= and set_ ops return their inputs: nothing new
        meta = None if func in _DATA_DEPENDENT_SHAPE or func in _SCALAR_READ else run_on_meta(func, args, kwargs)
        if meta is None:  # no meta kernel, or a device argument we cannot redirect: ask the fake mode
            try:
                with self.paused(), self.fake_mode:
                    meta = func(*tree_map(self._to_fake, args), **tree_map(self._to_fake, kwargs))
            except Exception:  # noqa: BLE001 - data-dependent shapes, storage ops: bound by the inputs instead
                # nonzero/unique/masked_select: at most one int64 index per input element and dim
                inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
                return sum(t.numel() * max(t.dim(), 1) * 8 for t in inputs)
        return sum(t.numel() * t.element_size() for t in tree_flatten(meta)[0] if isinstance(t, torch.Tensor))

    def _to_fake(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor) and not isinstance(value, FakeTensor):
            fake = self.fake_mode.from_tensor(value)
            twin, record = self._storage_key(fake), self._records.get(self._storage_key(value))
            if record is not None and twin not in self._aliases:
                self._aliases[twin] = record
                self._twins.setdefault(record.storage_id, set()).add(twin)
                self._twin_refs[twin] = weakref.ref(fake.untyped_storage(), lambda _, twin=twin: self._on_twin_free(twin))
            return fake
        return value

    def _fakeify_inputs(self, func, args, kwargs):
        schema_args = func._schema.arguments
        flat_args = list(args)
        for index, value in enumerate(flat_args):
            if isinstance(value, torch.Tensor) and not isinstance(value, FakeTensor):
                written = index < len(schema_args) and schema_args[index].alias_info is not None and schema_args[index].alias_info.is_write
                if written:
                    self._tainted.add(self._storage_key(value))
        return tree_map(self._to_fake, tuple(flat_args)), tree_map(self._to_fake, kwargs)

    # -- oracle -----------------------------------------------------------------------------------
    def _answer_scalar(self, tensor: torch.Tensor):
        value: Any = self.oracle.scalar_for(tensor)
        if tensor.dtype == torch.bool:
            value = bool(value)
        elif not tensor.dtype.is_floating_point:
            value = int(value)
        self.oracle_answers.append(OracleAnswer(f"item({_describe(tensor)})", repr(value), self.phase_name, (), len(self._log)))
        return value

    def _image_of(self, tensor: torch.Tensor) -> int | None:
        """Which image ``tensor`` is the row of, when it is one row of a (B, n) tensor of the batch (a loop
        over the images, ``for fg_mask_i in fg_mask``): found from where it lies in its storage."""
        images = len(self.oracle.per_image)
        if not images or tensor.dim() != 1 or tensor.numel() == 0 or tensor.stride(0) != 1:
            return None
        row, offset = tensor.numel(), tensor.storage_offset()
        if tensor.untyped_storage().nbytes() != row * images * tensor.element_size() or offset % row:
            return None
        return offset // row

    def _answer_data_dependent(self, func, args, kwargs):
        """Sizes for ops whose output size depends on fake values."""
        tensor = args[0]
        name = func.__name__.split(".")[0]
        bounds: tuple[int, ...] = ()
        if func is aten.nonzero.default:
            image = self._image_of(tensor)
            count = self.oracle.nonzero_count(tensor.shape, image)
            bounds = self.oracle.nonzero_bounds(tensor.shape, image)
            shape = (count, tensor.dim())
        elif func is aten.masked_select.default:
            image = self._image_of(args[1])
            count = self.oracle.nonzero_count(args[1].shape, image)
            bounds = self.oracle.nonzero_bounds(args[1].shape, image)
            shape = (count,)
        elif func is aten.bincount.default:
            # max(minlength, largest value + 1) bins. Where the loss passes minlength, it counts image
            # indices of the batch (``bincount(b, minlength=bs)``, YOLO26-seg's assigner): minlength bins.
            # Without it, one bin per element is the most the values can need.
            minlength = int((args[2] if len(args) > 2 else kwargs.get("minlength", 0)) or 0)
            count = minlength or tensor.numel()
            shape = (count,)
        else:  # unique
            count = self.oracle.unique_count(tensor.shape)
            shape = (count,)
        self.oracle_answers.append(OracleAnswer(f"{name}({_describe(tensor)})", str(count), self.phase_name, tuple(bounds),
                                                len(self._log)))  # fmt: skip
        with self.fake_mode:
            if func is aten.nonzero.default:
                return torch.empty(shape, dtype=torch.int64)
            if func is aten.masked_select.default:
                return torch.empty(shape, dtype=tensor.dtype)
            if func is aten.bincount.default:
                weights = args[1] if len(args) > 1 else kwargs.get("weights")
                return torch.empty(shape, dtype=torch.float64 if weights is not None else torch.int64)
            return _unique_outputs(func, args, kwargs, count)

    # -- bookkeeping --------------------------------------------------------------------------------
    @staticmethod
    def _storage_key(tensor: torch.Tensor) -> int:
        return tensor.untyped_storage()._cdata

    def _see(self, tensor: torch.Tensor, category_hint: str | None = None, module: str | None = None) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self._records or key in self._aliases:
            return
        self._next_id += 1
        record = _Record(
            storage_id=self._next_id,
            nbytes=storage.nbytes(),
            dtype=dtype_name(tensor.dtype),
            category=category_hint or self._category_for_phase(),
            module=self.module_stack[-1] if module is None and self.module_stack else (module or ""),
            phase=self.phase_name,
            iteration=self.iteration,
            real=category_hint is None and not isinstance(tensor, FakeTensor),  # an op the tracer ran for real
        )
        self._records[key] = record
        self._log.append(("alloc", record))
        self._watch(storage, key)

    def _watch(self, storage, key: int) -> None:
        self._finalizers[key] = weakref.ref(storage, lambda _, key=key: self._on_free(key))

    def _on_twin_free(self, twin: int) -> None:
        self._twin_refs.pop(twin, None)
        record = self._aliases.pop(twin, None)  # storage addresses are reused: forget the twin
        if record is None:
            return
        twins = self._twins.get(record.storage_id, set())
        twins.discard(twin)
        if not twins:
            self._twins.pop(record.storage_id, None)
            orphan = self._orphans.pop(record.storage_id, None)
            if orphan is not None:  # the real tensor died first; the allocation ends now
                self._log.append(("free", orphan))

    def _on_free(self, key: int) -> None:
        self._tainted.discard(key)
        self._finalizers.pop(key, None)
        record = self._records.pop(key, None)
        if record is None:
            return
        if self._twins.get(record.storage_id):  # a fake twin still holds it (e.g. in the autograd graph)
            self._orphans[record.storage_id] = record
            return
        self._log.append(("free", record))

    def _category_for_phase(self) -> str:
        return category_for_phase(self.phase_name)

    # -- result -----------------------------------------------------------------------------------
    def allocation_log(self) -> list[tuple[str, _Record]]:
        """The allocations and frees recorded so far, in order: a live view (for a simulation that
        answers memory queries while the code runs, ``yolomem.loops.ultralytics.autobatch``)."""
        return self._log

    def result(self) -> Trace:
        """Freeze what was recorded so far. Storages still alive have no free event."""
        events = []
        for op, record in self._log:
            category = self._category_override.get(record.storage_id, record.category)
            events.append(
                AllocationEvent(
                    op=op,
                    storage_id=record.storage_id,
                    nbytes=record.nbytes,
                    dtype=record.dtype,
                    category=category,
                    module=record.module,
                    phase=record.phase,
                    iteration=record.iteration,
                    upper_nbytes=record.upper_nbytes,
                )
            )
        real_ids = frozenset(record.storage_id for op, record in self._log if op == "alloc" and record.real)
        return Trace(events=events, oracle_answers=list(self.oracle_answers), iteration_bounds=list(self._iteration_bounds),
                     real_ids=real_ids, real_bytes_cap=self.real_bytes_cap, ddp_at=self._ddp[0],
                     ddp_blocks=self._ddp[1])  # fmt: skip

    def detach_finalizers(self) -> None:
        """Stop listening for frees (call after ``result``, before the traced objects are dropped)."""
        self._finalizers.clear()  # the references die with the dict: no callback runs


_FUSED_IN_PLACE: dict = {}


def _is_fused_in_place(func) -> bool:
    """Foreach and fused optimizer ops that return nothing: they write values in place, allocate no
    tensor and change no metadata (the metadata-changing in-place ops return their tensor)."""
    known = _FUSED_IN_PLACE.get(func)
    if known is None:
        name = func.__name__
        known = _FUSED_IN_PLACE[func] = (
            name.startswith(("_foreach_", "_fused_", "_amp_foreach_"))
            and not func._schema.returns
            and not any(arg.name == "out" for arg in func._schema.arguments)
        )
    return known


def _has_mask_index(func, args) -> bool:
    """``x[mask]`` and friends: the output size depends on how many entries of ``mask`` are set."""
    return func in _MASK_INDEXED and any(
        isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1] if i is not None
    )


def _tensors_in(values) -> list[torch.Tensor]:
    """The tensors among an op's arguments or results (aten takes at most lists of tensors)."""
    found = []
    for value in values:
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(v for v in value if isinstance(v, torch.Tensor))
    return found


def _real_stand_in(func, tensor: torch.Tensor) -> torch.Tensor:
    """A real tensor that a *_like / new_* factory can take in place of a fake one."""
    if not isinstance(tensor, FakeTensor):
        return tensor
    with _disable_current_modes():
        if func.__name__.startswith("new_"):  # new_* read only dtype and device from self
            return torch.empty(0, dtype=tensor.dtype)
        return torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype)


def _unique_outputs(func, args, kwargs, count: int):
    """Fake (values, inverse, counts) of a unique op with ``count`` distinct values (rows along ``dim``
    for ``unique_dim``). The inverse and the counts are empty unless asked for, as ``aten._unique2``
    (``torch.unique`` without ``dim``, what the YOLO losses call) returns them."""
    tensor = args[0]
    named = dict(zip((a.name for a in func._schema.arguments), args)) | dict(kwargs)
    dim = named.get("dim")
    values_shape = [count] if dim is None else [count if d == dim % tensor.dim() else n for d, n in enumerate(tensor.shape)]
    inverse_shape = (tensor.shape if dim is None else (tensor.shape[dim],)) if named.get("return_inverse") else (0,)
    counts_shape = (count,) if named.get("return_counts") else (0,)
    return (torch.empty(values_shape, dtype=tensor.dtype), torch.empty(inverse_shape, dtype=torch.int64),
            torch.empty(counts_shape, dtype=torch.int64))


def _numel(shape) -> int:
    numel = 1
    for size in shape:
        numel *= size
    return numel


def _describe(tensor: torch.Tensor) -> str:
    return f"{str(tensor.dtype).replace('torch.', '')}{list(tensor.shape)}"


@contextlib.contextmanager
def module_scopes(model: torch.nn.Module, tracer: Tracer) -> Iterator[None]:
    """Keep ``tracer.module_stack`` equal to the module path that is running. Hooks are removed on exit."""
    handles = []
    owners: dict[int, int] = {}
    for _name, module in model.named_modules(remove_duplicate=False):
        owners[id(module)] = owners.get(id(module), 0) + 1
    for name, module in model.named_modules():
        if not name:
            continue
        shared = owners[id(module)] > 1  # e.g. Conv.default_act, one SiLU used by every Conv
        local = name.rsplit(".", 1)[-1]

        def push(_module, _inputs, name=name, shared=shared, local=local):
            # a shared module belongs to whichever layer is calling it right now
            tracer.module_stack.append(f"{tracer.module_stack[-1]}.{local}" if shared and tracer.module_stack else name)

        def pop(_module, _inputs, _output):
            if tracer.module_stack:
                tracer.module_stack.pop()

        handles.append(module.register_forward_pre_hook(push))
        handles.append(module.register_forward_hook(pop, always_call=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        tracer.module_stack.clear()
