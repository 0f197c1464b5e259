"""Which YOLO models train on a GPU at a given batch and image size, smallest first, with headroom.

Each model is traced at the requested settings and judged as ``yolomem.sweeps.fit`` judges a config: the
trace replayed through the caching-allocator model with the card's memory minus the CUDA context
minus the safety margin. Headroom is that capacity minus the model's peak reserved memory (negative:
short by that much). The default list is one family in five sizes, because each model costs one
trace (seconds to a minute); pass ``models=`` for others.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from yolomem.config.settings import EstimateConfig
from yolomem.errors import UserError, unknown
from yolomem.result.estimate import Estimate
from yolomem.sweeps.fit import DEFAULT_MARGIN, Progress, Prober, make_budget

DEFAULT_FAMILY = "yolo11"
TASK_SUFFIX = {"detect": "", "segment": "-seg", "pose": "-pose", "obb": "-obb", "classify": "-cls"}


@dataclass(frozen=True)
class PickRow:
    model: str
    task: str
    params: int
    peak_reserved_bytes: int
    device_total_bytes: int  # peak reserved + CUDA context: what nvidia-smi would show
    fits: bool
    headroom_bytes: int  # capacity after context and margin, minus peak reserved; < 0 when short
    estimate: Estimate = field(repr=False, compare=False)


@dataclass(frozen=True)
class PickResult:
    gpu: str
    gpu_total_bytes: int
    capacity_bytes: int
    margin: float
    batch: int
    imgsz: int
    task: str
    rows: tuple[PickRow, ...]  # smallest model first

    @property
    def best(self) -> PickRow | None:
        """The largest model that fits."""
        fitting = [row for row in self.rows if row.fits]
        return fitting[-1] if fitting else None

    def to_json(self) -> dict:
        return {
            "gpu": self.gpu, "gpu_total_bytes": self.gpu_total_bytes, "capacity_bytes": self.capacity_bytes,
            "margin": self.margin, "batch": self.batch, "imgsz": self.imgsz, "task": self.task,
            "best": self.best.model if self.best else None,
            "rows": [
                {"model": r.model, "params": r.params, "peak_reserved_bytes": r.peak_reserved_bytes,
                 "device_total_bytes": r.device_total_bytes, "fits": r.fits, "headroom_bytes": r.headroom_bytes}
                for r in self.rows
            ],
        }  # fmt: skip


def default_models(task: str = "detect", family: str = DEFAULT_FAMILY) -> tuple[str, ...]:
    if task not in TASK_SUFFIX:
        raise unknown("task", task, TASK_SUFFIX)
    return tuple(f"{family}{scale}{TASK_SUFFIX[task]}.yaml" for scale in "nsmlx")


def pick_models(
    gpu: str | None = None,
    imgsz: int = 640,
    batch: int = 16,
    task: str = "detect",
    *,
    gpu_mem: float | None = None,
    models: tuple[str, ...] | None = None,
    margin: float = DEFAULT_MARGIN,
    progress: Progress | None = None,
    config: EstimateConfig | None = None,
    **settings,
) -> PickResult:
    """Trace each model at ``batch``/``imgsz`` and say which fit ``gpu``, ranked by size.

    ``config`` carries any other settings (amp, optimizer, ...); its model is replaced by each candidate.
    """
    wanted = {"imgsz": imgsz, "batch": batch, "gpu": gpu, "gpu_mem": gpu_mem}
    if config is not None:
        base = config.with_changes(**wanted, **settings)
    else:
        base = EstimateConfig.from_mapping({**wanted, **settings})
    if not (base.gpu or base.gpu_mem):
        raise UserError("pick needs a GPU: add gpu=NAME (e.g. gpu=RTX-3060-12GB) or gpu_mem=<GiB>")
    budget = make_budget(base, margin)
    prober = Prober(budget, progress)
    rows = []
    names = models or default_models(task)
    from yolomem.result.runs import prefetch

    prefetch([base.with_changes(model=name) for name in names])  # side by side on a multi-core machine
    for index, name in enumerate(names, 1):
        if progress:
            progress(f"[{index}/{len(names)}] {name}")
        estimate, probe = prober.run(base.with_changes(model=name))
        rows.append(PickRow(
            model=estimate.config["model"], task=estimate.task, params=estimate.params,
            peak_reserved_bytes=probe.peak_reserved_bytes,
            device_total_bytes=probe.peak_reserved_bytes + estimate.context_bytes, fits=probe.fits,
            headroom_bytes=budget.capacity_bytes - probe.peak_reserved_bytes, estimate=estimate,
        ))  # fmt: skip
    rows.sort(key=lambda row: row.params)
    return PickResult(
        gpu=budget.gpu.name, gpu_total_bytes=budget.gpu.total_bytes, capacity_bytes=budget.capacity_bytes,
        margin=budget.margin, batch=base.batch, imgsz=rows[0].estimate.config["imgsz"] if rows else base.imgsz,
        task=task, rows=tuple(rows),
    )  # fmt: skip
