"""``yolomem fit`` and ``yolomem pick``: thin layers over ``yolomem.sweeps.fit``, ``yolomem.sweeps.pick`` and
``yolomem.sweeps.ladder``.

    yolomem fit yolov8x.yaml gpu=RTX-3090 imgsz=640            # largest batch
    yolomem fit yolov8x.yaml gpu=RTX-3090 batch=16 solve=imgsz  # largest imgsz at batch 16
    yolomem fit yolov8x.yaml gpu_mem=24 batch=32 --explain      # what each memory-saving step buys
    yolomem pick gpu=RTX-3060-12GB batch=16 imgsz=640 [task=segment] [models=yolov8n,yolov8s]

``margin=`` (default 0.10) is the share of the card, after the CUDA context, held back for what the
trace does not see. When ``batch=`` is given and does not fit, ``fit`` shows the ladder on its own.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

from yolomem.cli.registry import DEFAULT_MODEL, command
from yolomem.errors import UserError, unknown

SOLVES = ("batch", "imgsz")
_FIT_KEYS = {"margin", "solve", "explain"}
_PICK_KEYS = {"margin", "models", "task"}


def _split(words: list[str], own: set[str]) -> tuple[list[str], dict[str, str]]:
    """Words for EstimateConfig, and this command's own key=value words."""
    rest, mine = [], {}
    for word in words:
        key, eq, value = word.partition("=")
        if key in own and (eq or key == "explain"):
            mine[key] = value if eq else "true"
        else:
            rest.append(word)
    return rest, mine


def _margin(raw: str | None) -> float:
    from yolomem.sweeps.fit import DEFAULT_MARGIN

    if raw is None:
        return DEFAULT_MARGIN
    text = raw.strip().rstrip("%")
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"margin={raw!r} is not a number; use a fraction like margin=0.1 (or 10%)") from None
    return value / 100 if raw.strip().endswith("%") else value


@contextlib.contextmanager
def _progress(label: str, quiet: bool) -> Iterator:
    """The shared progress display (``yolomem.cli.progress``), as the ``progress(text)`` callback."""
    from yolomem.cli.progress import progress_display

    with progress_display(label, quiet=quiet) as display:
        yield display.message


@command("fit", "largest batch (or solve=imgsz) that trains on a GPU; --explain: what each memory-saving step buys")
def _fit(options: argparse.Namespace) -> int:
    from yolomem.config.settings import EstimateConfig

    words, own = _split(options.words or [], _FIT_KEYS)
    if not words or "=" in words[0]:
        words = [DEFAULT_MODEL, *words]
    config = EstimateConfig.from_words(words)
    solve = own.get("solve", "batch")
    if solve not in SOLVES:
        raise unknown("solve", solve, SOLVES)
    margin = _margin(own.get("margin"))
    explain = getattr(options, "explain", False) or own.get("explain", "false").lower() == "true"
    batch_given = any(w.startswith("batch=") for w in words)
    if not (config.gpu or config.gpu_mem):
        raise UserError("fit needs a GPU: add gpu=NAME (e.g. gpu=RTX-3090) or gpu_mem=<GiB>")
    if explain:
        return _explain(config, margin, options.json)
    from yolomem.sweeps.fit import NothingFits, largest_batch, largest_imgsz

    with _progress("fit", options.json) as progress:
        solver = largest_batch if solve == "batch" else largest_imgsz
        try:
            result = solver(config, margin=margin, progress=progress)
        except NothingFits:
            if not batch_given or solve != "batch":
                raise
            result = None
    if result is None or (solve == "batch" and batch_given and result.max_batch < config.batch):
        return _explain(config, margin, options.json, fit=result)
    if options.json:
        from yolomem.render.json_output import dumps

        print(dumps(result.to_json()))
    else:
        from yolomem.render.fit_output import render_fit

        render_fit(result)
    return 0


def _explain(config, margin: float, as_json: bool, fit=None) -> int:
    from yolomem.sweeps.ladder import strategy_ladder
    from yolomem.sweeps.fit import make_budget

    with _progress("fit --explain", as_json) as progress:
        ladder = strategy_ladder(config, margin=margin, progress=progress)
    budget = make_budget(config, margin)
    if as_json:
        from yolomem.render.json_output import dumps

        payload = {"gpu": budget.gpu.name, "gpu_total_bytes": budget.gpu.total_bytes,
                   "capacity_bytes": budget.capacity_bytes, "margin": margin,
                   "strategies": [step.to_json() for step in ladder]}  # fmt: skip
        if fit is not None:
            payload["fit"] = fit.to_json()
        print(dumps(payload))
        return 0
    from yolomem.render.fit_output import render_fit, render_ladder

    if fit is not None:
        render_fit(fit)
    render_ladder(ladder, budget.capacity_bytes)
    return 0


@command("pick", "which YOLO models fit a GPU at a batch and imgsz, smallest first, with headroom")
def _pick(options: argparse.Namespace) -> int:
    from yolomem.config.settings import EstimateConfig
    from yolomem.sweeps.pick import pick_models

    words, own = _split(options.words or [], _PICK_KEYS)
    if words and "=" not in words[0]:
        raise UserError(f"pick takes no model ({words[0]!r}); list candidates with models=yolov8n,yolov8s")
    config = EstimateConfig.from_words(words)
    models = tuple(m.strip() for m in own["models"].split(",") if m.strip()) if "models" in own else None
    with _progress("pick", options.json) as progress:
        result = pick_models(
            config.gpu, config.imgsz, config.batch, own.get("task", "detect"), gpu_mem=config.gpu_mem,
            models=models, margin=_margin(own.get("margin")), progress=progress, config=config,
        )  # fmt: skip
    if options.json:
        from yolomem.render.json_output import dumps

        print(dumps(result.to_json()))
    else:
        from yolomem.render.fit_output import render_pick

        render_pick(result)
    return 0
