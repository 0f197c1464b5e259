"""The strategy ladder: what each memory-saving step buys for one config on one GPU.

Every figure here comes from tracing the training step with that one change (never from a rule of
thumb), judged as every verdict is (``yolomem.result.fits``: the peak reserved memory against the card
minus the CUDA context and the safety margin). Each step is applied alone to the config as asked:

- precision (``amp=``): FP32 where AMP was asked, AMP fp16 where FP32 was (``precision_rungs``);
- a smaller batch with gradient accumulation: the largest batch, at most the asked one, that fits and
  keeps the asked effective batch (images per optimizer step, ``batch * max(round(nbs / batch), 1)`` in
  Ultralytics and the yolov5 repo); ``nbs`` is raised to it where the default rounding would not;
- activation checkpointing (``yolomem.loops.checkpointing``, traced with the same wrapping);
- freezing the backbone (``freeze=10``: no gradients or optimizer state for layers 0-9);
- a smaller imgsz (3/4 of the asked size, rounded down to the stride);
- ``expandable_segments`` (``PYTORCH_CUDA_ALLOC_CONF``);
- DDP over 2 GPUs: per-rank memory, with DDP's gradient buckets (``yolomem.loops.ddp``).

"The largest batch" of a step is ``yolomem fit``'s answer for the config with that change: the same
search, budget and prober (so ``fit amp=false`` gives the FP32 row's figure), confirmed (the answer
fits, one more does not) on runs traced or derived from traced ones (``yolomem.result.runs``). The runs
every rung is sure to need are traced side by side first (``_prefetch``). With the command's warm worker
(``yolomem.workers``) the searches then run side by side too (``_searched_side_by_side``), each tracing
its own third run where the line's prediction does not derive from the first two; without it, those
third runs are traced side by side before the searches. "Fits" is the verdict at the asked batch under
the same budget, so a step that fits never shows a largest batch below the asked one.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field

from yolomem.config.settings import EstimateConfig
from yolomem.result.estimate import Estimate, estimate_config
from yolomem.sweeps.fit import (
    BATCH_BRACKET, NothingFits, Progress, Prober, batch_search_start, batch_units, make_budget, model_stride,
    resolve_config, search_batch, train_command,
)  # fmt: skip

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
    max_batch: int | None  # yolomem fit's answer with this change (total batch); None: not even one per rank
    at_search_cap: bool = False  # max_batch is fit's search limit: more fits
    note: str = ""
    config: EstimateConfig | None = field(default=None, repr=False, compare=False)  # as judged (the budget's margin)

    @functools.cached_property
    def estimate(self) -> Estimate | None:
        """The step's whole estimate, made when first asked: the ladder's figures are its verdict's alone
        (``Prober.probe``), and the rest of an estimate (its breakdown) cost ``--explain`` about a second."""
        return None if self.config is None else estimate_config(self.config)

    def to_json(self) -> dict:
        return {
            "name": self.name, "changes": dict(self.changes), "how": self.how,
            "peak_reserved_upper_bytes": self.peak_reserved_bytes, "saved_bytes": self.saved_bytes, "fits": self.fits,
            "max_batch": self.max_batch, "at_search_cap": self.at_search_cap, "note": self.note,
        }  # fmt: skip


@dataclass(frozen=True)
class _Rung:
    """One step before it is estimated: its name, its change to the asked config, its command, its note."""

    name: str
    changes: dict
    how: str
    note: str = ""


def strategy_ladder(
    config_or_model: EstimateConfig | str,
    gpu: str | None = None,
    *,
    gpu_mem: float | None = None,
    margin: float | None = None,
    progress: Progress | None = None,
    **settings,
) -> tuple[Strategy, ...]:
    """The baseline (as asked) first, then one ``Strategy`` per memory-saving step."""
    config = resolve_config(config_or_model, gpu, gpu_mem, settings)
    prober = Prober(make_budget(config, margin), progress)
    stride = model_stride(config)
    rungs = _rungs(config, stride)
    _prefetch(config, rungs, prober)
    largest = _searched_side_by_side(config, rungs, prober)
    baseline_peak = prober.probe(config).peak_reserved_bytes
    asked_epochs = prober.judged(config).epochs  # the trainer's whole default run where judged_run sets it

    def strategy(rung: _Rung) -> Strategy:
        changed = config.with_changes(**rung.changes)
        probe = prober.probe(changed)
        allows, at_cap = largest[changed] if changed in largest else _largest(prober, changed)
        judged = prober.judged(changed)
        note = rung.note
        if judged.epochs != asked_epochs:  # the asked run is judged whole, this one cannot be
            note = "; ".join(filter(None, (note, "epoch 1 alone (no whole epochs are simulated for this run), while "
                                                 "the run as asked is judged over its whole default run")))  # fmt: skip
        return Strategy(rung.name, rung.changes, rung.how, probe.peak_reserved_bytes,
                        baseline_peak - probe.peak_reserved_bytes, probe.fits, allows, at_cap, note, judged)  # fmt: skip

    accumulation_at = 1 + len(precision_rungs(config.amp))  # after "as asked" and the precision step
    ladder = [strategy(rung) for rung in rungs[:accumulation_at]]
    ladder.append(_accumulation(config, prober, baseline_peak, largest.get(config)))
    ladder += [strategy(rung) for rung in rungs[accumulation_at:]]
    return tuple(ladder)


def _rungs(config: EstimateConfig, stride: int) -> list[_Rung]:
    """The ladder's steps in order, as asked first; the accumulation step (searched on the asked config)
    goes after the precision steps."""
    from yolomem.loops.base import round_imgsz

    rungs = [_Rung("as asked", {}, train_command(config))]
    for amp, label, note in precision_rungs(config.amp):
        if _amp_refused(config):
            note = f"the same run: Ultralytics' check_amp turns AMP off on {config.gpu}, so both train in FP32"
        rungs.append(_Rung(label, {"amp": amp}, train_command(config.with_changes(amp=amp)), note))
    if not config.checkpoint:
        rungs.append(_Rung(
            "activation checkpointing", {"checkpoint": True}, train_command(config.with_changes(checkpoint=True)),
            "recomputes each layer in backward: about one extra forward pass per step",
        ))  # fmt: skip
    if len(config.freeze) < FREEZE_BACKBONE:
        frozen = tuple(range(FREEZE_BACKBONE))
        rungs.append(_Rung(
            f"freeze the backbone (freeze={FREEZE_BACKBONE})", {"freeze": frozen},
            train_command(config.with_changes(freeze=frozen)), "fine-tuning only: the backbone's weights stop learning",
        ))  # fmt: skip
    imgsz = round_imgsz(config.imgsz, stride)
    smaller = _smaller_imgsz(imgsz, stride)
    if smaller < imgsz:
        rungs.append(_Rung(f"smaller imgsz ({smaller})", {"imgsz": smaller}, train_command(config.with_changes(imgsz=smaller)),
                           "small objects get harder to detect"))  # fmt: skip
    if config.alloc_conf != EXPANDABLE:
        rungs.append(_Rung("expandable segments", {"alloc_conf": EXPANDABLE},
                           train_command(config.with_changes(alloc_conf=EXPANDABLE)),
                           "less fragmentation: segments grow in place instead of new cudaMalloc blocks"))  # fmt: skip
    if config.world_size == 1:
        ddp = config.with_changes(world_size=DDP_RANKS)
        rungs.append(_Rung(
            f"DDP over {DDP_RANKS} GPUs (per rank)", {"world_size": DDP_RANKS}, train_command(ddp),
            f"batch {config.batch} is split {DDP_RANKS} ways; each rank also holds DDP's gradient buckets",
        ))  # fmt: skip
    return rungs


def _amp_refused(config: EstimateConfig) -> bool:
    """Whether the trainer turns AMP off on the config's card (``yolomem.result.prepare.trained_precision``)."""
    from yolomem.loops import resolve_model
    from yolomem.result.prepare import trained_precision

    asked = config.with_changes(amp="fp16")
    return trained_precision(asked, resolve_model(config.model, config.framework))[0].amp == "fp32"


def precision_rungs(amp: str) -> tuple[tuple[str, str, str], ...]:
    """(amp, label, note) of the precision step from ``amp``: FP32 from either AMP, AMP fp16 from FP32.

    Why not the other AMP as a step of its own: fp16 and bf16 autocast run the same ops at the same
    2-byte size; their traces differ only by GradScaler's handful of 4- and 8-byte scalars, which bf16
    does without (tests/test_fit.py: yolov8n, event by event). Tracing it would cost ``fit --explain``
    two of its ~13 runs to print the same figure."""
    if amp == "fp32":
        return (("fp16", "AMP fp16 (amp=True)", "bf16 autocast needs the same memory, "
                 "less GradScaler's few scalars"),)  # fmt: skip
    return (("fp32", "FP32 (amp=False)", ""),)


def _smaller_imgsz(imgsz: int, stride: int) -> int:
    """3/4 of the (rounded) imgsz, down to a multiple of the stride."""
    return max(int(imgsz * IMGSZ_FACTOR) // stride * stride, stride)


def _prefetch(config: EstimateConfig, rungs: list[_Rung], prober: Prober) -> None:
    """Trace side by side (``yolomem.sweeps.prefetch``) the runs every rung is sure to ask for: first
    its config and the two batches that start fit's search, then the third run of each search, the
    line's prediction, where it does not derive from the first two (the rest of each search derives
    from these). Expandable segments replays the asked config's runs, and DDP's ranks the one-GPU runs
    at their share where those derive.

    With the command's warm workers the third runs are left to the searches, which then run side by
    side (``_searched_side_by_side``): finding each prediction here took this process about 2 s alone
    (two probes per rung, half of them the worker's searches made again)."""
    from yolomem.result.runs import one_gpu_share
    from yolomem.workers import are_warm

    def traces_its_own(rung: _Rung) -> bool:
        if "alloc_conf" in rung.changes:
            return False  # replays the asked config's runs
        # a DDP rank's runs are the one-GPU runs at its share where those derive
        return "world_size" not in rung.changes or one_gpu_share(config.with_changes(**rung.changes)) is None

    traced = [config.with_changes(**rung.changes) for rung in rungs if traces_its_own(rung)]
    prober.prefetch([c for rung in traced for c in [rung] + [rung.with_changes(batch=u * rung.world_size)
                                                             for u in batch_units(BATCH_BRACKET, rung.world_size)]])  # fmt: skip
    if are_warm():
        return  # the searches themselves run side by side (_searched_side_by_side), each tracing its third run
    starts = []
    for rung in traced:
        with contextlib.suppress(Exception):  # a rung that fails is the ladder's to report
            starts.append(batch_search_start(rung, prober))
    prober.prefetch([start for start in starts if start is not None])


def _searched_side_by_side(config: EstimateConfig, rungs: list[_Rung], prober: Prober) -> dict:
    """Each rung's largest batch (``_largest``), the searches shared with the command's warm workers
    (``yolomem.workers``); {} without them. Why: after the traces, ``fit --explain`` spent about 7 s in
    this process alone on the searches' derived probes (three replays each), the worker idle.

    A worker gets the runs this process traced with its task (under ``--no-cache`` it has only its own);
    a search that fails there or here is left to the ladder, which meets it as before."""
    from yolomem.result.runs import default_source, worker_pool
    from yolomem.workers import are_warm, default_jobs, side_by_side

    configs = [config.with_changes(**rung.changes) for rung in rungs]
    if not are_warm() or len(configs) < 2:
        return {}
    runs = default_source().stored_runs()
    found: dict = {}

    def here(changed: EstimateConfig):
        with contextlib.suppress(Exception):
            return _largest(prober, changed)
        return None

    def keep(changed: EstimateConfig, answer) -> None:
        if isinstance(answer, _Elsewhere):
            prober.adopt(answer.probes)
            answer = answer.largest
        if answer is not None:
            found[changed] = answer

    with worker_pool(default_jobs() - 1) as pool:
        side_by_side(pool, configs, here, functools.partial(_largest_elsewhere, prober.budget, runs), keep)
    return found


@dataclass(frozen=True)
class _Elsewhere:
    """A worker's search: its answer, and its prober's verdicts (the asked batch's among them: the
    ladder's step shows it, and would otherwise derive and replay it again)."""

    largest: tuple[int | None, bool]
    probes: dict


def _largest_elsewhere(budget, runs: list, changed: EstimateConfig) -> _Elsewhere | None:
    """In a worker process: ``_largest`` of ``changed`` on a prober of its own, with ``runs`` adopted."""
    from yolomem.result.runs import default_source

    default_source().adopt(runs)
    prober = Prober(budget)
    with contextlib.suppress(Exception):
        largest = _largest(prober, changed)
        prober.probe(changed)
        return _Elsewhere(largest, prober.verdicts())
    return None


def _largest(prober: Prober, config: EstimateConfig) -> tuple[int | None, bool]:
    """``yolomem fit``'s answer for ``config`` (its search, on the shared prober): (batch, at the cap)."""
    try:
        max_batch, _, at_cap = search_batch(config, prober)
    except NothingFits:
        return None, False
    return max_batch, at_cap


def accumulate(batch: int, nbs: int) -> int:
    """Batches per optimizer step, as Ultralytics and the yolov5 repo compute it."""
    return max(round(nbs / batch), 1)


def _accumulation(config: EstimateConfig, prober: Prober, baseline_peak: int, searched: tuple | None = None) -> Strategy:
    """The largest batch, at most the asked one, that fits and keeps the asked effective batch.
    ``searched``: ``_largest`` of the asked config, when already found."""
    name, ranks = "smaller batch + accumulation", config.world_size
    effective = config.batch * accumulate(config.batch, config.nbs)  # images per optimizer step, as asked
    largest, _ = searched or _largest(prober, config)
    for batch in range(min(largest or 0, config.batch) // ranks * ranks, 0, -ranks):
        if effective % batch:
            continue  # accumulation cannot make up the asked effective batch from this one
        nbs = config.nbs if batch * accumulate(batch, config.nbs) == effective else effective
        changes = {key: value for key, value in (("batch", batch), ("nbs", nbs)) if value != getattr(config, key)}
        probe = prober.probe(config.with_changes(**changes))
        if probe.fits:
            break
    else:
        one = prober.probe(config.with_changes(batch=ranks))
        return Strategy(name, {"batch": ranks}, "", one.peak_reserved_bytes, baseline_peak - one.peak_reserved_bytes,
                        False, None, note=f"not even batch {ranks} fits")  # fmt: skip
    steps = effective // batch
    if batch == config.batch:
        note = f"batch {batch} fits as asked: no accumulation needed"
    else:
        note = f"accumulates {steps} batches of {batch}: {effective} images per optimizer step, as asked"
    if nbs != config.nbs:
        note += (f"; nbs={nbs} makes it accumulate {steps}, and weight decay is scaled by batch x accumulate / nbs: "
                 f"multiply weight_decay by {effective / config.nbs:g} to keep it")  # fmt: skip
    peak = probe.peak_reserved_bytes
    how = train_command(config.with_changes(**changes))
    return Strategy(name, changes, how, peak, baseline_peak - peak, True, batch, note=note,
                    config=prober.judged(config.with_changes(**changes)))  # fmt: skip
