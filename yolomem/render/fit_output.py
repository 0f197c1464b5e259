"""Human views of ``FitResult``, ``PickResult`` and the strategy ladder. Formatting only."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from yolomem.render.units import card_label, card_name, gib as _gib, gpu_mem_unit_label, signed_gib as _signed
from yolomem.sweeps.fit import FitResult
from yolomem.sweeps.ladder import Strategy
from yolomem.sweeps.pick import PickResult


def margin_line(gpu: str, total: int, context: int, margin: float, capacity: int) -> str:
    return (
        f"{card_name(gpu)}: {_gib(total)} - CUDA context {_gib(context)} (upper) - margin {margin:.0%} "
        f"(cuDNN workspaces, validation, later epochs; set with margin=) = {_gib(capacity)} for the caching allocator"
    )


def render_fit(result: FitResult, console: Console | None = None) -> None:
    console = console or Console()
    estimate = result.estimate_at_max
    console.print(margin_line(result.gpu, result.gpu_total_bytes, result.context_bytes, result.margin, result.capacity_bytes))
    if result.solve == "batch":
        headline = f"largest batch: [bold]{result.max_batch}[/bold] at imgsz {result.imgsz}"
    else:
        headline = f"largest imgsz: [bold]{result.imgsz}[/bold] (multiple of stride {result.stride}) at batch {result.max_batch}"
    if result.at_search_cap:
        headline += " (the search limit; more fits)"
    console.print(headline)
    if result.autobatch is not None:
        at = result.autobatch
        verdict = "fits" if at.fits else "[red]does not fit[/red]"
        console.print(f"AutoBatch (batch={at.autobatch.requested:g}, {at.autobatch.source}) picks batch "
                      f"[bold]{at.config.batch}[/bold] on this card: {_gib(at.peak_reserved_upper_bytes)} upper, {verdict}")
    trainer = "yolov5 train.py" if estimate.config.framework == "yolov5" else "Ultralytics"
    console.print(
        f"  peak reserved {_gib(estimate.peak_reserved_bytes)} expected, {_gib(estimate.peak_reserved_upper_bytes)} upper "
        f"({trainer} GPU_mem {estimate.gpu_mem_printed} / {estimate.gpu_mem_upper_printed}, "
        f"{gpu_mem_unit_label(estimate.gpu_mem_unit)}), nvidia-smi ~{_gib(estimate.device_total_bytes)} / "
        f"{_gib(estimate.device_total_upper_bytes)}; verdicts use the upper figure; line through two traces "
        f"predicted {result.predicted}, confirmed with {len(result.probes)} estimates (each a full event stream, "
        f"traced or derived from traced ones: -v says which)"
    )
    if estimate.peak_reserved_upper_bytes > result.capacity_bytes:
        console.print(
            "  (reserved memory exceeds the budget without a cap; under it, the caching allocator frees its "
            "cache and retries before it would run out, and the step still fits: this is what the simulation decides)"
        )
    table = Table(title="estimated configs", title_justify="left")
    table.add_column("batch", justify="right")
    table.add_column("imgsz", justify="right")
    table.add_column("peak reserved (upper)", justify="right")
    table.add_column("fits")
    for probe in sorted(result.probes, key=lambda p: (p.imgsz, p.batch)):
        table.add_row(str(probe.batch), str(probe.imgsz), _gib(probe.peak_reserved_bytes), "yes" if probe.fits else "[red]no[/red]")
    console.print(table)
    console.print(f"run:  [bold]{result.train_command}[/bold]")
    if result.max_batch < result.nbs:
        console.print(
            f"{_trainer(result)} accumulates gradients over max(round(nbs / batch), 1) = {result.accumulate} batches "
            f"(nbs={result.nbs}), so each optimizer step sees ~{result.accumulate * result.max_batch} images."
        )
    for note in estimate.notes:
        console.print(f"[yellow]note:[/yellow] {note}")


def render_pick(result: PickResult, console: Console | None = None) -> None:
    console = console or Console()
    tasks = f" · {', '.join(result.tasks)}" if result.tasks else ""  # the tasks of the models ranked
    console.print(
        f"{card_label(result.gpu, result.gpu_total_bytes)}: {_gib(result.capacity_bytes)} for training after the "
        f"CUDA context and a {result.margin:.0%} margin · batch {result.batch} · imgsz {result.imgsz}{tasks}"
    )
    if result.family:
        console.print(f"ranking the {result.family} family in every size; family= or models= ranks others")
    else:
        console.print("ranking the models given")
    table = Table(title_justify="left")
    table.add_column("model")
    table.add_column("params", justify="right")
    table.add_column("peak reserved (upper)", justify="right")
    table.add_column("nvidia-smi (upper)", justify="right")
    table.add_column("headroom", justify="right")
    table.add_column("fits")
    for row in result.rows:
        table.add_row(row.model, f"{row.params / 1e6:.1f} M", _gib(row.peak_reserved_upper_bytes),
                      _gib(row.device_total_upper_bytes), _signed(row.headroom_bytes),
                      "[green]yes[/green]" if row.fits else "[red]no[/red]")  # fmt: skip
    console.print(table)
    console.print("[dim]upper: 9 runs in 10 stay under it; verdicts and headroom use it (--json has the expected "
                  "figures too)[/dim]")  # fmt: skip
    best = result.best
    if best:
        console.print(f"largest that fits: [bold]{best.model}[/bold]  ->  {result.train_command}")
    else:
        console.print("none fits; try a smaller batch or imgsz, or `yolomem fit MODEL gpu=... --explain`")
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, markup=False)


def render_ladder(strategies: tuple[Strategy, ...], capacity_bytes: int, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"what each step buys ({_gib(capacity_bytes)} available for the caching allocator)", title_justify="left")
    table.add_column("step")
    table.add_column("peak reserved, upper", justify="right")
    table.add_column("saves", justify="right")
    table.add_column("fits")
    table.add_column("largest batch", justify="right")
    over_budget = False
    for step in strategies:
        allows = "none" if step.max_batch is None else str(step.max_batch) + ("+" if step.at_search_cap else "")
        peak = _gib(step.peak_reserved_bytes)
        if step.fits and step.peak_reserved_bytes > capacity_bytes:
            peak, over_budget = peak + " *", True
        table.add_row(step.name, peak, _signed(step.saved_bytes) if step.name != "as asked" else "",
                      "[green]yes[/green]" if step.fits else "[red]no[/red]", allows)
    console.print(table)
    for step in strategies:
        if step.how:
            console.print(f"[bold]{step.name}[/bold]: {step.how}")
        if step.note:
            console.print(f"  [dim]{step.note}[/dim]")
    console.print("[dim]largest batch: yolomem fit's search with that one step (traced: it fits, one more does not); "
                  "+ = the search limit, more fits[/dim]")  # fmt: skip
    if over_budget:
        console.print("[dim]* reserved without a cap exceeds the budget; under it the caching allocator frees its "
                      "cache and retries, and the step still fits[/dim]")  # fmt: skip


def _trainer(result: FitResult) -> str:
    """Who trains the answer: the yolov5 repo's train.py for its models, Ultralytics for the rest."""
    return "the yolov5 repo's train.py" if result.estimate_at_max.config.framework == "yolov5" else "Ultralytics"
