"""``yolomem table`` (the per-version table) and ``yolomem models`` (every model name yolomem builds).

    yolomem table                                   # the blog's 16 rows at their imgsz and batch
    yolomem table yolov5s yolov8n.yaml my.cfg imgsz=640 batch=16 gpus=T4,RTX-4090 --markdown
    yolomem table imgsz=160 batch=4                 # the blog's rows, every row at 160 / 4
    keys: imgsz, batch, gpus (comma list), method (breakdown|two-point), iterations, jobs
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from yolomem.cli.registry import command
from yolomem.errors import UserError, unknown

_TABLE_KEYS = ("imgsz", "batch", "gpus", "method", "iterations", "jobs")


@dataclass(frozen=True)
class TableOptions:
    models: tuple[str, ...]
    imgsz: int | None
    batch: int | None
    gpus: tuple[str, ...]
    method: str
    iterations: int
    jobs: int


def parse_table_words(words: list[str]) -> TableOptions:
    from yolomem.sweeps.table import DEFAULT_GPUS

    models, values = [], {}
    for word in words:
        if "=" not in word:
            models.append(word)
            continue
        key, _, raw = word.partition("=")
        if key not in _TABLE_KEYS:
            raise unknown("table key", key, _TABLE_KEYS)
        values[key] = raw
    ints = {}
    for key in ("imgsz", "batch", "iterations", "jobs"):
        if key in values:
            try:
                ints[key] = int(values[key])
            except ValueError:
                raise UserError(f"{key}={values[key]!r} is not a whole number") from None
            if ints[key] <= 0:
                raise UserError(f"{key}={ints[key]} must be positive")
    gpus = tuple(g for g in values.get("gpus", "").split(",") if g) or DEFAULT_GPUS
    return TableOptions(tuple(models), ints.get("imgsz"), ints.get("batch"), gpus, values.get("method", "breakdown"),
                        ints.get("iterations", 1), ints.get("jobs", min(os.cpu_count() or 1, 2)))  # fmt: skip


def rows_for(options: TableOptions):
    from yolomem.sweeps.table import RowRequest, blog_rows

    if not options.models:
        return blog_rows(options.imgsz, options.batch)
    return tuple(RowRequest(m, options.imgsz or 640, options.batch or 16) for m in options.models)


@command("table", "the per-version table: params, GFLOPs, FP32/AMP memory, fits and max batch per GPU")
def _table(options: argparse.Namespace) -> int:
    from yolomem.cli.progress import progress_display
    from yolomem.render import table_formats
    from yolomem.sweeps.table import METHODS, PRECISIONS, compute_table

    parsed = parse_table_words(options.words)
    if parsed.method not in METHODS:
        raise unknown("method", parsed.method, METHODS)
    rows = rows_for(parsed)
    traces = len(rows) * len(PRECISIONS) * (2 if parsed.method == "two-point" else 1)
    with progress_display("table", quiet=options.json, total=traces) as display:  # stderr: stdout stays the table
        table = compute_table(rows, parsed.gpus, method=parsed.method, iterations=parsed.iterations,
                              jobs=parsed.jobs, progress=display.advance)  # fmt: skip
    if options.json:
        print(table_formats.to_json(table))
    elif getattr(options, "csv", False):
        print(table_formats.to_csv(table), end="")
    elif getattr(options, "markdown", False):
        print(table_formats.to_markdown(table), end="")
    else:
        table_formats.render_rich(table)
    return 0


@command("models", "list every model name yolomem builds, with family, framework, parameters and task")
def _models(options: argparse.Namespace) -> int:
    from yolomem.sweeps.model_list import list_models

    entries = list_models()
    if options.json:
        import json

        print(json.dumps([e.__dict__ for e in entries], indent=2))
    else:
        from yolomem.render.table_formats import models_markdown

        print(models_markdown(entries), end="")
    return 0
