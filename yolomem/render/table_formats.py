"""Formats of the per-version table (``yolomem.sweeps.table.Table``): rich, Markdown, CSV, JSON. No computing."""

from __future__ import annotations

import csv
import io
import json

from yolomem.config.gpus import GiB
from yolomem.sweeps.table import Table, TableRow

MARKS = {"yes": "✅", "near": "⚠️", "no": "❌"}


def _gb(nbytes: int) -> str:
    return f"{nbytes / GiB:.2f}"


def _short(gpu: str) -> str:
    return gpu.replace("-12GB", "").replace("-40GB", "").replace("-80GB", "")


def _gflops(row: TableRow) -> str:
    return "–" if row.gflops is None else f"{row.gflops:.1f}"


def headers(table: Table) -> list[str]:
    cols = ["model", "framework", "imgsz", "batch", "params (M)", "GFLOPs",
            "FP32 nvidia-smi (GiB)", f"FP32 GPU_mem ({table.gpu_mem_unit})",
            "AMP nvidia-smi (GiB)", f"AMP GPU_mem ({table.gpu_mem_unit})"]  # fmt: skip
    for gpu in table.gpus:
        cols.append(f"{_short(gpu)} FP32/AMP")
    for gpu in table.gpus:
        cols.append(f"max batch {_short(gpu)} FP32/AMP")
    return cols


def cells(table: Table, row: TableRow, marks: bool = True) -> list[str]:
    def fit(value: str) -> str:
        return MARKS[value] if marks else value

    def gpu_mem(result) -> str:  # name the unit where the column mixes trainers
        return result.gpu_mem_printed if "/" not in table.gpu_mem_unit else f"{result.gpu_mem_printed} ({result.gpu_mem_unit})"

    out = [row.model, row.framework, str(row.imgsz), str(row.batch), f"{row.params / 1e6:.2f}", _gflops(row),
           _gb(row.fp32.device_total_bytes), gpu_mem(row.fp32), _gb(row.amp.device_total_bytes), gpu_mem(row.amp)]  # fmt: skip
    for a, b in zip(row.fp32.gpus, row.amp.gpus):
        out.append(f"{fit(a.fits)}/{fit(b.fits)}")
    for a, b in zip(row.fp32.gpus, row.amp.gpus):
        out.append(f"{a.max_batch}/{b.max_batch}")
    return out


def footer(table: Table) -> list[str]:
    return [
        "nvidia-smi = peak reserved + CUDA context; GPU_mem = torch.cuda.memory_reserved() as the trainer prints it "
        "(Ultralytics 8.4 in GiB, the yolov5 repo in GB = 10^9 bytes).",
        f"✅ fits (the card minus the CUDA context and a {table.margin:.0%} margin), ⚠️ only inside the margin, ❌ does not fit.",
        table.method_note() + ".",
        "Training iterations only: the validation pass and later epochs are not in these peaks.",
        f"computed in {table.seconds:.0f} s.",
    ]


def to_markdown(table: Table) -> str:
    cols = headers(table)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in table.rows:
        lines.append("| " + " | ".join(cells(table, row)) + " |")
    lines.append("")
    lines.extend(f"- {note}" for note in footer(table))
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    cols = ["model", "framework", "task", "imgsz", "batch", "params", "gflops"]
    for precision in ("fp32", "amp"):
        cols += [f"{precision}_peak_reserved_bytes", f"{precision}_device_total_bytes"]
        cols += [f"{precision}_fits_{gpu}" for gpu in table.gpus]
        cols += [f"{precision}_max_batch_{gpu}" for gpu in table.gpus]
    writer.writerow(cols)
    for row in table.rows:
        values = [row.model, row.framework, row.task, row.imgsz, row.batch, row.params,
                  "" if row.gflops is None else round(row.gflops, 1)]  # fmt: skip
        for result in (row.fp32, row.amp):
            values += [result.peak_reserved_bytes, result.device_total_bytes]
            values += [g.fits for g in result.gpus]
            values += [g.max_batch for g in result.gpus]
        writer.writerow(values)
    return buffer.getvalue()


def to_json(table: Table) -> str:
    return json.dumps(table.to_json(), indent=2)


def render_rich(table: Table, console=None) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable

    console = console or Console()
    view = RichTable(title="GPU memory of YOLO training, per version (computed by yolomem)", title_justify="left")
    for index, col in enumerate(headers(table)):
        view.add_column(col, justify="left" if index < 2 else "right")
    for row in table.rows:
        view.add_row(*cells(table, row))
    console.print(view)
    for note in footer(table):
        console.print(f"[dim]{note}[/dim]")


def models_markdown(entries) -> str:
    """``yolomem models`` as plain text columns."""
    lines = [f"{'name':<26} {'family':<12} {'framework':<12} {'params (M)':>10}  tasks"]
    for entry in entries:
        params = "–" if entry.params is None else f"{entry.params / 1e6:.2f}"
        lines.append(f"{entry.name:<26} {entry.family:<12} {entry.framework:<12} {params:>10}  {entry.task}")
    return "\n".join(lines) + "\n"
