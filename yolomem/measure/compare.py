"""``validate()``: estimate every measured config of a results file and compare, figure by figure.

Error is signed and relative to the measurement: ``(estimated - measured) / measured`` (positive:
the estimate is too high). The summary per figure gives the median and the max of ``|error|`` and the
median signed error (the bias). A record is compared only on the figures it measured
(``MeasurementRecord.measured``) that the estimate also gives (``steady_reserved_bytes`` is None unless
the estimate simulates epochs with the val pass; such figures are listed as not estimated, not counted
as errors). Rows are numbered by their line in the file.

The upper figure (``peak_reserved_upper_bytes``, what fit verdicts use) is compared with the measured
peak reserved too, as its own line; each summary also gives the share of records more than 10 % below
the measurement (issue 12's bar for the upper figure: at most 1 in 10).

Errata: a record whose config does not say what ran (a measuring bug found after the fact) is not
rewritten, since results files are append-only; ``RESULTS.errata.json`` beside the file lists
``{"line": N, "config": {key: value}, "why": "..."}`` entries, and the comparison uses the config with
those keys replaced, with the reason as a note.

Records that are skipped, with the reason shown: failed runs (status "oom"/"error"), runs where
the trainer halved the batch after an OOM, configs the estimator rejects, and unreadable lines of the
file (named by their line number). Config keys that are not estimator settings are ignored with a note,
as the CLI ignores Ultralytics' other keys. A binary file, or one without a single JSON record (an
empty one too), is refused in one line; a file whose records were all skipped is compared with nothing,
and ``ValidationReport.nothing_compared`` says why (the CLI exits 1 then, as ``measure`` does for a run
that failed).
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from yolomem.config.settings import EstimateConfig
from yolomem.errors import UserError
from yolomem.measure.log import NotJsonLines, SkippedLine, read_records
from yolomem.measure.run import EXACT_AUGMENT, MeasurementRecord

METRICS = ("peak_reserved_bytes", "peak_allocated_bytes", "steady_reserved_bytes", "context_bytes")
# estimate field -> the measured figure it is compared with, for the estimate's upper figures
UPPER_METRICS = {"peak_reserved_upper_bytes": "peak_reserved_bytes"}
FAR_BELOW = -0.10  # an error below this is "more than 10 % below the measurement"

EstimateFn = Callable[[EstimateConfig], object]  # returns an Estimate (or anything with the METRICS attributes)


@dataclass(frozen=True)
class Comparison:
    metric: str
    measured_bytes: int
    estimated_bytes: int | None  # None: the estimator does not give this figure yet
    error: float | None  # (estimated - measured) / measured


@dataclass(frozen=True)
class ValidationRow:
    line: int  # the record's line in the file (1-based)
    label: str  # "yolov8n b16 640 fp16 train"
    source: str
    reference: str | None
    gpu: str | None
    comparisons: tuple[Comparison, ...]
    skipped: str | None = None  # why this record was not compared
    notes: tuple[str, ...] = ()  # e.g. config keys that are not estimator settings, ignored


@dataclass(frozen=True)
class ErrorSummary:
    metric: str
    count: int
    median_abs_error: float
    max_abs_error: float
    median_error: float  # signed: the bias
    share_far_below: float = 0.0  # share of errors below FAR_BELOW


@dataclass(frozen=True)
class ValidationReport:
    path: str
    rows: tuple[ValidationRow, ...]
    summaries: tuple[ErrorSummary, ...]
    unreadable: tuple[SkippedLine, ...]

    def nothing_compared(self) -> str | None:
        """Why not one figure was compared, in one line (the lines that are not JSON records, by number;
        how many records were skipped, and why the first was); None when one was."""
        if self.summaries:
            return None
        reasons = []
        if self.unreadable:
            numbers = ", ".join(str(line.line_number) for line in self.unreadable)
            reasons.append(f"line {numbers} is not a JSON record" if len(self.unreadable) == 1
                           else f"lines {numbers} are not JSON records")  # fmt: skip
        if self.rows:
            first = self.rows[0]
            why = first.skipped or "no figure it measured is estimated"
            reasons.append(f"{len(self.rows)} record{'s were' if len(self.rows) > 1 else ' was'} skipped "
                           f"(the first, line {first.line}: {why})")  # fmt: skip
        said = ", and ".join(reasons) or "it holds none"
        return f"no record of {self.path or 'the results'} could be compared: {said}"

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "rows": [
                {
                    "record": row.line, "label": row.label, "source": row.source, "reference": row.reference,
                    "gpu": row.gpu, "skipped": row.skipped, "notes": list(row.notes),
                    "comparisons": [
                        {"metric": c.metric, "measured_bytes": c.measured_bytes,
                         "estimated_bytes": c.estimated_bytes, "error": c.error}
                        for c in row.comparisons
                    ],
                }
                for row in self.rows
            ],
            "summary": [
                {"metric": s.metric, "count": s.count, "median_abs_error": s.median_abs_error,
                 "max_abs_error": s.max_abs_error, "median_error": s.median_error,
                 "share_far_below": s.share_far_below}
                for s in self.summaries
            ],
            "unreadable_lines": [{"line": s.line_number, "reason": s.reason} for s in self.unreadable],
        }  # fmt: skip


def relative_error(estimated: float, measured: float) -> float:
    """``(estimated - measured) / measured``; a measurement of 0 cannot anchor a relative error."""
    if measured <= 0:
        raise ValueError(f"measured value {measured} must be positive")
    return (estimated - measured) / measured


def summarize(metric: str, errors: Iterable[float]) -> ErrorSummary | None:
    errors = list(errors)
    if not errors:
        return None
    absolute = [abs(e) for e in errors]
    far_below = sum(1 for e in errors if e < FAR_BELOW) / len(errors)
    return ErrorSummary(metric, len(errors), statistics.median(absolute), max(absolute), statistics.median(errors),
                        far_below)  # fmt: skip


def config_of(record: MeasurementRecord) -> EstimateConfig:
    """The record's config as the estimator takes it; keys that are not estimator settings are ignored
    with a note (as the CLI ignores Ultralytics' other keys), a bad value is a UserError. A run measured
    with ``augment="exact"`` trained without mosaic, zoom and shift (``yolomem.measure.run.EXACT_AUGMENT``),
    which its config does not say: the estimate is made without them too."""
    config = dict(record.config)
    if record.settings.get("augment") == "exact":
        config.update(EXACT_AUGMENT)
    return EstimateConfig.from_json(config)


def label_of(config: dict) -> str:
    step = config.get("step", "train")
    return f"{config.get('model')} b{config.get('batch')} {config.get('imgsz')} {config.get('amp')} {step}" + (
        f" ws{config['world_size']}" if config.get("world_size", 1) != 1 else ""
    ) + (f" {config['alloc_conf']}" if config.get("alloc_conf") else "")


def validate_records(records: Iterable[dict], estimate_fn: EstimateFn | None = None, path: str = "",
                     unreadable: tuple[SkippedLine, ...] = (), lines: Iterable[int] | None = None,
                     errata: dict[int, dict] | None = None) -> ValidationReport:
    """Compare each record; ``lines`` are their file lines (default 1, 2, ...); ``errata`` maps a line to
    its erratum (see the module docstring)."""
    if estimate_fn is None:
        from yolomem.result.estimate import estimate_config

        estimate_fn = estimate_config
    cache: dict[EstimateConfig, object] = {}
    rows: list[ValidationRow] = []
    for line, raw in zip(itertools.count(1) if lines is None else lines, records):
        rows.append(_compare(line, _corrected(raw, (errata or {}).get(line)), estimate_fn, cache))
    errors: dict[str, list[float]] = {m: [] for m in (*METRICS, *UPPER_METRICS)}
    for row in rows:
        for comparison in row.comparisons:
            if comparison.error is not None:
                errors[comparison.metric].append(comparison.error)
    summaries = tuple(s for m in (*METRICS, *UPPER_METRICS) if (s := summarize(m, errors[m])) is not None)
    return ValidationReport(path, tuple(rows), summaries, unreadable)


def validate(path: Path | str, estimate_fn: EstimateFn | None = None) -> ValidationReport:
    """Compare every record of a results file (JSONL) with a fresh estimate of its config."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"results file {str(path)!r} is a directory; name a .jsonl file in it")
    if not path.is_file():
        raise UserError(f"results file {str(path)!r} does not exist")
    try:
        contents = read_records(path)
    except NotJsonLines as error:
        raise UserError(f"results file {error}; a results file is JSON Lines text (yolomem measure writes one)") from None
    if not contents.records:
        first = contents.skipped[0] if contents.skipped else None
        why = (f"{len(contents.skipped)} unreadable lines, the first: line {first.line_number}, {first.reason}"
               if first else "it is empty" if path.stat().st_size == 0 else "it holds only blank lines")  # fmt: skip
        raise UserError(f"results file {str(path)!r} holds no JSON record ({why}); a results file is JSON Lines "
                        "(yolomem measure writes one)")  # fmt: skip
    return validate_records(contents.records, estimate_fn, str(path), contents.skipped, contents.line_numbers,
                            read_errata(path))


def errata_path(results: Path) -> Path:
    return results.with_name(results.name.removesuffix(".jsonl") + ".errata.json")


def read_errata(results: Path) -> dict[int, dict]:
    """The errata beside a results file (module docstring), by line; none when there is no such file."""
    path = errata_path(results)
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text())
        return {int(e["line"]): {"config": dict(e["config"]), "why": str(e["why"])} for e in entries}
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"errata file {str(path)!r} is not a list of {{line, config, why}} entries ({error})") from None


def _corrected(raw: dict, erratum: dict | None) -> dict:
    if erratum is None:
        return raw
    return {**raw, "config": {**raw.get("config", {}), **erratum["config"]}, "erratum": erratum["why"]}


def _compare(index: int, raw: dict, estimate_fn: EstimateFn, cache: dict) -> ValidationRow:
    try:
        record = MeasurementRecord.from_json(raw)
    except (ValueError, KeyError, TypeError) as error:
        return ValidationRow(index, "?", str(raw.get("source")), None, None, (), f"unreadable record: {error}")
    base = dict(line=index, label=label_of(record.config), source=record.source, reference=record.reference,
                gpu=record.environment.gpu_name)  # fmt: skip
    if record.status != "ok":
        return ValidationRow(**base, comparisons=(), skipped=f"run {record.status}: {record.error}")
    if any("halved the batch" in note for note in record.notes):
        return ValidationRow(**base, comparisons=(), skipped="the trainer halved the batch after an OOM")
    if not record.measured:
        return ValidationRow(**base, comparisons=(), skipped="no measured figures")
    try:
        config = config_of(record)
        if config not in cache:
            cache[config] = estimate_fn(config)
        estimate = cache[config]
    except UserError as error:
        return ValidationRow(**base, comparisons=(), skipped=f"cannot estimate: {error}")
    base["notes"] = config.notes + ((f"erratum: {raw['erratum']}",) if raw.get("erratum") else ())
    comparisons = []
    pairs = [(m, m) for m in METRICS] + [(upper, measured) for upper, measured in UPPER_METRICS.items()]
    for metric, measured_as in pairs:
        if measured_as not in record.measured:
            continue
        measured = record.measured[measured_as]
        estimated = getattr(estimate, metric, None)
        error = relative_error(estimated, measured) if (estimated is not None and measured > 0) else None
        comparisons.append(Comparison(metric, measured, estimated, error))
    return ValidationRow(**base, comparisons=tuple(comparisons))


__all__ = ["Comparison", "ErrorSummary", "ValidationReport", "ValidationRow", "relative_error", "validate"]
