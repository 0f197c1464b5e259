"""Which YOLO models train on a GPU at a given batch and image size, smallest first, with headroom.

Each model is traced at the requested settings and judged as every verdict is (``yolomem.result.fits``):
its peak reserved memory against the card's memory minus the CUDA context minus the safety margin.
Headroom is that capacity minus the model's peak reserved memory (negative: short by that much). The
candidates are one family in every size it ships, because each model costs one trace (seconds to a
minute): by default the family of the model the installed Ultralytics trains when given none
(``TASK2MODEL``: yolov8 in 8.0-8.2, yolo11 in 8.3, yolo26 in 8.4); ``family=`` or ``models=`` choose others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from yolomem.config.settings import EstimateConfig
from yolomem.errors import UserError, unknown
from yolomem.result.estimate import Estimate
from yolomem.sweeps.fit import Progress, Prober, make_budget, train_command

DEFAULT_FAMILY = "yolo11"  # where the installed release names no default model that yolomem builds for the task
OLDER_DEFAULT = "yolov8"  # before yolo11 (Ultralytics 8.3.0) the family Ultralytics recommended
TASK_SUFFIX = {"detect": "", "segment": "-seg", "pose": "-pose", "obb": "-obb", "classify": "-cls"}
SCALES = "ntsmbclxe"  # the size letters of the shipped families: n, s, m, l, x; yolov10 adds b; yolov9 t, c, e
_FAMILY_AND_SCALE = rf"(yolo(?:v)?\d+)[{SCALES}]"  # yolov8n..., yolo26x...: the family, then a size letter


@dataclass(frozen=True)
class PickRow:
    model: str
    task: str
    params: int
    peak_reserved_bytes: int  # expected, as the estimate's
    peak_reserved_upper_bytes: int  # the upper figure's (yolomem.result.upper): what the verdict judges
    device_total_bytes: int  # expected peak reserved + CUDA context: what nvidia-smi would show
    device_total_upper_bytes: int  # the upper figure's peak reserved + the upper CUDA context (the budget's)
    fits: bool
    headroom_bytes: int  # capacity after context and margin, minus the upper peak reserved; < 0 when short
    estimate: Estimate = field(repr=False, compare=False)


@dataclass(frozen=True)
class PickResult:
    gpu: str
    gpu_total_bytes: int
    capacity_bytes: int
    margin: float
    batch: int
    imgsz: int
    task: str | None  # the task of the family ranked; None when the models were listed (``tasks`` says theirs)
    rows: tuple[PickRow, ...]  # smallest model first
    family: str | None = None  # the family ranked; None when the models were listed
    optimizer: str = "auto"  # as asked (each estimate's config holds what auto resolved to)

    @property
    def notes(self) -> tuple[str, ...]:
        """The notes every candidate's estimate has (what the trainer does on this card and setting)."""
        if not self.rows:
            return ()
        rest = [set(row.estimate.notes) for row in self.rows[1:]]
        return tuple(note for note in self.rows[0].estimate.notes if all(note in notes for notes in rest))

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks of the models ranked, each once, in the order of the rows."""
        return tuple(dict.fromkeys(row.task for row in self.rows))

    @property
    def best(self) -> PickRow | None:
        """The largest model that fits."""
        fitting = [row for row in self.rows if row.fits]
        return fitting[-1] if fitting else None

    @property
    def train_command(self) -> str | None:
        """The command that trains the largest model that fits, as ``yolomem fit`` writes it: ``yolo
        train``, or the yolov5 repo's ``train.py`` for the original designs."""
        best = self.best
        if best is None:
            return None
        name = best.model if best.model.endswith((".yaml", ".yml", ".pt")) else f"{best.model}.yaml"
        return train_command(best.estimate.config.with_changes(optimizer=self.optimizer), name)

    def to_json(self) -> dict:
        return {
            "gpu": self.gpu, "gpu_total_bytes": self.gpu_total_bytes, "capacity_bytes": self.capacity_bytes,
            "margin": self.margin, "batch": self.batch, "imgsz": self.imgsz, "task": self.task, "tasks": list(self.tasks),
            "family": self.family, "best": self.best.model if self.best else None, "train_command": self.train_command,
            "notes": list(self.notes),
            "rows": [  # the keys of estimate --json, with their meanings: expected, and *_upper_bytes
                {"model": r.model, "task": r.task, "params": r.params, "peak_reserved_bytes": r.peak_reserved_bytes,
                 "peak_reserved_upper_bytes": r.peak_reserved_upper_bytes, "device_total_bytes": r.device_total_bytes,
                 "device_total_upper_bytes": r.device_total_upper_bytes, "fits": r.fits,
                 "headroom_bytes": r.headroom_bytes}
                for r in self.rows
            ],
        }  # fmt: skip


def default_models(task: str = "detect", family: str = DEFAULT_FAMILY) -> tuple[str, ...]:
    """Every size of ``family`` for ``task`` that yolomem builds, e.g. yolo11n.yaml ... yolo11x.yaml."""
    if task not in TASK_SUFFIX:
        raise unknown("task", task, TASK_SUFFIX)
    names = _model_names()
    found = tuple(name for scale in SCALES if (name := f"{family}{scale}{TASK_SUFFIX[task]}.yaml") in names)
    if not found:
        raise unknown(f"family for task={task}", family, families(task))
    return found


def default_family(task: str = "detect") -> str:
    """The family of the model ``yolo TASK train`` takes without ``model=`` in the installed release
    (``Release.task_models``: yolo26n.pt -> yolo26) where yolomem ships it for ``task``; else
    ``DEFAULT_FAMILY``, or yolov8 where the installed Ultralytics predates it."""
    from yolomem.loops.ultralytics.release import release

    shipped = families(task) if task in TASK_SUFFIX else ()
    named = re.match(_FAMILY_AND_SCALE, release().task_models.get(task, ""))
    if named and named.group(1) in shipped:
        return named.group(1)
    return DEFAULT_FAMILY if DEFAULT_FAMILY in shipped or OLDER_DEFAULT not in shipped else OLDER_DEFAULT


def families(task: str = "detect") -> tuple[str, ...]:
    """The families with at least one size for ``task``: yolov5, yolov8, yolo11, ..."""
    pattern = re.compile(rf"^{_FAMILY_AND_SCALE}{re.escape(TASK_SUFFIX[task])}\.yaml$")
    return tuple(sorted({m.group(1) for name in _model_names() if (m := pattern.match(name))}))


def _model_names() -> set[str]:
    from yolomem.loops import LOOP_NAMES, get_loop

    return {n if n.endswith(".yaml") else f"{n}.yaml" for loop in LOOP_NAMES for n in get_loop(loop).model_names()}


def pick_models(
    gpu: str | None = None,
    imgsz: int | None = None,
    batch: int | None = None,
    task: str = "detect",
    *,
    gpu_mem: float | None = None,
    models: tuple[str, ...] | None = None,
    family: str | None = None,
    margin: float | None = None,
    progress: Progress | None = None,
    config: EstimateConfig | None = None,
    **settings,
) -> PickResult:
    """Trace each model at ``batch``/``imgsz`` and say which fit ``gpu``, ranked by size. The candidates are
    ``models``, or every size of ``family`` (default ``default_family``) for ``task``.

    ``config`` carries any other settings (amp, optimizer, ...); its model is replaced by each candidate.
    ``imgsz``/``batch`` None: the config's, or where it leaves them to the trainer (or without a config),
    what each candidate's trainer takes (a classifier trains at 224).
    """
    wanted = {key: value for key, value in {"imgsz": imgsz, "batch": batch, "gpu": gpu, "gpu_mem": gpu_mem}.items()
              if value is not None}  # fmt: skip
    if config is not None:
        base = config.with_changes(**wanted, **settings)
    else:
        base = EstimateConfig.from_mapping({**wanted, **settings})
    if not (base.gpu or base.gpu_mem):
        raise UserError("pick needs a GPU: add gpu=NAME (e.g. gpu=RTX-3060-12GB) or gpu_mem=<GiB>")
    budget = make_budget(base, margin)
    prober = Prober(budget, progress)
    rows = []
    if models and family:
        raise UserError("family= and models= both choose the candidates; give one")
    if not models:
        family = family or default_family(task)
    names = models or default_models(task, family)
    from yolomem.sweeps.prefetch import prefetch

    prefetch([prober.judged(base.with_changes(model=name)) for name in names])  # side by side on a multi-core machine
    for index, name in enumerate(names, 1):
        if progress:
            progress(f"[{index}/{len(names)}] {name}")
        estimate, probe = prober.run(base.with_changes(model=name))
        # the verdict and the headroom judge the upper figure, as every verdict does
        rows.append(PickRow(
            model=estimate.config.model, task=estimate.task, params=estimate.params,
            peak_reserved_bytes=estimate.peak_reserved_bytes, peak_reserved_upper_bytes=probe.peak_reserved_bytes,
            device_total_bytes=estimate.device_total_bytes,
            device_total_upper_bytes=probe.peak_reserved_bytes + budget.context_bytes, fits=probe.fits,
            headroom_bytes=budget.capacity_bytes - probe.peak_reserved_bytes, estimate=estimate,
        ))  # fmt: skip
    rows.sort(key=lambda row: row.params)
    return PickResult(
        gpu=budget.gpu.name, gpu_total_bytes=budget.gpu.total_bytes, capacity_bytes=budget.capacity_bytes,
        margin=budget.margin, batch=rows[0].estimate.config.batch if rows else base.batch,
        imgsz=rows[0].estimate.config.imgsz if rows else base.imgsz,
        task=None if models else task, rows=tuple(rows), family=None if models else family, optimizer=base.optimizer,
    )  # fmt: skip
