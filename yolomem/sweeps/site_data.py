"""The calculator page's data (``yolomem site``): full estimates on a grid of settings, nothing in between.

Every point is ``estimate_config`` at that model, imgsz, precision, optimizer, objects per image and
batch: the same call, and so the same figures, as ``yolomem estimate``. Batches past the first traced
ones come from streams derived from them (``yolomem.result.runs``: exact, checked event for event),
each replayed through the allocator model, so a grid of many batches costs a few traces per series.
The page offers only the grid's batches: between two of them it would have to interpolate, which no
trace justifies.

What the page computes itself is only what the CLI computes from these figures and a card: the verdict
and the largest batch (``yolomem.result.fits``: the upper figure against the card minus the upper CUDA
context and the margin), for catalog cards and a custom size.
"""

from __future__ import annotations

import dataclasses
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from yolomem.config.gpus import CATALOG, CUDA_CONTEXT_UPPER_BYTES
from yolomem.config.keys import DEFAULT_MARGIN
from yolomem.config.models import ResolvedModel
from yolomem.config.settings import EstimateConfig

DEFAULT_BATCHES = (1, 2, 4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 64, 96, 128)
DEFAULT_IMGSZ = (640,)
DEFAULT_AMPS = ("fp16", "fp32", "bf16")
DEFAULT_CARDS = ("T4", "RTX-3060-12GB", "RTX-4090", "A100-80GB")  # the chart's lines (the selected card is added)
DEPLOY_FORMATS = ("torch", "onnx", "engine")
DEPLOY_PRECISIONS = {"torch": ("fp32", "fp16"), "onnx": ("fp32", "fp16"), "engine": ("fp32", "fp16", "int8")}
DEFAULT_DEPLOY_BATCHES = (1, 2, 4, 8, 16, 32)
TASKS = ("detect", "segment", "pose", "obb", "classify")


@dataclass(frozen=True)
class SitePoint:
    """One full estimate: what the page shows for one batch."""

    batch: int
    gpu_mem_printed: str  # as the trainer prints it, e.g. "3.21G"
    gpu_mem_upper_printed: str
    peak_reserved_bytes: int
    device_total_bytes: int  # nvidia-smi: reserved + CUDA context
    peak_reserved_upper_bytes: int  # what the verdicts use
    device_total_upper_bytes: int
    breakdown: dict[str, int]  # at the peak, as ``estimate`` prints it (CUDA context included)


@dataclass(frozen=True)
class SiteSeries:
    """One model at one setting, over the grid's batches."""

    model: str  # the name the user types, e.g. "yolov8m.yaml"
    shown: str  # the resolved name, e.g. "yolov8m"
    task: str
    params: int
    imgsz: int
    amp: str
    optimizer: str  # as asked (e.g. "auto")
    optimizer_used: str  # what the trainer picks
    instances: float
    gpu_mem_unit: str
    train_command: str  # without batch=: the page appends the batch chosen
    notes: tuple[str, ...]
    points: tuple[SitePoint, ...]
    framework: str = "ultralytics"  # whose trainer: on a card in ``SiteData.cards`` marked so, Ultralytics' AMP is off


@dataclass(frozen=True)
class DeployPoint:
    """One ``yolomem deploy`` at one batch: what inference holds on the device, by term."""

    batch: int
    runtime_bytes: int  # on the device while running (the high end of every term, as deploy's total)
    runtime_low_bytes: int
    build_peak_bytes: int | None  # TensorRT engine build
    calibration_peak_bytes: int | None  # INT8 calibration
    host_bytes: int
    terms: dict[str, int]


@dataclass(frozen=True)
class DeploySeries:
    model: str
    shown: str
    task: str
    params: int
    imgsz: int
    format: str
    precision: str
    labels: dict[str, str]  # term key -> label, as deploy prints it
    notes: tuple[str, ...]
    points: tuple[DeployPoint, ...]


@dataclass(frozen=True)
class SiteRequest:
    """What to compute: every combination of these, each over ``batches``."""

    models: tuple[str, ...]
    imgsz: tuple[int, ...] = DEFAULT_IMGSZ
    batches: tuple[int, ...] = DEFAULT_BATCHES
    amps: tuple[str, ...] = DEFAULT_AMPS
    optimizers: tuple[str, ...] = ("auto",)
    instances: tuple[float, ...] = (8.0,)
    iterations: int = 2  # estimate's default: the page equals `yolomem estimate`
    cards: tuple[str, ...] = DEFAULT_CARDS
    deploy_formats: tuple[str, ...] = DEPLOY_FORMATS  # () : no deployment view
    deploy_batches: tuple[int, ...] = DEFAULT_DEPLOY_BATCHES

    def deploy_configs(self) -> list:
        """One deployment config per series (at its first batch). ``yolomem deploy`` sizes Ultralytics
        models: the yolov5 repo's own designs (v3, v4, v5 originals) have training figures only."""
        from yolomem.deployment.config import DeployConfig
        from yolomem.loops import LOOP_NAMES, get_loop

        others = [get_loop(name) for name in LOOP_NAMES if name != "ultralytics"]
        models = [m for m in self.models if not any(loop.owns(m) for loop in others)]
        return [DeployConfig(model=model, format=fmt, precision=precision, batch=self.deploy_batches[0], imgsz=imgsz)
                for model in models for imgsz in self.imgsz for fmt in self.deploy_formats
                for precision in DEPLOY_PRECISIONS[fmt]]  # fmt: skip

    def series_configs(self) -> list[EstimateConfig]:
        """One config per series (at its first batch)."""
        return [EstimateConfig(model=model, imgsz=imgsz, batch=self.batches[0], amp=amp, optimizer=optimizer,
                               instances=instances, iterations=self.iterations)
                for model in self.models for imgsz in self.imgsz for amp in self.amps
                for optimizer in self.optimizers for instances in self.instances]  # fmt: skip

    def estimate_words(self) -> tuple[str, ...]:
        """The estimate keys every point shares that are not a control, for the page's CLI line."""
        return () if self.iterations == 2 else (f"iterations={self.iterations}",)


@dataclass(frozen=True)
class SiteFailure:
    model: str
    setting: str
    error: str


@dataclass(frozen=True)
class SiteData:
    versions: dict[str, str]  # yolomem, torch, ultralytics: the code that computed every figure
    margin: float
    context_upper_bytes: int
    # (name, total bytes, whether Ultralytics' check_amp turns AMP off there): the catalog
    cards: tuple[tuple[str, int, bool], ...]
    chart_cards: tuple[str, ...]
    batches: tuple[int, ...]
    estimate_words: tuple[str, ...]
    series: tuple[SiteSeries, ...]
    failures: tuple[SiteFailure, ...] = ()
    deploy_batches: tuple[int, ...] = ()
    deploy_series: tuple[DeploySeries, ...] = ()
    seconds: float = 0.0

    def to_json(self) -> dict:
        """Compact: a series' points as columns (one list per figure), the breakdown per part."""
        return {
            "versions": self.versions, "margin": self.margin, "context_upper_bytes": self.context_upper_bytes,
            "cards": [list(card) for card in self.cards], "chart_cards": list(self.chart_cards),
            "batches": list(self.batches), "estimate_words": list(self.estimate_words),
            "series": [_series_json(s) for s in self.series],
            "deploy_batches": list(self.deploy_batches), "deploy_series": [_deploy_json(s) for s in self.deploy_series],
            "failures": [vars(f) for f in self.failures],
        }  # fmt: skip


_COLUMNS = ("batch", "gpu_mem_printed", "gpu_mem_upper_printed", "peak_reserved_bytes", "device_total_bytes",
            "peak_reserved_upper_bytes", "device_total_upper_bytes")  # fmt: skip


def _series_json(series: SiteSeries) -> dict:
    head = {k: v for k, v in vars(series).items() if k != "points"}
    head["notes"] = list(series.notes)
    columns = {name: [getattr(p, name) for p in series.points] for name in _COLUMNS}
    parts = dict.fromkeys(part for p in series.points for part in p.breakdown)
    columns["breakdown"] = {part: [p.breakdown.get(part, 0) for p in series.points] for part in parts}
    return head | {"points": columns}


def _deploy_json(series: DeploySeries) -> dict:
    head = {k: v for k, v in vars(series).items() if k != "points"}
    head["notes"] = list(series.notes)
    names = ("batch", "runtime_bytes", "runtime_low_bytes", "build_peak_bytes", "calibration_peak_bytes", "host_bytes")
    columns = {name: [getattr(p, name) for p in series.points] for name in names}
    keys = dict.fromkeys(key for p in series.points for key in p.terms)
    columns["terms"] = {key: [p.terms.get(key, 0) for p in series.points] for key in keys}
    return head | {"points": columns}


def train_command(config: EstimateConfig, resolved: ResolvedModel) -> str:
    """The training command of this setting, without the batch (the page appends it)."""
    from yolomem.sweeps.fit import amp_override, is_darknet, yolov5_model_words

    if resolved.framework == "yolov5":  # the yolov5 repo's train.py (a .cfg trainer for the darknet designs)
        script = yolov5_model_words(config, None, is_darknet(resolved), resolved.task)[0]
        return " ".join(["python", *script, "--img", str(config.imgsz)]) + " --batch-size"
    words = ["yolo", "train", f"model={config.model}", "data=YOUR_DATA.yaml", f"imgsz={config.imgsz}"]
    amp = amp_override(config.amp)
    if amp:
        words.append(amp)
    if config.optimizer != "auto":
        words.append(f"optimizer={config.optimizer}")
    return shlex.join(words) + " batch="


def compute_series(config: EstimateConfig, batches: Sequence[int]) -> SiteSeries:
    """One series: ``estimate_config`` at every batch (the first few traced, the rest derived)."""
    from yolomem.config.gpus import find_gpu
    from yolomem.loops import resolve_model
    from yolomem.result.estimate import estimate_config
    from yolomem.result.fits import Budget, cache_kept_between_epochs

    points, first = [], None
    for batch in batches:
        estimated = estimate_config(config.with_changes(batch=batch))
        first = first or estimated
        points.append(SitePoint(batch, estimated.gpu_mem_printed, estimated.gpu_mem_upper_printed,
                                estimated.peak_reserved_bytes, estimated.device_total_bytes,
                                estimated.peak_reserved_upper_bytes, estimated.device_total_upper_bytes,
                                dict(estimated.breakdown)))  # fmt: skip
    resolved = resolve_model(config.model, config.framework)
    notes = tuple(dict.fromkeys(first.notes))
    kept = cache_kept_between_epochs(config, Budget(find_gpu(DEFAULT_CARDS[0])))  # a trainer's habit: alike on every card
    if kept is not None:
        notes += (f"the page's verdicts judge epoch 1 alone: {kept.why} (`yolomem fit` judges the whole run)",)
    return SiteSeries(config.model, first.config.model, first.task, first.params,
                      first.config.imgsz, config.amp, config.optimizer, first.config.optimizer, config.instances,
                      first.gpu_mem_unit, train_command(config, resolved), notes, tuple(points),
                      resolved.framework)  # fmt: skip


def compute_deploy_series(config, batches: Sequence[int]) -> DeploySeries:
    """One deployment series: ``deploy_config`` at every batch, with no device (a discrete card's terms do
    not depend on which card; the page compares the total with the card)."""
    from yolomem.deployment.estimate import deploy_config
    from yolomem.deployment.terms import total

    points, first = [], None
    for batch in batches:
        deployed = deploy_config(dataclasses.replace(config, batch=batch))
        first = first or deployed
        points.append(DeployPoint(batch, deployed.runtime_bytes, total(deployed.runtime)[1],
                                  deployed.build_bytes, deployed.calibration_bytes, deployed.host_bytes,
                                  {t.key: t.bytes for t in deployed.runtime}))  # fmt: skip
    labels = {t.key: t.label for t in first.runtime}
    return DeploySeries(config.model, first.config["model"], first.task, first.params, first.config["imgsz"],
                        config.format, config.precision, labels, tuple(dict.fromkeys(first.notes)), tuple(points))  # fmt: skip


def _compute_or_fail(kind: str, config, batches: Sequence[int]):
    """In this process or a worker: a training (``kind="train"``) or deployment series, or why it failed
    (the rest of the site goes on)."""
    from yolomem.errors import UserError

    try:
        return compute_series(config, batches) if kind == "train" else compute_deploy_series(config, batches)
    except (UserError, RuntimeError, ValueError) as error:
        if kind == "train":
            label = f"imgsz={config.imgsz} amp={config.amp} optimizer={config.optimizer} instances={config.instances:g}"
        else:
            label = f"deploy imgsz={config.imgsz} format={config.format} precision={config.precision}"
        return SiteFailure(config.model, label, str(error).splitlines()[0] if str(error) else type(error).__name__)


def compute_site(request: SiteRequest, *, jobs: int = 1, progress: Callable[[str], None] | None = None) -> SiteData:
    """Every series of ``request``; ``jobs > 1`` computes series in that many worker processes."""
    from yolomem.config.versions import traced_versions
    from yolomem.result.runs import worker_pool

    started = time.perf_counter()
    units = [("train", c, request.batches) for c in request.series_configs()]
    units += [("deploy", c, request.deploy_batches) for c in request.deploy_configs()]
    results: list = [None] * len(units)

    def done(index: int, result) -> None:
        results[index] = result
        if progress:
            kind, config, _ = units[index]
            progress(f"{config.model} {config.amp if kind == 'train' else config.format + ' ' + config.precision}")

    if jobs <= 1 or len(units) < 2:
        for index, unit in enumerate(units):
            done(index, _compute_or_fail(*unit))
    else:
        from concurrent.futures import as_completed

        with worker_pool(jobs) as pool:
            futures = {pool.submit(_compute_or_fail, *unit): i for i, unit in enumerate(units)}
            for future in as_completed(futures):
                done(futures[future], future.result())
    yolomem_version, torch_version, ultralytics_version = traced_versions()
    series = tuple(r for r in results if isinstance(r, SiteSeries))
    deploy_series = tuple(r for r in results if isinstance(r, DeploySeries))
    failures = tuple(r for r in results if isinstance(r, SiteFailure))
    from yolomem.loops.ultralytics.release import release

    cards = tuple((name, gpu.total_bytes, release().turns_amp_off(gpu)) for name, gpu in CATALOG.items()
                  if not gpu.shared_memory)  # fmt: skip
    return SiteData({"yolomem": yolomem_version, "torch": torch_version, "ultralytics": ultralytics_version},
                    DEFAULT_MARGIN, CUDA_CONTEXT_UPPER_BYTES, cards, request.cards, request.batches,
                    request.estimate_words(), series, failures, request.deploy_batches, deploy_series,
                    time.perf_counter() - started)  # fmt: skip
