"""The strategy ladder: what each memory-saving step buys for one config on one GPU.

Every figure here comes from tracing the training step with that one change (never from a rule of
thumb), judged as ``yolomem.sweeps.fit`` judges it (caching-allocator replay against the card minus the
CUDA context and the safety margin). Each step is applied alone to the config as asked:

- precision: AMP fp16 vs FP32 vs bf16 (``amp=``);
- a smaller batch with gradient accumulation: the largest batch that fits, found by the ``fit`` search;
  Ultralytics accumulates ``max(round(nbs / batch), 1)`` steps, so the effective batch stays ~nbs;
- activation checkpointing (``yolomem.loops.checkpointing``, traced with the same wrapping);
- freezing the backbone (``freeze=10``: no gradients or optimizer state for layers 0-9);
- a smaller imgsz (3/4 of the asked size, rounded down to the stride);
- ``expandable_segments`` (``PYTORCH_CUDA_ALLOC_CONF``): same trace, replayed with the other allocator
  mode, so only fragmentation changes;
- DDP over 2 GPUs: per-rank memory, with DDP's gradient buckets (``yolomem.loops.ddp``).

"The batch it allows" is the line through two traces of that strategy (the asked batch and half of
it), solved for the capacity: a prediction, marked as such (``max_batch_exact=False``). When memory
does not grow between the two (weights and optimizer dominate), it is the larger traced batch that
fits: a lower bound. Only the
"smaller batch" step is confirmed by traces on both sides.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from yolomem.config.settings import EstimateConfig
from yolomem.allocator.replay import replay_trace
from yolomem.result.estimate import Estimate
from yolomem.sweeps.fit import DEFAULT_MARGIN, MAX_BATCH, NothingFits, Progress, Prober, largest_batch, line_prediction, make_budget, model_stride, resolve_config, yolo_train_command

EXPANDABLE = "expandable_segments:True"
FREEZE_BACKBONE = 10  # the YOLOv8/YOLO11 detection backbone is layers 0-9
DDP_RANKS = 2
IMGSZ_FACTOR = 0.75


@dataclass(frozen=True)
class Strategy:
    """One rung: a single change to the asked config, and what it does to memory."""

    name: str
    changes: dict  # EstimateConfig field -> value
    how: str  # the command (or code) that applies it in a real run
    peak_reserved_bytes: int  # per rank for DDP
    saved_bytes: int  # baseline peak reserved minus this one (< 0: costs memory)
    fits: bool  # at the asked batch (for "smaller batch": at its batch)
    max_batch: int | None  # the largest total batch it allows; None: not even batch 1 (predicted)
    max_batch_exact: bool  # True when confirmed by traces, False when read off the two-trace line
    note: str = ""
    estimate: Estimate | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict:
        return {
            "name": self.name, "changes": dict(self.changes), "how": self.how,
            "peak_reserved_bytes": self.peak_reserved_bytes, "saved_bytes": self.saved_bytes, "fits": self.fits,
            "max_batch": self.max_batch, "max_batch_exact": self.max_batch_exact, "note": self.note,
        }  # fmt: skip


def strategy_ladder(
    config_or_model: EstimateConfig | str,
    gpu: str | None = None,
    *,
    gpu_mem: float | None = None,
    margin: float = DEFAULT_MARGIN,
    progress: Progress | None = None,
    **settings,
) -> tuple[Strategy, ...]:
    """The baseline (as asked) first, then one ``Strategy`` per memory-saving step."""
    config = resolve_config(config_or_model, gpu, gpu_mem, settings)
    prober = Prober(make_budget(config, margin), progress)
    capacity = prober.budget.capacity_bytes
    stride = model_stride(config)
    _prefetch(config, stride)
    base_estimate, base_probe = prober.run(config)
    baseline_peak = base_probe.peak_reserved_bytes

    def rung(name: str, changes: dict, how: str, note: str = "") -> Strategy:
        changed = config.with_changes(**changes)
        estimate, probe = prober.run(changed)
        allows = _predicted_max_batch(prober, changed, capacity)
        return Strategy(name, changes, how, probe.peak_reserved_bytes, baseline_peak - probe.peak_reserved_bytes,
                        probe.fits, allows, False, note, estimate)  # fmt: skip

    ladder = [rung("as asked", {}, yolo_train_command(config))]
    for amp, label in (("fp16", "AMP fp16 (amp=True)"), ("bf16", "AMP bf16 (amp=bf16)"), ("fp32", "FP32 (amp=False)")):
        if config.amp != amp:
            ladder.append(rung(label, {"amp": amp}, yolo_train_command(config.with_changes(amp=amp))))
    ladder.append(_smaller_batch(config, prober, baseline_peak))
    if not config.checkpoint:
        ladder.append(rung(
            "activation checkpointing", {"checkpoint": True}, yolo_train_command(config.with_changes(checkpoint=True)),
            "recomputes each layer in backward: about one extra forward pass per step",
        ))  # fmt: skip
    if len(config.freeze) < FREEZE_BACKBONE:
        frozen = tuple(range(FREEZE_BACKBONE))
        ladder.append(rung(
            f"freeze the backbone (freeze={FREEZE_BACKBONE})", {"freeze": frozen},
            yolo_train_command(config.with_changes(freeze=frozen)), "fine-tuning only: the backbone's weights stop learning",
        ))  # fmt: skip
    smaller = _smaller_imgsz(base_probe.imgsz, stride)
    if smaller < base_probe.imgsz:
        ladder.append(rung(f"smaller imgsz ({smaller})", {"imgsz": smaller}, yolo_train_command(config.with_changes(imgsz=smaller)),
                           "small objects get harder to detect"))  # fmt: skip
    if config.alloc_conf != EXPANDABLE:
        ladder.append(_expandable(config, prober, base_estimate, baseline_peak))
    if config.world_size == 1:
        ddp = config.with_changes(world_size=DDP_RANKS)
        ladder.append(rung(
            f"DDP over {DDP_RANKS} GPUs (per rank)", {"world_size": DDP_RANKS},
            yolo_train_command(ddp) + f"   # or: torchrun --nproc_per_node {DDP_RANKS} train.py",
            f"batch {config.batch} is split {DDP_RANKS} ways; each rank also holds DDP's gradient buckets",
        ))  # fmt: skip
    return tuple(ladder)


def _smaller_imgsz(imgsz: int, stride: int) -> int:
    """3/4 of the (rounded) imgsz, down to a multiple of the stride."""
    return max(int(imgsz * IMGSZ_FACTOR) // stride * stride, stride)


def _prefetch(config: EstimateConfig, stride: int) -> None:
    """Trace every run the rungs will ask for side by side (``yolomem.result.runs.prefetch``): each
    rung's config and its half batch. What the smaller-batch search asks later depends on these."""
    from yolomem.loops.base import round_imgsz
    from yolomem.result.runs import prefetch

    changes: list[dict] = [{}]
    changes += [{"amp": amp} for amp in ("fp16", "bf16", "fp32") if amp != config.amp]
    if not config.checkpoint:
        changes.append({"checkpoint": True})
    if len(config.freeze) < FREEZE_BACKBONE:
        changes.append({"freeze": tuple(range(FREEZE_BACKBONE))})
    imgsz = round_imgsz(config.imgsz, stride)
    if _smaller_imgsz(imgsz, stride) < imgsz:
        changes.append({"imgsz": _smaller_imgsz(imgsz, stride)})
    if config.world_size == 1:
        changes.append({"world_size": DDP_RANKS})
    configs = [config.with_changes(**change) for change in changes]
    prefetch([c for changed in configs for c in (changed, _half(changed))])


def _half(config: EstimateConfig) -> EstimateConfig:
    """The second point of the line: half the batch (or double it when the batch is the minimum)."""
    unit = config.world_size
    batch = config.batch // 2 // unit * unit
    return config.with_changes(batch=batch if batch >= unit and batch != config.batch else config.batch * 2)


def _predicted_max_batch(prober: Prober, config: EstimateConfig, capacity: int, replay: Callable | None = None) -> int | None:
    other = _half(config)
    _, p1 = prober.run(config)
    _, p2 = prober.run(other)
    m1, m2 = p1.peak_reserved_bytes, p2.peak_reserved_bytes
    if replay is not None:
        m1, m2 = replay(config), replay(other)
    x = line_prediction(config.batch, m1, other.batch, m2, capacity)
    if x is None:  # memory did not grow between the two batches: only what was traced is known
        fitting = [p.batch for p, m in ((p1, m1), (p2, m2)) if m <= capacity]
        return max(fitting) if fitting else None
    batch = int(math.floor(x)) // config.world_size * config.world_size
    return min(batch, MAX_BATCH) if batch >= config.world_size else None


def _smaller_batch(config: EstimateConfig, prober: Prober, baseline_peak: int) -> Strategy:
    try:
        result = largest_batch(config, prober=prober, bracket=(_half(config).batch, config.batch))
    except NothingFits:
        _, one = prober.run(config.with_changes(batch=config.world_size))
        return Strategy("smaller batch + accumulation", {"batch": config.world_size}, "", one.peak_reserved_bytes,
                        baseline_peak - one.peak_reserved_bytes, False, None, True, "not even batch 1 fits")  # fmt: skip
    changes = {"batch": result.max_batch}
    note = f"Ultralytics accumulates {result.accumulate} steps (nbs={config.nbs}) so the optimizer sees ~{result.max_batch * result.accumulate} images per step"
    peak = result.estimate_at_max.peak_reserved_bytes
    return Strategy("smaller batch + accumulation", changes, result.yolo_train_command, peak, baseline_peak - peak,
                    True, result.max_batch, True, note, result.estimate_at_max)  # fmt: skip


def _expandable(config: EstimateConfig, prober: Prober, base_estimate: Estimate, baseline_peak: int) -> Strategy:
    """Same trace, other allocator mode: replayed, not re-traced (the trace does not depend on it)."""
    capacity = prober.budget.capacity_bytes

    def peak(cfg: EstimateConfig) -> int:
        estimate, _ = prober.run(cfg)
        return replay_trace(estimate.trace, EXPANDABLE).peak_reserved_bytes

    replayed = replay_trace(base_estimate.trace, EXPANDABLE, capacity_bytes=capacity)
    full_peak = peak(config)
    allows = _predicted_max_batch(prober, config, capacity, replay=peak)
    changed = config.with_changes(alloc_conf=EXPANDABLE)
    return Strategy("expandable segments", {"alloc_conf": EXPANDABLE}, yolo_train_command(changed), full_peak,
                    baseline_peak - full_peak, replayed.oom is None, allows, False,
                    "less fragmentation: segments grow in place instead of new cudaMalloc blocks")  # fmt: skip
