"""The numbers behind yolomem's pictures, computed from real estimates; drawing is in ``render.plots``.

- ``curve_figure``: peak memory against batch (or imgsz) for models x precisions. Every point is one
  ``estimate()``; nothing is interpolated. The largest batch marked at a GPU line is the largest
  *sampled* value that fits (it and every smaller sample fit); the true limit lies between it and the
  next sample, which ``yolomem fit`` finds exactly.
- ``breakdown_figure``: the estimate's breakdown at the peak, category by category.
- ``report_data``: everything ``yolomem report`` shows, for one configuration.

"Fits" is ``yolomem.result.fits``, as everywhere: a point's peak reserved memory within the card minus
the CUDA context minus the margin (``margin=`` of the base config).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from yolomem.config.settings import PRECISIONS, EstimateConfig
from yolomem.errors import UserError, unknown
from yolomem.result.estimate import Estimate, estimate_config
from yolomem.result.fits import Budget, fits
from yolomem.config.gpus import GiB, Gpu
from yolomem.result.timeline import Timeline, estimate_timeline

X_AXES = ("batch", "imgsz")
MEASURES = ("gpu_mem", "device_total")
DEFAULT_BATCHES = (2, 4, 8, 16)  # 8 estimates for two precisions: about a minute for yolov8n at 640
DEFAULT_IMGSZ = (320, 480, 640)
MAX_POINTS = 12  # each point is a full traced estimate
BREAKDOWN_ORDER = (
    "parameter", "gradient", "optimizer_state", "ema", "activation", "loss", "input", "other",
    "allocator_rounding", "cache_fragmentation", "validation_epochs_growth", "cuda_context",
)  # fmt: skip

Progress = Callable[[int, int, str], None]  # (done, total, what is being estimated)
Estimator = Callable[[EstimateConfig], Estimate]


@dataclass(frozen=True)
class CurvePoint:
    x: int  # batch or imgsz as asked (imgsz is rounded up to the stride by the estimate)
    peak_allocated_bytes: int
    peak_reserved_bytes: int  # Ultralytics' GPU_mem
    device_total_bytes: int  # reserved + CUDA context: nvidia-smi
    fits: tuple[bool, ...]  # one per GpuLine of the figure, in order


@dataclass(frozen=True)
class Curve:
    model: str
    amp: str  # fp16 | fp32 | bf16
    points: tuple[CurvePoint, ...]

    @property
    def label(self) -> str:
        return f"{self.model} {'AMP' if self.amp == 'fp16' else self.amp.upper()}"


@dataclass(frozen=True)
class GpuLine:
    budget: Budget  # the card and the margin its verdicts use

    @property
    def name(self) -> str:
        return self.budget.gpu.name

    @property
    def total_bytes(self) -> int:
        return self.budget.gpu.total_bytes

    @property
    def usable_bytes(self) -> int:
        """Total minus the CUDA context: what the caching allocator can reserve."""
        return self.budget.usable_bytes

    @property
    def capacity_bytes(self) -> int:
        """Usable minus the margin: what a run may reserve and still fit."""
        return self.budget.capacity_bytes


@dataclass(frozen=True)
class Crossing:
    curve: int  # index into CurveFigure.curves
    gpu: int  # index into CurveFigure.gpu_lines
    largest_x: int | None  # largest sample that fits with all smaller ones; None: the smallest does not fit
    all_fit: bool  # every sample fits: the limit lies beyond the sampled range


@dataclass(frozen=True)
class CurveFigure:
    x_name: str  # "batch" | "imgsz"
    measure: str  # "gpu_mem" (peak reserved, lines at capacity) | "device_total" (lines at capacity + context)
    fixed: tuple[tuple[str, str], ...]  # the settings held fixed, e.g. (("imgsz", "640"),)
    curves: tuple[Curve, ...]
    gpu_lines: tuple[GpuLine, ...]
    crossings: tuple[Crossing, ...]
    gpu_mem_unit: str  # the unit the installed Ultralytics prints GPU_mem in

    def value(self, point: CurvePoint) -> int:
        """The plotted y of a point, in bytes."""
        return point.peak_reserved_bytes if self.measure == "gpu_mem" else point.device_total_bytes

    def threshold(self, line: GpuLine) -> int:
        """The plotted y of a GPU line, in bytes: the same budget seen from the measure's side."""
        return line.capacity_bytes if self.measure == "gpu_mem" else line.capacity_bytes + line.budget.gpu.context_bytes


@dataclass(frozen=True)
class BreakdownPart:
    category: str  # a key of Estimate.breakdown
    bytes: int


@dataclass(frozen=True)
class BreakdownBar:
    label: str
    parts: tuple[BreakdownPart, ...]

    @property
    def total_bytes(self) -> int:
        return sum(part.bytes for part in self.parts)


@dataclass(frozen=True)
class BreakdownFigure:
    bars: tuple[BreakdownBar, ...]


@dataclass(frozen=True)
class GpuFit:
    gpu: GpuLine
    fits: bool  # this configuration, on this card
    largest_batch: int | None  # None: no batch fits (or none was found)
    method: str  # how largest_batch was found, said on the page


@dataclass(frozen=True)
class ReportData:
    estimate: Estimate
    timeline: Timeline
    breakdown: BreakdownFigure
    curve: CurveFigure
    fits: tuple[GpuFit, ...]
    words: tuple[str, ...]  # the settings as key=value words, for the command lines


def parse_values(key: str, text: str) -> tuple[int, ...]:
    """``batches=1,2,4,8`` -> (1, 2, 4, 8): positive, distinct, sorted, at most MAX_POINTS."""
    try:
        values = sorted({int(part) for part in text.strip("[]() ").split(",") if part.strip()})
    except ValueError:
        raise UserError(f"{key}={text!r} must be whole numbers separated by commas, e.g. {key}=1,2,4,8") from None
    if not values or values[0] < 1:
        raise UserError(f"{key}={text!r} must list positive whole numbers, e.g. {key}=1,2,4,8")
    if len(values) > MAX_POINTS:
        raise UserError(f"{key}= lists {len(values)} values; at most {MAX_POINTS} (each is a full estimate)")
    return tuple(values)


def gpu_line(gpu: Gpu, margin: float) -> GpuLine:
    return GpuLine(Budget(gpu, margin))


def fits_on(estimate: Estimate, line: GpuLine) -> bool:
    """``estimate(..., gpu=card).fits`` for the line's card (``yolomem.result.fits``)."""
    return fits(estimate.peak_reserved_bytes, line.budget)


def curve_figure(
    models: Sequence[str],
    *,
    base: EstimateConfig | None = None,
    x_name: str = "batch",
    xs: Sequence[int] | None = None,
    amps: Sequence[str] = ("fp16", "fp32"),
    gpus: Sequence[Gpu] = (),
    measure: str = "gpu_mem",
    progress: Progress | None = None,
    estimator: Estimator = estimate_config,
) -> CurveFigure:
    """Estimate every (model, amp, x) and collect the points. ``base`` holds the other settings."""
    if x_name not in X_AXES:
        raise unknown("x", x_name, X_AXES)
    if measure not in MEASURES:
        raise unknown("measure", measure, MEASURES)
    if not models:
        raise UserError("name at least one model, e.g. yolomem plot yolov8n.yaml yolov8s.yaml")
    base = base or EstimateConfig()
    xs = tuple(xs) if xs else (DEFAULT_BATCHES if x_name == "batch" else DEFAULT_IMGSZ)
    lines = tuple(gpu_line(gpu, base.margin) for gpu in gpus)
    total = len(models) * len(amps) * len(xs)
    done = 0
    curves: list[Curve] = []
    unit = "GiB"
    for model in models:
        for amp in amps:
            points: list[CurvePoint] = []
            for x in xs:
                config = base.with_changes(model=model, amp=amp, gpu=None, gpu_mem=None, **{x_name: x})
                if progress:
                    progress(done, total, f"{model} {amp} {x_name}={x}")
                result = estimator(config)
                unit = result.gpu_mem_unit
                points.append(
                    CurvePoint(
                        x=x,
                        peak_allocated_bytes=result.peak_allocated_bytes,
                        peak_reserved_bytes=result.peak_reserved_bytes,
                        device_total_bytes=result.device_total_bytes,
                        fits=tuple(fits_on(result, line) for line in lines),
                    )
                )
                done += 1
            curves.append(Curve(model, amp, tuple(points)))
    if progress:
        progress(done, total, "done")
    crossings = tuple(
        _crossing(ci, gi, curve) for ci, curve in enumerate(curves) for gi in range(len(lines))
    )
    other = "imgsz" if x_name == "batch" else "batch"
    fixed = ((other, str(getattr(base, other))), ("optimizer", base.optimizer))
    return CurveFigure(x_name, measure, fixed, tuple(curves), lines, crossings, unit)


def _crossing(curve_index: int, gpu_index: int, curve: Curve) -> Crossing:
    largest = None
    for point in curve.points:  # points are in increasing x
        if not point.fits[gpu_index]:
            break
        largest = point.x
    all_fit = all(point.fits[gpu_index] for point in curve.points)
    return Crossing(curve_index, gpu_index, largest, all_fit)


def breakdown_figure(estimates: Sequence[tuple[str, Estimate]]) -> BreakdownFigure:
    """One stacked bar per (label, estimate), parts in BREAKDOWN_ORDER; zero parts are kept (honest)."""
    bars = []
    for label, result in estimates:
        keys = [k for k in BREAKDOWN_ORDER if k in result.breakdown]
        keys += [k for k in result.breakdown if k not in BREAKDOWN_ORDER]  # categories added later
        bars.append(BreakdownBar(label, tuple(BreakdownPart(k, result.breakdown[k]) for k in keys)))
    return BreakdownFigure(tuple(bars))


def _largest_batch_api() -> Callable | None:
    """``yolomem.sweeps.fit.largest_batch`` when that module is installed (it finds the exact limit)."""
    try:
        module = importlib.import_module("yolomem.sweeps.fit")
    except ModuleNotFoundError as error:
        if error.name != "yolomem.sweeps.fit":
            raise
        return None
    return getattr(module, "largest_batch", None)


def _exact_largest_batch(config: EstimateConfig, line: GpuLine) -> tuple[int | None, str] | None:
    """(largest batch, how) from ``yolomem.sweeps.fit.largest_batch``, or None when that module is absent."""
    largest_batch = _largest_batch_api()
    if largest_batch is None:
        return None
    from yolomem.sweeps.fit import NothingFits

    try:  # gpu_mem carries the line's card exactly, also a custom one
        result = largest_batch(config, gpu=line.name, gpu_mem=line.total_bytes / GiB)
    except NothingFits:
        return None, "yolomem.sweeps.fit.largest_batch: not even batch 1 fits"
    how = f"yolomem.sweeps.fit.largest_batch: exact search, margin {result.margin:.0%} of usable memory"
    if result.at_search_cap:
        how += "; the search cap: more would fit"
    return result.max_batch, how


def report_data(
    config: EstimateConfig,
    gpus: Sequence[Gpu],
    *,
    batches: Sequence[int] | None = None,
    words: Sequence[str] = (),
    exact_fit: bool = False,
    progress: Progress | None = None,
    estimator: Estimator = estimate_config,
) -> ReportData:
    """The estimate, its timeline and breakdown, a batch curve around it, and the fit on each card.

    ``batches`` default to a quarter, half, one and two times the chosen batch (the chosen one is not
    estimated twice). With ``exact_fit`` and ``yolomem.sweeps.fit`` installed, the largest batch per card is
    searched exactly (``largest_batch``; a few traces per card); otherwise it is the largest sampled batch
    of the curve that fits. Both judge with the config's margin, as ``Estimate.fits`` does.
    """
    cache: dict[EstimateConfig, Estimate] = {}

    def cached(c: EstimateConfig) -> Estimate:
        if c not in cache:
            cache[c] = estimator(c)
        return cache[c]

    config = config.with_changes(gpu=None, gpu_mem=None)  # the cards are judged one by one below
    main = cached(config)
    chosen = config.batch
    xs = tuple(batches) if batches else tuple(sorted({max(chosen // 4, 1), max(chosen // 2, 1), chosen, chosen * 2}))
    curve = curve_figure(
        [config.model], base=config, x_name="batch", xs=xs, amps=(config.amp,), gpus=gpus,
        progress=progress, estimator=cached,
    )  # fmt: skip
    fits = []
    for gi, line in enumerate(curve.gpu_lines):
        exact = _exact_largest_batch(config, line) if exact_fit else None
        if exact is not None:
            largest, method = exact
        else:
            crossing = next(c for c in curve.crossings if c.gpu == gi)
            largest = crossing.largest_x
            sampled = ",".join(str(x) for x in xs)
            method = f"largest sampled batch that fits (sampled {sampled})"
            if crossing.all_fit:
                method += "; larger batches may fit too"
        fits.append(GpuFit(line, fits_on(main, line), largest, method))
    return ReportData(
        estimate=main,
        timeline=estimate_timeline(main),
        breakdown=breakdown_figure([(_bar_label(main), main)]),
        curve=curve,
        fits=tuple(fits),
        words=tuple(words),
    )


def _bar_label(result: Estimate) -> str:
    cfg = result.config
    return f"{cfg['model']} b{cfg['batch']} {cfg['imgsz']} {cfg['amp']}"


def precision_of(text: str) -> str:
    """``amp=true`` -> "fp16", as EstimateConfig reads it."""
    value = PRECISIONS.get(str(text).strip().lower())
    if value is None:
        raise UserError(f"amp={text!r} is not valid; use true, false, fp32 or bf16")
    return value


__all__ = [
    "BreakdownBar", "BreakdownFigure", "BreakdownPart", "Crossing", "Curve", "CurveFigure", "CurvePoint",
    "GpuFit", "GpuLine", "ReportData", "breakdown_figure", "curve_figure", "fits_on", "parse_values",
    "report_data",
]  # fmt: skip
