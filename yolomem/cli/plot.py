"""``yolomem plot`` and ``yolomem report``: pictures and a self-contained HTML page.

    yolomem plot yolov8n.yaml yolov8s.yaml gpu=T4,RTX-3090 batches=2,4,8,16 -o curve.png
    yolomem plot yolov8n.yaml x=imgsz sizes=320,480,640 batch=16 -o imgsz.svg
    yolomem plot yolov8n.yaml batch=16 kind=timeline -o timeline.png   (or kind=breakdown)
    yolomem report yolov8n.yaml batch=16 gpu=T4,RTX-3090 -o report.html

Words of their own (everything else goes to the estimate, as for ``yolomem estimate``):
``gpu=A,B`` (cards; lines on the curve, rows in the report), ``amp=true,false`` (precisions of the
curve; default both), ``x=batch|imgsz``, ``batches=1,2,4,8``, ``sizes=320,640``,
``measure=gpu_mem|device_total``, ``kind=curve|breakdown|timeline`` (plot), ``exact_fit=true`` (report:
search the largest batch per card with ``yolomem.sweeps.fit`` when it is installed). Put ``-o FILE`` last.
Progress goes to stderr; the path written goes to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from yolomem.cli.registry import DEFAULT_MODEL, command
from yolomem.errors import UserError, unknown

KINDS = ("curve", "breakdown", "timeline")
DEFAULT_REPORT_GPUS = ("T4", "RTX-3090", "A100-80GB")  # a common 16, 24 and 80 GB card
_OWN = {"gpu", "amp", "x", "batches", "sizes", "measure", "kind", "exact_fit"}


@dataclass(frozen=True)
class _Request:
    models: tuple[str, ...]
    settings: tuple[str, ...]  # key=value words for EstimateConfig
    own: dict


def _split(words: list[str]) -> _Request:
    models: list[str] = []
    settings: list[str] = []
    own: dict[str, str] = {}
    for word in words:
        key, eq, value = word.partition("=")
        if not eq:
            if word.lower() in {"yolo", "train", "detect", "segment", "pose", "obb", "classify"}:
                continue
            if word.startswith("-"):
                raise UserError(f"option {word!r} is not known here; put -o FILE last, after the key=value words")
            models.append(word)
        elif key == "model":
            models.append(value)
        elif key in _OWN:
            if not value:
                raise UserError(f"malformed argument {word!r}; expected key=value, e.g. {key}=...")
            own[key] = value
        else:
            settings.append(word)
    return _Request(tuple(models) or (DEFAULT_MODEL,), tuple(settings), own)


def _gpus(own: dict, gpu_mem: float | None):
    from yolomem.config.gpus import find_gpu

    names = [n.strip() for n in own.get("gpu", "").split(",") if n.strip()]
    if gpu_mem is not None and len(names) <= 1:
        return [find_gpu(names[0] if names else "", gpu_mem)]
    if gpu_mem is not None:
        raise UserError("gpu_mem= sets the memory of one card; name a single gpu= with it")
    return [find_gpu(name) for name in names]


def _amps(own: dict, default: tuple[str, ...]) -> tuple[str, ...]:
    from yolomem.sweeps.figure_data import precision_of

    if "amp" not in own:
        return default
    return tuple(dict.fromkeys(precision_of(a) for a in own["amp"].split(",") if a.strip()))


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


def _base_config(request: _Request, model: str):
    from yolomem.config.settings import EstimateConfig

    config = EstimateConfig.from_words([model, *request.settings])
    return config


@command("plot", "draw memory against batch or imgsz (or kind=breakdown|timeline) to a .png/.svg/.pdf")
def _plot(options: argparse.Namespace) -> int:
    from yolomem.sweeps import figure_data as plots_data
    from yolomem.render import plots

    request = _split(options.words)
    kind = request.own.get("kind", "curve")
    if kind not in KINDS:
        raise unknown("kind", kind, KINDS)
    path = _output(options, f"yolomem_{kind}.png", plots.FORMATS)
    base = _base_config(request, request.models[0])
    plots.require_matplotlib()  # fail with the install hint before minutes of estimating
    if kind == "curve":
        x_name = request.own.get("x", "batch")
        if x_name not in plots_data.X_AXES:
            raise unknown("x", x_name, plots_data.X_AXES)
        key = "batches" if x_name == "batch" else "sizes"
        other = "sizes" if key == "batches" else "batches"
        if other in request.own:
            raise UserError(f"{other}= goes with x={'imgsz' if other == 'sizes' else 'batch'}; use {key}= for x={x_name}")
        xs = plots_data.parse_values(key, request.own[key]) if key in request.own else None
        with _progress("estimating") as progress:
            data = plots_data.curve_figure(
                request.models, base=base.with_changes(gpu=None, gpu_mem=None), x_name=x_name, xs=xs,
                amps=_amps(request.own, ("fp16", "fp32")), gpus=_gpus(request.own, base.gpu_mem or None),
                measure=request.own.get("measure", "gpu_mem"), progress=progress,
            )  # fmt: skip
        figure = plots.draw_curves(data)
    else:
        from yolomem.result.estimate import estimate_config
        from yolomem.result.timeline import estimate_timeline

        if len(request.models) > 1:
            raise UserError(f"kind={kind} draws one model; got {len(request.models)}")
        config = base.with_changes(amp=_amps(request.own, (base.amp,))[0])
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


@command("report", "write a self-contained HTML report (estimate, plots, breakdown, fit) with -o report.html")
def _report(options: argparse.Namespace) -> int:
    from yolomem.sweeps import figure_data as plots_data
    from yolomem.render.report_html import render_report

    request = _split(options.words)
    if len(request.models) > 1:
        raise UserError(f"a report covers one model; got {', '.join(request.models)} (yolomem plot compares models)")
    for key in ("x", "sizes", "kind", "measure"):
        if key in request.own:
            raise UserError(f"{key}= is a plot option; the report draws memory against batch")
    path = _output(options, "yolomem_report.html", (".html", ".htm"))
    config = _base_config(request, request.models[0])
    if "amp" in request.own:
        amps = _amps(request.own, (config.amp,))
        if len(amps) > 1:
            raise UserError("a report covers one precision; pick amp=true, amp=false or amp=bf16")
        config = config.with_changes(amp=amps[0])
    gpus = _gpus(request.own, config.gpu_mem)
    if not gpus:
        from yolomem.config.gpus import find_gpu

        gpus = [find_gpu(name) for name in DEFAULT_REPORT_GPUS]
    batches = plots_data.parse_values("batches", request.own["batches"]) if "batches" in request.own else None
    exact = request.own.get("exact_fit", "false").lower()
    if exact not in {"true", "false"}:
        raise UserError(f"exact_fit={exact!r} must be true or false")
    words = (config.model, *request.settings)
    if "amp" in request.own:
        words += (f"amp={config.amp}",)
    with _progress("estimating") as progress:
        data = plots_data.report_data(
            config, gpus, batches=batches, words=words, exact_fit=exact == "true", progress=progress,
        )  # fmt: skip
    path.write_text(render_report(data), encoding="utf-8")
    print(path)
    return 0
