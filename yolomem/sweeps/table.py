"""The per-version table: params, GFLOPs, peak memory in FP32 and AMP, fits and largest batch per GPU.

Rows by default are the blog table's models at the blog's imgsz and batch (``BLOG_ROWS``; the blog's
own figures are recorded in shared/reference/seed_table.csv). Each row is estimated twice (amp=false,
amp=true) with ``yolomem.estimate``: YOLOv3/v4 and YOLOv5 n..x are the original anchor-based designs
trained by the yolov5 repo's loop, the others Ultralytics' own models and trainer.

What the columns are:
- ``peak_reserved_bytes``: ``torch.cuda.max_memory_reserved()``, what the trainers print as GPU_mem.
- ``device_total_bytes``: that plus the CUDA context: what nvidia-smi shows.
- ``peak_reserved_upper_bytes`` / ``device_total_upper_bytes``: the upper figures (``yolomem.result.upper``).
- ``fits``: ``yolomem.result.fits.verdict`` of the upper figure: "yes" within the card minus the CUDA
  context minus the margin (``margin=``, default 0.10), "near" only by eating into the margin, "no"
  above the card.
- ``max_batch``: the largest batch whose upper reserved memory fits, by the same definition.
  It is NOT traced at every batch: memory is taken as linear in batch. ``method="breakdown"`` (default,
  one trace per row and precision) splits the traced peak into its batch-independent part (weights,
  gradients, optimizer state and EMA live at the peak) and the rest, proportional to batch.
  ``method="two-point"`` traces a second, half batch and fits the line through both peaks.
- GFLOPs at the row's imgsz, batch 1: counted from the convolutions for the original designs; for
  Ultralytics models the figure its YAML (or, for YOLOv10, the paper) publishes for 640, scaled by
  (imgsz / 640)^2; for Ultralytics' classifiers, whose YAML lines are not at 640, its own count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from yolomem.config.keys import DEFAULT_MARGIN, ESTIMATE_KEYS
from yolomem.errors import UserError
from yolomem.loops import get_loop
from yolomem.result.fits import Budget, verdict
from yolomem.workers import side_by_side

DEFAULT_GPUS = ("RTX-3060-12GB", "RTX-3090", "A100-40GB", "H100-80GB")
PRECISIONS = ("fp32", "fp16")
METHODS = ("breakdown", "two-point")
_FIXED_CATEGORIES = ("parameter", "gradient", "optimizer_state", "ema")  # do not grow with batch


@dataclass(frozen=True)
class RowRequest:
    model: str
    imgsz: int
    batch: int


# The blog's rows: (its label, yolomem's name, imgsz, batch).
BLOG_ROWS: tuple[tuple[str, str, int, int], ...] = (
    ("YOLOv3-tiny", "yolov3-tiny", 416, 64), ("YOLOv3", "yolov3", 416, 16),
    ("YOLOv4-tiny", "yolov4-tiny", 416, 64), ("YOLOv4", "yolov4", 416, 16),
    ("YOLOv5s", "yolov5s", 640, 32), ("YOLOv5m", "yolov5m", 640, 16),
    ("YOLOv5l", "yolov5l", 640, 16), ("YOLOv5x", "yolov5x", 640, 8),
    ("YOLOv8n", "yolov8n", 640, 64), ("YOLOv8s", "yolov8s", 640, 32),
    ("YOLOv8m", "yolov8m", 640, 16), ("YOLOv8l", "yolov8l", 640, 16),
    ("YOLOv8x", "yolov8x", 640, 8), ("YOLOv10s", "yolov10s", 640, 64),
    ("YOLOv10b", "yolov10b", 640, 32), ("YOLOv10x", "yolov10x", 640, 8),
)  # fmt: skip
# The blog's table has YOLOv3 as the darknet design: force the original where Ultralytics has a "u" twin.
ORIGINAL_IN_BLOG = {"yolov3-tiny", "yolov3"}


def blog_rows(imgsz: int | None = None, batch: int | None = None) -> tuple[RowRequest, ...]:
    """The blog's 16 rows; ``imgsz``/``batch`` override every row (e.g. for a quick check)."""
    return tuple(RowRequest(name, imgsz or size, batch or b) for _, name, size, b in BLOG_ROWS)


def model_rows(models: Sequence[str], imgsz: int | None = None, batch: int | None = None) -> tuple[RowRequest, ...]:
    """A row per model at ``imgsz`` and ``batch``; where one is None, what the model's trainer takes
    (``yolomem.result.prepare.trainer_defaults``: a classifier at 224, a checkpoint at its own size)."""
    from yolomem.config.settings import EstimateConfig
    from yolomem.loops import resolve_model
    from yolomem.result.prepare import trainer_defaults

    rows = []
    for model in models:
        given = {key: value for key, value in (("imgsz", imgsz), ("batch", batch)) if value is not None}
        config = EstimateConfig.from_mapping({"model": model, **given})
        config = trainer_defaults(config, resolve_model(model, config.framework))[0]
        rows.append(RowRequest(model, config.imgsz, config.batch))
    return tuple(rows)


@dataclass(frozen=True)
class GpuFit:
    gpu: str
    total_bytes: int
    fits: str  # "yes" | "near" | "no"
    max_batch: int  # 0: not even batch 1 fits


@dataclass(frozen=True)
class PrecisionResult:
    precision: str  # "fp32" | "fp16"
    peak_reserved_bytes: int
    device_total_bytes: int
    gpu_mem_printed: str  # as the trainer's GPU_mem column prints it
    gpu_mem_unit: str  # "GiB" (Ultralytics 8.4) or "GB" (the yolov5 repo): each trainer prints its own
    fixed_bytes: int  # batch-independent part of the linear model
    per_image_bytes: float  # slope of the linear model
    gpus: tuple[GpuFit, ...]
    peak_reserved_upper_bytes: int = 0
    device_total_upper_bytes: int = 0

    def to_json(self) -> dict:
        return {
            "precision": self.precision,
            "peak_reserved_bytes": self.peak_reserved_bytes,
            "device_total_bytes": self.device_total_bytes,
            "peak_reserved_upper_bytes": self.peak_reserved_upper_bytes,
            "device_total_upper_bytes": self.device_total_upper_bytes,
            "gpu_mem_printed": self.gpu_mem_printed,
            "gpu_mem_unit": self.gpu_mem_unit,
            "fits": {g.gpu: g.fits for g in self.gpus},
            "max_batch": {g.gpu: g.max_batch for g in self.gpus},
            "linear_model": {"fixed_bytes": self.fixed_bytes, "per_image_bytes": round(self.per_image_bytes)},
        }


@dataclass(frozen=True)
class TableRow:
    model: str
    framework: str
    task: str
    params: int
    gflops: float | None  # None: nothing published and not counted
    gflops_source: str  # "counted" | "yaml" | "published" | "unknown"
    imgsz: int
    batch: int
    fp32: PrecisionResult
    amp: PrecisionResult
    notes: tuple[str, ...]

    def to_json(self) -> dict:
        return {
            "model": self.model, "framework": self.framework, "task": self.task, "params": self.params,
            "gflops": None if self.gflops is None else round(self.gflops, 1), "gflops_source": self.gflops_source, "imgsz": self.imgsz,
            "batch": self.batch, "fp32": self.fp32.to_json(), "amp": self.amp.to_json(), "notes": list(self.notes),
        }  # fmt: skip


@dataclass(frozen=True)
class Table:
    rows: tuple[TableRow, ...]
    gpus: tuple[str, ...]
    method: str
    iterations: int
    seconds: float
    gpu_mem_unit: str  # the rows' GPU_mem units, "/"-joined where trainers differ
    margin: float = DEFAULT_MARGIN  # of every "fits" and max batch (yolomem.result.fits)
    amp_off_on: tuple[str, ...] = ()  # cards where Ultralytics trains FP32 even with amp=True (check_amp)
    # (why, rows): rows whose trainer keeps its cache into epoch 2 on some card, so their verdicts judge epoch 1
    # alone (yolomem.result.fits.cache_kept_between_epochs)
    epoch1_only: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def method_note(self) -> str:
        how = ("one trace per row and precision, batch-independent part from the trace's breakdown"
               if self.method == "breakdown" else "two traced batch sizes per row and precision")  # fmt: skip
        return (f"max batch: linear-in-batch model ({how}), within a batch or two of what `yolomem fit` confirms "
                f"with traces at N and N+1, either way; peaks from {self.iterations} traced iteration(s); "
                f"fits: within the card minus the CUDA context and a {self.margin:.0%} margin, "
                f"'near': only inside the margin")  # fmt: skip

    def to_json(self) -> list[dict]:
        return [row.to_json() for row in self.rows]


@dataclass(frozen=True)
class _Traced:
    """What one estimate contributes to a row (small: it crosses process boundaries)."""

    model: str
    framework: str
    task: str
    params: int
    imgsz: int
    batch: int
    peak_reserved_bytes: int
    device_total_bytes: int
    context_bytes: int
    fixed_bytes: int
    gpu_mem_printed: str
    gpu_mem_unit: str
    notes: tuple[str, ...]
    peak_reserved_upper_bytes: int  # the upper figure (yolomem.result.upper): verdicts and max_batch use it
    device_total_upper_bytes: int
    context_upper_bytes: int


def _trace_one(model: str, imgsz: int, batch: int, precision: str, iterations: int) -> _Traced:
    from yolomem.config.settings import EstimateConfig
    from yolomem.result.estimate import estimate_config

    framework = "yolov5" if model in ORIGINAL_IN_BLOG else "ultralytics"
    config = EstimateConfig(model=model, imgsz=imgsz, batch=batch, amp=precision, iterations=iterations,
                            framework=framework)  # fmt: skip
    result = estimate_config(config)
    fixed = sum(result.breakdown.get(category, 0) for category in _FIXED_CATEGORIES)
    return _Traced(result.config.model, result.config.framework, result.task, result.params,
                   result.config.imgsz, batch, result.peak_reserved_bytes, result.device_total_bytes,
                   result.context_bytes, fixed, result.gpu_mem_printed, result.gpu_mem_unit, result.notes,
                   result.peak_reserved_upper_bytes, result.device_total_upper_bytes,
                   result.device_total_upper_bytes - result.peak_reserved_upper_bytes)  # fmt: skip


def _linear_model(main: _Traced, second: _Traced | None) -> tuple[float, float]:
    """(batch-independent bytes, bytes per image) of the upper figure (yolomem.result.upper)."""
    if second is not None and second.batch != main.batch:
        slope = (main.peak_reserved_upper_bytes - second.peak_reserved_upper_bytes) / (main.batch - second.batch)
        return main.peak_reserved_upper_bytes - slope * main.batch, slope
    fixed = min(main.fixed_bytes, main.peak_reserved_upper_bytes)
    return fixed, (main.peak_reserved_upper_bytes - fixed) / main.batch


def _gpu_fit(main: _Traced, second: _Traced | None, budget: Budget) -> GpuFit:
    """The verdict at the row's batch and the largest batch on one card, from the upper figure."""
    fixed, slope = _linear_model(main, second)
    max_batch = max(int(math.floor((budget.capacity_bytes - fixed) / slope)), 0) if slope > 0 else 0
    return GpuFit(budget.gpu.name, budget.gpu.total_bytes, verdict(main.peak_reserved_upper_bytes, budget), max_batch)


def _precision_result(precision: str, main: _Traced, second: _Traced | None, budgets,
                      judged_by: dict[str, tuple[_Traced, _Traced | None]] | None = None) -> PrecisionResult:
    """A precision's figures and per-card verdicts; ``judged_by``: other runs that judge it on some cards
    (the FP32 runs, on a card where the trainer turns AMP off: ``Release.turns_amp_off``)."""
    fixed, slope = _linear_model(main, second)
    runs = judged_by or {}
    fits = tuple(_gpu_fit(*runs.get(budget.gpu.name, (main, second)), budget) for budget in budgets)
    return PrecisionResult(precision, main.peak_reserved_bytes, main.device_total_bytes, main.gpu_mem_printed,
                           main.gpu_mem_unit, int(fixed), slope, fits, main.peak_reserved_upper_bytes,
                           main.device_total_upper_bytes)  # fmt: skip


def compute_table(
    rows: Sequence[RowRequest] | None = None,
    gpus: Sequence[str] = DEFAULT_GPUS,
    *,
    method: str = "breakdown",
    iterations: int = ESTIMATE_KEYS.default("iterations"),
    jobs: int = 1,
    progress: Callable[[str], None] | None = None,
    margin: float = DEFAULT_MARGIN,
) -> Table:
    """Estimate every row in FP32 and AMP. ``progress(label)`` is called after each trace (for a bar).

    ``jobs > 1`` runs the traces in that many processes, this one and ``jobs - 1`` workers (each trace
    is single-threaded Python)."""
    from yolomem.config.gpus import find_gpu

    started = time.perf_counter()
    if method not in METHODS:
        raise UserError(f"method={method!r} is not one of {list(METHODS)}")
    rows = tuple(rows) if rows is not None else blog_rows()
    if not rows:
        raise UserError("no rows to compute")
    cards = [Budget(find_gpu(name), margin) for name in gpus]
    groups = []  # one per row: its traces run in one process, so the second reuses the first's cache
    for row in rows:
        batches = (row.batch, max(row.batch // 2, 1)) if method == "two-point" else (row.batch,)
        groups.append(tuple((row.model, row.imgsz, b, precision, iterations)
                            for precision in PRECISIONS for b in dict.fromkeys(batches)))  # fmt: skip
    results = _run(groups, jobs, progress)
    from yolomem.loops.ultralytics.release import release

    amp_off_on = tuple(c.gpu.name for c in cards if release().turns_amp_off(c.gpu))  # Ultralytics trains FP32 there
    table_rows = []
    for row in rows:
        runs = {}
        for precision in PRECISIONS:
            main = results[(row.model, row.imgsz, row.batch, precision, iterations)]
            second = results.get((row.model, row.imgsz, max(row.batch // 2, 1), precision, iterations)) if method == "two-point" else None
            runs[precision] = (main, second)
        fp32_on = dict.fromkeys(amp_off_on, runs["fp32"]) if runs["fp32"][0].framework == "ultralytics" else {}
        per_precision = {"fp32": _precision_result("fp32", *runs["fp32"], cards),  # the yolov5 repo keeps AMP
                         "fp16": _precision_result("fp16", *runs["fp16"], cards, judged_by=fp32_on)}  # fmt: skip
        main = results[(row.model, row.imgsz, row.batch, "fp32", iterations)]
        gflops, source = results[_gflops_key(row.model, row.imgsz)]
        notes = tuple(dict.fromkeys(main.notes))
        table_rows.append(TableRow(main.model, main.framework, main.task, main.params, gflops, source, main.imgsz,
                                   row.batch, per_precision["fp32"], per_precision["fp16"], notes))  # fmt: skip
    unit = "/".join(sorted({row.fp32.gpu_mem_unit for row in table_rows}, reverse=True))  # "GiB", "GB" or "GiB/GB"
    return Table(tuple(table_rows), tuple(c.gpu.name for c in cards), method, iterations, time.perf_counter() - started,
                 unit, margin, amp_off_on, _epoch1_only(table_rows, cards))  # fmt: skip


def _epoch1_only(rows: Sequence[TableRow], cards: Sequence[Budget]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The rows whose trainer keeps its cache into epoch 2 on one of the cards, by why (``KeptCache.why``)."""
    from yolomem.config.settings import EstimateConfig
    from yolomem.result.fits import cache_kept_between_epochs

    found: dict[str, list[str]] = {}
    for row in rows:
        config = EstimateConfig(model=row.model, imgsz=row.imgsz, batch=row.batch, framework=row.framework)
        for card in cards:
            kept = cache_kept_between_epochs(config, card)
            if kept is not None:
                found.setdefault(kept.why, []).append(row.model)
                break
    return tuple((does, tuple(models)) for does, models in found.items())


def _gflops_key(model: str, imgsz: int) -> tuple:
    return ("gflops", model, imgsz)


def _trace_group(tasks) -> list:
    """One row's traces, then its GFLOPs (counting builds the model: done here, in the worker)."""
    traced = [_trace_one(*task) for task in tasks]
    return [*traced, get_loop(traced[0].framework).gflops(tasks[0][0], traced[0].imgsz)]


def _run(groups, jobs: int, progress) -> dict:
    results = {}

    def collect(tasks, done) -> None:
        *traced, gflops = done
        for task, result in zip(tasks, traced):
            results[task] = result
            if progress:
                progress(f"{task[0]} {task[3]}")
        results[_gflops_key(tasks[0][0], tasks[0][1])] = gflops

    if jobs <= 1 or len(groups) == 1:
        for tasks in groups:
            collect(tasks, _trace_group(tasks))
        return results
    from yolomem.result.runs import worker_pool  # runs imports torch: not at import (yolomem --help)

    # Tables list generations oldest first, and the newest (deeper heads, YOLOv10's two) trace slowest:
    # the workers start from the last rows while this process, already imported, takes the first.
    with worker_pool(jobs - 1) as pool:
        side_by_side(pool, groups, _trace_group, _trace_group, collect)
    return results
