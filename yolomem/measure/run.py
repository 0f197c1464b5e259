"""``measure()``: real Ultralytics training memory on a CUDA GPU, one fresh process per config.

What runs: ``python -m yolomem.measure.worker`` (or, for ``world_size > 1``, the same module under
``torch.distributed.run``) trains the model for ``iterations`` iterations of one epoch on a synthetic
dataset (``yolomem.measure.synthetic_dataset``; or the user's ``data=``), then runs Ultralytics' validation
and its final validation of ``best.pt``; for ``framework=yolov5`` the yolov5 repo's own ``train.py`` does the
same (``yolomem.measure.yolov5_train``). A fresh process per config means a fresh caching allocator,
and ``PYTORCH_CUDA_ALLOC_CONF`` (``alloc_conf=``) takes effect before CUDA starts.

What is recorded, per rank and per phase (setup, train, epoch_end, val, save, final_val, teardown):
``torch.cuda.max_memory_allocated`` and ``max_memory_reserved`` (peaks reset at each phase start),
``memory_reserved`` at the phase end and after every training iteration, and NVML's used memory
(nvidia-ml-py) from which the CUDA context is derived. Plus the GPU name and total, the driver, CUDA,
torch and ultralytics versions.

The record (``MeasurementRecord``, schema ``SCHEMA_VERSION``) is appended as one JSON line to the
results file, which is never rewritten (``yolomem.measure.log``). ``measured`` holds the figures that
``yolomem validate`` compares, keyed by the ``Estimate`` field they correspond to:

- ``peak_reserved_bytes``: max reserved in the train phase (``fwd_bwd``: over the AutoBatch probe);
- ``peak_allocated_bytes``: max allocated in the same phase;
- ``steady_reserved_bytes``: max reserved over train, epoch_end and the first validation: what the
  cache holds when epoch 2 starts, unless Ultralytics emptied it (it does so above 50% of the card);
- ``context_bytes``: NVML used by this process (or device used minus what was used before the
  process started CUDA) minus ``memory_reserved``, at the end of the train phase.

Not measured: other processes' memory, and epochs after the first (the run is one epoch long).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from yolomem.config.keys import CHOICE, ESTIMATE_KEYS, FLOAT, TEXT, Key
from yolomem.config.settings import EstimateConfig
from yolomem.errors import UserError, unknown
from yolomem.measure.log import append_record

SCHEMA_VERSION = 1
SOURCE_MEASURED = "yolomem-measure"
SOURCE_PUBLIC = "public"  # figures copied from public logs: never confuse them with our own runs
AUGMENT_MODES = ("exact", "ultralytics")
# "exact": mosaic, scale and translate off, so every training image holds exactly its labelled objects
# (the estimator's ``instances``). "ultralytics": Ultralytics' default augmentation.
EXACT_AUGMENT = {"mosaic": 0.0, "scale": 0.0, "translate": 0.0}
DEFAULT_ITERATIONS = 8  # enough for warmup's first optimizer steps and a settled cache
DEFAULT_RESULTS = "measurements.jsonl"
DEFAULT_TIMEOUT_S = 900.0
TRAIN_PHASE = {"train": "train", "fwd_bwd": "fwd_bwd"}  # which phase holds the step's peak
STEADY_PHASES = ("train", "epoch_end", "val")
STATUSES = ("ok", "oom", "error")


@dataclass(frozen=True)
class PhaseMemory:
    """Memory over one phase of the run, in bytes. NVML figures are None where NVML was unavailable."""

    max_allocated_bytes: int
    max_reserved_bytes: int
    reserved_end_bytes: int
    nvml_used_bytes: int | None = None  # whole device, at the phase end
    nvml_process_bytes: int | None = None  # this process, at the phase end (None inside some containers)

    def to_json(self) -> dict:
        return {
            "max_allocated_bytes": self.max_allocated_bytes, "max_reserved_bytes": self.max_reserved_bytes,
            "reserved_end_bytes": self.reserved_end_bytes, "nvml_used_bytes": self.nvml_used_bytes,
            "nvml_process_bytes": self.nvml_process_bytes,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict) -> PhaseMemory:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Environment:
    gpu_name: str | None = None
    gpu_total_bytes: int | None = None
    driver: str | None = None
    cuda: str | None = None
    torch: str | None = None
    ultralytics: str | None = None
    yolomem: str | None = None
    python: str | None = None

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, data: dict | None) -> Environment:
        return cls(**{k: (data or {}).get(k) for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class RankMeasurement:
    """What one process (one DDP rank) saw."""

    rank: int
    status: str  # "ok" | "oom" | "error"
    error: str | None
    phases: dict[str, PhaseMemory]
    reserved_per_iteration: tuple[int, ...]  # memory_reserved after each training iteration (GPU_mem)
    nvml_used_before_bytes: int | None  # device used before this process initialised CUDA
    batch_used: int | None  # the trainer's batch at the end; smaller than asked after an OOM retry
    environment: Environment
    notes: tuple[str, ...] = ()

    def context_bytes(self, phase: str) -> int | None:
        """CUDA context: NVML's figure for this process minus what the caching allocator holds."""
        memory = self.phases.get(phase)
        if memory is None:
            return None
        if memory.nvml_process_bytes is not None:
            return memory.nvml_process_bytes - memory.reserved_end_bytes
        if memory.nvml_used_bytes is not None and self.nvml_used_before_bytes is not None:
            return memory.nvml_used_bytes - self.nvml_used_before_bytes - memory.reserved_end_bytes
        return None

    def to_json(self) -> dict:
        return {
            "rank": self.rank, "status": self.status, "error": self.error,
            "phases": {name: memory.to_json() for name, memory in self.phases.items()},
            "reserved_per_iteration": list(self.reserved_per_iteration),
            "nvml_used_before_bytes": self.nvml_used_before_bytes, "batch_used": self.batch_used,
            "environment": self.environment.to_json(), "notes": list(self.notes),
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict) -> RankMeasurement:
        status = data.get("status")
        if status not in STATUSES:
            raise ValueError(f"rank status {status!r} is not one of {STATUSES}")
        return cls(
            rank=int(data["rank"]),
            status=status,
            error=data.get("error"),
            phases={name: PhaseMemory.from_json(m) for name, m in (data.get("phases") or {}).items()},
            reserved_per_iteration=tuple(int(x) for x in data.get("reserved_per_iteration") or ()),
            nvml_used_before_bytes=data.get("nvml_used_before_bytes"),
            batch_used=data.get("batch_used"),
            environment=Environment.from_json(data.get("environment")),
            notes=tuple(data.get("notes") or ()),
        )


@dataclass(frozen=True)
class MeasureSettings:
    """A measurement request: the estimator's config plus how to run it."""

    config: EstimateConfig
    augment: str = "exact"
    iterations_given: bool = False  # False: DEFAULT_ITERATIONS replaces the estimator's default
    timeout_s: float = DEFAULT_TIMEOUT_S
    label: str | None = None  # free text kept in the record, e.g. "matrix serial"
    history: str | None = None  # write the GPU's allocation history here (yolomem.measure.history)
    history_iterations: int = 2  # ... up to the end of this training iteration

    def __post_init__(self) -> None:
        if self.augment not in AUGMENT_MODES:
            raise unknown("augment mode", self.augment, AUGMENT_MODES)
        if not self.timeout_s > 0:
            raise UserError(f"timeout={self.timeout_s} must be a positive number of seconds")

    @property
    def iterations(self) -> int:
        return self.config.iterations if self.iterations_given else DEFAULT_ITERATIONS

    def worker_request(self) -> dict:
        """What the worker process reads (JSON)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "config": self.config.to_json(),
            "iterations": self.iterations,
            "augment": self.augment,
            "history": self.history,
            "history_iterations": self.history_iterations,
        }


@dataclass(frozen=True)
class MeasurementRecord:
    """One line of a results file."""

    schema_version: int
    source: str  # SOURCE_MEASURED | SOURCE_PUBLIC
    created: str  # ISO 8601, UTC
    config: dict  # EstimateConfig.to_json() of the run, as the file holds it (EstimateConfig.from_json reads it)
    status: str  # "ok" | "oom" | "error"
    error: str | None
    measured: dict[str, int]  # Estimate field name -> measured bytes
    ranks: tuple[RankMeasurement, ...] = ()
    environment: Environment = field(default_factory=Environment)
    settings: dict = field(default_factory=dict)  # augment, iterations, label, train/val images
    command: tuple[str, ...] = ()
    seconds: float | None = None
    reference: str | None = None  # where a public figure comes from
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {
            "schema_version": self.schema_version, "source": self.source, "created": self.created,
            "config": self.config, "status": self.status, "error": self.error, "measured": dict(self.measured),
            "ranks": [rank.to_json() for rank in self.ranks], "environment": self.environment.to_json(),
            "settings": dict(self.settings), "command": list(self.command), "seconds": self.seconds,
            "reference": self.reference, "notes": list(self.notes),
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict) -> MeasurementRecord:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"schema_version {version!r}; this yolomem reads version {SCHEMA_VERSION}")
        if data.get("status") not in STATUSES:
            raise ValueError(f"status {data.get('status')!r} is not one of {STATUSES}")
        if not isinstance(data.get("config"), dict):
            raise ValueError("'config' must be an object")
        measured = data.get("measured") or {}
        return cls(
            schema_version=version,
            source=str(data.get("source")),
            created=str(data.get("created")),
            config=data["config"],
            status=data["status"],
            error=data.get("error"),
            measured={str(k): int(v) for k, v in measured.items() if v is not None},
            ranks=tuple(RankMeasurement.from_json(r) for r in data.get("ranks") or ()),
            environment=Environment.from_json(data.get("environment")),
            settings=dict(data.get("settings") or {}),
            command=tuple(data.get("command") or ()),
            seconds=data.get("seconds"),
            reference=data.get("reference"),
            notes=tuple(data.get("notes") or ()),
        )


@dataclass(frozen=True)
class LaunchResult:
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False


Launcher = Callable[[list[str], dict[str, str], float], LaunchResult]


MEASURE_KEYS = ESTIMATE_KEYS.plus(
    Key("results", TEXT, DEFAULT_RESULTS, "the JSONL file the record is appended to"),
    Key("augment", CHOICE, "exact", "exact: every image holds its labelled objects; ultralytics: its augmentation",
        choices=AUGMENT_MODES),
    Key("timeout", FLOAT, DEFAULT_TIMEOUT_S, "seconds before the run is stopped", low=0.0, low_open=True),
    Key("label", TEXT, None, "free text kept in the record, e.g. 'matrix serial'", nullable=True),
    ESTIMATE_KEYS["iterations"].but(default=DEFAULT_ITERATIONS, help="training iterations of the measured epoch"),
)  # fmt: skip


def parse_measure_words(words: list[str]) -> tuple[MeasureSettings, Path]:
    """``MODEL key=value ...``: the estimator's keys, plus ``results=``, ``augment=``, ``timeout=``, ``label=``."""
    from yolomem.config.settings import parse_estimate_words

    parsed = parse_estimate_words(words, MEASURE_KEYS)
    config = EstimateConfig.from_parsed(parsed).fixed_batch()
    own = parsed.values
    settings = MeasureSettings(
        config, augment=own.get("augment", "exact"), iterations_given="iterations" in own,
        timeout_s=own.get("timeout", DEFAULT_TIMEOUT_S), label=own.get("label"),
    )  # fmt: skip
    return settings, Path(own.get("results", DEFAULT_RESULTS))


def worker_command(request_path: Path, out_prefix: Path, world_size: int, python: str = sys.executable) -> list[str]:
    """The subprocess to run. DDP: torchrun starts ``world_size`` copies of the same worker."""
    worker = ["-m", "yolomem.measure.worker", "--request", str(request_path), "--out", str(out_prefix)]
    if world_size == 1:
        return [python, *worker]
    return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world_size}", *worker]


def worker_environment(config: EstimateConfig, base: dict[str, str] | None = None) -> dict[str, str]:
    """The worker's environment: offline Ultralytics, and the allocator settings asked for."""
    env = dict(os.environ if base is None else base)
    env["YOLO_OFFLINE"] = "1"  # Ultralytics' is_online() -> False: no checks, downloads or analytics
    env.pop("PYTORCH_CUDA_ALLOC_CONF", None)
    env.pop("PYTORCH_ALLOC_CONF", None)
    if config.alloc_conf:
        env["PYTORCH_CUDA_ALLOC_CONF"] = config.alloc_conf
    return env


def rank_output_path(out_prefix: Path, rank: int) -> Path:
    return out_prefix.with_name(f"{out_prefix.name}.rank{rank}.json")


def measured_figures(config: EstimateConfig, rank: RankMeasurement) -> dict[str, int]:
    """The figures ``validate`` compares, from one rank (rank 0: the one Ultralytics logs)."""
    if rank.status != "ok":
        return {}
    phase = TRAIN_PHASE[config.step]
    main = rank.phases.get(phase)
    if main is None:
        return {}
    figures = {"peak_reserved_bytes": main.max_reserved_bytes, "peak_allocated_bytes": main.max_allocated_bytes}
    steady = [rank.phases[p].max_reserved_bytes for p in STEADY_PHASES if p in rank.phases]
    if config.step == "train" and "val" in rank.phases:
        figures["steady_reserved_bytes"] = max(steady)
    context = rank.context_bytes(phase)
    if context is not None:
        figures["context_bytes"] = context
    return figures


def build_record(settings: MeasureSettings, ranks: list[RankMeasurement], command: list[str], seconds: float,
                 launch_error: str | None = None) -> MeasurementRecord:
    """Combine the ranks' outputs into one record. A rank that failed makes the record fail."""
    ranks = sorted(ranks, key=lambda r: r.rank)
    expected = settings.config.world_size
    if launch_error is None and len(ranks) < expected:
        launch_error = f"{expected - len(ranks)} of {expected} ranks wrote no result"
    failed = [r for r in ranks if r.status != "ok"]
    if failed:
        status, error = failed[0].status, f"rank {failed[0].rank}: {failed[0].error}"
    elif launch_error:
        status, error = "error", launch_error
    else:
        status, error = "ok", None
    notes = list(settings.config.notes)
    first = ranks[0] if ranks else None
    per_rank_batch = max(settings.config.batch // settings.config.world_size, 1)
    if first and first.batch_used is not None and first.batch_used != per_rank_batch:
        notes.append(f"the trainer ran out of memory and halved the batch to {first.batch_used} per rank")
    for rank in ranks:
        notes.extend(f"rank {rank.rank}: {note}" for note in rank.notes)
    return MeasurementRecord(
        schema_version=SCHEMA_VERSION,
        source=SOURCE_MEASURED,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        config=settings.config.to_json(),
        status=status,
        error=error,
        measured=measured_figures(settings.config, first) if (first and status == "ok") else {},
        ranks=tuple(ranks),
        environment=first.environment if first else Environment(),
        settings={"augment": settings.augment, "iterations": settings.iterations, "label": settings.label},
        command=tuple(command),
        seconds=round(seconds, 2),
        notes=tuple(notes),
    )


def cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_cuda(world_size: int, count: int) -> None:
    if count == 0:
        raise UserError(
            "measure needs a CUDA GPU and torch.cuda.is_available() is False here; "
            "'yolomem estimate' predicts the same figures without one"
        )
    if world_size > count:
        raise UserError(f"world_size={world_size} needs {world_size} GPUs; this machine has {count}")


def refuse_precision(config: EstimateConfig) -> None:
    """A one-line error for ``amp=bf16`` where the installed trainer has none (``release.trains_bf16``), and for
    any amp= but fp16 where it has no amp option (``release.amp_switch``, before 8.0.57):
    the run ``measure`` starts is ``yolo train``'s, which stops on it (an estimate answers with a note)."""
    from yolomem.loops.ultralytics.release import release

    installed = release()
    if config.amp != "fp16" and not installed.amp_switch:
        raise UserError(f"amp={config.amp}: {installed.no_amp_switch()}, and the yolo train that measure starts takes no "
                        "amp=; use amp=true, or ultralytics>=8.0.57")  # fmt: skip
    reason = installed.no_bf16()
    if config.amp == "bf16" and reason:
        raise UserError(f"amp=bf16: {reason}, the run measure starts; use amp=true or amp=false, or ultralytics>=8.4.129")


def measure(settings: MeasureSettings, results: Path | str, *, launch: Launcher | None = None,
            device_count: Callable[[], int] = cuda_device_count) -> MeasurementRecord:
    """Run one measurement in a fresh process, append its record to ``results``, and return it. The
    inputs are checked first (the model resolves, as an estimate resolves it), then CUDA, then the packages
    the run needs, then it runs."""
    from yolomem.loops import resolve_model, ultralytics_twin

    resolved = resolve_model(settings.config.model, settings.config.framework)  # unknown: estimate's one-line error
    if settings.config.framework == "yolov5":  # the repo's train.py, from the yolov5 package
        from yolomem.measure.yolov5_train import check_measurable

        check_measurable(settings.config, resolved)
    elif resolved.framework != "ultralytics":  # Ultralytics' trainer would build its own model of that name
        twin = ultralytics_twin(settings.config.model)
        raise UserError(f"measure drives Ultralytics' trainer; {settings.config.model!r} is trained by the "
                        f"{resolved.framework} loop" + (f" (Ultralytics' own build of it is {twin}, another head)"
                                                         if twin else "") + "; framework=yolov5 measures the repo's "
                        "train.py")  # fmt: skip
    else:
        refuse_precision(settings.config)
    check_cuda(settings.config.world_size, device_count())
    if settings.config.framework == "yolov5":
        from yolomem.measure.yolov5_train import check_package

        check_package()
    from yolomem.result.prepare import trainer_defaults

    # the run trains at what `yolo train` would (a classifier at 224 when imgsz is not given), and says so
    config, note = trainer_defaults(settings.config, resolved)
    settings = replace(settings, config=config.with_changes(notes=(*config.notes, note)) if note else config)
    launch = launch or launch_subprocess
    with tempfile.TemporaryDirectory(prefix="yolomem-measure-") as tmp:
        request_path = Path(tmp) / "request.json"
        request_path.write_text(json.dumps(settings.worker_request()))
        out_prefix = Path(tmp) / "result"
        command = worker_command(request_path, out_prefix, settings.config.world_size)
        started = time.perf_counter()
        outcome = launch(command, worker_environment(settings.config), settings.timeout_s)
        seconds = time.perf_counter() - started
        ranks, problems = read_rank_outputs(out_prefix, settings.config.world_size)
    launch_error = None
    if outcome.timed_out:
        launch_error = f"timed out after {settings.timeout_s:g} s"
    elif outcome.returncode != 0 and not any(r.status != "ok" for r in ranks):
        tail = (outcome.stderr or outcome.stdout).strip().splitlines()[-1:] or ["no output"]
        launch_error = f"worker exited with {outcome.returncode}: {tail[0][:300]}"
    elif problems:
        launch_error = "; ".join(problems)
    record = build_record(settings, ranks, command, seconds, launch_error)
    append_record(results, record.to_json())
    return record


def read_rank_outputs(out_prefix: Path, world_size: int) -> tuple[list[RankMeasurement], list[str]]:
    ranks, problems = [], []
    for rank in range(world_size):
        path = rank_output_path(out_prefix, rank)
        if not path.exists():
            continue
        try:
            ranks.append(RankMeasurement.from_json(json.loads(path.read_text())))
        except (ValueError, KeyError, TypeError) as error:
            problems.append(f"rank {rank} output unreadable: {error}")
    return ranks, problems


def launch_subprocess(command: list[str], env: dict[str, str], timeout_s: float) -> LaunchResult:
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as expired:
        return LaunchResult(-1, _text(expired.stdout), _text(expired.stderr), timed_out=True)
    return LaunchResult(done.returncode, done.stdout, done.stderr)


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


__all__ = [
    "SCHEMA_VERSION", "SOURCE_MEASURED", "SOURCE_PUBLIC", "Environment", "MeasureSettings",
    "MeasurementRecord", "PhaseMemory", "RankMeasurement", "measure", "parse_measure_words",
]  # fmt: skip
