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
they ask CUDA, ``_SimulatedCard`` answers from the caching-allocator simulation, fed the allocation
stream so far at each question: ``memory_reserved`` and ``memory_allocated`` read it, ``empty_cache``
empties it, a probe that outgrows the card raises CUDA's out-of-memory error (the release catches it
and stops at the batch before). The readings take each allocation at its expected size (kernel
workspaces by their expected rule): the pick is what the release is expected to do; the run at the pick
then gets both figures. Not modelled: the AMP check's leftovers in the cache (``check_amp`` runs a second
model just before; the profiler empties the cache first from 8.3.31, not before).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import os
import re
import types
from collections.abc import Iterator
from dataclasses import dataclass
from unittest import mock

import torch

from yolomem.config.gpus import Gpu
from yolomem.config.models import ResolvedModel
from yolomem.config.settings import EstimateConfig
from yolomem.errors import UserError


@dataclass(frozen=True)
class AutoBatchProbe:
    batch: int
    reading: float | None  # what profile_ops put in its GPU_mem column (GB or GiB as the release prints); None: failed


@dataclass(frozen=True)
class AutoBatchPick:
    """What the release's AutoBatch did on the simulated card."""

    requested: float  # the user's batch: -1 (AutoBatch's default fraction) or a fraction in (0, 1)
    batch: int  # the batch it picked, which the run trains at
    release: str  # the Ultralytics release that picked it
    gpu: str
    gpu_total_bytes: int
    max_num_obj: int  # the loss term's objects per image (the densest image x 4), 0 where the release has none
    probes: tuple[AutoBatchProbe, ...]
    log: tuple[str, ...]  # what AutoBatch logged (and a failed probe's error), as a console shows it

    def note(self) -> str:
        done = [p for p in self.probes if p.reading is not None]
        probed = f"batch {self.probes[0].batch}-{self.probes[-1].batch}" if self.probes else "no batch"
        readings = f" (read {done[0].reading:.2f}-{done[-1].reading:.2f} G)" if done else ""
        said = next((line for line in reversed(self.log) if "batch-size" in line or "batch size" in line), "")
        said = f': "{said}"' if said else ""
        card = f"{self.gpu} ({self.gpu_total_bytes / 2**30:.3g} GiB)"
        return (f"batch={self.requested:g}: AutoBatch, as ultralytics {self.release} runs it on a simulated {card}, "
                f"probes {probed}{readings} and picks batch {self.batch}{said}; the run is estimated at that batch")  # fmt: skip

    def to_json(self) -> dict:
        return {"requested": self.requested, "batch": self.batch, "release": self.release, "gpu": self.gpu,
                "gpu_total_bytes": self.gpu_total_bytes, "max_num_obj": self.max_num_obj,
                "probes": [[p.batch, p.reading] for p in self.probes], "log": list(self.log)}  # fmt: skip


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
        card = _SimulatedCard(tracer, gpu, config.alloc_conf)
        probes: list[AutoBatchProbe] = []
        passed: dict = {}  # what the release passed to its profiler (max_num_obj)

        def autocast(enabled=True, device="cuda", dtype=None, **_):
            return autocast_region(policy, amp_dtype) if enabled else contextlib.nullcontext()

        with card.answering(autobatch_module, _profile_wrapper(autobatch_module, tracer, probes, passed), autocast), \
                CloneOnDeepcopy(), _CudaIsTheTrace(), _release_log() as log:  # fmt: skip
            on_card = _TrainerModel(model)
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


class _TrainerModel:
    """The trainer's model, on the card, as ``check_train_batch_size`` and ``autobatch`` see it: they
    deep-copy it (a copy on the card: traced clones), put it in train mode, read its device (CUDA)."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.yaml = getattr(model, "yaml", {})

    def __deepcopy__(self, memo) -> _TrainerModel:
        return _TrainerModel(copy.deepcopy(self.model, memo))

    def train(self, mode: bool = True) -> _TrainerModel:
        self.model.train(mode)
        return self

    def parameters(self) -> Iterator:
        yield types.SimpleNamespace(device=torch.device("cuda", 0))


class _OnDevice:
    """A model already on the device, as ``profile_ops`` takes it: without ``to`` and ``half`` (moving
    fake parameters would swap them, which the tracer's weak references forbid; they are where they are)."""

    def __init__(self, model: torch.nn.Module):
        vars(self)["_model"] = model

    def __getattr__(self, name: str):
        if name in ("to", "half"):
            raise AttributeError(name)
        return getattr(vars(self)["_model"], name)

    def __call__(self, *args, **kwargs):
        return vars(self)["_model"](*args, **kwargs)

    def __deepcopy__(self, memo) -> _OnDevice:  # thop profiles a copy in later releases
        return _OnDevice(copy.deepcopy(vars(self)["_model"], memo))


def _profile_wrapper(autobatch_module, tracer, probes: list[AutoBatchProbe], passed: dict):
    """``profile_ops`` as ``autobatch`` calls it, one batch at a time: the image batch it would copy to
    the card is made here, traced, for that batch only (the host batches AutoBatch builds first are not
    the card's memory), then the release's own profile runs on it."""
    release_profile = _release_profile(autobatch_module)

    def profile(inputs, ops, n=10, device=None, **kwargs):
        passed.update(kwargs)
        results = []
        for host_batch in inputs:
            image = torch.empty(host_batch.shape)
            tracer.track_existing([image], "input")
            results += release_profile([image], _OnDevice(ops.model), n=n, device=device, **kwargs)
            del image
            reading = results[-1][2] if results[-1] else None
            probes.append(AutoBatchProbe(int(host_batch.shape[0]), reading))
        return results

    return profile


def _release_profile(autobatch_module):
    return getattr(autobatch_module, "profile_ops", None) or autobatch_module.profile


class _SimulatedCard:
    """CUDA's memory queries, answered by the caching-allocator simulation of the stream traced so far.

    On the card an allocation that does not fit raises there, inside the probe, and the probe's ``try``
    records a failed batch. Here the stream is replayed when CUDA is asked: an allocation that did not
    fit raises CUDA's out-of-memory error at the next reading (the probe's), never at ``empty_cache``
    (which the profiler also calls outside its ``try``). The failed allocation and the rest of that
    stretch of the stream are left out, as the exception would have cut them short."""

    def __init__(self, tracer, gpu: Gpu, alloc_conf: str | None = None):
        from yolomem.allocator.caching import CachingAllocator, parse_alloc_conf

        self.tracer, self.gpu = tracer, gpu
        self.allocator = CachingAllocator(parse_alloc_conf(alloc_conf), capacity_bytes=gpu.usable_bytes)
        self._fed = 0
        self._out_of_memory: str | None = None  # a failed allocation not yet reported

    def _catch_up(self) -> None:
        from yolomem.allocator.replay import ReplayEvent, replay

        log = self.tracer.allocation_log()
        events = [ReplayEvent(op, record.storage_id, record.nbytes) for op, record in log[self._fed:]]
        self._fed = len(log)
        run = replay([events], self.allocator)
        if run.oom is not None and self._out_of_memory is None:
            self._out_of_memory = f"CUDA out of memory (simulated on {self.gpu.name}): {run.oom.message}"

    def _reading(self) -> None:
        self._catch_up()
        message, self._out_of_memory = self._out_of_memory, None
        if message is not None:
            raise torch.OutOfMemoryError(message)

    def memory_reserved(self, *_) -> int:
        self._reading()
        return self.allocator.reserved_bytes

    def memory_allocated(self, *_) -> int:
        self._reading()
        return self.allocator.allocated_bytes

    def empty_cache(self) -> None:
        self._catch_up()
        self.allocator.empty_cache()

    def mem_get_info(self, *_) -> tuple[int, int]:
        return self.gpu.usable_bytes - self.memory_reserved(), self.gpu.total_bytes

    @contextlib.contextmanager
    def answering(self, autobatch_module, profile, autocast) -> Iterator[None]:
        """CUDA, as the release's AutoBatch and profiler ask it, answered by this card; restored on exit."""
        from ultralytics.utils import torch_utils

        properties = types.SimpleNamespace(name=self.gpu.device_name, total_memory=self.gpu.total_bytes)
        host_batches = _TorchWith(empty=lambda *shape, **_: types.SimpleNamespace(shape=torch.Size(shape)))
        patches = [
            mock.patch.multiple(torch.cuda, is_available=lambda: True, device_count=lambda: 1, synchronize=lambda *_: None,
                                memory_reserved=self.memory_reserved, memory_allocated=self.memory_allocated,
                                empty_cache=self.empty_cache, mem_get_info=self.mem_get_info,
                                get_device_properties=lambda *_: properties),  # fmt: skip
            mock.patch.object(torch.cuda.amp, "autocast", autocast),  # 8.0-8.1: torch.cuda.amp.autocast(amp)
            mock.patch.object(autobatch_module, "torch", host_batches),
            mock.patch.object(autobatch_module, _release_profile(autobatch_module).__name__, profile),
            mock.patch.dict(os.environ),  # select_device and friends set CUDA_VISIBLE_DEVICES
        ]  # fmt: skip
        if hasattr(autobatch_module, "autocast"):
            patches.append(mock.patch.object(autobatch_module, "autocast", autocast))
        if hasattr(torch_utils, "select_device"):  # profile_ops checks the device against the machine's
            patches.append(mock.patch.object(torch_utils, "select_device", lambda device=None, **_: device))
        with contextlib.ExitStack() as stack:
            for patch in patches:
                stack.enter_context(patch)
            yield


class _TorchWith(types.ModuleType):
    """``torch`` as one module sees it, with some names answered otherwise."""

    def __init__(self, **names):
        super().__init__("torch")
        vars(self).update(names)

    def __getattr__(self, name: str):
        return getattr(torch, name)


class _CudaIsTheTrace(torch.overrides.TorchFunctionMode):
    """The traced tensors stand for the card's: a tensor moved or made on ``cuda`` stays where the trace is."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if "device" in kwargs:
            kwargs = {**kwargs, "device": _here(kwargs["device"])}
        if getattr(func, "__name__", "") == "to":
            args = tuple(_here(a) for a in args)
        return func(*args, **kwargs)


def _here(value):
    if isinstance(value, torch.device) and value.type == "cuda":
        return torch.device("cpu")
    if isinstance(value, str) and value.startswith("cuda"):
        return "cpu"
    return value


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
