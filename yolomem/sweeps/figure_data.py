"""The numbers behind yolomem's pictures, computed from real estimates; drawing is in ``render.plots``.

- ``curve_figure``: peak memory against batch (or imgsz) for models x precisions. Every point is one
  ``estimate()``; nothing is interpolated. The largest batch marked at a GPU line is the largest
  *sampled* value that fits (it and every smaller sample fit); the true limit lies between it and the
  next sample, which ``yolomem fit`` finds exactly. Without ``xs``, the batches start at
  ``DEFAULT_BATCHES`` and, when cards are given, grow by doublings until every curve crosses every
  card's line (up to ``MAX_BATCH``), so no card is left "above the plot".
- ``breakdown_figure``: the estimate's breakdown at the peak, category by category.
- ``report_data``: everything ``yolomem report`` shows, for one configuration.

"Fits" is ``yolomem.result.fits``, as everywhere: a point's peak reserved memory within the card minus
the CUDA context minus the margin (``margin=`` of the base config).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from yolomem.config.settings import PRECISIONS, EstimateConfig
from yolomem.errors import UserError, unknown
from yolomem.result.estimate import Estimate, estimate_config
from yolomem.result.fits import Budget, fits
from yolomem.config.gpus import GiB, Gpu
from yolomem.config.keys import MAX_CURVE_POINTS as MAX_POINTS
from yolomem.result.timeline import Timeline, estimate_timeline
from yolomem.sweeps.fit import DEFAULT_MARGIN, MAX_BATCH  # the automatic batch range stops where fit's does

X_AXES = ("batch", "imgsz")
MEASURES = ("gpu_mem", "device_total")
DEFAULT_BATCHES = (2, 4, 8, 16)  # then doubled, with cards, until every curve crosses every card's line
DEFAULT_IMGSZ = (320, 480, 640)
BREAKDOWN_ORDER = (
    "parameter", "gradient", "optimizer_state", "ema", "activation", "loss", "input", "other",
    "cublas_workspace", "cublaslt_workspace", "cudnn_workspace", "allocator_rounding", "cache_fragmentation", "validation_epochs_growth", "cuda_context",
)  # fmt: skip

Progress = Callable[[int, int, str], None]  # (done, total, what is being estimated)
Estimator = Callable[[EstimateConfig], Estimate]


@dataclass(frozen=True)
class CurvePoint:
    x: int  # batch or imgsz as estimated: imgsz rounded up to the stride, a batch cut to data='s size
    peak_allocated_bytes: int
    peak_reserved_bytes: int  # Ultralytics' GPU_mem
    device_total_bytes: int  # reserved + CUDA context: nvidia-smi
    fits: tuple[bool, ...]  # one per GpuLine of the figure, in order (the upper figure's verdict)
    peak_reserved_upper_bytes: int  # the upper figure (yolomem.result.upper), which the verdicts use


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
    def context_bytes(self) -> int:
        """The CUDA context the verdicts assume: the upper figure's (``Budget.context_bytes``)."""
        return self.budget.context_bytes

    @property
    def after_context_bytes(self) -> int:
        """Total minus that context (and ``host_bytes``): what the margin is a share of."""
        return self.budget.after_context_bytes

    @property
    def capacity_bytes(self) -> int:
        """Total minus the context minus the margin: what a run may reserve and still fit."""
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
    amp_off_on: tuple[str, ...] = ()  # cards where Ultralytics trains an AMP curve's run in FP32 (check_amp)

    def value(self, point: CurvePoint) -> int:
        """The plotted y of a point, in bytes."""
        return point.peak_reserved_bytes if self.measure == "gpu_mem" else point.device_total_bytes

    def threshold(self, line: GpuLine) -> int:
        """The plotted y of a GPU line, in bytes: the same budget seen from the measure's side."""
        return line.capacity_bytes if self.measure == "gpu_mem" else line.capacity_bytes + line.budget.context_bytes


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
    fits: bool  # this configuration on this card (yolomem.result.fits, with the margin)
    largest_batch: int | None  # None: not even the smallest batch fits
    method: str  # how largest_batch was found, said on the page


@dataclass(frozen=True)
class ReportData:
    estimate: Estimate
    timeline: Timeline
    breakdown: BreakdownFigure
    curve: CurveFigure
    fits: tuple[GpuFit, ...]
    margin: float  # the share of usable memory held back when judging fits (yolomem.result.fits)
    words: tuple[str, ...]  # the settings as key=value words, for the command lines
    deployment: object | None = None  # yolomem.deployment.Deployment of the trained model (report deploy=FORMAT)


def gpu_line(gpu: Gpu, margin: float = DEFAULT_MARGIN) -> GpuLine:
    return GpuLine(Budget(gpu, margin))


def fits_on(estimate: Estimate, line: GpuLine) -> bool:
    """``estimate(..., gpu=card).fits`` for the line's card (``yolomem.result.fits``): the upper figure."""
    return fits(estimate.peak_reserved_upper_bytes, line.budget)


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
    chosen = tuple(xs) if xs else None
    # under DDP the batch is the total over the GPUs: the same images per GPU as on one
    xs = chosen or (tuple(b * base.world_size for b in DEFAULT_BATCHES) if x_name == "batch" else DEFAULT_IMGSZ)
    lines = tuple(gpu_line(gpu, base.margin) for gpu in gpus)
    cells = [(model, amp) for model in models for amp in amps]
    estimated: dict[tuple[str, str, int], CurvePoint] = {}
    unit = "GiB"
    other = "imgsz" if x_name == "batch" else "batch"
    held: set[int] = set()  # the held key as estimated (a classifier left to its trainer trains at 224)
    ultralytics_amp = False  # an AMP curve of a model Ultralytics trains: its check_amp decides on the card
    done = 0
    while True:
        total = done + sum((model, amp, x) not in estimated for model, amp in cells for x in xs)
        for model, amp in cells:
            for x in xs:
                if (model, amp, x) in estimated:
                    continue
                config = base.with_changes(model=model, amp=amp, gpu=None, gpu_mem=None, **{x_name: x})
                if progress:
                    progress(done, total, f"{model} {amp} {x_name}={x}")
                result = estimator(config)
                unit = result.gpu_mem_unit
                ultralytics_amp |= amp == "fp16" and result.config.framework == "ultralytics"
                held.add(getattr(result.config, other))
                estimated[(model, amp, x)] = CurvePoint(
                    x=getattr(result.config, x_name),  # imgsz=500 is estimated, and drawn, at 512
                    peak_allocated_bytes=result.peak_allocated_bytes,
                    peak_reserved_bytes=result.peak_reserved_bytes,
                    device_total_bytes=result.device_total_bytes,
                    fits=tuple(fits_on(result, line) for line in lines),
                    peak_reserved_upper_bytes=result.peak_reserved_upper_bytes,
                )
                done += 1
        curves = [Curve(model, amp, tuple(estimated[(model, amp, x)] for x in xs)) for model, amp in cells]
        crossings = tuple(_crossing(ci, gi, curve) for ci, curve in enumerate(curves) for gi in range(len(lines)))
        wider = () if chosen or x_name != "batch" else _batches_to_cross(curves, lines, crossings, xs)
        if not wider:
            break
        xs = tuple(sorted({*xs, *wider}))
    if progress:
        progress(done, done, "done")
    fixed = ((other, ", ".join(map(str, sorted(held))) or str(getattr(base, other))), ("optimizer", base.optimizer))
    from yolomem.loops.ultralytics.release import release

    amp_off_on = tuple(line.name for line in lines if ultralytics_amp and release().turns_amp_off(line.budget.gpu))
    return CurveFigure(x_name, measure, fixed, tuple(curves), lines, crossings, unit, amp_off_on)


def _batches_to_cross(curves, lines, crossings, xs: tuple[int, ...]) -> tuple[int, ...]:
    """More batches to sample so that every curve crosses every card's line: batch 1 when the smallest
    sample does not fit; else doublings of the largest sample up to where the line through the last two
    points crosses the card (one doubling when memory did not grow). Empty when every crossing shows,
    or at MAX_BATCH / MAX_POINTS."""
    wanted: set[int] = set()
    for crossing in crossings:
        if crossing.largest_x is None and xs[0] > 1 and not crossing.all_fit:
            wanted.add(1)
        if not crossing.all_fit:
            continue
        line, points = lines[crossing.gpu], curves[crossing.curve].points
        target = xs[-1] * 2
        if len(points) >= 2:  # verdicts are the upper figure's: extrapolate it to the upper capacity
            (x1, m1), (x2, m2) = ((p.x, p.peak_reserved_upper_bytes) for p in points[-2:])
            if m2 > m1:  # the line through the last two samples meets the card's capacity at x
                capacity = line.capacity_bytes
                target = max(target, int(x2 + (capacity - m2) * (x2 - x1) / (m2 - m1)) + 1)
        batch = xs[-1]
        while batch < min(target, MAX_BATCH):
            batch *= 2
            wanted.add(min(batch, MAX_BATCH))
    room = MAX_POINTS - len(xs)
    return tuple(sorted(wanted - set(xs))[:max(room, 0)])


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


def card_fit(config: EstimateConfig, line: GpuLine, margin: float, progress: Callable[[str], None] | None = None) -> GpuFit:
    """Whether ``config`` fits ``line``'s card, and the largest batch that does, both decided as
    ``yolomem fit`` decides them: the one "fits" (usable memory minus the margin) and ``yolomem fit``'s
    search (the answer N is traced and fits, N + 1 is traced and does not)."""
    from yolomem.sweeps.fit import NothingFits, Prober, largest_batch, make_budget

    card = config.with_changes(gpu=line.name, gpu_mem=line.total_bytes / GiB)  # also a custom card, exactly
    prober = Prober(make_budget(card, margin), progress)
    chosen_fits = prober.probe(card).fits
    how = f"yolomem fit's search, {margin:.0%} margin"
    try:
        result = largest_batch(card, prober=prober)
    except NothingFits:
        return GpuFit(line, chosen_fits, None, f"{how}: not even batch {config.world_size} fits")
    if result.at_search_cap:
        how += f"; the search stops at {result.max_batch}: more fits"
    if result.whole_dataset:
        how += f"; a larger batch trains the same run (data= holds no more than batch {result.max_batch})"
    return GpuFit(line, chosen_fits, result.max_batch, how)


def report_data(
    config: EstimateConfig,
    gpus: Sequence[Gpu],
    *,
    batches: Sequence[int] | None = None,
    words: Sequence[str] = (),
    margin: float | None = None,
    progress: Progress | None = None,
    estimator: Estimator = estimate_config,
) -> ReportData:
    """The estimate, its timeline and breakdown, a batch curve around it, and the fit on each card.

    ``batches`` default to a quarter, half, one and two times the chosen batch (the chosen one is not
    estimated twice). Whether the chosen batch fits each card, and the largest batch that does, come from
    ``card_fit``: the same budget and search as ``yolomem fit`` (a few traces per card).
    """
    cache: dict[EstimateConfig, Estimate] = {}

    def cached(c: EstimateConfig) -> Estimate:
        if c not in cache:
            cache[c] = estimator(c)
        return cache[c]

    margin = config.margin if margin is None else margin
    # the cards are judged one by one below, all with one margin: the curve's lines and the fits table
    config = config.with_changes(gpu=None, gpu_mem=None, margin=margin)
    main = cached(config)
    chosen = config.batch
    xs = tuple(batches) if batches else tuple(sorted({max(chosen // 4, 1), max(chosen // 2, 1), chosen, chosen * 2}))
    curve = curve_figure(
        [config.model], base=config, x_name="batch", xs=xs, amps=(config.amp,), gpus=gpus,
        progress=progress, estimator=cached,
    )  # fmt: skip
    fits = []
    for index, line in enumerate(curve.gpu_lines):

        def searching(what: str, index=index, line=line) -> None:
            progress(index, len(curve.gpu_lines), f"largest batch on {line.name}: {what}")

        fits.append(card_fit(config, line, margin, searching if progress else None))
    return ReportData(
        estimate=main,
        timeline=estimate_timeline(main),
        breakdown=breakdown_figure([(_bar_label(main), main)]),
        curve=curve,
        fits=tuple(fits),
        margin=margin,
        words=tuple(words),
    )


def _bar_label(result: Estimate) -> str:
    cfg = result.config
    return f"{cfg.model} b{cfg.batch} {cfg.imgsz} {cfg.amp}"


def precision_of(text: str) -> str:
    """``amp=true`` -> "fp16", as EstimateConfig reads it."""
    value = PRECISIONS.get(str(text).strip().lower())
    if value is None:
        raise UserError(f"amp={text!r} is not valid; use true, false, fp32 or bf16")
    return value


__all__ = [
    "BreakdownBar", "BreakdownFigure", "BreakdownPart", "Crossing", "Curve", "CurveFigure", "CurvePoint",
    "GpuFit", "GpuLine", "ReportData", "breakdown_figure", "card_fit", "curve_figure", "fits_on",
    "report_data",
]  # fmt: skip
