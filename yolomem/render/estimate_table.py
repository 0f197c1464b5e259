"""The human view of an ``Estimate``: a rich table with the breakdown. Sizes in GiB (``render.units``);
GB only in the GPU_mem line of a trainer that prints GB."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from yolomem.config.gpus import GiB
from yolomem.render.units import card_label, gib, gpu_mem_unit_label
from yolomem.result.estimate import Estimate

_LABELS = {
    "parameter": "parameters + buffers",
    "gradient": "gradients",
    "optimizer_state": "optimizer state",
    "ema": "EMA copy",
    "activation": "activations (saved + backward)",
    "loss": "loss / assigner temporaries",
    "input": "input batch",
    "other": "other (optimizer/scaler temporaries)",
    "allocator_rounding": "allocator rounding",
    "cache_fragmentation": "allocator cache + fragmentation",
    "validation_epochs_growth": "cache growth in validation / epochs 2+",
    "cublas_workspace": "cuBLAS workspaces (per thread)",
    "cublaslt_workspace": "cuBLASLt workspaces",
    "cudnn_workspace": "cuDNN conv workspaces (added to the peak)",
    "cuda_context": "CUDA context (not in GPU_mem)",
}


def _size(nbytes: int) -> str:
    return gib(nbytes, 3)


def _spread(distribution) -> str:
    """median / p90 of a distribution, one unit for the cell."""
    return f"{distribution.median / GiB:.3f} / {distribution.high / GiB:.3f} GiB"


def _traced_code(estimate: Estimate) -> str:
    """Which code the figure is for: the installed releases that were traced."""
    if estimate.config.framework == "yolov5":
        return f"torch {estimate.torch_version}"
    return f"ultralytics {estimate.ultralytics_version} · torch {estimate.torch_version}"


def render_estimate(estimate: Estimate, console: Console | None = None) -> None:
    console = console or Console()
    cfg = estimate.config
    picked = " (AutoBatch's pick)" if estimate.autobatch else ""
    title = (
        f"{cfg.model} ({estimate.task}) · batch {cfg.batch}{picked} · imgsz {cfg.imgsz} · "
        f"{cfg.amp} · {cfg.optimizer} · {estimate.params / 1e6:.2f} M params · {_traced_code(estimate)}"
        + (f" · PYTORCH_CUDA_ALLOC_CONF={cfg.alloc_conf}" if cfg.alloc_conf else "")
    )
    summary = Table(title=title, show_header=False, title_justify="left")
    summary.add_column("what")
    summary.add_column("value", justify="right")
    trainer = "yolov5 train.py" if cfg.framework == "yolov5" else "Ultralytics"
    summary.add_row(f"{trainer} GPU_mem column (memory_reserved)" + (", highest epoch" if estimate.epochs else ""),
                    f"[bold]{estimate.gpu_mem_printed}[/bold] expected, [bold]{estimate.gpu_mem_upper_printed}[/bold] "
                    f"upper  ({gpu_mem_unit_label(estimate.gpu_mem_unit)})")  # fmt: skip
    summary.add_row("nvidia-smi total (reserved + CUDA context)", _size(estimate.device_total_bytes))
    summary.add_row("nvidia-smi total, upper (9 runs in 10 stay under)", _size(estimate.device_total_upper_bytes))
    summary.add_row("peak reserved", _size(estimate.peak_reserved_bytes))
    summary.add_row("peak reserved, upper", _size(estimate.peak_reserved_upper_bytes))
    summary.add_row("peak allocated", _size(estimate.peak_allocated_bytes))
    summary.add_row("peak happens in", estimate.peak_phase)
    if estimate.epochs is not None:
        sim = estimate.epochs
        summary.add_row("GPU_mem epoch 1 (median / p90)", _spread(sim.epoch1_reserved))
        summary.add_row("GPU_mem epoch 2+ (median / p90)", _spread(sim.steady_reserved))
        summary.add_row("peak over epochs + validation (median / p90)", _spread(sim.peak_reserved))
        summary.add_row("epoch peak set in", sim.peak_phase)
    if estimate.host is not None:
        host = estimate.host
        summary.add_row("host RAM for cache=ram (Ultralytics asks 2x)", f"{_size(host.cache_ram_bytes)} (asks {_size(host.cache_ram_required_bytes)})")
        summary.add_row("disk for cache=disk (+10 %)", _size(host.cache_disk_required_bytes))
        summary.add_row(f"dataloader workers ({host.workers}, rough)", _size(host.workers_bytes))
    if estimate.steady_reserved_upper_bytes is not None and estimate.epochs is not None:
        summary.add_row("GPU_mem epoch 2+, upper", _size(estimate.steady_reserved_upper_bytes))
    if estimate.density is not None:
        plan = estimate.density
        summary.add_row("densest training sample of epoch 1 (objects)",
                        f"{plan.n_max} expected, {plan.n_max_upper} upper; {plan.batches_per_epoch} batches/epoch")
        for factor, n_max, nbytes in estimate.density_sensitivity.at if estimate.density_sensitivity else ():
            summary.add_row(f"  peak reserved if it held {factor}x ({n_max})", _size(nbytes))
    if estimate.gpu:
        verdict = "[green]fits[/green]" if estimate.fits else "[red]does not fit[/red]"
        process = ", the training process's RAM (shared memory)" if estimate.host_held_bytes else ""
        room = f"{gib(estimate.capacity_bytes)} after the CUDA context{process} and a {estimate.margin:.0%} margin"
        scope = ", epoch 1 alone" if estimate.fits_scope == "epoch 1" else ""
        summary.add_row(f"on {card_label(estimate.gpu, estimate.gpu_total_bytes)}, upper figure{scope}", f"{verdict} ({room})")
        if estimate.oom is not None:
            summary.add_row("on the card a typical run runs out of memory in", estimate.oom.where)
        if estimate.oom_retry is not None:
            summary.add_row(f"then {estimate.oom_retry.trainer} halves the batch", estimate.oom_retry.summary())
    console.print(summary)

    breakdown = Table(title="Where it goes (at the peak)", title_justify="left")
    breakdown.add_column("part")
    breakdown.add_column("size", justify="right")
    breakdown.add_column("share", justify="right")
    total = max(sum(estimate.breakdown.values()), 1)
    for key, nbytes in estimate.breakdown.items():
        if nbytes:
            breakdown.add_row(_LABELS.get(key, key), _size(nbytes), f"{100 * nbytes / total:5.1f} %")
    console.print(breakdown)

    if estimate.top_layers:
        layers = Table(title="Layers holding the most activation memory at the peak", title_justify="left")
        layers.add_column("layer")
        layers.add_column("size", justify="right")
        for layer in estimate.top_layers:
            layers.add_row(layer.module, _size(layer.bytes))
        console.print(layers)
    for key, source in estimate.breakdown_sources.items():
        console.print(f"[dim]{_LABELS.get(key, key)}: {source}[/dim]")
    if estimate.density is not None:
        console.print(f"[dim]objects per sample: {estimate.density.source}"
                      + (f"; {estimate.density_sensitivity.source}" if estimate.density_sensitivity else "") + "[/dim]")
    if estimate.upper is not None:
        console.print(f"[dim]upper figure: {'; '.join(estimate.upper.terms)}[/dim]")
    for note in estimate.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    for item in estimate.unaccounted:
        console.print(f"[dim]not modelled: {item}[/dim]")
    console.print(f"[dim]computed in {estimate.seconds:.1f} s from a trace of {len(estimate.trace.events) if estimate.trace else 0} allocation events[/dim]")
