"""Draw yolomem's figures with matplotlib (the optional ``plot`` extra). Drawing only: the numbers come
from ``yolomem.sweeps.figure_data`` and ``yolomem.result.timeline``.

matplotlib is imported when a figure is drawn, never at import. Figures are built with the
object-oriented ``matplotlib.figure.Figure`` (no pyplot, no backend switch, no global state); style
settings are applied inside ``rc_context``, which restores them. Text uses the bundled DejaVu Sans, so
nothing is fetched.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from yolomem.config.gpus import GiB
from yolomem.errors import UserError
from yolomem.render.units import card_name, gpu_mem_unit_label

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from yolomem.sweeps.figure_data import BreakdownFigure, CurveFigure
    from yolomem.result.timeline import Timeline

INSTALL_HINT = "plots need matplotlib: pip install 'yolomem[plot]'"
FORMATS = (".png", ".svg", ".pdf")
_RC = {
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "svg.fonttype": "path",  # text as outlines: the SVG renders the same without any font installed
    "svg.hashsalt": "yolomem",  # stable element ids, so the same data gives the same file
    "axes.grid": True,
    "grid.alpha": 0.3,
}
PART_LABELS = {
    "parameter": "parameters + buffers",
    "gradient": "gradients",
    "optimizer_state": "optimizer state",
    "ema": "EMA copy",
    "activation": "activations",
    "loss": "loss / assigner",
    "input": "input batch",
    "other": "other temporaries",
    "cublas_workspace": "cuBLAS workspaces",
    "cublaslt_workspace": "cuBLASLt workspaces",
    "cudnn_workspace": "cuDNN workspaces",
    "allocator_rounding": "allocator rounding",
    "cache_fragmentation": "cache + fragmentation",
    "validation_epochs_growth": "validation / epochs 2+",
    "cuda_context": "CUDA context",
}
PHASE_COLOURS = {
    "preprocess": "#dddddd", "forward": "#cfe3f7", "loss": "#f7e3c4", "backward": "#f9d0d0",
    "optimizer": "#d5efd0", "ema": "#e6dcf3",
}  # fmt: skip


class PlotsUnavailable(UserError):
    """matplotlib is not installed; the message is the install hint."""


def _matplotlib():
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ModuleNotFoundError as error:
        if error.name and error.name.split(".")[0] == "matplotlib":
            raise PlotsUnavailable(INSTALL_HINT) from None
        raise
    return matplotlib, Figure


def require_matplotlib() -> None:
    """Raise ``PlotsUnavailable`` (with the install hint) now, before minutes of estimating."""
    _matplotlib()


def gib(nbytes: int) -> float:
    return nbytes / GiB


# One line style per precision; the cards' lines get a style no curve uses, so the caption can name it.
PRECISION_STYLES = {"fp16": "-", "fp32": "--", "bf16": ":"}
CARD_STYLE = "-."
STYLE_NAMES = {"-": "solid", "--": "dashed", ":": "dotted", "-.": "dash-dot"}
_PRECISION_NAMES = {"fp16": "AMP (fp16)", "fp32": "FP32", "bf16": "AMP bf16"}
LEGEND_HANDLE_LENGTH = 4.0  # in font sizes: long enough for two dashes of a dashed line


def curve_caption(data: CurveFigure) -> str:
    if data.measure == "gpu_mem":
        trainer = (f"the GPU_mem column the trainer prints, there in {gpu_mem_unit_label(data.gpu_mem_unit)}"
                   if data.gpu_mem_unit != "GiB" else "the GPU_mem column the trainer prints")  # fmt: skip
        what = f"Peak reserved memory in GiB ({trainer}), without the CUDA context"
        lines = f"{STYLE_NAMES[CARD_STYLE]} lines: what each card gives a run (total minus CUDA context minus the margin)"
    else:
        what = "Device total in GiB: peak reserved plus the CUDA context, what nvidia-smi shows"
        lines = f"{STYLE_NAMES[CARD_STYLE]} lines: each card's total memory minus the margin"
    fixed = ", ".join(f"{k} {v}" for k, v in data.fixed)
    amps = list(dict.fromkeys(curve.amp for curve in data.curves))
    styles = ", ".join(f"{STYLE_NAMES[PRECISION_STYLES[amp]]}: {_PRECISION_NAMES[amp]}" for amp in amps)
    text = f"{what}, against {data.x_name} ({fixed}). Curves {styles}."
    if data.gpu_lines:
        text += f" {lines[0].upper()}{lines[1:]}; circles: the largest sampled {data.x_name} that fits."
    if data.amp_off_on:
        text += (f" On {', '.join(data.amp_off_on)} Ultralytics' check_amp turns AMP off: a run there trains as the "
                 "FP32 curve.")  # fmt: skip
    return text


def draw_curves(data: CurveFigure, *, caption: bool = True) -> Figure:
    """``caption=False`` when the page around the figure prints ``curve_caption`` itself."""
    matplotlib, Figure = _matplotlib()
    from matplotlib.lines import Line2D

    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=(8, 5.2), layout="constrained")
        ax = figure.add_subplot()
        colours = matplotlib.colormaps["tab10"]
        models = list(dict.fromkeys(curve.model for curve in data.curves))
        top = max((data.value(p) for c in data.curves for p in c.points), default=GiB)
        # Legend entries are drawn without the markers: a marker in the middle of a short dashed
        # sample hides the gap, and the dashed FP32 line would read as solid.
        handles: list = []
        for curve in data.curves:
            colour = colours(models.index(curve.model) % 10)
            style = PRECISION_STYLES[curve.amp]
            ax.plot(
                [p.x for p in curve.points], [gib(data.value(p)) for p in curve.points],
                linestyle=style, marker="o", color=colour, label=curve.label, linewidth=1.8, markersize=4,
            )  # fmt: skip
            handles.append(Line2D([], [], linestyle=style, color=colour, linewidth=1.8, label=curve.label))
        # A card whose line is far above every point would squash the curves: say so in the legend.
        shown = [line for line in data.gpu_lines if data.threshold(line) <= 2.5 * top]
        hidden = [line for line in data.gpu_lines if line not in shown]
        gpu_colours = matplotlib.colormaps["Dark2"]
        for gi, line in enumerate(data.gpu_lines):
            y = gib(data.threshold(line))
            kind = f"after a {line.budget.margin:.0%} margin"
            every = all(c.all_fit for c in data.crossings if c.gpu == gi)
            label = f"{card_name(line.name)}: {y:.3g} GiB {kind}"
            if line in shown:
                label += " (all sampled fit)" if every else ""
                ax.axhline(y, color=gpu_colours(gi % 8), linestyle=CARD_STYLE, linewidth=1.2, label=label)
                handles.append(Line2D([], [], linestyle=CARD_STYLE, color=gpu_colours(gi % 8), linewidth=1.2, label=label))
            else:
                handles.append(Line2D([], [], linestyle="none", label=f"{label} (above the plot)"))
        placed: list[tuple[int, float]] = []  # (x, y) of the labels drawn: one near another goes above it
        near = 0.04 * gib(top)  # labels closer than this on the same x would overlap
        for crossing in data.crossings:
            line = data.gpu_lines[crossing.gpu]
            if line in hidden or crossing.all_fit:
                continue
            curve = data.curves[crossing.curve]
            colour = colours(models.index(curve.model) % 10)
            if crossing.largest_x is None:
                first = curve.points[0]
                ax.annotate(f"{card_name(line.name)}: no {data.x_name} fits", (first.x, gib(data.value(first))),
                            xytext=(6, -14), textcoords="offset points", fontsize=8, color=colour)
                continue
            point = next(p for p in curve.points if p.x == crossing.largest_x)
            y = gib(data.value(point))
            ax.plot([point.x], [y], "o", markersize=9, markerfacecolor="none", markeredgecolor="black")
            above = sum(1 for x, other in placed if x == point.x and abs(other - y) < near)
            placed.append((point.x, y))
            ax.annotate(f"{card_name(line.name)}: {data.x_name} {point.x}", (point.x, y), xytext=(6, 6 + 11 * above),
                        textcoords="offset points", fontsize=8, color=colour)
        xs = sorted({p.x for c in data.curves for p in c.points})
        if data.x_name == "batch" and len(xs) > 1 and xs[-1] / xs[0] >= 8:
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_ylim(0, 1.1 * gib(max([top, *(data.threshold(line) for line in shown)])))
        ax.set_xlabel(data.x_name)
        ax.set_ylabel("GiB (2^30 bytes)")
        ax.set_title("GPU_mem (peak reserved)" if data.measure == "gpu_mem" else "device total (nvidia-smi)",
                     loc="left")
        ax.legend(handles=handles, loc="upper left", fontsize=8, framealpha=0.9, handlelength=LEGEND_HANDLE_LENGTH)
        if caption:
            figure.text(0.01, 0.0, _wrap(curve_caption(data), 120), fontsize=8, va="top", ha="left",
                        transform=figure.transFigure)
    return figure


def draw_breakdown(data: BreakdownFigure) -> Figure:
    matplotlib, Figure = _matplotlib()
    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=(8, 1.6 + 0.7 * len(data.bars)), layout="constrained")
        ax = figure.add_subplot()
        colours = matplotlib.colormaps["tab20"]
        categories = list(dict.fromkeys(part.category for bar in data.bars for part in bar.parts))
        for row, bar in enumerate(data.bars):
            left = 0.0
            for part in bar.parts:
                width = gib(part.bytes)
                ax.barh(row, width, left=left, color=colours(categories.index(part.category) % 20),
                        edgecolor="white", linewidth=0.5,
                        label=f"{PART_LABELS.get(part.category, part.category)}" if row == 0 else None)
                left += width
            ax.annotate(f"{gib(bar.total_bytes):.3f} GiB", (left, row), xytext=(4, 0),
                        textcoords="offset points", va="center", fontsize=9)
        ax.set_yticks(range(len(data.bars)), [bar.label for bar in data.bars])
        ax.invert_yaxis()
        ax.set_xlabel("GiB (2^30 bytes) at the peak; the CUDA context is outside GPU_mem")
        ax.set_title("Where the memory goes", loc="left")
        ax.margins(x=0.15)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35 if len(data.bars) < 3 else -0.15),
                  ncol=4, fontsize=8, frameon=False)
    return figure


def draw_timeline(data: Timeline) -> Figure:
    matplotlib, Figure = _matplotlib()
    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=(9, 4.6), layout="constrained")
        ax = figure.add_subplot()
        steps = range(data.steps)
        shaded = set()
        for span in data.shading:
            ax.axvspan(span.start, span.stop, color=PHASE_COLOURS.get(span.phase, "#eeeeee"), linewidth=0,
                       label=span.phase if span.phase not in shaded else None)
            shaded.add(span.phase)
        ax.step(steps, [gib(b) for b in data.reserved_bytes], where="post", color="#c0392b", linewidth=1.4,
                label="reserved (GPU_mem)")
        ax.step(steps, [gib(b) for b in data.allocated_bytes], where="post", color="#1f4e8c", linewidth=1.2,
                label="allocated")
        peak_y = gib(data.peak_allocated_bytes)
        where = f" in {data.peak_layer}" if data.peak_layer else ""
        ax.plot([data.peak_offset], [peak_y], "o", color="black", markersize=5)
        ax.annotate(
            f"peak allocated {peak_y:.3f} GiB\n{data.peak_phase}{where}",
            (data.peak_offset, peak_y), xytext=(min(max(data.peak_offset / max(data.steps, 1), 0.2), 0.8), 0.12),
            textcoords="axes fraction", fontsize=9, ha="center", arrowprops={"arrowstyle": "->", "color": "black", "linewidth": 0.8},
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.9},
        )  # fmt: skip
        ax.set_xlim(0, max(data.steps - 1, 1))
        ax.set_ylim(bottom=0, top=gib(max(data.reserved_bytes)) * 1.12 or 1)
        ax.set_xlabel(f"allocation event of iteration {data.iteration + 1} (allocs and frees, in order)")
        ax.set_ylabel("GiB (2^30 bytes)")
        title = "One training iteration: allocated and reserved memory"
        if data.oom:
            title += " (stopped: out of memory)"
        ax.set_title(title, loc="left")
        ax.legend(loc="upper left", fontsize=8, ncol=2, framealpha=0.9)
    return figure


def save(figure: Figure, path: str | Path) -> Path:
    """Write a figure; the suffix picks the format (.png, .svg or .pdf)."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise UserError(f"cannot write {path.name!r}: the file name must end in {', '.join(FORMATS)}")
    matplotlib, _ = _matplotlib()
    with matplotlib.rc_context(_RC):
        figure.savefig(path, dpi=150, bbox_inches="tight", metadata=_metadata(path.suffix.lower()))
    return path


def to_svg(figure: Figure) -> str:
    """The figure as an ``<svg>`` element for inlining into HTML (no XML prolog, no DOCTYPE)."""
    matplotlib, _ = _matplotlib()
    buffer = io.StringIO()
    with matplotlib.rc_context(_RC):
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata=_metadata(".svg"))
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _metadata(suffix: str) -> dict:
    if suffix == ".svg":
        return {"Date": None, "Creator": "yolomem"}
    if suffix == ".pdf":
        return {"CreationDate": None, "Creator": "yolomem"}
    return {"Software": "yolomem"}


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


__all__ = ["INSTALL_HINT", "PlotsUnavailable", "require_matplotlib", "curve_caption", "draw_breakdown", "draw_curves", "draw_timeline", "save", "to_svg"]
