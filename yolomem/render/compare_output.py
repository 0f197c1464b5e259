"""Views of a ``ValidationReport`` and of a ``MeasurementRecord``: rich tables. JSON goes through json_output."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from yolomem.config.gpus import GiB
from yolomem.measure.run import MeasurementRecord
from yolomem.measure.compare import ValidationReport

_SHORT = {
    "peak_reserved_bytes": "reserved",
    "peak_allocated_bytes": "allocated",
    "steady_reserved_bytes": "steady reserved",
    "context_bytes": "CUDA context",
    "peak_reserved_upper_bytes": "reserved, upper figure",
}


def _gib(nbytes: int | None) -> str:
    return "-" if nbytes is None else f"{nbytes / GiB:.3f}"


def _percent(error: float | None) -> str:
    return "-" if error is None else f"{100 * error:+.1f} %"


def render_validation(report: ValidationReport, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"Measured against estimated: {report.path}", title_justify="left")
    for name, justify in (("#", "right"), ("config", "left"), ("source", "left"), ("figure", "left"),
                          ("measured GiB", "right"), ("estimated GiB", "right"), ("error", "right")):  # fmt: skip
        table.add_column(name, justify=justify, overflow="fold")
    for row in report.rows:
        for position, c in enumerate(row.comparisons):
            first = position == 0
            source = f"{row.source} ({row.gpu})" if row.gpu else row.source
            table.add_row(
                str(row.line) if first else "", row.label if first else "", source if first else "",
                _SHORT.get(c.metric, c.metric), _gib(c.measured_bytes), _gib(c.estimated_bytes),
                _percent(c.error) if c.estimated_bytes is not None else "[dim]not estimated[/dim]",
            )  # fmt: skip
    console.print(table)
    for row in report.rows:
        if row.skipped:
            console.print(f"[dim]skipped #{row.line} {row.label} ({row.source}): {row.skipped}[/dim]")
        for note in row.notes:
            console.print(f"[yellow]note:[/yellow] #{row.line} {row.label}: {note}")
    summary = Table(title="Error = (estimated - measured) / measured", title_justify="left")
    for name in ("figure", "n", "median |error|", "max |error|", "median error (bias)", "more than 10 % below"):
        summary.add_column(name, justify="left" if name == "figure" else "right")
    for s in report.summaries:
        summary.add_row(_SHORT.get(s.metric, s.metric), str(s.count), f"{100 * s.median_abs_error:.1f} %",
                        f"{100 * s.max_abs_error:.1f} %", _percent(s.median_error), f"{100 * s.share_far_below:.0f} %")  # fmt: skip
    if report.summaries:
        console.print(summary)
    else:
        console.print("[yellow]no record could be compared[/yellow]")
    for line in report.unreadable:
        console.print(f"[yellow]warning:[/yellow] {line.describe(report.path)}")


def render_measurement(record: MeasurementRecord, results_path: str, console: Console | None = None) -> None:
    console = console or Console()
    env = record.environment
    title = f"{record.config.get('model')} · batch {record.config.get('batch')} · imgsz {record.config.get('imgsz')} · {record.config.get('amp')} · {record.config.get('step')} · {env.gpu_name or 'unknown GPU'}"
    status = "[green]ok[/green]" if record.status == "ok" else f"[red]{record.status}[/red]: {record.error}"
    console.print(f"{title}: {status}")
    for rank in record.ranks:
        table = Table(title=f"rank {rank.rank}", title_justify="left")
        for name in ("phase", "max allocated GiB", "max reserved GiB", "reserved at end GiB", "NVML used GiB"):
            table.add_column(name, justify="left" if name == "phase" else "right")
        for phase, memory in rank.phases.items():
            table.add_row(phase, _gib(memory.max_allocated_bytes), _gib(memory.max_reserved_bytes),
                          _gib(memory.reserved_end_bytes), _gib(memory.nvml_used_bytes))  # fmt: skip
        console.print(table)
    for metric, value in record.measured.items():
        console.print(f"{_SHORT.get(metric, metric)}: {_gib(value)} GiB")
    for note in record.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    console.print(f"[dim]appended to {results_path} ({record.seconds} s)[/dim]")
