"""The human view of a ``Deployment``: one table per stage (run time, build, INT8 calibration, host RAM)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from yolomem.deployment.estimate import Deployment
from yolomem.deployment.terms import Term, total

GiB = 1 << 30
MiB = 1 << 20


def size(nbytes: int | None) -> str:
    if nbytes is None:
        return "-"
    if abs(nbytes) >= GiB:
        return f"{nbytes / GiB:.2f} GiB"
    return f"{nbytes / MiB:.0f} MiB"


def _range(term: Term) -> str:
    return size(term.bytes) if term.low == term.high else f"{size(term.low)} - {size(term.high)}"


def title(deployment: Deployment) -> str:
    cfg = deployment.config
    what = cfg["format"] if cfg["format"] != "torch" else f"torch {cfg['mode']}"
    device = ""
    if deployment.device:
        kind = "unified memory" if deployment.unified_memory else "device memory"
        device = f" on {deployment.device} ({size(deployment.device_total_bytes)} {kind})"
    return (f"{cfg['model']} ({deployment.task}) · {what} · {cfg['precision'].upper()} · batch {cfg['batch']} · "
            f"imgsz {cfg['imgsz']} · {deployment.params / 1e6:.2f} M params{device} · "
            f"ultralytics {deployment.ultralytics_version} · torch {deployment.torch_version}")  # fmt: skip


def _group(name: str, terms: tuple[Term, ...], total_label: str) -> Table:
    table = Table(title=name, title_justify="left", show_edge=False)
    table.add_column("term")
    table.add_column("figure", justify="right")
    table.add_column("range", justify="right")
    table.add_column("basis")
    for term in terms:
        table.add_row(term.label, size(term.bytes), _range(term), term.basis)
    figure, low, high = total(terms)
    table.add_row(f"[bold]{total_label}[/bold]", f"[bold]{size(figure)}[/bold]",
                  size(figure) if low == high else f"{size(low)} - {size(high)}", "")  # fmt: skip
    return table


def render_deployment(deployment: Deployment, console: Console | None = None) -> None:
    console = console or Console()
    console.print(f"[bold]{title(deployment)}[/bold]")
    console.print(_group("Run time, on the device", deployment.runtime, "device total"))
    if deployment.build:
        console.print(_group("Build (yolo export format=engine): needs at least", deployment.build, "build needs"))
        limit = deployment.workspace_limit_bytes
        console.print(f"  builder workspace limit: {size(limit) if limit is not None else 'all free device memory'}"
                      " (tactics asking more than is free are skipped)")  # fmt: skip
    if deployment.calibration:
        batch = deployment.details.get("calibration_batch")
        console.print(_group(f"INT8 calibration (batch {batch})", deployment.calibration, "calibration peak"))
    console.print(_group("Host RAM of the process", deployment.host, "host RAM"))
    summary = Table(show_header=False, show_edge=False)
    summary.add_column("what")
    summary.add_column("value", justify="right")
    summary.add_row("on the device while running", size(deployment.runtime_bytes))
    if deployment.calibration_bytes is not None:
        summary.add_row("INT8 calibration peak", size(deployment.calibration_bytes))
    if deployment.unified_memory:
        summary.add_row("RAM left for the OS and the application", size(deployment.ram_left_bytes))
        summary.add_row("kept for the OS (os_reserve=)", size(deployment.os_reserve_bytes))
    if deployment.fits is not None:
        summary.add_row("fits", "yes" if deployment.fits else "[red]no[/red]")
    console.print(summary)
    if deployment.remaining_tensors:
        alive = ", ".join(f"{module} {size(nbytes)}" for module, nbytes in deployment.remaining_tensors[:6])
        console.print(f"activations alive at the peak: {alive}")
    for line in deployment.assumptions:
        console.print(f"[dim]assumed: {line}[/dim]")
    for line in deployment.notes:
        console.print(f"[dim]note: {line}[/dim]")


def render_deploy_table(table, console: Console | None = None) -> None:
    """``yolomem table deploy=...``: one row per model (a ``yolomem.deployment.table.DeployTable``)."""
    console = console or Console()
    if not console.is_terminal:  # piped: rich's 80 columns cut the headers and names of nine columns
        console.width = max(console.width, 132)
    cfg = table.config
    where = f" on {cfg['device']}" if cfg["device"] else ""
    view = Table(title=f"deployment: {cfg['format']} {cfg['precision'].upper()} · batch {cfg['batch']} · "
                       f"imgsz {cfg['imgsz']}{where}", title_justify="left")  # fmt: skip
    longest = max((len(row.model) for row in table.rows), default=5)
    for name in DEPLOY_COLUMNS:  # the model's name whole at any width (80 columns when piped): the figures wrap
        view.add_column(name, justify="left" if name == "model" else "right",
                        min_width=longest if name == "model" else None, no_wrap=name == "model")  # fmt: skip
    for row in table.rows:
        view.add_row(*_deploy_cells(row, no="[red]no[/red]"))
    console.print(view)
    if cfg.get("os_reserve_bytes") is not None:
        console.print(f"[dim]{_os_reserve_line(cfg)}[/dim]")
    for line in table.skipped:
        console.print(f"[dim]skipped {line}[/dim]")


def _os_reserve_line(cfg: dict) -> str:
    return f"fits: the RAM left holds the {size(cfg['os_reserve_bytes'])} kept for the OS (os_reserve=)"


DEPLOY_COLUMNS = ("model", "params", "weights", "activations", "on device", "INT8 calib.", "host RAM", "RAM left", "fits")


def _deploy_cells(row, no: str = "no") -> list[str]:
    activations = size(row.activations_bytes) if row.activations_low_bytes == row.activations_bytes else \
        f"{size(row.activations_low_bytes)}-{size(row.activations_bytes)}"  # fmt: skip
    fits = "-" if row.fits is None else ("yes" if row.fits else no)
    return [row.model, f"{row.params / 1e6:.1f}M", size(row.weights_bytes), activations, size(row.runtime_bytes),
            size(row.calibration_bytes), size(row.host_bytes), size(row.ram_left_bytes), fits]  # fmt: skip


def deploy_table_markdown(table) -> str:
    """``yolomem table deploy=... --markdown``: the rich view's columns."""
    cfg = table.config
    lines = ["| " + " | ".join(DEPLOY_COLUMNS) + " |", "|" + "|".join("---" for _ in DEPLOY_COLUMNS) + "|"]
    lines += ["| " + " | ".join(_deploy_cells(row)) + " |" for row in table.rows]
    where = f" on {cfg['device']}" if cfg["device"] else ""
    lines += ["", f"- deployment: {cfg['format']} {cfg['precision'].upper()} · batch {cfg['batch']} · imgsz "
              f"{cfg['imgsz']}{where}"]  # fmt: skip
    if cfg.get("os_reserve_bytes") is not None:
        lines.append(f"- {_os_reserve_line(cfg)}")
    lines += [f"- skipped {line}" for line in table.skipped]
    return "\n".join(lines) + "\n"


def deploy_table_csv(table) -> str:
    """``yolomem table deploy=... --csv``: each row's figures in bytes, under the JSON's names."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    fields = list(table.rows[0].to_json()) if table.rows else ["model"]
    writer.writerow(fields)
    for row in table.rows:
        writer.writerow(["" if value is None else value for value in row.to_json().values()])
    return buffer.getvalue()
