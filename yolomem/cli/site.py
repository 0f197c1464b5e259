"""``yolomem site``: the calculator page, one self-contained HTML file built from full estimates.

    yolomem site -o site/                                   # every model, 640, fp16/fp32/bf16: a long job (cached)
    yolomem site models=yolov8n.yaml,yolov8m.yaml amp=true deploy=none -o site/   # a small page in minutes

The data: ``yolomem.sweeps.site_data``; the page: ``yolomem.render.site_html``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from yolomem.cli.registry import OUTPUT, Flag, command
from yolomem.config.keys import CHOICE, ESTIMATE_KEYS, INT, INTS, TEXTS, Key, KeyTable, parse_words
from yolomem.errors import UserError
from yolomem.sweeps.site_data import (DEFAULT_AMPS, DEFAULT_BATCHES, DEFAULT_CARDS, DEFAULT_DEPLOY_BATCHES,
                                      DEFAULT_IMGSZ, DEPLOY_FORMATS, TASKS, SiteRequest)

MAX_BATCHES = 40  # each is a full estimate per series
SITE_KEYS = KeyTable((
    Key("models", TEXTS, None, "the models (default: every v3-v5, v5u, v8, v9, v10, 11, 12 and 26 YAML of the tasks)",
        nullable=True),
    Key("tasks", TEXTS, TASKS, f"tasks of the default models: {', '.join(TASKS)}"),
    Key("imgsz", INTS, DEFAULT_IMGSZ, "image sizes", low=1, max_items=6),
    Key("batches", INTS, DEFAULT_BATCHES, f"the batches the page offers, at most {MAX_BATCHES}", low=1,
        max_items=MAX_BATCHES),
    Key("amp", TEXTS, DEFAULT_AMPS, "precisions: true (fp16), false (fp32), bf16"),
    Key("optimizer", TEXTS, ("auto",), "optimizers (auto: Ultralytics' own choice)"),
    Key("instances", TEXTS, ("8",), "mean labelled objects per image, one series each, e.g. 2,8,30"),
    ESTIMATE_KEYS["iterations"],
    Key("deploy", TEXTS, DEPLOY_FORMATS, "deployment view: formats (torch, onnx, engine), each at its precisions; "
        "none: training only"),
    Key("deploy_batches", INTS, DEFAULT_DEPLOY_BATCHES, "the batches of the deployment view", low=1, max_items=MAX_BATCHES),
    Key("cards", TEXTS, DEFAULT_CARDS, "cards drawn as lines on the chart (every catalog card is in the GPU list)"),
    Key("jobs", INT, 2, "processes computing series side by side", low=1),
))  # fmt: skip
FAMILIES = ("YOLOv3", "YOLOv4", "YOLOv5", "YOLOv8", "YOLOv9", "YOLOv10", "YOLO11", "YOLO12", "YOLO26")
_OTHER_TRAINERS = ("-world", "-rtdetr")  # YOLO-World and RT-DETR YAMLs train with their own trainers and data


@command(
    "site", "write the calculator page: one HTML file, every figure a full estimate, works offline",
    keys=SITE_KEYS, flags=(Flag(OUTPUT.names, "the folder to write index.html into (default: site)", metavar="DIR"),),
    examples=("yolomem site models=yolov8n.yaml,yolov8m.yaml amp=true deploy=none -o site/  # a small page, minutes",
              "yolomem site -o site/                                            # every model: a long job, resumed from the cache"),
    more="Each series (model x imgsz x precision x optimizer x objects) is estimated at every batch of batches=; "
         "the first few are traced, the rest derived from them. The deployment view is yolomem deploy at every "
         "format, precision and deploy_batches=. Open site/index.html, or publish the folder.",
)  # fmt: skip
def _site(options: argparse.Namespace) -> int:
    from yolomem.cli.progress import progress_display
    from yolomem.render.site_html import render_site
    from yolomem.sweeps.site_data import compute_site

    request, jobs = parse_site_words(options.words)
    folder = Path(getattr(options, "output", None) or "site")
    if folder.exists() and not folder.is_dir():
        raise UserError(f"-o {str(folder)!r} is a file; site writes a folder (index.html inside)")
    units = len(request.series_configs()) + len(request.deploy_configs())
    with progress_display("site", total=units) as display:
        data = compute_site(request, jobs=jobs, progress=display.advance)
    if not data.series:
        first = data.failures[0] if data.failures else None
        raise UserError(f"no series could be estimated{f': {first.model}: {first.error}' if first else ''}")
    folder.mkdir(parents=True, exist_ok=True)
    page = folder / "index.html"
    page.write_text(render_site(data), encoding="utf-8")
    size = page.stat().st_size
    print(f"wrote {page} ({size / 2**20:.2f} MiB): {len(data.series)} training series x {len(request.batches)} batches, "
          f"{len(data.deploy_series)} deployment series x {len(request.deploy_batches)} batches in {data.seconds:.0f} s")  # fmt: skip
    for failure in data.failures:
        print(f"left out: {failure.model} {failure.setting}: {failure.error}")
    print(f"open {page.resolve().as_uri()}")
    return 0


def parse_site_words(words: list[str]) -> tuple[SiteRequest, int]:
    parsed = parse_words(words, SITE_KEYS)
    if parsed.positionals:
        raise UserError(f"site takes models=a,b,... not bare words: {' '.join(parsed.positionals)}")
    get = lambda name: parsed.values.get(name, SITE_KEYS.default(name))  # noqa: E731
    tasks = Key("tasks", CHOICE, None, "", choices=TASKS).parse_each(get("tasks"))
    models = get("models") or default_models(tasks)
    if get("models"):  # a misspelt name: one line with the nearest names now, not after the others are computed
        from yolomem.loops import resolve_model

        for model in models:
            resolve_model(model)
    request = SiteRequest(
        models=tuple(models), imgsz=tuple(get("imgsz")), batches=tuple(sorted(set(get("batches")))),
        amps=ESTIMATE_KEYS["amp"].parse_each(get("amp")), optimizers=ESTIMATE_KEYS["optimizer"].parse_each(get("optimizer")),
        instances=ESTIMATE_KEYS["instances"].parse_each(get("instances")), iterations=get("iterations"),
        cards=_cards(get("cards")), deploy_formats=_formats(get("deploy")),
        deploy_batches=tuple(sorted(set(get("deploy_batches")))),
    )  # fmt: skip
    return request, get("jobs")


def _formats(words) -> tuple[str, ...]:
    if tuple(words) == ("none",):
        return ()
    return Key("deploy", CHOICE, None, "", choices=DEPLOY_FORMATS).parse_each(words)


def _cards(names) -> tuple[str, ...]:
    from yolomem.config.gpus import find_gpu

    return tuple(find_gpu(name).name for name in names)


def default_models(tasks) -> tuple[str, ...]:
    """Every model of the families people train, of these tasks: the original v3, v4 and v5 designs (the
    yolov5 repo's loop) and each Ultralytics YAML (``yolomem models``)."""
    from yolomem.sweeps.model_list import list_models

    return tuple(m.name for m in list_models() if m.family in FAMILIES and m.task in tasks
                 and not any(mark in m.name for mark in _OTHER_TRAINERS))  # fmt: skip
