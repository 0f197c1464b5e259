"""``estimate()``: the GPU memory an Ultralytics training run will take, without a GPU.

How the number is made:
1. The real model (Ultralytics' own modules, built from its YAML) runs real training iterations
   (preprocess, forward, loss with its assigner, scaled backward, unscale + clip, optimizer step,
   EMA update) on fake tensors, under CUDA's autocast policy (``yolomem.trace.autocast``). Every storage
   allocation and free is recorded (``yolomem.trace.tracer``).
   The run comes from ``yolomem.result.runs``: the trace cache, a stream derived from runs traced at
   other batch sizes (identical to a trace, event for event), or a new trace.
2. That event stream is replayed through a model of PyTorch's CUDA caching allocator
   (``yolomem.allocator.caching``): 512-byte rounding, small/large pools, segment sizes, best fit,
   splitting, merging, cache, free-and-retry.

What the figures mean:
- ``peak_allocated_bytes``: ``torch.cuda.max_memory_allocated()`` over the traced iterations.
- ``peak_reserved_bytes``: ``torch.cuda.max_memory_reserved()``; this is what Ultralytics prints as
  ``GPU_mem`` during epoch 1 (it prints ``memory_reserved()``, which only grows while training).
- ``device_total_bytes``: peak reserved plus the CUDA context: what nvidia-smi shows.

Whole epochs (``data=`` or ``epochs>=2``, ``yolomem.result.epochs``): training batches of varying density,
the validation pass after each epoch, and training again, replayed for several seeds.
``epoch1_reserved_bytes`` / ``steady_reserved_bytes``: the median GPU_mem of epoch 1 / epochs 2+;
``peak_reserved_bytes`` then covers validation too; ``host``: RAM for ``cache=ram`` and workers.
Without them ``steady_reserved_bytes`` is None.

Not modelled (listed in ``Estimate.unaccounted``): cuDNN/cuBLAS workspaces (transient, requested
from the caching allocator by kernels the trace cannot see), NCCL buffers, and other processes on
the GPU.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

from yolomem.allocator.replay import Replay, replay_trace
from yolomem.config.settings import EstimateConfig
from yolomem.config.dataset import DatasetSummary
from yolomem.result.epochs import EpochSimulation
from yolomem.result.host_memory import HostMemory
from yolomem.errors import UserError
from yolomem.config.gpus import CUDA_CONTEXT_BYTES, GiB, find_gpu
from yolomem.trace.tracer import Trace

TOP_LAYERS = 10


@dataclass(frozen=True)
class LayerMemory:
    module: str
    bytes: int


@dataclass(frozen=True)
class Estimate:
    """The result of ``estimate()``. All sizes in bytes."""

    yolomem_version: str
    torch_version: str
    ultralytics_version: str
    config: EstimateConfig  # as resolved: the model's name, imgsz rounded to the stride, the optimizer chosen
    task: str
    params: int
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    steady_reserved_bytes: int | None
    context_bytes: int
    device_total_bytes: int
    breakdown: dict[str, int]
    top_layers: tuple[LayerMemory, ...]
    reserved_per_iteration: tuple[int, ...]
    peak_phase: str
    unaccounted: tuple[str, ...]
    notes: tuple[str, ...]
    gpu_mem_unit: str  # "GiB" or "GB": the unit the installed Ultralytics prints GPU_mem in
    seconds: float
    gpu: str | None = None
    gpu_total_bytes: int | None = None
    fits: bool | None = None
    num_alloc_retries: int = 0
    trace: Trace | None = field(default=None, repr=False, compare=False)
    # whole epochs (yolomem.result.epochs), when data= or epochs>=2 is given
    epoch1_reserved_bytes: int | None = None
    epochs: EpochSimulation | None = None
    dataset: DatasetSummary | None = None
    host: HostMemory | None = None

    @property
    def gpu_mem_printed(self) -> str:
        """What the Ultralytics progress bar will show in the GPU_mem column, e.g. '2.31G'."""
        divisor = GiB if self.gpu_mem_unit == "GiB" else 1e9
        return f"{self.peak_reserved_bytes / divisor:.3g}G"

    def to_json(self) -> dict:
        return {
            "yolomem_version": self.yolomem_version,
            "torch_version": self.torch_version,
            "ultralytics_version": self.ultralytics_version,
            "config": self.config.to_json() | {"task": self.task},
            "task": self.task,
            "params": self.params,
            "peak_allocated_bytes": self.peak_allocated_bytes,
            "peak_reserved_bytes": self.peak_reserved_bytes,
            "steady_reserved_bytes": self.steady_reserved_bytes,
            "context_bytes": self.context_bytes,
            "device_total_bytes": self.device_total_bytes,
            "gpu_mem_printed": self.gpu_mem_printed,
            "gpu_mem_unit": self.gpu_mem_unit,
            "breakdown": dict(self.breakdown),
            "top_layers": [{"module": layer.module, "bytes": layer.bytes} for layer in self.top_layers],
            "reserved_per_iteration": list(self.reserved_per_iteration),
            "peak_phase": self.peak_phase,
            "gpu": self.gpu,
            "gpu_total_bytes": self.gpu_total_bytes,
            "fits": self.fits,
            "num_alloc_retries": self.num_alloc_retries,
            "unaccounted": list(self.unaccounted),
            "notes": list(self.notes),
            "seconds": round(self.seconds, 3),
            "epoch1_reserved_bytes": self.epoch1_reserved_bytes,
            "epochs": self.epochs.to_json() if self.epochs else None,
            "dataset": self.dataset.to_json() if self.dataset else None,
            "host": self.host.to_json() if self.host else None,
        }


def _needs_download(data: str) -> bool:
    """A bare dataset name such as ``coco8.yaml`` that is not on disk: Ultralytics downloads those."""
    from pathlib import Path

    path = Path(data).expanduser()
    return not path.exists() and len(path.parts) == 1


def _breakdown(replay: Replay, context_bytes: int, peak_reserved_bytes: int | None = None) -> dict[str, int]:
    """Bytes by category at the training iteration's peak; allocator rounding, cache and context make up
    the rest. When validation or later epochs raise the peak (``yolomem.result.epochs``), the growth of the
    allocator's cache they cause is its own entry, so the parts add up to ``device_total_bytes``."""
    from yolomem.trace.tracer import CATEGORIES

    by_category = dict.fromkeys(CATEGORIES, 0)
    for event in replay.live_at_peak:
        by_category[event.category] += event.nbytes
    traced = sum(by_category.values())
    by_category["allocator_rounding"] = max(replay.peak_allocated_bytes - traced, 0)
    by_category["cache_fragmentation"] = replay.peak_reserved_bytes - max(replay.peak_allocated_bytes, traced)
    by_category["validation_epochs_growth"] = max((peak_reserved_bytes or 0) - replay.peak_reserved_bytes, 0)
    by_category["cuda_context"] = context_bytes
    return by_category


def _top_layers(replay: Replay) -> tuple[LayerMemory, ...]:
    per_layer: dict[str, int] = defaultdict(int)
    for event in replay.live_at_peak:
        if event.category == "activation" and event.module:
            per_layer[_layer_of(event.module)] += event.nbytes
    ranked = sorted(per_layer.items(), key=lambda item: -item[1])[:TOP_LAYERS]
    return tuple(LayerMemory(module, size) for module, size in ranked)


def _layer_of(module_path: str) -> str:
    """'model.4.m.0.cv1.conv' -> 'model.4' (the YAML layer): readable, and what users can freeze."""
    parts = module_path.split(".")
    return ".".join(parts[:2]) if parts[0] == "model" and len(parts) > 1 else module_path


def _versions() -> tuple[str, str, str]:
    import torch
    import ultralytics

    from yolomem import __version__

    return __version__, torch.__version__.split("+")[0], ultralytics.__version__


def estimate(model: str | EstimateConfig = "yolov8n.yaml", **settings) -> Estimate:
    """Estimate the GPU memory of training ``model`` with the given settings.

    ``settings`` take the CLI's keys and values (``imgsz=640, batch=16, amp=True, optimizer='auto',
    instances=8, ...``). Raises ``UserError`` for bad input.
    """
    if isinstance(model, EstimateConfig):
        config = model.with_changes(**settings) if settings else model
    else:
        config = EstimateConfig.from_mapping({"model": model, **settings})
    return estimate_config(config)


@dataclass(frozen=True)
class Prepared:
    """A config made ready to trace: its model resolved, the loop that trains it, whole epochs asked for."""

    config: EstimateConfig
    resolved: object  # yolomem.config.models.ResolvedModel
    request: object | None  # yolomem.result.epochs.EpochRequest, when data= or epochs>=2
    notes: tuple[str, ...]


def prepare(config: EstimateConfig) -> Prepared:
    """What ``estimate_config`` does before it needs a traced run (``yolomem.result.runs`` asks it too)."""
    from yolomem.loops import resolve_model
    from yolomem.result.epochs import epoch_request

    resolved = resolve_model(config.model, config.framework)
    if resolved.framework != config.framework:  # e.g. a bare yolov4 selects the yolov5 loop (see resolved.note)
        config = config.with_changes(framework=resolved.framework)
    notes = list(config.notes)
    if resolved.note:
        notes.append(resolved.note)
    if config.data and _needs_download(config.data):
        notes.append(f"data={config.data} is not a local file (Ultralytics would download it); "
                     f"objects per image from instances={config.instances:g} instead")  # fmt: skip
        config = config.with_changes(data=None)
    request = epoch_request(config, resolved)  # None unless data= or epochs>=2
    if request is not None:
        config = request.config
        notes.extend(request.notes)
    return Prepared(config, resolved, request, tuple(notes))


def estimate_config(config: EstimateConfig) -> Estimate:
    from yolomem.loops import get_loop
    from yolomem.result.runs import obtain_run

    started = time.perf_counter()
    gpu = find_gpu(config.gpu, config.gpu_mem) if (config.gpu or config.gpu_mem) else None
    prepared = prepare(config)
    config, resolved, request, notes = prepared.config, prepared.resolved, prepared.request, list(prepared.notes)
    run = obtain_run(config, resolved, request)  # cached, derived from other batches, or traced
    notes.extend(run.notes)
    context = gpu.context_bytes if gpu else CUDA_CONTEXT_BYTES
    base_trace = request.base_trace(run.trace) if request else run.trace
    replay = replay_trace(base_trace, config.alloc_conf, capacity_bytes=gpu.usable_bytes if gpu else None)
    simulation = None
    if request is not None:
        simulation = request.simulate(run.trace, config.alloc_conf, gpu.total_bytes if gpu else None,
                                      gpu.usable_bytes if gpu else None)  # fmt: skip
        if simulation.oom and not replay.oom:
            notes.append(f"does not fit {gpu.name} in epoch 2+ or validation: {simulation.oom}")
    host = None
    if request is not None and request.dataset is not None:
        from yolomem.result.host_memory import host_memory

        host = host_memory(request.dataset, run.imgsz, config.batch, config.workers, config.cache)
    elif config.cache:
        notes.append(f"cache={config.cache}: host RAM needs the image sizes; pass data=path/to/data.yaml")
    if replay.oom:
        notes.append(f"does not fit {gpu.name}: {replay.oom}")
    yolomem_version, torch_version, ultralytics_version = _versions()
    unaccounted = [
        "cuDNN/cuBLAS workspaces: transient buffers kernels take from the caching allocator; not traced",
    ]
    if simulation is None:
        unaccounted.append("validation pass and epochs 2+: not simulated (pass data=... or epochs=2; steady_reserved_bytes is null)")
    else:
        unaccounted += [f"epochs: {a}" for a in simulation.assumptions]
    unaccounted += [f"assumed {a.question} = {a.answer} ({a.phase})" for a in _distinct(run.trace.oracle_answers)]
    unaccounted += [f"autocast probe failed for {op}; its arguments were left uncast" for op in sorted(run.probe_failures)]
    peak_event = base_trace.events[replay.peak_index] if base_trace.events else None
    peak_reserved, peak_phase = replay.peak_reserved_bytes, peak_event.phase if peak_event else ""
    if simulation is not None and simulation.peak_reserved.median > peak_reserved:
        peak_reserved, peak_phase = simulation.peak_reserved.median, simulation.peak_phase
    resolved_config = config.with_changes(model=resolved.name, imgsz=run.imgsz, optimizer=run.optimizer)
    return Estimate(
        yolomem_version=yolomem_version,
        torch_version=torch_version,
        ultralytics_version=ultralytics_version,
        config=resolved_config,
        task=resolved.task,
        params=run.params,
        peak_allocated_bytes=replay.peak_allocated_bytes,
        peak_reserved_bytes=peak_reserved,
        steady_reserved_bytes=simulation.steady_reserved.median if simulation else None,
        context_bytes=context,
        device_total_bytes=peak_reserved + context,
        breakdown=_breakdown(replay, context, peak_reserved),
        top_layers=_top_layers(replay),
        reserved_per_iteration=replay.reserved_per_iteration,
        peak_phase=peak_phase,
        unaccounted=tuple(unaccounted),
        notes=tuple(notes),
        gpu_mem_unit=get_loop(config.framework).gpu_mem_unit(),
        seconds=time.perf_counter() - started,
        gpu=gpu.name if gpu else None,
        gpu_total_bytes=gpu.total_bytes if gpu else None,
        fits=(replay.oom is None and not (simulation and simulation.oom)) if gpu else None,
        num_alloc_retries=replay.num_alloc_retries,
        trace=run.trace,
        epoch1_reserved_bytes=simulation.epoch1_reserved.median if simulation else None,
        epochs=simulation,
        dataset=request.dataset if request else None,
        host=host,
    )


def _distinct(answers):
    seen, out = set(), []
    for answer in answers:
        key = (answer.question.split("[")[0], answer.phase)
        if key not in seen:
            seen.add(key)
            out.append(answer)
    return out


__all__ = ["Estimate", "LayerMemory", "estimate", "UserError"]
