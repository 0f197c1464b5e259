"""What every AutoBatch emulation shares: the simulated card its code asks, and what it picked.

AutoBatch (Ultralytics' ``batch=-1``, the yolov5 repo's ``--batch-size -1``) profiles the model on the
card: it reads the card's memory, runs forward and backward at a few batch sizes, reads
``memory_reserved()`` after each and fits a line to the readings. Here its code runs on fake tensors
under the tracer, and ``SimulatedCard`` answers what it asks CUDA from the caching-allocator
simulation of the stream traced so far. Each loop has its own module that runs its AutoBatch on it:
``yolomem.loops.ultralytics.autobatch`` (the installed release's code), ``yolomem.loops.yolov5.autobatch``
(the repo's, transcribed).
"""

from __future__ import annotations

import contextlib
import copy
import os
import types
from collections.abc import Iterator
from dataclasses import dataclass
from unittest import mock

import torch

from yolomem.config.gpus import Gpu


@dataclass(frozen=True)
class AutoBatchProbe:
    batch: int
    reading: float | None  # what the profiler put in its GPU_mem column (GB or GiB as it prints); None: failed


@dataclass(frozen=True)
class AutoBatchPick:
    """What a trainer's AutoBatch did on the simulated card."""

    requested: float  # the user's batch: -1 (AutoBatch's default fraction) or a fraction in (0, 1)
    batch: int  # the batch it picked, which the run trains at
    release: str  # the code that picked it: an Ultralytics release ("8.4.190") or "yolov5 v7.0"
    gpu: str
    gpu_total_bytes: int
    max_num_obj: int  # the loss term's objects per image (the densest image x 4), 0 where the code has none
    probes: tuple[AutoBatchProbe, ...]
    log: tuple[str, ...]  # what AutoBatch logged (and a failed probe's error), as a console shows it
    framework: str = "ultralytics"  # the training loop: "ultralytics" or "yolov5"

    @property
    def source(self) -> str:
        """The code that picked, as the output names it: "ultralytics 8.4.190", "yolov5 v7.0 train.py"."""
        return f"ultralytics {self.release}" if self.framework == "ultralytics" else f"{self.release} train.py"

    def note(self) -> str:
        done = [p for p in self.probes if p.reading is not None]
        probed = f"batch {self.probes[0].batch}-{self.probes[-1].batch}" if self.probes else "no batch"
        readings = f" (read {done[0].reading:.2f}-{done[-1].reading:.2f} G)" if done else ""
        said = next((line for line in reversed(self.log) if "batch-size" in line or "batch size" in line), "")
        said = f': "{said}"' if said else ""
        card = f"{self.gpu} ({self.gpu_total_bytes / 2**30:.3g} GiB)"
        return (f"batch={self.requested:g}: AutoBatch, as {self.source} runs it on a simulated {card}, "
                f"probes {probed}{readings} and picks batch {self.batch}{said}; the run is estimated at that batch")  # fmt: skip

    def to_json(self) -> dict:
        return {"requested": self.requested, "batch": self.batch, "release": self.release, "framework": self.framework,
                "gpu": self.gpu, "gpu_total_bytes": self.gpu_total_bytes, "max_num_obj": self.max_num_obj,
                "probes": [[p.batch, p.reading] for p in self.probes], "log": list(self.log)}  # fmt: skip


class SimulatedCard:
    """CUDA's memory queries, answered by the caching-allocator simulation of the stream traced so far.

    On the card an allocation that does not fit raises there, inside the probe, and the probe's ``try``
    records a failed batch. Here the stream is replayed when CUDA is asked: an allocation that did not
    fit raises CUDA's out-of-memory error at the next reading (the probe's), never at ``empty_cache``
    (which the profilers also call outside their ``try``). The failed allocation and the rest of that
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

    def properties(self) -> types.SimpleNamespace:
        """``torch.cuda.get_device_properties``, as far as AutoBatch reads it."""
        return types.SimpleNamespace(name=self.gpu.device_name, total_memory=self.gpu.total_bytes)

    @contextlib.contextmanager
    def answering_cuda(self, autocast) -> Iterator[None]:
        """``torch.cuda``'s memory queries answered by this card, and ``torch.cuda.amp.autocast`` by
        ``autocast`` (the trainers' ``autocast(amp)`` around AutoBatch); restored on exit."""
        patches = [
            mock.patch.multiple(torch.cuda, is_available=lambda: True, device_count=lambda: 1, synchronize=lambda *_: None,
                                memory_reserved=self.memory_reserved, memory_allocated=self.memory_allocated,
                                empty_cache=self.empty_cache, mem_get_info=self.mem_get_info,
                                get_device_properties=lambda *_: self.properties()),  # fmt: skip
            mock.patch.object(torch.cuda.amp, "autocast", autocast),
            mock.patch.dict(os.environ),  # device selection sets CUDA_VISIBLE_DEVICES
        ]  # fmt: skip
        with contextlib.ExitStack() as stack:
            for patch in patches:
                stack.enter_context(patch)
            yield


class HostBatch:
    """An image batch AutoBatch makes on the host (``torch.empty(b, 3, imgsz, imgsz)``): no card memory
    until the profiler's ``x.to(device)``, which makes the card's copy here, traced. The profiler then
    holds it as the card does: until its loop moves on to the next batch."""

    def __init__(self, tracer, *shape: int):
        self.tracer, self.shape = tracer, torch.Size(shape)

    def to(self, *_, **__) -> torch.Tensor:
        image = torch.empty(self.shape)
        self.tracer.track_existing([image], "input")
        return image


class TorchWith(types.ModuleType):
    """``torch`` as one module sees it, with some names answered otherwise."""

    def __init__(self, **names):
        super().__init__("torch")
        vars(self).update(names)

    def __getattr__(self, name: str):
        return getattr(torch, name)


class TrainerModel:
    """The trainer's model, on the card, as ``check_train_batch_size`` and ``autobatch`` see it: they
    deep-copy it (a copy on the card: traced clones), put it in train mode, read its device (CUDA)."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.yaml = getattr(model, "yaml", {})

    def __deepcopy__(self, memo) -> TrainerModel:
        return TrainerModel(copy.deepcopy(self.model, memo))

    def train(self, mode: bool = True) -> TrainerModel:
        self.model.train(mode)
        return self

    def parameters(self) -> Iterator:
        yield types.SimpleNamespace(device=torch.device("cuda", 0))


class OnDevice:
    """A model already on the device, as a profiler takes it: without ``to`` and ``half`` (moving
    fake parameters would swap them, which the tracer's weak references forbid; they are where they are)."""

    def __init__(self, model: torch.nn.Module):
        vars(self)["_model"] = model

    def __getattr__(self, name: str):
        if name in ("to", "half"):
            raise AttributeError(name)
        return getattr(vars(self)["_model"], name)

    def __call__(self, *args, **kwargs):
        return vars(self)["_model"](*args, **kwargs)

    def __deepcopy__(self, memo) -> OnDevice:  # thop profiles a copy in later releases
        return OnDevice(copy.deepcopy(vars(self)["_model"], memo))


class CudaIsTheTrace(torch.overrides.TorchFunctionMode):
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
