"""What every training loop shares: the ``TrainingLoop`` protocol, the traced-run result, and the tracing setup.

A loop is one folder under ``yolomem/loops/`` (``ultralytics``, ``yolov5``) with one class that answers
everything the rest of yolomem asks of a training loop. Callers never branch on the loop's name: they
ask the registry (``yolomem.loops.get_loop``) and call the protocol.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from yolomem.collector import cyclic_gc_paused, freeze_imported_objects
from yolomem.config.models import ResolvedModel
from yolomem.config.settings import EstimateConfig
from yolomem.errors import UserError


@dataclass(frozen=True)
class TracedRun:
    """What tracing a config's training iterations gives back."""

    trace: Any  # yolomem.trace.tracer.Trace
    params: int
    imgsz: int
    optimizer: str
    notes: tuple[str, ...]
    probe_failures: tuple[str, ...]
    density: Any = None  # yolomem.loops.density.DensityPlan of the traced batches (None: no labels)
    upper_iteration: int | None = None  # the iteration traced at the upper figure's density, after the configured ones


@dataclass(frozen=True)
class CacheClears:
    """Where a trainer empties the CUDA cache (``torch.cuda.empty_cache``) around its validation pass.

    Each point is None (no call there) or a threshold: the cache is emptied when ``memory_reserved() /
    total_memory`` exceeds it (Ultralytics' ``_clear_memory(threshold)``); 0.0 empties it always."""

    before_val: float | None = None
    after_epoch: float | None = None  # after validation, before the next epoch's training

    def empties(self, threshold: float | None, reserved: int, card_bytes: int | None) -> bool:
        """Whether a clear with ``threshold`` empties the cache; an unknown card keeps it (the higher figure)."""
        if threshold is None:
            return False
        if threshold == 0.0:
            return True
        return card_bytes is not None and reserved / card_bytes > threshold

    def describe(self) -> str:
        return f"cache emptied before validation: {_when(self.before_val)}; after each epoch: {_when(self.after_epoch)}"

    def after_epoch_words(self) -> str:
        """What the trainer does with the cache after an epoch, following its name."""
        if self.after_epoch is None:
            return "never empties the CUDA cache after an epoch"
        return f"empties the CUDA cache after an epoch {'' if self.after_epoch == 0.0 else 'only '}{_when(self.after_epoch)}"


def _when(threshold: float | None) -> str:
    if threshold is None:
        return "nothing"
    return "always" if threshold == 0.0 else f"when more than {threshold:.0%} of the card is reserved"


class TrainingLoop(Protocol):
    """Everything yolomem asks of a training loop."""

    name: str  # the ``framework=`` value that selects it
    # the trainer's loop variables (images, predictions, losses) outlive their iteration until the next
    # one rebinds them, and through validation; the epoch composer then keeps them alive between templates
    carries_loop_variables: bool
    # the validation pass is traced as one template over the pass's batches (its locals carry from batch
    # to batch), rather than one template per batch shape
    traces_whole_val_pass: bool
    # DDP needs a batch that divides over the ranks: the trainer refuses the rest (the yolov5 repo asserts it)
    needs_whole_split: bool

    def cache_clears(self) -> CacheClears | None:
        """Where the trainer empties the CUDA cache around validation (None: unknown, assumed never)."""

    def owns(self, spec: str) -> bool:
        """True for model names only this loop builds (they select it without ``framework=``)."""

    def resolve(self, spec: str, requested: str) -> ResolvedModel:
        """The model ``spec`` names, resolved without a download; ``requested`` is the user's framework."""

    def model_names(self) -> tuple[str, ...]:
        """Every bare model name this loop builds."""

    def stride(self, resolved: ResolvedModel, nc: int | None) -> int:
        """The largest stride: imgsz is rounded up to a multiple of it."""

    def count_params(self, resolved: ResolvedModel, nc: int | None = None) -> int: ...

    def trace(self, config: EstimateConfig, resolved: ResolvedModel, *, fake: bool, oracle,
              after_iterations: Callable[[Any], None] | None, density=None, upper: bool = True) -> TracedRun:
        """Build the model on fake (or real) tensors and trace ``config.iterations`` training iterations,
        with the objects per sample of ``density`` (``traced_batches``); ``upper``: one more iteration at the
        upper figure's density (an estimate needs it; an event-by-event comparison with a reference run not)."""

    def optimizer_steps(self, iterations: int, batch: int, nbs: int) -> tuple[bool, ...]:
        """Which traced iterations step the optimizer at this (per-rank) batch: the one part of the
        traced step that the batch size turns on or off (``yolomem.result.runs`` keeps them apart)."""

    def ddp_note(self, world_size: int, per_rank: int) -> str:
        """The note a DDP rank's traced run ends with (a rank's run made from the one-GPU run adds it)."""

    def gpu_mem_unit(self) -> str:
        """The unit the trainer prints ``GPU_mem`` in: "GiB" or "GB" (10^9 bytes)."""

    def oom_retries(self, config: EstimateConfig) -> tuple[str, int]:
        """The trainer (e.g. "ultralytics 8.4.190") and how many times it halves the batch after an
        out-of-memory error in a first-epoch step of ``config`` before the error stops the run (0: never)."""

    def precision(self, config: EstimateConfig, resolved: ResolvedModel) -> tuple[str, str | None]:
        """The precision ("fp16", "fp32" or "bf16") the trainer trains ``config`` in, with a note where that is
        not simply what ``amp=`` asked; a one-line ``UserError`` where the trainer stops on it."""

    def trainer_defaults(self, resolved: ResolvedModel) -> dict[str, tuple[int, str]]:
        """Per key (``imgsz``, ``batch``, ``single_cls``), what the trainer takes for this model when the user
        gives none, and where that comes from; keys it takes from its usual defaults are left out."""

    def trained_imgsz(self, config: EstimateConfig, resolved: ResolvedModel) -> tuple[int, str | None]:
        """The imgsz the trainer trains ``config`` at, with a note where it is not the one asked for."""

    def epochs_supported(self, resolved: ResolvedModel, world_size: int) -> bool:
        """Whether whole epochs (val pass, epoch 2+) can be simulated for this task."""

    def default_epochs(self, resolved: ResolvedModel) -> tuple[int, str]:
        """The epochs the trainer trains ``resolved`` for when not told, and where that number comes from."""

    def val_batch_size(self, task: str, train_batch: int) -> int: ...

    def kept_images(self, dataset, resolved: ResolvedModel):
        """``dataset`` (``yolomem.config.dataset.DatasetSummary``) without the images the trainer leaves out
        for a label of a class beyond the dataset's, or of rows ``resolved``'s task cannot read (with its
        ``label_notes``); or a one-line ``UserError`` where the trainer stops."""

    def trace_val_pass(self, run, shapes: tuple, seed: int, nc: int, kpt_shape: tuple[int, ...], channels: int) -> None:
        """Trace validation batches of ``shapes`` (``ValBatchShape``; one per call unless
        ``traces_whole_val_pass``) with the run's EMA model, as the trainer's val pass does."""

    def refuse_autobatch(self, config: EstimateConfig, resolved: ResolvedModel) -> None:
        """A one-line ``UserError`` where the trainer never runs AutoBatch for ``config.autobatch`` (-1 or a
        fraction), whatever the card."""

    def pick_autobatch(self, config: EstimateConfig, resolved: ResolvedModel, gpu, densest_image: int,
                       dataset_size: int | None):  # fmt: skip
        """The batch the trainer's AutoBatch picks for ``config`` on ``gpu`` (a ``yolomem.config.gpus.Gpu``), as a
        ``yolomem.loops.autobatch_card.AutoBatchPick``; ``densest_image`` and ``dataset_size`` (None: not known)
        are what a trainer whose AutoBatch reads its labels finds there."""


# torch.autocast dtype per ``amp=`` value; fp32 runs without autocast
AMP_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}


def amp_dtype(precision: str):
    """The autocast dtype of ``precision`` ("fp16", "bf16"), or None for fp32."""
    import torch

    return getattr(torch, AMP_DTYPES[precision]) if precision in AMP_DTYPES else None


def max_stride(model) -> int:
    """The model's largest stride, at least 32: Ultralytics' ``max(int(model.stride.max()), 32)``,
    and train.py's ``gs`` in the yolov5 repo (both models carry a ``stride`` tensor)."""
    return max(int(model.stride.max()) if hasattr(model, "stride") else 32, 32)


def max_stride_of_fake_build(build) -> int:
    """``max_stride`` of the model ``build()`` makes on fake tensors (``read_fake_build``)."""
    return read_fake_build(build, max_stride)


def read_fake_build(build, read):
    """``read(model)`` of the model ``build()`` makes on fake tensors under a tracer, as each trace builds
    it: no weights are initialised, and the build's stride forward pass computes nothing, while the small
    stride tensor it makes stays real and readable (yolov8x: 1.1 s for a real CPU build). In a command
    that traces next, the fake machinery this warms up is the trace's (about 1.4 s of its first)."""
    from yolomem.trace.tracer import Tracer

    tracer = Tracer(fake=True)
    with tracer:
        value = read(build())
    tracer.detach_finalizers()
    return value


def larger_side(imgsz) -> int:
    """The size a trainer trains at for ``imgsz``: a list or tuple trains at its larger side (Ultralytics'
    ``check_imgsz`` for training, ``max_dim=1``)."""
    return int(max(imgsz) if isinstance(imgsz, (list, tuple)) else imgsz)


def round_imgsz(imgsz: int, stride: int) -> int:
    """Ultralytics' check_imgsz (and train.py's check_img_size): round up to a multiple of the largest stride (at least 32)."""
    return max(math.ceil(imgsz / stride) * stride, stride)


def optimizer_steps(accumulate_at: Callable[[int, int, int], int], iterations: int, batch: int, nbs: int) -> tuple[bool, ...]:
    """Both trainers step when ``iteration - last_step >= accumulate_at(iteration, batch, nbs)``."""
    steps, last = [], -1
    for iteration in range(iterations):
        step = iteration - last >= accumulate_at(iteration, batch, nbs)
        last = iteration if step else last
        steps.append(step)
    return tuple(steps)


def check_trainable(model: Any, freeze: tuple[int, ...]) -> None:
    """After freezing: refuse a ``freeze=`` that leaves no weight to train (both trainers' backward would
    fail with "element 0 of tensors does not require grad")."""
    if any(parameter.requires_grad for parameter in model.parameters()):
        return
    parts = (name.split(".") for name, _ in model.named_parameters())
    layers = {int(p[1]) for p in parts if len(p) > 1 and p[0] == "model" and p[1].isdigit()}
    contiguous = freeze == tuple(range(len(freeze)))
    shown = str(len(freeze)) if contiguous else f"[{','.join(map(str, freeze))}]"
    span = f"; its layers with weights are {min(layers)}-{max(layers)}" if layers else ""
    raise UserError(f"freeze={shown} freezes every layer of the model, so nothing would train{span}")


def rank_batch(config: EstimateConfig) -> int:
    """Images per GPU: both trainers split the batch over DDP ranks (``batch_size // world_size``).
    A batch smaller than the ranks leaves none: Ultralytics' DataLoader refuses ``batch_size=0``. The
    yolov5 repo's train scripts also refuse a remainder (``needs_whole_split``)."""
    from yolomem.loops import get_loop

    batch, ranks = config.batch, config.world_size
    if batch < ranks:
        raise UserError(f"batch={batch} over world_size={ranks} leaves each GPU 0 images (the trainer's DataLoader "
                        f"refuses batch_size=0); use batch >= {ranks}, the total over all GPUs")  # fmt: skip
    if batch % ranks and get_loop(config.framework).needs_whole_split:
        lower, upper = batch - batch % ranks, batch - batch % ranks + ranks
        raise UserError(f"batch={batch} over world_size={ranks}: the {config.framework} trainer refuses a batch that is "
                        f"not a multiple of the GPUs (\"--batch-size {batch} must be multiple of WORLD_SIZE\"); use "
                        f"batch={lower} or batch={upper}")  # fmt: skip
    return batch // ranks


@contextlib.contextmanager
def tracing(config: EstimateConfig, *, fake: bool, oracle) -> Iterator[tuple[Any, Any]]:
    """The tracer, the foreach kernels CUDA would pick, and CUDA's autocast policy, for one trace."""
    from yolomem.trace.autocast import CudaAutocastPolicy
    from yolomem.trace.tracer import Tracer, real_bytes_cap_for

    workspaces = None
    if fake:  # kernel workspaces belong to CUDA kernels; a real CPU run (the tests' ground truth) has none
        import torch

        from yolomem.trace.workspaces import KernelWorkspaces, rules_for

        workspaces = KernelWorkspaces(rules_for(torch.__version__))
    tracer = Tracer(fake=fake, oracle=oracle, workspaces=workspaces, real_bytes_cap=real_bytes_cap_for(rank_batch(config)))
    with contextlib.ExitStack() as stack:
        if fake:
            _import_torchvision()
            freeze_imported_objects()  # the tracer's fake mode has imported torch._dynamo: all is imported now
            stack.enter_context(cyclic_gc_paused())
        stack.enter_context(tracer)
        stack.enter_context(cuda_foreach_types())
        stack.enter_context(tensors_from_fake_scalars())
        stack.enter_context(cuda_one_hot())
        policy = None
        if config.amp != "fp32":
            policy = stack.enter_context(CudaAutocastPolicy(tracer.fake_cuda_like, tracer.paused))
        yield tracer, policy


def _import_torchvision() -> None:
    """Import torchvision before a trace, not inside it. The validators import it on first use (NMS), and
    its import runs ``torch.fx.wrap``, whose frame keeps a reference to itself: a cycle that holds every
    frame below it, the traced step's included. With the collector paused (``cyclic_gc_paused``) the
    locals of the step that imported it first (its last validation batch) then outlived it, in the first
    trace of a process only, whose run then did not derive with the others (``yolomem.trace.derive``)."""
    with contextlib.suppress(ImportError):
        import torchvision  # noqa: F401


@contextlib.contextmanager
def cuda_foreach_types() -> Iterator[None]:
    """Let foreach kernels accept fake tensors, as they accept CUDA tensors. Restored on exit."""
    from torch._subclasses.fake_tensor import FakeTensor
    from torch.optim import optimizer as optim_module
    from torch.utils import _foreach_utils

    lists = [_foreach_utils._foreach_supported_types, optim_module._foreach_supported_types]
    added = [lst for lst in lists if FakeTensor not in lst]
    for lst in added:
        lst.append(FakeTensor)
    try:
        yield
    finally:
        for lst in added:
            lst.remove(FakeTensor)


@contextlib.contextmanager
def tensors_from_fake_scalars() -> Iterator[None]:
    """Let ``torch.as_tensor``/``torch.tensor`` take a list of fake 0-dim tensors, as they take CUDA ones
    (Ultralytics 8.3's RT-DETR loss returns ``torch.as_tensor([loss[k].detach() for k in ...])``). They
    read each value from its data, which a fake tensor lacks, so nothing dispatches; here they make the
    new tensor through the tracer instead, as the GPU does: one allocation of n values. Restored on exit."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensor

    originals = {name: getattr(torch, name) for name in ("as_tensor", "tensor")}

    def from_scalars(original):
        def wrapper(data, *args, **kwargs):
            if isinstance(data, (list, tuple)) and data and all(isinstance(x, FakeTensor) and x.dim() == 0 for x in data):
                dtype = kwargs.get("dtype") or torch.promote_types(data[0].dtype, data[-1].dtype)
                with torch.no_grad():  # a new leaf, as theirs
                    return torch.stack([x.to(dtype) for x in data]).to(kwargs.get("device") or data[0].device)
            return original(data, *args, **kwargs)

        return wrapper

    for name, original in originals.items():
        setattr(torch, name, from_scalars(original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(torch, name, original)


@contextlib.contextmanager
def cuda_one_hot() -> Iterator[None]:
    """``F.one_hot(x, n)`` as CUDA computes it (ATen ``one_hot``, native/Onehot.cpp): ``zeros(*x.shape, n)``
    then ``scatter_(-1, x.unsqueeze(-1), 1)``, with no check of the values (the CPU kernel reads its
    ``aminmax`` first, and a fake tensor takes the meta path, ``arange(n)`` and ``eq``: neither allocates
    what the GPU does). Ultralytics' assigner one-hot encoded its top-k anchors this way up to 8.0.95.
    ``n = -1`` reads the largest value, on every device: left as it is."""
    import torch

    class OneHotAsOnCuda(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is torch.nn.functional.one_hot:
                tensor, classes = (*args, kwargs.get("num_classes", -1))[:2]
                if classes >= 0:
                    out = torch.zeros((*tensor.shape, classes), dtype=tensor.dtype, device=tensor.device)
                    return out.scatter_(-1, tensor.unsqueeze(-1), 1)
            return func(*args, **kwargs)

    with OneHotAsOnCuda():
        yield


def traced_batches(config: EstimateConfig, task: str, batch: int, density=None, upper: bool = True):
    """(plan, objects per sample of each traced iteration, upper iteration index or None).

    Training with labels: typical batches, the last configured iteration at epoch 1's densest batch,
    then one more at the upper figure's densest (``yolomem.loops.density``). AutoBatch probes
    (``step=fwd_bwd``) and classification have no labels: plain draws, no extra iteration."""
    from yolomem.loops.density import iteration_counts, plan_for

    if config.step != "train" or task == "classify":
        return None, [None] * config.iterations, None
    plan = density or plan_for(config, batch)
    return plan, iteration_counts(plan, config.iterations, upper=upper), config.iterations if upper else None
