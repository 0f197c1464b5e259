"""``yolomem table`` (the per-version table) and ``yolomem models`` (every model name yolomem builds).

    yolomem table                                   # the blog's 16 rows at their imgsz and batch
    yolomem table yolov5s yolov8n.yaml my.cfg imgsz=640 batch=16 gpus=T4,RTX-4090 --markdown
    yolomem table imgsz=160 batch=4                 # the blog's rows, every row at 160 / 4
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from yolomem.cli.registry import JSON, Flag, command
from yolomem.config.keys import (
    CHOICE, ESTIMATE_KEYS, INT, MARGIN, TEXT, TEXTS, AutoBatchRequest, Key, KeyTable, parse_words, refuse_autobatch,
)  # fmt: skip
from yolomem.errors import UserError
from yolomem.deployment.config import DEPLOY_KEYS
from yolomem.sweeps.table import DEFAULT_GPUS, METHODS
from yolomem.workers import default_jobs

TABLE_KEYS = KeyTable((
    ESTIMATE_KEYS["imgsz"].but(default=None, nullable=True, help="every row at this imgsz (default: each row's own; "
                               "640, or what its trainer takes: 224 for a classifier)"),
    ESTIMATE_KEYS["batch"].but(default=None, nullable=True, help="every row at this batch (default: each row's own; 16)"),
    Key("gpus", TEXTS, DEFAULT_GPUS, "the cards of the fits and max-batch columns"),
    MARGIN,
    Key("method", CHOICE, "breakdown", "max batch from one trace (breakdown) or two (two-point)", choices=METHODS),
    # as many as an estimate traces, so that a row's figures are `yolomem estimate`'s (one iteration
    # leaves the optimizer state out of the expected figure: yolov8n 640/64 AMP came out 2 % low)
    ESTIMATE_KEYS["iterations"].but(help="training iterations to trace per row (as estimate)"),
    Key("jobs", INT, default_jobs(), "processes tracing rows in parallel", low=1),
    # the deployment view (yolomem.deployment.table): deploy=FORMAT switches the table to it
    Key("deploy", CHOICE, None, "deployment view: torch, onnx or engine (batch 1 unless given)",
        choices=("torch", "onnx", "engine"), nullable=True, aliases=DEPLOY_KEYS["format"].aliases),
    Key("precision", CHOICE, "fp32", "deployment view: fp32, fp16 or int8", choices=("fp32", "fp16", "int8")),
    Key("device", TEXT, None, "deployment view: a card or Jetson module, e.g. Jetson-Orin-Nano-8GB", nullable=True),
    DEPLOY_KEYS["os_reserve"].but(help=f"deployment view: {DEPLOY_KEYS['os_reserve'].help}"),
))  # fmt: skip
_DEPLOYMENT_ONLY = ("precision", "device", "os_reserve")
CSV = Flag(("--csv",), "print CSV", machine=True)
MARKDOWN = Flag(("--markdown",), "print a Markdown table", machine=True)


@dataclass(frozen=True)
class TableOptions:
    models: tuple[str, ...]
    imgsz: int | None
    batch: int | None
    gpus: tuple[str, ...]
    method: str
    iterations: int
    jobs: int
    margin: float


def parse_table_words(words: list[str]) -> TableOptions:
    parsed = parse_words(words, TABLE_KEYS)
    get = lambda name: parsed.values.get(name, TABLE_KEYS.default(name))  # noqa: E731
    if isinstance(get("batch"), AutoBatchRequest):
        raise refuse_autobatch(f"batch={get('batch')}")
    return TableOptions(parsed.positionals, get("imgsz"), get("batch"), get("gpus"), get("method"),
                        get("iterations"), get("jobs"), get("margin"))  # fmt: skip


def rows_for(options: TableOptions):
    from yolomem.sweeps.table import blog_rows, model_rows

    if not options.models:
        return blog_rows(options.imgsz, options.batch)
    return model_rows(options.models, options.imgsz, options.batch)


@command(
    "table", "the per-version table: params, GFLOPs, FP32/AMP memory, fits and max batch per GPU",
    keys=TABLE_KEYS, words="[MODEL ...]", flags=(JSON, CSV, MARKDOWN),
    examples=("yolomem table                      # the blog's 16 rows at their imgsz and batch",
              "yolomem table yolov5s yolov8n.yaml imgsz=640 batch=16 gpus=T4,RTX-4090 --markdown"),
    sweeps=True,
)  # fmt: skip
def _table(options: argparse.Namespace) -> int:
    from yolomem.cli.progress import progress_display
    from yolomem.render import table_formats
    from yolomem.sweeps.table import PRECISIONS, compute_table

    if any(word.startswith("deploy=") for word in options.words):
        return _deploy_table(options)
    deployment_keys = [word.split("=")[0] for word in options.words if word.split("=")[0] in _DEPLOYMENT_ONLY]
    if deployment_keys:  # the training table has no such column: they would be dropped without a word
        raise UserError(f"{', '.join(deployment_keys)}: keys of the deployment view; add deploy=torch, onnx or engine")
    parsed = parse_table_words(options.words)
    rows = rows_for(parsed)
    traces = len(rows) * len(PRECISIONS) * (2 if parsed.method == "two-point" else 1)
    with progress_display("table", quiet=options.json, total=traces) as display:  # stderr: stdout stays the table
        table = compute_table(rows, parsed.gpus, method=parsed.method, iterations=parsed.iterations,
                              jobs=parsed.jobs, margin=parsed.margin, progress=display.advance)  # fmt: skip
    if options.json:
        print(table_formats.to_json(table), file=options.stdout)
    elif options.csv:
        print(table_formats.to_csv(table), end="", file=options.stdout)
    elif options.markdown:
        print(table_formats.to_markdown(table), end="", file=options.stdout)
    else:
        table_formats.render_rich(table)
    return 0


def _deploy_table(options: argparse.Namespace) -> int:
    """``yolomem table deploy=...``: the deployment view (yolomem.deployment.table)."""
    from yolomem.cli.progress import progress_display
    from yolomem.deployment.config import DeployConfig
    from yolomem.deployment.table import deploy_table
    from yolomem.render.deploy_output import deploy_table_csv, deploy_table_markdown, render_deploy_table
    from yolomem.sweeps.table import BLOG_ROWS, ORIGINAL_IN_BLOG

    parsed = parse_words(options.words, TABLE_KEYS)
    values = parsed.values
    base = DeployConfig(format=values["deploy"] or "torch", precision=values.get("precision", "fp32"),
                        batch=values.get("batch"), imgsz=values.get("imgsz") or 640, device=values.get("device"),
                        os_reserve=values.get("os_reserve"))  # fmt: skip
    models = parsed.positionals or tuple(name for _, name, _, _ in BLOG_ROWS)
    with progress_display("sizing", quiet=options.json, total=len(models)) as display:
        table = deploy_table(models, base, progress=display.advance,
                             originals=() if parsed.positionals else ORIGINAL_IN_BLOG)  # fmt: skip
    if options.json:
        from yolomem.render.json_output import dumps

        print(dumps(table.to_json()), file=options.stdout)
    elif options.csv:
        print(deploy_table_csv(table), end="", file=options.stdout)
    elif options.markdown:
        print(deploy_table_markdown(table), end="", file=options.stdout)
    else:
        render_deploy_table(table)
    return 0


@command("models", "list every model name yolomem builds, with family, framework, parameters and task", flags=(JSON,),
         traces=False)  # fmt: skip
def _models(options: argparse.Namespace) -> int:
    from yolomem.cli.progress import progress_display
    from yolomem.sweeps.model_list import list_models

    # the first run counts the models whose YAML publishes no count of them (about 25 s on 2 cores; then kept in the cache)
    with progress_display("listing models; counting parameters no YAML line gives", quiet=options.json):
        entries = list_models()
    if options.json:
        import json

        print(json.dumps([e.__dict__ for e in entries], indent=2), file=options.stdout)
    else:
        from yolomem.render.table_formats import models_markdown

        print(models_markdown(entries), end="")
    return 0
