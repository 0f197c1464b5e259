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

from yolomem.config.models import ResolvedModel
from yolomem.config.settings import EstimateConfig


@dataclass(frozen=True)
class TracedRun:
    """What tracing a config's training iterations gives back."""

    trace: Any  # yolomem.trace.tracer.Trace
    params: int
    imgsz: int
    optimizer: str
    notes: tuple[str, ...]
    probe_failures: tuple[str, ...]


class TrainingLoop(Protocol):
    """Everything yolomem asks of a training loop."""

    name: str  # the ``framework=`` value that selects it
    clears_cache_between_epochs: bool  # the trainer empties the CUDA cache after each epoch

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
              after_iterations: Callable[[Any], None] | None) -> TracedRun:
        """Build the model on fake (or real) tensors and trace ``config.iterations`` training iterations."""

    def optimizer_steps(self, iterations: int, batch: int, nbs: int) -> tuple[bool, ...]:
        """Which traced iterations step the optimizer at this (per-rank) batch: the one part of the
        traced step that the batch size turns on or off (``yolomem.result.runs`` keeps them apart)."""

    def gpu_mem_unit(self) -> str:
        """The unit the trainer prints ``GPU_mem`` in: "GiB" or "GB" (10^9 bytes)."""

    def epochs_supported(self, task: str, world_size: int) -> bool:
        """Whether whole epochs (val pass, epoch 2+) can be simulated for this task."""

    def val_batch_size(self, task: str, train_batch: int) -> int: ...

    def trace_val_pass(self, run, shape, seed: int, nc: int, kpt_shape: tuple[int, ...], channels: int) -> None:
        """Trace one validation batch of ``shape`` with the run's EMA model, as the trainer's val pass does."""


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


def rank_batch(config: EstimateConfig) -> int:
    """Images per GPU: both trainers split the batch over DDP ranks (``batch_size // world_size``)."""
    return max(config.batch // config.world_size, 1)


@contextlib.contextmanager
def tracing(config: EstimateConfig, *, fake: bool, oracle) -> Iterator[tuple[Any, Any]]:
    """The tracer, the foreach kernels CUDA would pick, and CUDA's autocast policy, for one trace."""
    from yolomem.trace.autocast import CudaAutocastPolicy
    from yolomem.trace.tracer import Tracer

    tracer = Tracer(fake=fake, oracle=oracle)
    with contextlib.ExitStack() as stack:
        stack.enter_context(tracer)
        stack.enter_context(cuda_foreach_types())
        policy = None
        if config.amp != "fp32":
            policy = stack.enter_context(CudaAutocastPolicy(tracer.fake_cuda_like, tracer.paused))
        yield tracer, policy


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
