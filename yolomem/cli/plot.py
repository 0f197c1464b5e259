"""``yolomem plot`` and ``yolomem report``: pictures and a self-contained HTML page.

    yolomem plot yolov8n.yaml yolov8s.yaml gpu=T4,RTX-3090 batches=2,4,8,16 -o curve.png
    yolomem plot yolov8n.yaml x=imgsz sizes=320,480,640 batch=16 -o imgsz.svg
    yolomem plot yolov8n.yaml batch=16 kind=timeline -o timeline.png   (or kind=breakdown)
    yolomem report yolov8n.yaml batch=16 gpu=T4,RTX-3090 -o report.html

Keys of their own (the rest are the estimate's; ``yolomem plot --help`` lists them):
``gpu=A,B`` (cards; lines on the curve, rows in the report), ``amp=true,false`` (precisions of the
curve; default both), ``x=batch|imgsz``, ``batches=1,2,4,8``, ``sizes=320,640``,
``measure=gpu_mem|device_total``, ``kind=curve|breakdown|timeline`` (plot), ``margin=0.1`` (report: the
share of usable memory held back when judging fits, as for ``yolomem fit``).
Progress goes to stderr; the path written goes to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path

from yolomem.cli.registry import DEFAULT_MODEL, OUTPUT, command
from yolomem.config.keys import CHOICE, ESTIMATE_KEYS, INTS, MARGIN, TEXTS, Key, Words
from yolomem.config.keys import MAX_CURVE_POINTS as MAX_POINTS
from yolomem.errors import UserError

KINDS = ("curve", "breakdown", "timeline")
DEFAULT_REPORT_GPUS = ("T4", "RTX-3090", "A100-80GB")  # a common 16, 24 and 80 GB card
_CARDS = Key("gpu", TEXTS, None, "cards to draw (plot: lines; report: rows), e.g. T4,RTX-3090", nullable=True)
_AMPS = Key("amp", TEXTS, None, "precisions: true (fp16), false (fp32), bf16; plot: a list (default: true,false)",
            nullable=True)
_BATCHES = Key("batches", INTS, None, f"batches to estimate, at most {MAX_POINTS}", nullable=True, low=1,
               max_items=MAX_POINTS)
PLOT_KEYS = ESTIMATE_KEYS.plus(
    _CARDS, _AMPS,
    Key("kind", CHOICE, "curve", "curve: memory against x; breakdown or timeline: one estimate", choices=KINDS),
    Key("x", CHOICE, "batch", "the curve's x axis", choices=("batch", "imgsz")),
    _BATCHES,
    Key("sizes", INTS, None, f"image sizes for x=imgsz, at most {MAX_POINTS}", nullable=True, low=1, max_items=MAX_POINTS),
    Key("measure", CHOICE, "gpu_mem", "gpu_mem (what the trainer prints) or device_total (nvidia-smi)",
        choices=("gpu_mem", "device_total")),
)  # fmt: skip
REPORT_KEYS = ESTIMATE_KEYS.plus(
    _CARDS.but(help=f"cards of the fits table (default: {','.join(DEFAULT_REPORT_GPUS)})"),
    _AMPS.but(help="the precision: true (fp16), false (fp32) or bf16"), _BATCHES,
    MARGIN.but(help="report: share of the card after the CUDA context held back when judging fits, as for yolomem fit"),
    Key("deploy", CHOICE, None, "add a deployment section (yolomem deploy): torch, onnx or engine, FP16 "
        "(onnx: FP32), batch 1, on the first card", choices=("torch", "onnx", "engine"), nullable=True),
)  # fmt: skip
_OWN = ("gpu", "amp", "kind", "x", "batches", "sizes", "measure", "margin", "deploy")


def _parse(words: list[str], table) -> tuple[Words, tuple[str, ...]]:
    """The parsed words and the models: bare words and ``model=``, in order."""
    from yolomem.config.settings import parse_estimate_words

    parsed = parse_estimate_words(words, table)
    models = parsed.positionals + ((parsed.values["model"],) if "model" in parsed.values else ())
    return parsed, models or (DEFAULT_MODEL,)


def _estimate_words(words: list[str]) -> tuple[str, ...]:
    """The ``key=value`` words of the estimate itself, as typed (for the report's command lines)."""
    return tuple(w for w in words if "=" in w and w.partition("=")[0].strip() not in (*_OWN, "model"))


def _gpus(cards: tuple[str, ...] | None, gpu_mem: float | None):
    from yolomem.config.gpus import find_gpu

    names = list(cards or ())
    if gpu_mem is not None and len(names) <= 1:
        return [find_gpu(names[0] if names else "", gpu_mem)]
    if gpu_mem is not None:
        raise UserError("gpu_mem= sets the memory of one card; name a single gpu= with it")
    return [find_gpu(name) for name in names]


def _amps(given: tuple[str, ...] | None, default: tuple[str, ...]) -> tuple[str, ...]:
    if not given:
        return default
    return ESTIMATE_KEYS["amp"].parse_each(given)


def _output(options: argparse.Namespace, default: str, suffixes: tuple[str, ...]) -> Path:
    path = Path(getattr(options, "output", None) or default)
    if path.suffix.lower() not in suffixes:
        raise UserError(f"-o {str(path)!r}: the file name must end in {' or '.join(suffixes)}")
    if not path.parent.exists():
        raise UserError(f"-o {str(path)!r}: folder {str(path.parent)!r} does not exist")
    return path


@contextlib.contextmanager
def _progress(label: str) -> Iterator:
    """The shared progress display (``yolomem.cli.progress``), as the figures' (done, total, what) callback."""
    from yolomem.cli.progress import progress_display

    with progress_display(label) as display:
        yield display.step


def _base_config(parsed: Words, model: str):
    from yolomem.config.settings import EstimateConfig

    config = EstimateConfig.from_parsed(Words((model,), parsed.values, parsed.notes), skip=("gpu", "amp", "model"))
    return config.fixed_batch()


@command(
    "plot", "draw memory against batch or imgsz (or kind=breakdown|timeline) to a .png/.svg/.pdf",
    keys=PLOT_KEYS, words="[MODEL ...]", flags=(OUTPUT.but("the picture to write: .png, .svg or .pdf"),),
    examples=("yolomem plot yolov8n.yaml yolov8s.yaml gpu=T4,RTX-3090 batches=2,4,8,16 -o curve.png",
              "yolomem plot yolov8n.yaml x=imgsz sizes=320,480,640 batch=16 -o imgsz.svg",
              "yolomem plot yolov8n.yaml batch=16 kind=timeline -o timeline.png"),
)  # fmt: skip
def _plot(options: argparse.Namespace) -> int:
    from yolomem.render import plots
    from yolomem.sweeps import figure_data as plots_data

    parsed, models = _parse(options.words, PLOT_KEYS)
    own = parsed.values
    kind = own.get("kind", "curve")
    path = _output(options, f"yolomem_{kind}.png", plots.FORMATS)
    base = _base_config(parsed, models[0])
    plots.require_matplotlib()  # fail with the install hint before minutes of estimating
    if kind == "curve":
        x_name = own.get("x", "batch")
        key = "batches" if x_name == "batch" else "sizes"
        other = "sizes" if key == "batches" else "batches"
        if own.get(other) is not None:
            raise UserError(f"{other}= goes with x={'imgsz' if other == 'sizes' else 'batch'}; use {key}= for x={x_name}")
        with _progress("estimating") as progress:
            data = plots_data.curve_figure(
                models, base=base.with_changes(gpu=None, gpu_mem=None), x_name=x_name, xs=own.get(key),
                amps=_amps(own.get("amp"), ("fp16", "fp32")), gpus=_gpus(own.get("gpu"), base.gpu_mem or None),
                measure=own.get("measure", "gpu_mem"), progress=progress,
            )  # fmt: skip
        figure = plots.draw_curves(data)
    else:
        from yolomem.result.estimate import estimate_config
        from yolomem.result.timeline import estimate_timeline

        if len(models) > 1:
            raise UserError(f"kind={kind} draws one model; got {len(models)}")
        config = base.with_changes(amp=_amps(own.get("amp"), (base.amp,))[0])
        with _progress("estimating") as progress:
            progress(0, 1, config.model)
            result = estimate_config(config)
            progress(1, 1, "done")
        if kind == "breakdown":
            figure = plots.draw_breakdown(plots_data.breakdown_figure([(plots_data._bar_label(result), result)]))
        else:
            figure = plots.draw_timeline(estimate_timeline(result))
    plots.save(figure, path)
    print(path)
    return 0


@command(
    "report", "write a self-contained HTML report (estimate, plots, breakdown, fit) with -o report.html",
    keys=REPORT_KEYS, words="[MODEL]", flags=(OUTPUT.but("the page to write: .html"),),
    examples=("yolomem report yolov8n.yaml batch=16 gpu=T4,RTX-3090 -o report.html",),
)  # fmt: skip
def _report(options: argparse.Namespace) -> int:
    from yolomem.render.report_html import render_report
    from yolomem.sweeps import figure_data as plots_data

    parsed, models = _parse(options.words, REPORT_KEYS)
    if len(models) > 1:
        raise UserError(f"a report covers one model; got {', '.join(models)} (yolomem plot compares models)")
    path = _output(options, "yolomem_report.html", (".html", ".htm"))
    config = _base_config(parsed, models[0])
    own = parsed.values
    if own.get("amp"):
        amps = _amps(own["amp"], (config.amp,))
        if len(amps) > 1:
            raise UserError("a report covers one precision; pick amp=true, amp=false or amp=bf16")
        config = config.with_changes(amp=amps[0])
    gpus = _gpus(own.get("gpu"), config.gpu_mem)
    if not gpus:
        from yolomem.config.gpus import find_gpu

        gpus = [find_gpu(name) for name in DEFAULT_REPORT_GPUS]
    from yolomem.config.gpus import GiB
    from yolomem.sweeps.fit import make_budget

    margin = own.get("margin", MARGIN.default)
    # a margin too large for the card fails here, in one line, not after minutes of estimating
    make_budget(config.with_changes(gpu=gpus[0].name, gpu_mem=gpus[0].total_bytes / GiB), margin)
    words = (config.model, *_estimate_words(options.words))
    if own.get("amp"):
        words += (f"amp={config.amp}",)
    with _progress("estimating") as progress:
        data = plots_data.report_data(
            config, gpus, batches=own.get("batches"), words=words, margin=margin, progress=progress,
        )  # fmt: skip
    if own.get("deploy"):
        import dataclasses

        from yolomem.deployment.estimate import deploy

        fmt = own["deploy"]
        data = dataclasses.replace(data, deployment=deploy(config.model, format=fmt, imgsz=config.imgsz,
                                                           precision="fp32" if fmt == "onnx" else "fp16",
                                                           device=gpus[0].name))  # fmt: skip
    path.write_text(render_report(data), encoding="utf-8")
    print(path)
    return 0
