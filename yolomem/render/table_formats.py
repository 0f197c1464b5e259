"""Formats of the per-version table (``yolomem.sweeps.table.Table``): rich, Markdown, CSV, JSON. No computing."""

from __future__ import annotations

import csv
import io
import json

from yolomem.config.gpus import GiB
from yolomem.render.units import card_label
from yolomem.sweeps.table import Table, TableRow

MARKS = {"yes": "✅", "near": "⚠️", "no": "❌"}


def _gb(nbytes: int) -> str:
    return f"{nbytes / GiB:.2f}"


def _gflops(row: TableRow) -> str:
    return "–" if row.gflops is None else f"{row.gflops:.1f}"


def headers(table: Table) -> list[str]:
    cols = ["model", "framework", "imgsz", "batch", "params (M)", "GFLOPs",
            "FP32 nvidia-smi (GiB)", f"FP32 GPU_mem ({table.gpu_mem_unit})",
            "AMP nvidia-smi (GiB)", f"AMP GPU_mem ({table.gpu_mem_unit})"]  # fmt: skip
    cards = [card_label(g.gpu, g.total_bytes) for g in table.rows[0].fp32.gpus] if table.rows else list(table.gpus)
    cols += [f"{card} FP32/AMP" for card in cards]
    cols += [f"max batch {card} FP32/AMP" for card in cards]
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
        *([f"{', '.join(table.amp_off_on)}: Ultralytics' check_amp turns AMP off there, so its AMP verdicts are the "
           "FP32 run's (the yolov5 repo's rows keep AMP)."] if table.amp_off_on else []),
        "Training iterations only: the validation pass and later epochs are not in these peaks.",
        *(f"{', '.join(models)}: {why}; their verdicts and max batches judge epoch 1 alone (`yolomem fit` judges "
          "the whole run)." for why, models in table.epoch1_only),
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
        cols += [f"{precision}_peak_reserved_bytes", f"{precision}_device_total_bytes",
                 f"{precision}_peak_reserved_upper_bytes", f"{precision}_device_total_upper_bytes"]  # the verdicts' figures
        cols += [f"{precision}_fits_{gpu}" for gpu in table.gpus]
        cols += [f"{precision}_max_batch_{gpu}" for gpu in table.gpus]
    writer.writerow(cols)
    for row in table.rows:
        values = [row.model, row.framework, row.task, row.imgsz, row.batch, row.params,
                  "" if row.gflops is None else round(row.gflops, 1)]  # fmt: skip
        for result in (row.fp32, row.amp):
            values += [result.peak_reserved_bytes, result.device_total_bytes, result.peak_reserved_upper_bytes,
                       result.device_total_upper_bytes]  # fmt: skip
            values += [g.fits for g in result.gpus]
            values += [g.max_batch for g in result.gpus]
        writer.writerow(values)
    return buffer.getvalue()


def to_json(table: Table) -> str:
    return json.dumps(table.to_json(), indent=2)


def render_rich(table: Table, console=None) -> None:
    """The terminal view: the full table is 10 + 2 x cards columns, too wide to read in a terminal, so
    it is shown as one memory table and card tables (as many cards side by side as the width holds).
    --csv, --markdown and --json keep every column."""
    from rich.console import Console

    console = console or Console()
    console.print(_memory_view(table))
    for group in _card_groups(table, console):
        console.print(_cards_view(table, group))
    for note in footer(table):
        console.print(f"[dim]{note}[/dim]")


def _memory_view(table: Table):
    from rich.table import Table as RichTable

    mixed = "/" in table.gpu_mem_unit
    view = RichTable(title="GPU memory of YOLO training at each row's imgsz and batch (computed by yolomem)",
                     title_justify="left")  # fmt: skip
    view.add_column("model", no_wrap=True)
    for name in ("imgsz", "batch", "params\n(M)", "GFLOPs", "nvidia-smi GiB\nFP32 / AMP",
                 f"GPU_mem{'' if mixed else f' ({table.gpu_mem_unit})'}\nFP32 / AMP"):  # fmt: skip
        view.add_column(name, justify="right", no_wrap=True)
    for row in table.rows:
        gpu_mem = f"{row.fp32.gpu_mem_printed} / {row.amp.gpu_mem_printed}"
        if mixed:  # name the unit where the column mixes trainers
            gpu_mem += f" ({row.fp32.gpu_mem_unit})"
        view.add_row(row.model, str(row.imgsz), str(row.batch), f"{row.params / 1e6:.2f}", _gflops(row),
                     f"{_gb(row.fp32.device_total_bytes)} / {_gb(row.amp.device_total_bytes)}", gpu_mem)  # fmt: skip
    return view


def _cards_view(table: Table, cards: tuple[int, ...]):
    from rich.table import Table as RichTable

    view = RichTable(title="On each card: fits at the row's batch, and the largest batch; FP32 / AMP",
                     title_justify="left")  # fmt: skip
    view.add_column("model", no_wrap=True)
    for index in cards:
        first = table.rows[0].fp32.gpus[index]
        view.add_column(card_label(first.gpu, first.total_bytes), justify="right", no_wrap=True)
    for row in table.rows:
        view.add_row(row.model, *(f"{MARKS[row.fp32.gpus[i].fits]} {row.fp32.gpus[i].max_batch} / "
                                   f"{MARKS[row.amp.gpus[i].fits]} {row.amp.gpus[i].max_batch}" for i in cards))  # fmt: skip
    return view


def _card_groups(table: Table, console) -> list[tuple[int, ...]]:
    """Consecutive cards, as many per table as fit the console's width (at least one)."""
    unbounded = console.options.update_width(10_000)  # measure the natural width, not one clipped to the console

    def width(cards: tuple[int, ...]) -> int:
        return console.measure(_cards_view(table, cards), options=unbounded).maximum

    groups: list[tuple[int, ...]] = []
    for index in range(len(table.gpus)):
        if groups and width((*groups[-1], index)) <= console.width:
            groups[-1] = (*groups[-1], index)
        else:
            groups.append((index,))
    return groups


def models_markdown(entries) -> str:
    """``yolomem models`` as plain text columns."""
    lines = [f"{'name':<26} {'family':<12} {'framework':<12} {'params (M)':>10}  tasks"]
    for entry in entries:
        params = "–" if entry.params is None else f"{entry.params / 1e6:.2f}"
        lines.append(f"{entry.name:<26} {entry.family:<12} {entry.framework:<12} {params:>10}  {entry.task}")
    return "\n".join(lines) + "\n"
