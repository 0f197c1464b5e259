"""Ultralytics' AutoBatch (``batch=-1``, or a fraction in (0, 1)), run by the installed release on a
simulated card.

The trainer asks AutoBatch for a batch before it builds its dataloaders, optimizer and EMA
(``BaseTrainer._setup_train``): ``auto_batch`` (its densest image x 4 as ``max_num_obj``, from 8.3.31),
then ``utils/autobatch.py``: ``check_train_batch_size`` copies the model, ``autobatch`` reads the card
(total, reserved, allocated or free memory), ``profile_ops`` (``profile`` in earlier releases) runs forward and
``sum(outputs).backward()`` at batch 1, 2, 4, 8, 16 (to 64 on cards of 16 GiB or more) and reads
``memory_reserved()``; a straight line through those readings, solved for the fraction of the card,
gives the batch. Releases differ in every one of those steps (the fraction, the batches probed, n=3 or
1 passes, a loss term in the reading, thop's forward on a copy, the clamps, the units).

So nothing of it is re-written here: the release's own functions run, on fake tensors under the tracer
(``yolomem.trace.tracer``), with the model where the trainer has it (its weights on the card). What
they ask CUDA, ``SimulatedCard`` (``yolomem.loops.autobatch_card``) answers from the caching-allocator
simulation, fed the allocation stream so far at each question: ``memory_reserved`` and
``memory_allocated`` read it, ``empty_cache`` empties it, a probe that outgrows the card raises CUDA's
out-of-memory error (the release catches it and stops at the batch before). The readings take each allocation at its expected size (kernel
workspaces by their expected rule): the pick is what the release is expected to do; the run at the pick
then gets both figures. Not modelled: the AMP check's leftovers in the cache (``check_amp`` runs a second
model just before; the profiler empties the cache first from 8.3.31, not before).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
from collections.abc import Iterator
from unittest import mock

import torch

from yolomem.config.gpus import Gpu
from yolomem.config.models import ResolvedModel
from yolomem.config.settings import EstimateConfig
from yolomem.errors import UserError
from yolomem.loops.autobatch_card import (
    AutoBatchPick, AutoBatchProbe, CudaIsTheTrace, HostBatch, OnDevice, SimulatedCard, TorchWith, TrainerModel,
)  # fmt: skip


def check_autobatch_request(requested: float) -> None:
    """Refuse what the installed trainer would not take: a fraction before 8.2 (only ``batch == -1``
    starts AutoBatch there; any other value goes to the dataloader as it is)."""
    from ultralytics.utils.autobatch import check_train_batch_size

    from yolomem.loops.ultralytics.release import release

    if requested != -1 and not _takes_fraction(check_train_batch_size):
        raise UserError(f"batch={requested:g}: ultralytics {release().version} starts AutoBatch only for batch=-1 "
                        "(a fraction of the card from 8.2)")  # fmt: skip


def _takes_fraction(check_train_batch_size) -> bool:
    """Whether the release's ``check_train_batch_size`` takes the trainer's batch (a fraction, from 8.2)."""
    return "batch" in inspect.signature(check_train_batch_size).parameters


def pick_batch(config: EstimateConfig, resolved: ResolvedModel, gpu: Gpu, requested: float, densest_image: int,
               dataset_size: int | None) -> AutoBatchPick:  # fmt: skip
    """The batch the installed release's AutoBatch picks for ``config`` on ``gpu``: its trainer's
    ``auto_batch`` (or, before 8.3, the ``check_train_batch_size`` call of ``_setup_train``), run as
    the module docstring says. ``densest_image``: the most objects in one training image;
    ``dataset_size``: the training images, where known (the pick is at most that in releases that take it)."""
    from ultralytics.utils import autobatch as autobatch_module

    from yolomem.loops.base import max_stride, round_imgsz, tracing
    from yolomem.loops.ultralytics.families import family_of, task_classes
    from yolomem.loops.ultralytics.gpu_branches import gpu_branches
    from yolomem.loops.ultralytics.release import release
    from yolomem.loops.ultralytics.step import (
        CloneOnDeepcopy, StepSettings, UltralyticsOracle, autocast_region, build_model, freeze_parameters,
        head_attributes, persistent_tensors, trainer_shim, ultralytics_args,
    )  # fmt: skip

    check_autobatch_request(requested)
    _, trainer_class = task_classes(family_of(resolved.cfg), resolved.task)
    nc = config.nc or resolved.nc
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.amp)
    with tracing(config, fake=True, oracle=UltralyticsOracle()) as (tracer, policy), gpu_branches():
        model = build_model(resolved.cfg, resolved.task, nc)
        freeze_parameters(model, config.freeze)  # _setup_train freezes before it asks AutoBatch
        tracer.forget()  # built on the host; the trainer's model.to(device) puts the finished tensors on the card
        for category, tensors in persistent_tensors(model, None, extra=head_attributes(model)).items():
            tracer.track_existing(tensors, category)  # its weights on the card; no EMA yet
        stride = max_stride(model)
        settings = StepSettings(task=resolved.task, batch=16, imgsz=round_imgsz(config.imgsz, stride),
                                precision=config.amp, optimizer="none", nbs=config.nbs, freeze=config.freeze,
                                multi_scale=config.multi_scale, step="fwd_bwd")  # fmt: skip
        args = ultralytics_args(settings, nc)
        args.amp = "bf16" if config.amp == "bf16" else config.amp == "fp16"
        card = SimulatedCard(tracer, gpu, config.alloc_conf)
        probes: list[AutoBatchProbe] = []
        passed: dict = {}  # what the release passed to its profiler (max_num_obj)

        def autocast(enabled=True, device="cuda", dtype=None, **_):
            return autocast_region(policy, amp_dtype) if enabled else contextlib.nullcontext()

        with _answering(card, autobatch_module, _profile_wrapper(autobatch_module, probes, passed), autocast), \
                CloneOnDeepcopy(), CudaIsTheTrace(), _release_log() as log:  # fmt: skip
            on_card = TrainerModel(model)
            try:
                if hasattr(trainer_class, "auto_batch"):
                    shim = trainer_shim(trainer_class, args=args, model=on_card, amp=config.amp != "fp32",
                                        batch_size=requested, stride=stride, data={"train": "train"}, trainset="train",
                                        build_dataset=lambda *a, **k: _Labels(densest_image, dataset_size or 0))  # fmt: skip
                    batch = trainer_class.auto_batch(shim)
                else:
                    check = autobatch_module.check_train_batch_size  # as _setup_train called it before auto_batch
                    extra = {"batch": requested} if _takes_fraction(check) else {}
                    batch = check(on_card, settings.imgsz, config.amp != "fp32", **extra)
            except RuntimeError as error:
                if "AutoBatch" not in str(error):
                    raise
                # the release gives up (8.4.190: no probe fit) and so does its trainer
                failed = [p.batch for p in probes if p.reading is None]
                why = f" (out of memory from batch {failed[0]})" if failed else ""
                raise UserError(f"batch={requested:g} on {gpu.name}: ultralytics {release().version}'s AutoBatch stops the "
                                f"run{why}: \"{_COLOUR.sub('', str(error)).strip()}\"; lower imgsz or name a larger card") from None  # fmt: skip
        tracer.detach_finalizers()
    return AutoBatchPick(requested=requested, batch=int(batch), release=release().version, gpu=gpu.name,
                         gpu_total_bytes=gpu.total_bytes, max_num_obj=int(passed.get("max_num_obj") or 0),
                         probes=tuple(probes), log=tuple(log))  # fmt: skip


class _Labels:
    """The train dataset as ``DetectionTrainer.auto_batch`` reads it: its images' labels (only the
    densest matters: it takes the most objects of one image) and its length."""

    def __init__(self, densest: int, images: int):
        import numpy as np

        self.labels = [{"cls": np.zeros((densest, 1), dtype=np.float32)}]
        self._images = images

    def __len__(self) -> int:
        return self._images  # 0 where not known: AutoBatch then does not cap the batch by it


def _profile_wrapper(autobatch_module, probes: list[AutoBatchProbe], passed: dict):
    """``profile_ops`` as ``autobatch`` calls it, with its host batches (``HostBatch``: the card's copy
    is made, traced, at the profiler's ``x.to(device)``), the model as it is on the card, and each
    batch's reading kept. One call over all batches, as the release makes it: the profiler's loop keeps
    a batch's outputs until the next batch's forward returns."""
    release_profile = _release_profile(autobatch_module)

    def profile(inputs, ops, n=10, device=None, **kwargs):
        passed.update(kwargs)
        inputs = list(inputs)
        results = release_profile(inputs, OnDevice(ops.model), n=n, device=device, **kwargs)
        probes.extend(AutoBatchProbe(int(x.shape[0]), result[2] if result else None) for x, result in zip(inputs, results))
        return results

    return profile


def _release_profile(autobatch_module):
    return getattr(autobatch_module, "profile_ops", None) or autobatch_module.profile


@contextlib.contextmanager
def _answering(card: SimulatedCard, autobatch_module, profile, autocast) -> Iterator[None]:
    """CUDA, as the release's AutoBatch and profiler ask it, answered by ``card``; restored on exit."""
    from ultralytics.utils import torch_utils

    host_batches = TorchWith(empty=lambda *shape, **_: HostBatch(card.tracer, *shape))
    patches = [
        mock.patch.object(autobatch_module, "torch", host_batches),
        mock.patch.object(autobatch_module, _release_profile(autobatch_module).__name__, profile),
    ]
    if hasattr(autobatch_module, "autocast"):
        patches.append(mock.patch.object(autobatch_module, "autocast", autocast))
    if hasattr(torch_utils, "select_device"):  # profile_ops checks the device against the machine's
        patches.append(mock.patch.object(torch_utils, "select_device", lambda device=None, **_: device))
    with contextlib.ExitStack() as stack:
        stack.enter_context(card.answering_cuda(autocast))  # 8.0-8.1: torch.cuda.amp.autocast(amp)
        for patch in patches:
            stack.enter_context(patch)
        yield


_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
# the profiler's table (its header and a row per probe): the readings are in ``AutoBatchPick.probes``, and its
# parameter counts and timings describe this trace, not the card
_PROFILE_TABLE = re.compile(r"^(Params\s+GFLOPs|\d+\s+\S+\s+\S+\s+\S+\s+\S+\s+\()")


@contextlib.contextmanager
def _release_log() -> Iterator[list[str]]:
    """What the release logs while it picks, kept (and kept off the terminal): its own account of the pick."""
    from ultralytics.utils import LOGGER

    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = _COLOUR.sub("", record.getMessage()).strip()
            if text and not _PROFILE_TABLE.match(text):
                lines.append(text)

    handlers, level, propagate = LOGGER.handlers[:], LOGGER.level, LOGGER.propagate
    LOGGER.handlers[:] = [Keep()]
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False
    try:
        yield lines
    finally:
        LOGGER.handlers[:] = handlers
        LOGGER.setLevel(level)
        LOGGER.propagate = propagate
