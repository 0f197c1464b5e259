"""``yolomem report``: one self-contained HTML page for one configuration.

Everything is inline: the style sheet, the figures (SVG elements, text drawn as outlines) and the
estimate's JSON with each card's verdict (``<script type="application/json" id="estimate-json">``,
``report_json``). The page loads nothing:
no scripts, fonts, images or style sheets from anywhere. Every number in a table also carries its exact
value in a ``data-bytes`` attribute, so a test (or a reader's script) can check the page against the
JSON without parsing the rounded text.
"""

from __future__ import annotations

import html
import json
import shlex
from collections.abc import Sequence

from yolomem.config.gpus import GiB
from yolomem.sweeps.figure_data import ReportData
from yolomem.sweeps.fit import DEFAULT_MARGIN
from yolomem.render import plots
from yolomem.render.units import card_label, gpu_mem_unit_label

_STYLE = """
body { font-family: "DejaVu Sans", "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #1d1d1f; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { padding: 0.25em 0.8em; border-bottom: 1px solid #eee; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.big { font-size: 1.6em; font-weight: bold; }
.yes { color: #1a7f37; font-weight: bold; } .no { color: #b42318; font-weight: bold; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; }
figcaption { color: #444; font-size: 0.9em; max-width: 900px; }
pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; }
.note { color: #7a5b00; } .dim { color: #666; font-size: 0.9em; }
"""
_PART_LABELS = plots.PART_LABELS


def _gib(nbytes: int) -> str:
    return f"{nbytes / GiB:.3f} GiB"


def _size_cells(key: str, nbytes: int) -> str:
    return f'<td class="num" data-key="{key}" data-bytes="{nbytes}">{_gib(nbytes)}</td>'



def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def render_report(data: ReportData) -> str:
    """The page as a string."""
    est = data.estimate
    cfg = est.config
    title = f"{cfg.model} · batch {cfg.batch} · imgsz {cfg.imgsz} · {cfg.amp} · {cfg.optimizer}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'; img-src data:">',
        f"<title>yolomem report: {_esc(title)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>GPU memory of training {_esc(cfg.model)}</h1>",
        f'<p class="sub">{_esc(title)} · {est.params / 1e6:.2f} M params · task {_esc(est.task)}. '
        "Predicted without a GPU by replaying the real training step through a model of PyTorch's "
        "CUDA caching allocator.</p>",
        _summary(data),
        _fits(data),
        _figures(data),
        _breakdown_table(data),
        _top_layers(data),
        _deployment(data),
        _caveats(data),
        _commands(data),
        f'<p class="dim">yolomem {_esc(est.yolomem_version)} · torch {_esc(est.torch_version)} · '
        f"ultralytics {_esc(est.ultralytics_version)} · estimate computed in {est.seconds:.1f} s</p>",
        _json_block(data),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _summary(data: ReportData) -> str:
    est = data.estimate
    trainer = "yolov5 train.py" if est.config.framework == "yolov5" else "Ultralytics"
    rows = [
        ("gpu_mem_printed", f"{trainer} GPU_mem column (memory_reserved, {gpu_mem_unit_label(est.gpu_mem_unit)})",
         f'<td class="num big" data-key="gpu_mem_printed" data-text="{_esc(est.gpu_mem_printed)}">'
         f"{_esc(est.gpu_mem_printed)}</td>"),
        ("device_total_bytes", "nvidia-smi total (reserved + CUDA context)",
         _size_cells("device_total_bytes", est.device_total_bytes)),
        ("peak_reserved_bytes", "peak reserved", _size_cells("peak_reserved_bytes", est.peak_reserved_bytes)),
        ("peak_reserved_upper_bytes", "peak reserved, upper figure (9 runs in 10 stay under; verdicts use it)",
         _size_cells("peak_reserved_upper_bytes", est.peak_reserved_upper_bytes)),
        ("device_total_upper_bytes", "nvidia-smi total, upper figure",
         _size_cells("device_total_upper_bytes", est.device_total_upper_bytes)),
        ("peak_allocated_bytes", "peak allocated", _size_cells("peak_allocated_bytes", est.peak_allocated_bytes)),
        ("context_bytes", "CUDA context (assumed)", _size_cells("context_bytes", est.context_bytes)),
        ("peak_phase", "peak happens in",
         f'<td class="num" data-key="peak_phase" data-text="{_esc(est.peak_phase)}">{_esc(est.peak_phase)}</td>'),
    ]  # fmt: skip
    body = "".join(f"<tr><th>{_esc(label)}</th>{cells}</tr>" for _key, label, cells in rows)
    return f'<h2>Estimate</h2><table id="estimate">{body}</table>'


def _fits(data: ReportData) -> str:
    if not data.fits:
        return ""
    rows = []
    for fit in data.fits:
        verdict = '<span class="yes">fits</span>' if fit.fits else '<span class="no">does not fit</span>'
        largest = "none" if fit.largest_batch is None else str(fit.largest_batch)
        # each step of the verdict's arithmetic: total - context = after it; after it - margin = for training
        budget = fit.gpu.budget
        sizes = (("card_total_bytes", budget.gpu.total_bytes), ("card_context_bytes", budget.context_bytes + budget.host_bytes),
                 ("card_after_context_bytes", budget.after_context_bytes), ("card_margin_bytes", budget.margin_bytes),
                 ("card_capacity_bytes", budget.capacity_bytes))  # fmt: skip
        cells = "".join(f'<td class="num" data-key="{key}" data-bytes="{value}">{_gib(value)}</td>' for key, value in sizes)
        rows.append(
            f'<tr data-gpu="{_esc(fit.gpu.name)}"><th>{_esc(card_label(fit.gpu.name, fit.gpu.total_bytes))}</th>{cells}'
            f'<td data-key="card_fits" data-value="{str(fit.fits).lower()}">{verdict}</td>'
            f'<td class="num" data-key="largest_batch" data-value="{largest}">{largest}</td>'
            f'<td class="dim">{_esc(fit.method)}</td></tr>'
        )
    batch = data.estimate.config.batch
    head = ("<tr><th>GPU</th><th>total</th><th>minus the CUDA context (upper; a Jetson's: and the training "
            "process's RAM)</th><th>after the context</th>"
            f"<th>minus the margin ({data.margin:.0%} of that)</th><th>for training</th><th>batch {batch}</th>"
            "<th>largest batch</th><th>how</th></tr>")  # fmt: skip
    note = (f'<p class="dim">Judged as every verdict of yolomem is: the card minus the upper figure\'s CUDA context '
            f"(the most measured; the estimate above shows the typical one), minus a {data.margin:.0%} margin of "
            "what is left for what the trace does not see (cuDNN workspaces, validation, later epochs); the largest "
            "batch is traced and fits, one more is traced and does not.</p>")  # fmt: skip
    return f'<h2>Fit on the chosen GPUs</h2><table id="fits">{head}{"".join(rows)}</table>{note}'


def _figures(data: ReportData) -> str:
    try:
        curve = plots.to_svg(plots.draw_curves(data.curve, caption=False))
        breakdown = plots.to_svg(plots.draw_breakdown(data.breakdown))
        timeline = plots.to_svg(plots.draw_timeline(data.timeline))
    except plots.PlotsUnavailable as error:
        return f'<h2>Figures</h2><p class="note">No figures: {_esc(error)}</p>'
    tl = data.timeline
    where = f" in {tl.peak_layer}" if tl.peak_layer else ""
    return "".join([
        '<h2>Memory against batch</h2><figure id="curve">', curve,
        f"<figcaption>{_esc(plots.curve_caption(data.curve))}</figcaption></figure>",
        '<h2>Where the memory goes</h2><figure id="breakdown">', breakdown,
        "<figcaption>The breakdown at the moment allocated memory peaks; the CUDA context is outside "
        "GPU_mem but shows in nvidia-smi.</figcaption></figure>",
        '<h2>One training iteration</h2><figure id="timeline">', timeline,
        f"<figcaption>Allocated and reserved memory over the allocation events of iteration "
        f"{tl.iteration + 1}, phases shaded. Peak allocated in this iteration: "
        f'<span data-key="timeline_peak_allocated_bytes" data-bytes="{tl.peak_allocated_bytes}">'
        f"{_gib(tl.peak_allocated_bytes)}</span>, during {_esc(tl.peak_phase)}{_esc(where)}.</figcaption></figure>",
    ])  # fmt: skip


def _breakdown_table(data: ReportData) -> str:
    est = data.estimate
    total = max(sum(est.breakdown.values()), 1)
    rows = "".join(
        f'<tr data-category="{_esc(key)}"><th>{_esc(_PART_LABELS.get(key, key))}</th>'
        f"{_size_cells(key, nbytes)}<td class=\"num\">{100 * nbytes / total:.1f} %</td></tr>"
        for key, nbytes in est.breakdown.items()
    )
    return f'<h2>Breakdown at the peak</h2><table id="breakdown-table">{rows}</table>'


def _top_layers(data: ReportData) -> str:
    layers = data.estimate.top_layers
    if not layers:
        return '<h2>Top layers</h2><p class="dim">No layer holds activation memory at the peak.</p>'
    rows = "".join(
        f'<tr data-layer="{_esc(layer.module)}"><th>{_esc(layer.module)}</th>{_size_cells("layer", layer.bytes)}</tr>'
        for layer in layers
    )
    return f'<h2>Layers holding the most activation memory at the peak</h2><table id="top-layers">{rows}</table>'


def _deployment(data: ReportData) -> str:
    """``report deploy=FORMAT``: the trained model's deployment (yolomem.deployment), term by term."""
    deployment = data.deployment
    if deployment is None:
        return ""
    from yolomem.render.deploy_output import title

    rows = []
    for group, terms in (("run time", deployment.runtime), ("build", deployment.build),
                         ("INT8 calibration", deployment.calibration), ("host RAM", deployment.host)):  # fmt: skip
        for term in terms:
            span = "" if term.low == term.high else f"{_gib(term.low)} - {_gib(term.high)}"
            rows.append(f"<tr><td>{_esc(group)}</td><th>{_esc(term.label)}</th>{_size_cells('deploy.' + term.key, term.bytes)}"
                        f'<td class="num">{span}</td><td>{_esc(term.basis)}</td></tr>')  # fmt: skip
    rows.append(f"<tr><td></td><th>on the device while running</th>{_size_cells('deploy.runtime_bytes', deployment.runtime_bytes)}"
                "<td></td><td></td></tr>")  # fmt: skip
    if deployment.ram_left_bytes is not None:
        rows.append(f"<tr><td></td><th>RAM left for the OS and the application</th>"
                    f"{_size_cells('deploy.ram_left_bytes', deployment.ram_left_bytes)}<td></td><td></td></tr>")  # fmt: skip
        rows.append(f"<tr><td></td><th>kept for the OS (os_reserve=)</th>"
                    f"{_size_cells('deploy.os_reserve_bytes', deployment.os_reserve_bytes)}<td></td><td></td></tr>")  # fmt: skip
    return (f'<h2>Deployment</h2><p class="sub">{_esc(title(deployment))}</p>'
            f'<table id="deployment">{"".join(rows)}</table>')


def _caveats(data: ReportData) -> str:
    est = data.estimate
    items = [f'<li class="note">note: {_esc(n)}</li>' for n in est.notes]
    items += [f'<li class="dim">not modelled: {_esc(u)}</li>' for u in est.unaccounted]
    return f"<h2>Notes and limits</h2><ul>{''.join(items)}</ul>" if items else ""


def command_lines(data: ReportData) -> tuple[str, ...]:
    """The commands that reproduce the page and each of its numbers."""
    words = list(data.words)
    gpus = [fit.gpu.name for fit in data.fits]
    xs = ",".join(str(p.x) for p in data.curve.curves[0].points) if data.curve.curves else ""
    gpu_word = [f"gpu={','.join(gpus)}"] if gpus else []
    margin = [] if data.margin == DEFAULT_MARGIN else [f"margin={data.margin:g}"]
    lines = [
        _join(["yolomem", "estimate", *words]),
        _join(["yolomem", "estimate", *words, "--json"]),
        *(_join(["yolomem", "estimate", *words, f"gpu={name}"]) for name in gpus),
        *(_join(["yolomem", "fit", *words, f"gpu={name}", *margin]) for name in gpus),
        _join(["yolomem", "plot", *words, f"batches={xs}", *gpu_word, "-o", "curve.svg"]),
        _join(["yolomem", "report", *words, f"batches={xs}", *gpu_word, *margin, "-o", "report.html"]),
    ]
    return tuple(lines)


def _join(words: Sequence[str]) -> str:
    return shlex.join(words)


def _commands(data: ReportData) -> str:
    lines = "\n".join(_esc(line) for line in command_lines(data))
    return f'<h2>Reproduce</h2><pre id="commands">{lines}</pre>'


def report_json(data: ReportData) -> dict:
    """The estimate's JSON (``estimate --json``) and the page's verdict on each card: its budget
    (``Budget.to_json``), whether this configuration fits, the largest batch that does and how it was found."""
    cards = [line.gpu.budget.to_json() | {"fits": line.fits, "largest_batch": line.largest_batch, "method": line.method}
             for line in data.fits]  # fmt: skip
    return data.estimate.to_json() | {"cards": cards}


def _json_block(data: ReportData) -> str:
    payload = json.dumps(report_json(data), indent=1).replace("</", "<\\/")  # cannot close the script
    return f'<script type="application/json" id="estimate-json">{payload}</script>'


__all__ = ["command_lines", "render_report", "report_json"]
