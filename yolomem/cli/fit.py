"""``yolomem fit`` and ``yolomem pick``: thin layers over ``yolomem.sweeps.fit``, ``yolomem.sweeps.pick`` and
``yolomem.sweeps.ladder``.

    yolomem fit yolov8x.yaml gpu=RTX-3090 imgsz=640            # largest batch
    yolomem fit yolov8x.yaml gpu=RTX-3090 batch=16 solve=imgsz  # largest imgsz at batch 16
    yolomem fit yolov8x.yaml gpu_mem=24 batch=32 --explain      # what each memory-saving step buys
    yolomem pick gpu=RTX-3060-12GB batch=16 imgsz=640 [task=segment] [family=yolov8 | models=yolov8n,yolo11s]

``margin=`` (default 0.10) is the share of the card, after the CUDA context, held back for what the
trace does not see. When ``batch=`` is given and does not fit, ``fit`` shows the ladder on its own.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

from yolomem.cli.registry import JSON, Flag, command
from yolomem.config.keys import BOOL, CHOICE, ESTIMATE_KEYS, TEXT, TEXTS, Key
from yolomem.errors import UserError

SOLVES = ("batch", "imgsz")
TASKS = ("detect", "segment", "pose", "obb", "classify")
FIT_KEYS = ESTIMATE_KEYS.plus(  # margin= is an estimate key: every verdict uses it (yolomem.result.fits)
    Key("solve", CHOICE, "batch", "what to solve for: the largest batch, or the largest imgsz at batch=", choices=SOLVES),
    Key("explain", BOOL, False, "list what each memory-saving step buys (same as --explain)"),
)
PICK_KEYS = ESTIMATE_KEYS.without("model").plus(
    Key("task", CHOICE, "detect", "the task of the default candidates", choices=TASKS),
    Key("family", TEXT, None, "the family to rank, e.g. yolov8 or yolo26 (default: the family of the model your Ultralytics trains when given none: yolo26 in 8.4, yolo11 in 8.3, yolov8 before)", nullable=True),
    Key("models", TEXTS, None, "the candidates instead of a family, e.g. yolov8n,yolo11s", nullable=True),
)
EXPLAIN = Flag(("--explain",), "list what each memory-saving step buys")


@contextlib.contextmanager
def _progress(label: str, quiet: bool) -> Iterator:
    """The shared progress display (``yolomem.cli.progress``), as the ``progress(text)`` callback."""
    from yolomem.cli.progress import progress_display

    with progress_display(label, quiet=quiet) as display:
        yield display.message


@command(
    "fit", "largest batch (or solve=imgsz) that trains on a GPU; --explain: what each memory-saving step buys",
    keys=FIT_KEYS, words="[MODEL]", flags=(JSON, EXPLAIN),
    examples=("yolomem fit yolov8x.yaml gpu=RTX-3090 imgsz=640            # largest batch",
              "yolomem fit yolov8x.yaml gpu=RTX-3090 batch=16 solve=imgsz  # largest imgsz at batch 16",
              "yolomem fit yolov8x.yaml gpu_mem=24 batch=32 --explain      # what each memory-saving step buys"),
    more="fit needs gpu= or gpu_mem=. When batch= is given and does not fit, fit shows the ladder on its own.",
    sweeps=True,
)  # fmt: skip
def _fit(options: argparse.Namespace) -> int:
    from yolomem.config.settings import EstimateConfig, parse_estimate_words

    parsed = parse_estimate_words(options.words, FIT_KEYS)
    config = EstimateConfig.from_parsed(parsed)
    solve = parsed.values.get("solve", "batch")
    margin = config.margin
    explain = options.explain or parsed.values.get("explain", False)
    autobatch = config.autobatch is not None  # batch=-1: AutoBatch's pick beside the largest batch that fits
    if autobatch and (solve != "batch" or explain):
        config.fixed_batch()  # the ladder and the imgsz search start from a batch of yours
    batch_given = "batch" in parsed.values and not autobatch
    if not (config.gpu or config.gpu_mem):
        raise UserError("fit needs a GPU: add gpu=NAME (e.g. gpu=RTX-3090) or gpu_mem=<GiB>")
    if explain:
        return _explain(config, margin, options)
    from yolomem.sweeps.fit import NothingFits, beside_autobatch, largest_batch, largest_imgsz

    with _progress("fit", options.json) as progress:
        solver = largest_batch if solve == "batch" else largest_imgsz
        try:
            result = solver(config, margin=margin, progress=progress)
        except NothingFits:
            if not batch_given or solve != "batch":
                raise
            result = None
        if autobatch and result is not None:
            result = beside_autobatch(result, config)
    # a batch past the dataset's size trains at its size (FitResult.whole_dataset): fitting, it needs no ladder
    if result is None or (solve == "batch" and batch_given and result.max_batch < config.batch and not result.whole_dataset):
        return _explain(config, margin, options, fit=result)
    if options.json:
        from yolomem.render.json_output import dumps

        print(dumps(result.to_json()), file=options.stdout)
    else:
        from yolomem.render.fit_output import render_fit

        render_fit(result)
    return 0


def _explain(config, margin: float, options: argparse.Namespace, fit=None) -> int:
    from yolomem.sweeps.ladder import strategy_ladder
    from yolomem.sweeps.fit import make_budget

    with _progress("fit --explain", options.json) as progress:
        ladder = strategy_ladder(config, margin=margin, progress=progress)
    budget = make_budget(config, margin)
    if options.json:
        from yolomem.render.json_output import dumps

        payload = {"gpu": budget.gpu.name, "gpu_total_bytes": budget.gpu.total_bytes,
                   "capacity_bytes": budget.capacity_bytes, "margin": margin,
                   "strategies": [step.to_json() for step in ladder]}  # fmt: skip
        if fit is not None:
            payload["fit"] = fit.to_json()
        print(dumps(payload), file=options.stdout)
        return 0
    from yolomem.render.fit_output import render_fit, render_ladder

    if fit is not None:
        render_fit(fit)
    render_ladder(ladder, budget.capacity_bytes)
    return 0


@command(
    "pick", "which YOLO models fit a GPU at a batch and imgsz, smallest first, with headroom",
    keys=PICK_KEYS, flags=(JSON,),
    examples=("yolomem pick gpu=RTX-3060-12GB batch=16 imgsz=640",
              "yolomem pick gpu=T4 family=yolov8 task=segment",
              "yolomem pick gpu=T4 models=yolov8n,yolo11s,yolo26m"),
    more="pick ranks one family in every size it ships (the family of the model your Ultralytics trains when given none, unless family= says otherwise), or models=.",
    sweeps=True,
)  # fmt: skip
def _pick(options: argparse.Namespace) -> int:
    from yolomem.config.settings import EstimateConfig, parse_estimate_words
    from yolomem.sweeps.pick import pick_models

    parsed = parse_estimate_words(options.words, PICK_KEYS)
    if parsed.positionals:
        raise UserError(f"pick takes no model ({parsed.positionals[0]!r}); list candidates with models=yolov8n,yolov8s")
    values = parsed.values
    if "family" in values and "models" in values:
        raise UserError("family= and models= both choose the candidates; give one")
    config = EstimateConfig.from_parsed(parsed, skip=("task",)).fixed_batch()
    with _progress("pick", options.json) as progress:
        result = pick_models(
            config.gpu, None, None, values.get("task", "detect"), gpu_mem=config.gpu_mem,  # imgsz, batch: the config's
            models=values.get("models"), family=values.get("family"), margin=config.margin,
            progress=progress, config=config,
        )  # fmt: skip
    if options.json:
        from yolomem.render.json_output import dumps

        print(dumps(result.to_json()), file=options.stdout)
    else:
        from yolomem.render.fit_output import render_pick

        render_pick(result)
    return 0
