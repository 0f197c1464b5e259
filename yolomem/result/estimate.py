"""``estimate()``: the GPU memory an Ultralytics training run will take, without a GPU.

How the number is made:
1. The real model (Ultralytics' own modules, built from its YAML) runs real training iterations
   (preprocess, forward, loss with its assigner, scaled backward, unscale + clip, optimizer step,
   EMA update) on fake tensors, under CUDA's autocast policy (``yolomem.trace.autocast``). Every storage
   allocation and free is recorded (``yolomem.trace.tracer``).
2. That event stream is replayed through a model of PyTorch's CUDA caching allocator
   (``yolomem.allocator.caching``): 512-byte rounding, small/large pools, segment sizes, best fit,
   splitting, merging, cache, free-and-retry.

What the figures mean:
- ``peak_allocated_bytes``: ``torch.cuda.max_memory_allocated()`` over the traced iterations.
- ``peak_reserved_bytes``: ``torch.cuda.max_memory_reserved()``; this is what Ultralytics prints as
  ``GPU_mem`` during epoch 1 (it prints ``memory_reserved()``, which only grows while training).
- ``device_total_bytes``: peak reserved plus the CUDA context: what nvidia-smi shows.
- ``peak_reserved_upper_bytes`` / ``device_total_upper_bytes`` / ``steady_reserved_upper_bytes``: the
  same with each stated uncertainty at its high end (``yolomem.result.upper``); fit verdicts use them.
- With ``gpu=``: ``fits`` (``yolomem.result.fits``: the upper figure within the card minus the CUDA
  context minus ``margin``), and ``oom``, where a typical run on the card would run out of memory (the
  replay with the card's usable memory as capacity, free-and-retry included). The card never changes
  the figures above: they are the full requirement.

Object density (``yolomem.loops.density``): the traced batches are a typical one and the densest batch
of epoch 1 (mosaics of 4 images, objects per image with a heavy tail around ``instances=``, or the
dataset's labels). Kernel workspaces (``yolomem.trace.workspaces``): cuBLAS buffers per thread, cuDNN
per conv call, each its own breakdown line with where its size comes from.

Whole epochs (``data=`` or ``epochs>=2``, ``yolomem.result.epochs``): training batches of varying density,
the validation pass after each epoch, and training again, replayed for several seeds.
``epoch1_reserved_bytes`` / ``steady_reserved_bytes``: the median GPU_mem of epoch 1 / epochs 2+;
``peak_reserved_bytes`` then covers validation too; ``host``: RAM for ``cache=ram`` and workers.
Without them ``steady_reserved_bytes`` is None.

Not modelled (listed in ``Estimate.unaccounted``, each with how large it could be): NCCL buffers,
other processes on the GPU, and the assumptions of the epoch simulation.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from yolomem.allocator.replay import OomPoint, Replay, replay_trace, replay_trace_and_prefix
from yolomem.config.dataset import DatasetSummary
from yolomem.config.gpus import CUDA_CONTEXT_BYTES, CUDA_CONTEXT_UPPER_BYTES, GiB, find_gpu
from yolomem.config.settings import EstimateConfig
from yolomem.config.versions import traced_versions
from yolomem.errors import UserError
from yolomem.loops.density import DensityPlan
from yolomem.recent import Recent
from yolomem.result.epochs import EpochRequest, EpochSimulation
from yolomem.result.fits import Budget, cache_kept_between_epochs, fits
from yolomem.result.host_memory import HostMemory
from yolomem.result.oom_retry import OomRetry, RetriedBatch, follow_retries, retried
from yolomem.result.upper import DensitySensitivity, UpperFigure, allowance_for, density_sensitivity
from yolomem.trace.tracer import Trace

if TYPE_CHECKING:
    from yolomem.config.gpus import Gpu
    from yolomem.config.models import ResolvedModel
    from yolomem.loops.base import TracedRun
    from yolomem.loops.autobatch_card import AutoBatchPick

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
    fits: bool | None = None  # yolomem.result.fits: the upper figure within the card minus context and margin
    # "epoch 1": ``fits`` judges epoch 1 alone where the trainer keeps its cache into epoch 2 on the card
    # (yolomem.result.fits.cache_kept_between_epochs: epochs=N or ``yolomem fit`` judge the whole run); else "run"
    fits_scope: str | None = None
    margin: float | None = None  # the safety margin of ``fits`` (with a GPU)
    capacity_bytes: int | None = None  # what the card gives the run: its memory minus context and margin
    host_held_bytes: int = 0  # a Jetson's: the training process's RAM, out of the same DRAM (Budget.host_bytes)
    oom: OomPoint | None = None  # where a typical run on the card would run out of memory (None: it would not)
    num_alloc_retries: int = 0
    trace: Trace | None = field(default=None, repr=False, compare=False)
    # whole epochs (yolomem.result.epochs), when data= or epochs>=2 is given
    epoch1_reserved_bytes: int | None = None
    epochs: EpochSimulation | None = None
    dataset: DatasetSummary | None = None
    host: HostMemory | None = None
    upper: UpperFigure | None = None  # yolomem.result.upper
    density: DensityPlan | None = None  # the traced batches' objects per sample (None: no labels)
    density_sensitivity: DensitySensitivity | None = None
    breakdown_sources: dict[str, str] = field(default_factory=dict)  # breakdown line -> where its size comes from
    autobatch: AutoBatchPick | None = None  # batch=-1 or a fraction: what AutoBatch picked (config.batch holds it)
    oom_retry: OomRetry | None = None  # after ``oom`` in a first-epoch step: the batches the trainer retries at

    @property
    def peak_reserved_upper_bytes(self) -> int:
        return self.upper.peak_reserved_bytes if self.upper else self.peak_reserved_bytes

    @property
    def device_total_upper_bytes(self) -> int:
        return self.upper.device_total_bytes if self.upper else self.device_total_bytes

    @property
    def steady_reserved_upper_bytes(self) -> int | None:
        return self.upper.steady_reserved_bytes if self.upper else self.steady_reserved_bytes

    @property
    def epoch1_reserved_upper_bytes(self) -> int | None:
        return self.upper.epoch1_reserved_bytes if self.upper else self.epoch1_reserved_bytes

    @property
    def gpu_mem_printed(self) -> str:
        """The most the trainer's GPU_mem column will show, e.g. '2.31G': the training peak; with epochs
        simulated, the highest epoch's (median). Validation's own peak, which the column never prints
        when the trainer empties the cache after it, is in ``peak_reserved_bytes``."""
        return self._printed(self._column(self.peak_reserved_bytes, self.epoch1_reserved_bytes, self.steady_reserved_bytes))

    @property
    def gpu_mem_upper_printed(self) -> str:
        return self._printed(self._column(self.peak_reserved_upper_bytes, self.epoch1_reserved_upper_bytes,
                                          self.steady_reserved_upper_bytes))  # fmt: skip

    @staticmethod
    def _column(peak: int, epoch1: int | None, steady: int | None) -> int:
        printed = [figure for figure in (epoch1, steady) if figure is not None]
        return max(printed) if printed else peak

    def _printed(self, nbytes: int) -> str:
        divisor = GiB if self.gpu_mem_unit == "GiB" else 1e9
        return f"{nbytes / divisor:.3g}G"

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
            "gpu_mem_upper_printed": self.gpu_mem_upper_printed,
            "gpu_mem_unit": self.gpu_mem_unit,
            "peak_reserved_upper_bytes": self.peak_reserved_upper_bytes,
            "device_total_upper_bytes": self.device_total_upper_bytes,
            "steady_reserved_upper_bytes": self.steady_reserved_upper_bytes,
            "upper": self.upper.to_json() if self.upper else None,
            "density": self.density.to_json() if self.density else None,
            "density_sensitivity": self.density_sensitivity.to_json() if self.density_sensitivity else None,
            "breakdown": dict(self.breakdown),
            "breakdown_sources": dict(self.breakdown_sources),
            "top_layers": [{"module": layer.module, "bytes": layer.bytes} for layer in self.top_layers],
            "reserved_per_iteration": list(self.reserved_per_iteration),
            "peak_phase": self.peak_phase,
            "gpu": self.gpu,
            "gpu_total_bytes": self.gpu_total_bytes,
            "fits": self.fits,
            "fits_scope": self.fits_scope,
            "margin": self.margin,
            "capacity_bytes": self.capacity_bytes,
            "host_held_bytes": self.host_held_bytes,
            "oom": self.oom.to_json() if self.oom else None,
            "num_alloc_retries": self.num_alloc_retries,
            "unaccounted": list(self.unaccounted),
            "notes": list(self.notes),
            "seconds": round(self.seconds, 3),
            "epoch1_reserved_bytes": self.epoch1_reserved_bytes,
            "epochs": self.epochs.to_json() if self.epochs else None,
            "dataset": self.dataset.to_json() if self.dataset else None,
            "host": self.host.to_json() if self.host else None,
            "autobatch": self.autobatch.to_json() if self.autobatch else None,
            "oom_retry": self.oom_retry.to_json() if self.oom_retry else None,
        }


def _breakdown(replay: Replay, context_bytes: int, peak_reserved_bytes: int | None = None,
               cudnn_bytes: int = 0) -> dict[str, int]:
    """Bytes by category at the training iteration's peak; allocator rounding, cache and context make up
    the rest. When validation or later epochs raise the peak (``yolomem.result.epochs``), the growth of the
    allocator's cache they cause is its own entry, so the parts add up to ``device_total_bytes``.
    ``cudnn_bytes``: what cuDNN's transient workspaces add to the peak reserved (they are seldom alive
    at the peak, so their cost is cache they made the allocator grow); taken out of the cache line."""
    from yolomem.trace.tracer import CATEGORIES

    by_category = dict.fromkeys(CATEGORIES, 0)
    for event in replay.live_at_peak:
        by_category[event.category] += event.nbytes
    traced = sum(by_category.values())
    cache = replay.peak_reserved_bytes - max(replay.peak_allocated_bytes, traced)
    by_category["cudnn_workspace"] += max(min(cudnn_bytes, cache), 0)
    by_category["allocator_rounding"] = max(replay.peak_allocated_bytes - traced, 0)
    by_category["cache_fragmentation"] = cache - max(min(cudnn_bytes, cache), 0)
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


def estimate(model: str | EstimateConfig = "yolov8n.yaml", **settings) -> Estimate:
    """Estimate the GPU memory of training ``model`` with the given settings.

    ``settings`` take the CLI's keys and values (``imgsz=640, batch=16, amp=True, optimizer='auto',
    instances=8, ...``). Raises ``UserError`` for bad input.
    """
    if isinstance(model, EstimateConfig):
        config = model.with_changes(**settings) if settings else model
    else:
        config = EstimateConfig.from_mapping({"model": model, **settings})
    return estimate_config(config, follow_oom_retry=True)


@dataclass
class EstimateFigures:
    """What every figure of an estimate starts from: the run, its replays, and the upper figure."""

    config: EstimateConfig
    resolved: ResolvedModel
    request: EpochRequest | None
    notes: list[str]
    gpu: Gpu | None
    run: TracedRun
    base_trace: Trace
    dense_trace: Trace
    replay: Replay
    replay_dense: Replay | None  # the upper density with the expected workspaces (None: no upper iteration)
    simulation: EpochSimulation | None
    peak_reserved: int
    peak_phase: str
    upper: UpperFigure
    seconds: float  # what they took
    autobatch: AutoBatchPick | None = None


# The last figures computed, by config, while the run source stays the same: a sweep asks again for
# what it probed before (fit --explain's rungs share answers and brackets: 14 of its 58 asks were
# repeats, about 2 s of replays).
RECENT_FIGURES = 16
_recent_figures: Recent = Recent(RECENT_FIGURES)  # EstimateConfig -> EstimateFigures
_recent_source: list = [None]  # the run source they came from (yolomem.result.runs.default_source)


def forget_recent_figures() -> None:
    """Compute every figure afresh (tests that change the code's behaviour between estimates)."""
    _recent_figures.clear()


def estimate_figures(config: EstimateConfig) -> EstimateFigures:
    """The run of ``config``, its replays and its upper figure: all a fit verdict needs (searches judge
    their probes with it, without the breakdown and the other replays); ``estimate_config`` finishes
    an estimate from them."""
    from yolomem.result.runs import default_source, log, run_label

    if _recent_source[0] is not default_source():  # --no-cache, configure(): runs come from elsewhere now
        _recent_figures.clear()
        _recent_source[0] = default_source()
    known = _recent_figures.get(config)
    if known is not None:
        log.info("%s: estimated earlier, its figures kept in memory", run_label(config))
        return replace(known, seconds=0.0)  # they took no time this time
    figures = _estimate_figures(config)
    _recent_figures[config] = figures
    return figures


def _estimate_figures(config: EstimateConfig) -> EstimateFigures:
    from yolomem.result.prepare import prepare
    from yolomem.result.runs import obtain_run

    started = time.perf_counter()
    gpu = find_gpu(config.gpu, config.gpu_mem) if (config.gpu or config.gpu_mem) else None
    prepared = prepare(config)
    config, resolved, request, notes = prepared.config, prepared.resolved, prepared.request, list(prepared.notes)
    run = obtain_run(config, resolved, request, prepared.density)  # cached, derived from other batches, or traced
    notes.extend(run.notes)
    base_trace = _first_iterations(run.trace, config.iterations)
    dense_trace = _first_iterations(run.trace, config.iterations + 1) if run.upper_iteration is not None else base_trace
    # The figures are replayed without a capacity: the card never shrinks them. In whole epochs the card
    # enters only through _clear_memory(0.5), which empties the cache above half of it, as the trainer does.
    replay_dense = None
    # The upper figure also replays every term high with the large segments in the other address order:
    # the H200's driver placed each below the last (yolomem.allocator.caching._new_range), another driver
    # may place them upward, and the order decides which of two equal free blocks best fit reuses. It raised
    # 4 of the H200 matrix's 132 upper figures by 1.7-2.7 points, and the T4 yolov5s example's (the yolov5
    # tutorial) from -0.4 to +6.4 % of the measured GPU_mem at epoch 0 (benchmarks/bench_public_examples.py).
    upward = replay_trace(dense_trace, config.alloc_conf, upper=True, large_segments_descending=False)
    if run.upper_iteration is None:
        replay = replay_trace(base_trace, config.alloc_conf)
        upper_replays = [replay_trace(base_trace, config.alloc_conf, upper=True), upward]
    else:
        # the upper figure takes each term alone too (the upper density with the expected workspaces,
        # the upper workspaces at the expected density): the allocator is not monotone (larger transient
        # blocks can lay out the segments so that a later peak is lower). The base trace is the dense
        # one's first iterations: one pass gives both.
        replay, replay_dense = replay_trace_and_prefix(dense_trace, config.iterations, config.alloc_conf)
        upper_replays = [*replay_trace_and_prefix(dense_trace, config.iterations, config.alloc_conf, upper=True),
                         replay_dense, upward]  # fmt: skip
    simulation, simulations_upper = None, []
    upper_level = (run.upper_iteration, run.density.n_max_upper) if run.upper_iteration is not None else None
    if request is not None:
        card = gpu.total_bytes if gpu else None
        simulation = request.simulate(run.trace, config.alloc_conf, card, None)
        # as for one step, both terms high and the upper density alone (the allocator is not monotone):
        # of 10 configs with whole epochs (yolov8n at 16 and 32, yolov8s-seg, yolov8m at 1024, yolov8l,
        # yolo11n-seg at 48, yolo11s, yolov10n, yolo11n FP32, yolov5s), the density alone gave the highest
        # steady figure in 2 (yolo11s 640/16: 5.92 GiB; both together 5.13, expected 5.59) and epoch 1's
        # in 4; the expected simulation tied it in 1 (yolov8l 640/8). The workspaces alone never did, and
        # would cost one more simulation (about 0.7 s there).
        # Both high once more with the large segments in the other address order, as for one step: the T4
        # yolov5s example's epochs 2+ from +1.2 to +6.2 % (about 2.5 s more for yolov5s with epochs=3).
        variants = [(upper_level, True, True), (upper_level, False, True)] if upper_level else [(None, True, True)]
        variants.append((upper_level, True, False))
        simulations_upper = [simulation] + [
            request.simulate(run.trace, config.alloc_conf, card, None, upper=level, upper_workspaces=workspaces,
                             large_segments_descending=descending)
            for level, workspaces, descending in variants
        ]  # fmt: skip
    if simulation is not None and simulation.plan.batches_per_epoch == 1:
        # The traced step runs its iterations back to back; a run whose epochs hold one batch never does
        # (the batch, the validation, the next epoch's batch, as the simulation replays it): its step is
        # the first iteration alone, and the simulations give the rest.
        base_trace = _first_iterations(run.trace, 1)
        replay, upper_replays = replay_trace(base_trace, config.alloc_conf), []
    peak_event = base_trace.events[replay.peak_index] if base_trace.events else None
    peak_reserved, peak_phase = replay.peak_reserved_bytes, peak_event.phase if peak_event else ""
    if simulation is not None and simulation.peak_reserved.median > peak_reserved:
        peak_reserved, peak_phase = simulation.peak_reserved.median, simulation.peak_phase
    upper = _upper_figure(peak_reserved, upper_replays, simulations_upper, run.density, allowance_for(config.amp, config.step, config.framework))
    return EstimateFigures(config, resolved, request, notes, gpu, run, base_trace, dense_trace, replay, replay_dense,
                           simulation, peak_reserved, peak_phase, upper, time.perf_counter() - started,
                           prepared.autobatch)  # fmt: skip


def estimate_config(config: EstimateConfig, figures: EstimateFigures | None = None, *,
                    follow_oom_retry: bool = False) -> Estimate:  # fmt: skip
    """The estimate of ``config``; ``figures``: ``estimate_figures`` of the same config, if it was judged.
    ``follow_oom_retry``: where a typical run on the card runs out of memory in a step the trainer retries
    at a halved batch, estimate those batches too (``oom_retry``; the sweeps, which judge many
    configs, leave it out)."""
    from yolomem.loops import get_loop

    figures = figures or estimate_figures(config)
    started = time.perf_counter() - figures.seconds
    config, resolved, request, gpu, run = figures.config, figures.resolved, figures.request, figures.gpu, figures.run
    notes = list(figures.notes)  # this estimate's: the figures may be finished again (kept, or a probe's)
    base_trace, replay, simulation = figures.base_trace, figures.replay, figures.simulation
    peak_reserved, peak_phase, upper = figures.peak_reserved, figures.peak_phase, figures.upper
    context = gpu.context_bytes if gpu else CUDA_CONTEXT_BYTES
    host = None
    if request is not None and request.dataset is not None:
        from yolomem.result.host_memory import host_memory

        host = host_memory(request.dataset, run.imgsz, config.batch, config.workers, config.cache)
    elif config.cache:
        notes.append(f"cache={config.cache}: host RAM needs the image sizes; pass data=path/to/data.yaml")
    yolomem_version, torch_version, ultralytics_version = traced_versions()
    budget = Budget(gpu, config.margin) if gpu else None
    # the verdict uses the upper figure: a run 9 in 10 stay under must fit, not just the typical one
    fits_card = fits(upper.peak_reserved_bytes, budget) if budget else None
    kept = cache_kept_between_epochs(config, budget) if budget else None
    if kept is not None:
        notes.append(f"on {budget.gpu.name} the verdict judges epoch 1 alone: {kept.why}; epochs={kept.epochs} (the "
                     "trainer's default run) or yolomem fit judge the whole run")  # fmt: skip
    on_card = _on_the_card(budget, peak_reserved, replay, base_trace, request, run.trace, config.alloc_conf) if budget else None
    if budget and budget.host_bytes:
        workers = " and dataloader workers (host RAM above)" if host is not None else ""
        notes.append(f"{budget.gpu.name} shares its DRAM with the host: the verdict also holds back the training "
                     f"process's RAM, {budget.host_bytes / GiB:.2f} GiB (Python, torch, CUDA libraries){workers}; "
                     "the OS and other processes need some too")  # fmt: skip
    oom_retry = None
    if budget and not fits_card:
        notes.append(_does_not_fit(budget, upper.peak_reserved_bytes, peak_reserved, on_card))
        oom_retry = _oom_retry(config, budget, on_card) if follow_oom_retry else None
        if oom_retry is not None:
            notes.append(oom_retry.note(config.batch, config.nbs))
    sensitivity = None
    if run.density is not None and figures.replay_dense is not None:
        sensitivity = density_sensitivity(run.density.n_max, run.density.n_max_upper, replay.peak_reserved_bytes,
                                          figures.replay_dense.peak_reserved_bytes)  # fmt: skip
    cudnn_bytes = 0  # what cuDNN's workspaces add to the peak: nothing to replay without where all are 0 bytes
    if any(e.nbytes and e.category == "cudnn_workspace" for e in base_trace.events):
        without_cudnn = replay_trace(base_trace, config.alloc_conf, without=frozenset({"cudnn_workspace"}))
        cudnn_bytes = max(replay.peak_reserved_bytes - without_cudnn.peak_reserved_bytes, 0)
    unaccounted = _unaccounted(run, simulation, request, config, base_trace, cudnn_bytes)
    # an AutoBatch probe (step=fwd_bwd) builds no optimizer: the config keeps the one asked for
    optimizer = run.optimizer if config.step == "train" else config.optimizer
    resolved_config = config.with_changes(model=resolved.name, imgsz=run.imgsz, optimizer=optimizer)
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
        breakdown=_breakdown(replay, context, peak_reserved, cudnn_bytes),
        top_layers=_top_layers(replay),
        reserved_per_iteration=replay.reserved_per_iteration,
        peak_phase=peak_phase,
        unaccounted=tuple(unaccounted),
        notes=tuple(notes),
        gpu_mem_unit=get_loop(config.framework).gpu_mem_unit(),
        seconds=time.perf_counter() - started,
        gpu=gpu.name if gpu else None,
        gpu_total_bytes=gpu.total_bytes if gpu else None,
        fits=fits_card,
        fits_scope=None if budget is None else "epoch 1" if kept is not None else "run",
        margin=config.margin if budget else None,
        capacity_bytes=budget.capacity_bytes if budget else None,
        host_held_bytes=budget.host_bytes if budget else 0,
        oom=on_card.oom if on_card else None,
        num_alloc_retries=on_card.num_alloc_retries if on_card else replay.num_alloc_retries,
        trace=run.trace,
        epoch1_reserved_bytes=simulation.epoch1_reserved.median if simulation else None,
        epochs=simulation,
        dataset=request.dataset if request else None,
        host=host,
        upper=upper,
        density=run.density,
        density_sensitivity=sensitivity,
        breakdown_sources=_breakdown_sources(run, base_trace, cudnn_bytes),
        autobatch=figures.autobatch,
        oom_retry=oom_retry,
    )


def _first_iterations(trace: Trace, iterations: int) -> Trace:
    """The trace of its first ``iterations`` iterations (and the setup before them)."""
    bounds = list(trace.iteration_bounds)
    end = bounds[iterations] if len(bounds) > iterations else len(trace.events)
    return Trace(events=trace.events[:end], oracle_answers=trace.oracle_answers, iteration_bounds=bounds[:iterations])


@dataclass(frozen=True)
class _OnTheCard:
    """The typical run replayed with the card's usable memory as the allocator's capacity."""

    oom: OomPoint | None  # where it would run out of memory; None: it runs (possibly after freeing cache)
    num_alloc_retries: int
    in_step: bool = False  # ``oom`` is in the training iterations of epoch 1, not its validation or epoch 2


def _on_the_card(budget: Budget, peak_reserved: int, replay: Replay, base_trace: Trace, request, trace: Trace,
                 alloc_conf: str | None) -> _OnTheCard:  # fmt: skip
    """Where a run on the card would stop. Below the usable memory the card changes nothing (no replay
    needed); above it, the allocator frees its cache and retries before it gives up."""
    usable = budget.usable_bytes
    if peak_reserved <= usable:
        return _OnTheCard(None, replay.num_alloc_retries)
    capped = replay_trace(base_trace, alloc_conf, capacity_bytes=usable)
    if capped.oom is not None or request is None:
        return _OnTheCard(capped.oom, capped.num_alloc_retries, in_step=capped.oom is not None)
    simulation = request.simulate(trace, alloc_conf, budget.gpu.total_bytes, usable)
    return _OnTheCard(simulation.oom, capped.num_alloc_retries)


def _oom_retry(config: EstimateConfig, budget: Budget, on_card: _OnTheCard) -> OomRetry | None:
    """Where the trainer catches the typical run's out-of-memory error (``yolomem.result.oom_retry``):
    each halved batch estimated and judged on the card as the asked one."""
    from yolomem.loops import get_loop

    trainer, retries = get_loop(config.framework).oom_retries(config)
    if not retries or not retried(on_card.oom, on_card.in_step):
        return None

    def judge(batch: int) -> tuple[RetriedBatch, bool]:
        smaller = estimate_figures(config.with_changes(batch=batch))
        card = _on_the_card(budget, smaller.peak_reserved, smaller.replay, smaller.base_trace, smaller.request,
                            smaller.run.trace, config.alloc_conf)  # fmt: skip
        upper = smaller.upper.peak_reserved_bytes
        outcome = RetriedBatch(batch, smaller.peak_reserved, upper, fits(upper, budget), card.oom)
        return outcome, retried(card.oom, card.in_step)

    return follow_retries(config.batch, retries, trainer, judge)


def _does_not_fit(budget: Budget, required: int, expected: int, on_card: _OnTheCard) -> str:
    text = (f"does not fit {budget.gpu.name}: the upper figure needs {required / GiB:.2f} GiB reserved, "
            f"{budget.capacity_bytes / GiB:.2f} GiB available after {budget.held_back()} (CUDA context "
            f"{budget.context_bytes >> 20} MiB) and margin={budget.margin:g}")  # fmt: skip
    if fits(expected, budget):
        return f"{text}; the expected figure ({expected / GiB:.2f} GiB) fits"
    if on_card.oom is not None:
        return f"{text}; on the card a typical run runs out of memory in {on_card.oom.where} (oom: {on_card.oom.message})"
    if expected > budget.usable_bytes:
        return f"{text}; on the card the allocator would free its cache and retry, and the step completes with no room left"
    return text


def _upper_figure(peak_reserved: int, upper_replays: list[Replay], simulations_upper: list, density,
                  allowance) -> UpperFigure:  # fmt: skip
    """The upper figure: the highest of the expected peak and the upper replays (every term high, each
    alone, and every term high in the other segment order), then of the epoch simulations' 90th
    percentiles (both high in either order, the density alone, and the expected simulation), then the
    allowance."""
    terms = ["kernel workspaces at their upper rule (cuDNN im2col per conv call)"]
    if density is not None:
        terms.insert(0, f"densest batch at the upper density: n_max {density.n_max_upper} (expected {density.n_max})")
    if len(upper_replays) > 2:
        terms.append("whichever replays highest: both together or each alone (the caching allocator is not monotone)")
    terms.append("large segments in either address order, the driver's choice (best fit breaks ties by address)")
    terms.append(f"CUDA context {CUDA_CONTEXT_UPPER_BYTES >> 20} MiB (the most measured, yolomem.config.gpus)")
    replayed = max((r.peak_reserved_bytes for r in upper_replays), default=0)
    peak = max(peak_reserved, replayed)
    steady = epoch1 = None
    if simulations_upper:
        peak = max(peak, *(s.peak_reserved.high for s in simulations_upper))
        steady = max(s.steady_reserved.high for s in simulations_upper)
        epoch1 = max(replayed, *(s.epoch1_reserved.high for s in simulations_upper))
        terms.append("epochs: 90th percentile over seeds, the highest of both high, the density alone and as expected")
    extra = allowance.bytes_for(peak) if allowance else 0
    if allowance is not None:
        peak, steady, epoch1 = (None if x is None else x + allowance.bytes_for(x) for x in (peak, steady, epoch1))
        terms.append(f"+{extra / 2**30:.2f} GiB allowance ({allowance.source})")
    return UpperFigure(peak, steady, CUDA_CONTEXT_UPPER_BYTES, tuple(terms), epoch1, extra)


def _breakdown_sources(run, trace: Trace, cudnn_bytes: int) -> dict[str, str]:
    """Where the kernel-workspace lines' sizes come from, with the largest cuDNN block of the trace."""
    import torch

    from yolomem.trace.workspaces import rules_for

    sources = rules_for(torch.__version__).describe()
    blocks = [e for e in trace.events if e.op == "alloc" and e.category == "cudnn_workspace"]
    if blocks:
        largest = max(blocks, key=lambda e: e.nbytes)
        largest_upper = max(blocks, key=lambda e: e.size(upper=True))
        sources["cudnn_workspace"] += (f"; {len(blocks)} calls, largest {largest.nbytes / 2**20:.1f} MiB "
                                       f"({largest.module or largest.phase}), upper rule {largest_upper.size(upper=True) / 2**20:.1f} MiB")  # fmt: skip
    if not any(e.category == "cublas_workspace" for e in trace.events):
        sources["cublas_workspace"] = "0: no op of this model reaches cuBLAS (no matmul, linear or einsum)"
    return sources


def _unaccounted(run, simulation, request, config, trace: Trace, cudnn_bytes: int) -> list[str]:
    """What the figures leave out or assume, each with how large it could be."""
    unaccounted = [
        f"cuDNN workspace sizes: a stated rule, not cuDNN's choice (expected adds {cudnn_bytes / 2**20:.0f} MiB to "
        "the peak; the upper figure uses the larger im2col rule); elastic on a GPU: PyTorch picks another plan "
        "rather than fail, so it raises GPU_mem where there is room, never causes an OOM by itself",
    ]
    if simulation is None and config.step == "train":
        if config.data or (config.epochs or 0) >= 2:  # asked for, but this model's loop has no simulated validator
            why = "not simulated for this model and loop (see the notes); steady_reserved_bytes is null"
        else:
            why = "not simulated (pass data=... or epochs=2; steady_reserved_bytes is null)"
        unaccounted.append(f"validation pass and epochs 2+: {why}; the cache validation leaves often lifts GPU_mem "
                           "of epoch 2+ by 20-60 %")  # fmt: skip
    elif simulation is not None:
        grads = sum(e.nbytes for e in trace.events if e.op == "alloc" and e.category == "parameter")
        for assumption in simulation.assumptions:
            if assumption.startswith("every simulated iteration steps"):
                assumption += f" (at most one gradient copy alive: {grads / 2**20:.0f} MiB)"
            unaccounted.append(f"epochs: {assumption}")
    for answer in _distinct(run.trace.oracle_answers):
        bound = _oracle_bound(answer)
        unaccounted.append(f"assumed {answer.question} = {answer.answer} ({answer.phase}){bound}")
    unaccounted += [f"autocast probe failed for {op}; its arguments were left uncast (at most a copy of them in "
                    "the other dtype)" for op in sorted(run.probe_failures)]  # fmt: skip
    if run.density is not None and run.density.n_max_upper > 2 * run.density.n_max:
        unaccounted.append(f"object density: the densest batch of epoch 1 has {run.density.n_max} objects in one sample "
                           f"(upper {run.density.n_max_upper}); pass data=, or max_instances=, images= or tail= "
                           "if you know them")  # fmt: skip
    return unaccounted


def _oracle_bound(answer) -> str:
    """A data-dependent size the trace had to assume: the most it could be is every element."""
    import re

    if answer.question.startswith("item("):
        return ""  # a value read from a tensor (a sum, a flag), not a count of its elements
    if answer.question.startswith("bincount("):
        return "; bins: the call's minlength (one per image), else one per element"
    shape = re.search(r"\[([0-9, ]*)\]", answer.question)
    if not shape or not answer.answer.isdigit():
        return ""
    numel = 1
    for size in (int(x) for x in shape.group(1).split(",") if x.strip()):
        numel *= size
    return f"; at most {numel} (every element)"


def _distinct(answers):
    seen, out = set(), []
    for answer in answers:
        key = (answer.question.split("[")[0], answer.phase)
        if key not in seen:
            seen.add(key)
            out.append(answer)
    return out


__all__ = ["Estimate", "LayerMemory", "estimate", "UserError"]
