"""Whole epochs: training batches of varying density, validation after each epoch, then training again.

Why: the caching allocator keeps the largest blocks anyone asked for, so ``GPU_mem`` in epoch 2 and
later carries what validation (2x batch, rect shapes, NMS) and the densest training batch left.

How (tracing is the expensive part, so each distinct piece is traced once):
1. Plan: draw the epoch's batches for several seeds with ``yolomem.loops.density`` (objects per image
   from the dataset's label files or drawn around ``instances``; mosaics of 4 images while the mosaic
   is open). A batch is characterised by its densest training sample (the assigner's
   ``n_max_boxes``); the levels traced are the median and the 90th percentile of that over all draws
   for batches of ``REFERENCE_BATCH`` samples, and the densest sample of all. Each level's traced
   batch is that densest sample and typical ones (the median sample, ``dense_counts``). The samples
   of an epoch do not depend on the batch size (only how they are cut into batches does), so neither
   do the levels: without a dataset the traced run derives exactly at any batch
   (``yolomem.trace.derive``); with one, validation's rect shapes change with the batch.
2. Trace, with the model, optimizer and EMA of ``runner.trace_run``: one training iteration per
   level, and one validation batch per distinct val shape (``yolomem.loops.val_pass``; for the
   yolov5 repo's loop ``yolomem.loops.yolov5.val_pass``: val.py's fp16 EMA, its NMS).
3. Compose: each traced iteration is a template. A storage a template allocates and does not free is
   freed at its end, and its frees of older storages are dropped, so templates are self-contained
   and can be concatenated (storage ids renumbered per copy). The model, optimizer state and EMA
   (allocated before and in the first iteration) stay alive throughout.
4. Replay (``yolomem.allocator.replay``): epoch 1 (first iteration, then ``SIM_ITERATIONS`` training
   batches in order, the densest among them), a cache clear, validation, a cache clear, epoch 2,
   validation, epoch 3. Where the trainer empties the cache is the loop's ``cache_clears()``: read
   from the installed Ultralytics (after each epoch always up to 8.3.86; above a share of the card,
   and also before validation, in later releases); the yolov5 repo's train.py never does. Repeated
   for each seed: the figures are a median and a high percentile.

Assumptions (also returned in ``EpochSimulation.assumptions``):
- An epoch is shortened to ``SIM_ITERATIONS`` training batches, sampled in order and always with the
  densest one: the allocator reaches its steady state within a few repeats of each pattern.
- Every simulated iteration steps the optimizer (as in warmup). With ``accumulate > 1`` gradients
  also stay alive during the forward of non-stepping iterations: not modelled.
- ``_clear_memory(threshold)`` empties the cache only when reserved memory exceeds that share of the
  card; without ``gpu=`` the card is unknown and the cache is assumed kept (the higher, cautious
  figure). An unconditional clear empties it whatever the card.
- Consecutive validation batches of one shape are replayed at most ``MAX_REPEATS`` times.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from yolomem.allocator.caching import CachingAllocator, parse_alloc_conf
from yolomem.allocator.replay import Copy, Mark, OomPoint, ReplayEvent, replay
from yolomem.loops.batches import dense_counts
from yolomem.loops.density import (
    DEFAULT_SIGMA, DEFAULT_TRAIN_IMAGES, REFERENCE_BATCH, Augmentation, batch_maxima_and_sums, epoch_images,
    image_counts, sample_counts, tail_sigma,
)  # fmt: skip
from yolomem.trace.tracer import AllocationEvent, Trace
from yolomem.loops.base import CacheClears
from yolomem.loops.val_pass import ValBatchShape

SIM_ITERATIONS = 12  # training batches replayed per simulated epoch
SIM_EPOCHS = 3  # epoch 1, then 2 and 3 (both "steady")
DEFAULT_SEEDS = 5
HIGH_PERCENTILE = 90
MAX_REPEATS = 2
MAX_VAL_SHAPES = 3  # distinct validation shapes traced; other batches use the next larger traced one
VAL_PAD = 0.5  # build_yolo_dataset: pad = 0.0 if mode == "train" else 0.5
# Ultralytics 8.3.152+: _clear_memory(0.5) before validation and after each epoch (older: loops/ultralytics/release.py)
LATEST_ULTRALYTICS = CacheClears(before_val=0.5, after_epoch=0.5)
NO_DATA_VAL_BATCHES = 10  # val batches drawn to pick the densest when there is no dataset


@dataclass(frozen=True)
class Distribution:
    """A figure over seeded simulations (bytes)."""

    median: int
    high: int  # the HIGH_PERCENTILE-th percentile
    samples: tuple[int, ...]

    @staticmethod
    def of(values: Sequence[int]) -> Distribution:
        array = np.asarray(values, dtype=np.float64)
        return Distribution(int(np.median(array)), int(np.percentile(array, HIGH_PERCENTILE)), tuple(int(v) for v in values))

    def to_json(self) -> dict:
        return {"median": self.median, f"p{HIGH_PERCENTILE}": self.high, "samples": list(self.samples)}


@dataclass(frozen=True)
class EpochPlan:
    """What to trace and in which order to replay it, before any tracing."""

    levels: tuple[int, ...]  # densest image of a training batch, one traced iteration per level
    level_counts: tuple[tuple[int, ...], ...]  # objects per sample of the batch traced for each level
    sequences: tuple[tuple[tuple[int, ...], ...], ...]  # per seed, per epoch: level index of each batch
    val_shapes: tuple[ValBatchShape, ...]  # traced validation batches
    val_sequence: tuple[int, ...]  # traced shape index for each validation batch, in order
    batches_per_epoch: int  # real training batches per epoch (the dataset's, or the density model's default)
    seeds: tuple[int, ...]
    first_level_iteration: int | None = None  # iteration index of the first level's trace (set when traced)
    # one traced validation template: the whole pass over the (compressed) val sequence, in order
    whole_val_pass: bool = False


def plan_shape(plan: EpochPlan) -> tuple:
    """What of a plan the trace depends on (levels, validation shapes and their densest images); the
    seeds' orders of batches only matter to the replay."""
    return (plan.levels, tuple(plan.level_counts[i][:2] for i in range(len(plan.levels))),
            tuple((s.height, s.width, s.counts[0] if s.counts else 0, s.counts[1] if len(s.counts) > 1 else None)
                  for s in plan.val_shapes), plan.first_level_iteration,
            tuple(_compress(plan.val_sequence)) if plan.whole_val_pass else ())  # fmt: skip


@dataclass(frozen=True)
class EpochSimulation:
    epoch1_reserved: Distribution  # GPU_mem at the end of epoch 1's training
    steady_reserved: Distribution  # GPU_mem during epochs 2+ (largest printed value)
    peak_reserved: Distribution  # torch.cuda.max_memory_reserved() over the whole run
    peak_allocated: Distribution
    peak_phase: str  # the phase whose allocation first reached the peak reserved (median seed)
    plan: EpochPlan
    emptied_cache: bool  # whether any simulated cache clear emptied the cache
    oom: OomPoint | None  # the first seed's simulated OOM, when replayed with a capacity
    assumptions: tuple[str, ...]

    def to_json(self) -> dict:
        return {
            "epoch1_reserved_bytes": self.epoch1_reserved.to_json(),
            "steady_reserved_bytes": self.steady_reserved.to_json(),
            "peak_reserved_bytes": self.peak_reserved.to_json(),
            "peak_allocated_bytes": self.peak_allocated.to_json(),
            "peak_phase": self.peak_phase,
            "levels": list(self.plan.levels),
            "val_shapes": [[s.batch, s.height, s.width] for s in self.plan.val_shapes],
            "val_batches": len(self.plan.val_sequence),
            "batches_per_epoch": self.plan.batches_per_epoch,
            "simulated_batches_per_epoch": SIM_ITERATIONS,
            "seeds": list(self.plan.seeds),
            "emptied_cache": self.emptied_cache,
            "oom": self.oom.to_json() if self.oom else None,
            "assumptions": list(self.assumptions),
        }


# -- planning -------------------------------------------------------------------------------------
def rect_val_shapes(sizes: Sequence[tuple[int, int]], batch: int, imgsz: int, stride: int) -> list[tuple[int, int]]:
    """BaseDataset.set_rectangle: images sorted by aspect ratio, one (h, w) per batch of ``batch``."""
    ar = np.array([h / w for h, w in sizes], dtype=np.float64)
    ar.sort()
    shapes = []
    for start in range(0, len(ar), batch):
        chunk = ar[start : start + batch]
        mini, maxi = chunk.min(), chunk.max()
        shape = [1.0, 1.0]
        if maxi < 1:
            shape = [maxi, 1.0]
        elif mini > 1:
            shape = [1.0, 1 / mini]
        h, w = (int(np.ceil(x * imgsz / stride + VAL_PAD)) * stride for x in shape)
        shapes.append((h, w))
    return shapes


def _val_batches(val_sizes, val_counts, val_batch: int, imgsz: int, stride: int):
    """(shape, counts) of each validation batch in loader order."""
    order = np.argsort(np.array([h / w for h, w in val_sizes]), kind="stable")
    shapes = rect_val_shapes(val_sizes, val_batch, imgsz, stride)
    counts = [val_counts[i] for i in order]
    return [(shape, tuple(counts[i * val_batch : (i + 1) * val_batch])) for i, shape in enumerate(shapes)]


def plan_epochs(
    *, batch: int, val_batch: int, imgsz: int, stride: int, seeds: Sequence[int],
    train_counts: Sequence[int] | None = None, instances: float = 8.0,
    val_sizes: Sequence[tuple[int, int]] | None = None, val_counts: Sequence[int] | None = None,
    max_instances: int | None = None, augmentations: Sequence[Augmentation] | None = None,
    images: int | None = None, sigma: float | None = None, square_val: bool = False,
) -> EpochPlan:  # fmt: skip
    """Draw the batches of every simulated epoch and pick what to trace (see the module docstring).
    ``augmentations``: one per simulated epoch (mosaic on or closed); default mosaics throughout.
    Without ``train_counts``: ``images`` per epoch (default ``DEFAULT_TRAIN_IMAGES``), spread with log-sd
    ``sigma`` (default ``DEFAULT_SIGMA``). ``square_val``: every validation image is ``imgsz`` square
    (classification: ``classify_transforms`` center-crops), not a letterboxed rect shape."""
    augmentations = tuple(augmentations or [Augmentation()] * SIM_EPOCHS)
    counts = None if train_counts is None else tuple(int(c) for c in train_counts)
    drawn: list[list[list[tuple[int, ...]]]] = []  # seed -> epoch -> batches (objects per sample)
    samples: list[np.ndarray] = []  # every sample drawn: they do not depend on the batch size
    reference: list[np.ndarray] = []  # the densest sample of each REFERENCE_BATCH samples
    n_images = len(counts) if counts is not None else (images or DEFAULT_TRAIN_IMAGES)
    for seed in seeds:
        per_seed = []
        for e, epoch in enumerate(_drawn_epochs(seed, counts, instances, max_instances, augmentations, images, sigma)):
            samples.append(epoch)
            reference.append(batch_maxima_and_sums(epoch, REFERENCE_BATCH)[0])
            # its own generator: how many batches an epoch has must not change the next epoch's draws
            per_seed.append(_sample_in_order(epoch, batch, np.random.default_rng((seed, e))))
        drawn.append(per_seed)
    every, cuts = np.concatenate(samples) if samples else np.zeros(0), np.concatenate(reference) if reference else []
    top = int(every.max()) if len(every) else 0
    levels = sorted({int(np.median(cuts)), int(np.percentile(cuts, 90)), top} if len(cuts) else {0})
    typical = int(np.median(every)) if len(every) else 0
    level_counts = [dense_counts(batch, level, min(typical, level)) for level in levels]
    sequences = tuple(
        tuple(tuple(_level_of(max(b, default=0), levels) for b in epoch) for epoch in per_seed) for per_seed in drawn
    )
    if square_val:
        batches = [((imgsz, imgsz), (0,) * val_batch)]
    elif val_sizes:
        batches = _val_batches(val_sizes, list(val_counts or [0] * len(val_sizes)), val_batch, imgsz, stride)
    else:  # no dataset: square images, letterboxed as set_rectangle does for aspect ratio 1
        side = int(math.ceil(imgsz / stride + VAL_PAD)) * stride
        rng = np.random.default_rng(seeds[0] if seeds else 0)
        # images of REFERENCE_BATCH-sized batches: the densest of them does not depend on the batch size
        spread = DEFAULT_SIGMA if sigma is None else sigma
        batches = [((side, side), tuple(int(c) for c in image_counts(rng, instances, spread, 2 * REFERENCE_BATCH,
                                                                     max_instances)))
                   for _ in range(NO_DATA_VAL_BATCHES)]  # fmt: skip
    val_shapes, val_sequence = _pick_val_shapes(batches, val_batch)
    return EpochPlan(
        levels=tuple(levels), level_counts=tuple(level_counts), sequences=sequences,
        val_shapes=val_shapes, val_sequence=val_sequence,
        batches_per_epoch=math.ceil(n_images / batch), seeds=tuple(seeds),
    )  # fmt: skip


@functools.lru_cache(maxsize=16)  # a setting's 5 seeds, each up to 3 x MAX_DRAWN_IMAGES int64 (2.4 MB)
def _drawn_epochs(seed: int, train_counts: tuple[int, ...] | None, instances: float, max_instances: int | None,
                  augmentations: tuple[Augmentation, ...], images: int | None, sigma: float | None) -> tuple[np.ndarray, ...]:  # fmt: skip
    """Objects per sample of each simulated epoch of one seed, in the epoch's order: they do not depend
    on the batch size, so a sweep over batches draws them once."""
    rng = np.random.default_rng(seed)
    if train_counts is not None:
        per_image = np.asarray(train_counts, dtype=np.int64)
    else:
        per_image = epoch_images(rng, instances, sigma, images, max_instances)
    epochs = []
    for aug in augmentations:
        epoch = sample_counts(rng, per_image, rng.permutation(len(per_image)), aug)
        epoch.flags.writeable = False  # kept for later calls
        epochs.append(epoch)
    return tuple(epochs)


def _sample_in_order(samples: np.ndarray, batch: int, rng) -> list[tuple[int, ...]]:
    """SIM_ITERATIONS of the epoch's batches, in order, always including the densest."""
    maxima = batch_maxima_and_sums(samples, batch)[0]
    if len(maxima) <= SIM_ITERATIONS:
        picked = range(len(maxima))
    else:
        densest = int(np.argmax(maxima))
        others = [i for i in range(len(maxima)) if i != densest]
        picked = sorted([densest, *rng.choice(others, SIM_ITERATIONS - 1, replace=False).tolist()])
    return [tuple(int(c) for c in samples[i * batch : (i + 1) * batch]) for i in picked]


def _level_of(value: int, levels: Sequence[int]) -> int:
    """The smallest traced level that covers ``value`` (the largest one otherwise)."""
    for index, level in enumerate(levels):
        if value <= level:
            return index
    return len(levels) - 1


def _pick_val_shapes(batches, val_batch: int) -> tuple[tuple[ValBatchShape, ...], tuple[int, ...]]:
    by_shape: dict[tuple[int, int], list[tuple[int, ...]]] = {}
    for shape, counts in batches:
        by_shape.setdefault(shape, []).append(counts)
    largest = max(by_shape, key=lambda s: (s[0] * s[1], s))
    frequent = sorted(by_shape, key=lambda s: (-len(by_shape[s]), s))
    chosen = [largest] + [s for s in frequent if s != largest][: MAX_VAL_SHAPES - 1]
    chosen.sort(key=lambda s: (s[0] * s[1], s))

    def traced_for(shape):  # the smallest traced shape at least as large
        return next(i for i, c in enumerate(chosen) if c[0] * c[1] >= shape[0] * shape[1])

    sequence = tuple(traced_for(shape) for shape, _ in batches)
    shapes = []
    for index, (h, w) in enumerate(chosen):
        mapped = [c for (shape, c), t in zip(batches, sequence) if t == index]
        most = max(max(c, default=0) for c in mapped)  # the densest image of the shape's batches
        typical = int(np.median([x for c in mapped for x in c])) if any(mapped) else 0
        shapes.append(ValBatchShape(val_batch, h, w, dense_counts(val_batch, most, min(typical, most))))
    return tuple(shapes), sequence


# -- composing and replaying ----------------------------------------------------------------------
@dataclass(frozen=True)
class _Template:
    """A traced segment made self-contained: its events (``op``, ``storage_id``, ``nbytes``, ``phase``,
    and the upper figure's size, ``size(upper=True)``).

    With carried loop variables: ``carried_in`` holds (position, bytes) of the segment's frees of what
    an earlier iteration left alive (no event at that position), ``carried_out`` the (local id, bytes) it
    leaves alive itself (not freed in ``events``): the replay frees those when the next training template
    frees a carried storage of the same size."""

    events: tuple
    carried_in: tuple[tuple[int, int], ...] = ()
    carried_out: tuple[tuple[int, int], ...] = ()


def _split(trace: Trace) -> list[list[AllocationEvent]]:
    bounds = list(trace.iteration_bounds) + [len(trace.events)]
    return [trace.events[: bounds[0]]] + [trace.events[bounds[i] : bounds[i + 1]] for i in range(len(bounds) - 1)]


def _persistent(events: list[AllocationEvent], freed_later: set[int], carry: bool = False) -> _Template:
    """Setup and the first iteration: kept as traced; what a later segment frees is freed at the end,
    or with ``carry`` left alive for the next training template to free."""
    live = {}
    for event in events:
        if event.op == "alloc":
            live[event.storage_id] = event
        else:
            live.pop(event.storage_id, None)
    later = [(sid, e) for sid, e in live.items() if sid in freed_later]
    if carry:
        return _Template(tuple(events), carried_out=tuple((sid, e.nbytes) for sid, e in later))
    return _Template(tuple(events) + tuple(ReplayEvent("free", sid, e.nbytes, e.phase) for sid, e in later))


def _self_contained(events: list[AllocationEvent], rename: dict[str, str] | None = None, carry: bool = False) -> _Template:
    """What the segment allocates and frees; its frees of older storages are dropped, and what it
    leaves alive is freed at its end (or, with ``carry``, both are kept as carried)."""
    out, live, carried_in = [], {}, []
    for event in events:
        phase = (rename or {}).get(event.phase, event.phase)
        if event.op == "alloc":
            live[event.storage_id] = (phase, event.nbytes)
            out.append(ReplayEvent("alloc", event.storage_id, event.nbytes, phase, event.upper_nbytes))
        elif event.storage_id in live:
            del live[event.storage_id]
            out.append(ReplayEvent("free", event.storage_id, event.nbytes, phase))
        elif carry:
            carried_in.append((len(out), event.nbytes))
    if carry:
        return _Template(tuple(out), tuple(carried_in), tuple((sid, n) for sid, (_, n) in live.items()))
    out += [ReplayEvent("free", sid, 0, phase) for sid, (phase, _) in live.items()]
    return _Template(tuple(out))


_VAL_RENAME = {"loss": "val_loss", "preprocess": "val_preprocess", "forward": "val_forward"}


def simulate_epochs(
    trace: Trace, first_iteration: int, plan: EpochPlan, *, alloc_conf: str | None = None,
    card_bytes: int | None = None, capacity_bytes: int | None = None, clears: CacheClears | None = LATEST_ULTRALYTICS,
    carry: bool = False, upper: tuple[int, int] | None = None, upper_workspaces: bool = False,
    large_segments_descending: bool = True,
) -> EpochSimulation:  # fmt: skip
    """Replay the planned epochs for each seed. ``trace`` holds, after ``first_iteration`` training
    iterations (the first one being the optimizer's first step), one iteration per level and one
    validation batch per val shape, in ``plan`` order (from ``plan.first_level_iteration`` when set).
    ``clears``: where the trainer empties the cache around validation (the loop's ``cache_clears()``;
    None: unknown, assumed never). ``carry``: the loop's variables outlive their iteration
    (``TrainingLoop.carries_loop_variables``). ``upper`` = (iteration, n_max) of the iteration traced at
    the upper figure's density: it is replayed in place of the top level. ``upper_workspaces``: kernel
    workspaces at their upper sizes. The upper figure takes both together and the density alone.
    ``large_segments_descending`` as for ``yolomem.allocator.caching.CachingAllocator``."""
    segments = _split(trace)
    setup, first = segments[0], segments[1]
    start_level = plan.first_level_iteration if plan.first_level_iteration is not None else first_iteration
    extra = segments[1 + start_level :]
    val_templates = 1 if plan.whole_val_pass else len(plan.val_shapes)
    if len(extra) != len(plan.levels) + val_templates:
        raise ValueError(f"trace has {len(extra)} extra segments, plan needs {len(plan.levels) + val_templates}")
    # training segments only: val.py's model.half() frees the fp32 EMA, which model.float() remakes
    # at the end of validation; the EMA stays alive for training (see EpochSimulation.assumptions)
    training = segments[2 : 1 + start_level + len(plan.levels)]
    later_frees = {e.storage_id for seg in training for e in seg if e.op == "free"}
    start = _persistent(setup + first, later_frees, carry)
    train = [_self_contained(seg, carry=carry) for seg in extra[: len(plan.levels)]]
    if upper is not None and upper[1] >= plan.levels[-1]:
        train[-1] = _self_contained(segments[1 + upper[0]], carry=carry)
    val = [_self_contained(seg, _VAL_RENAME) for seg in extra[len(plan.levels) :]]
    id_stride = max((e.storage_id for e in trace.events), default=0) + 1
    val_order = [0] if plan.whole_val_pass else _compress(plan.val_sequence)
    memo: dict = {}  # the seeds replay the same templates, mostly from allocator states met before
    runs = [
        _replay_seed(start, train, val, sequence, val_order, id_stride, alloc_conf,
                     clears or CacheClears(), card_bytes, capacity_bytes, upper_workspaces, memo,
                     large_segments_descending)  # fmt: skip
        for sequence in plan.sequences
    ]
    peaks = [r["peak_reserved"] for r in runs]
    median_run = runs[int(np.argsort(peaks)[len(peaks) // 2])]
    assumptions = [
        (f"an epoch is replayed as {SIM_ITERATIONS} of its {plan.batches_per_epoch} training batches, in order, with the densest one"
         if plan.batches_per_epoch > SIM_ITERATIONS else f"an epoch is replayed as all {plan.batches_per_epoch} of its "
         f"training batch{'es' if plan.batches_per_epoch > 1 else ''}, in order"),
        "every simulated iteration steps the optimizer; gradients held across accumulate > 1 iterations are not modelled",
        "consecutive validation batches of one shape are replayed at most twice",
    ]
    if carry:
        assumptions.append("the loop's variables (images, predictions, losses) stay alive until the next "
                           "iteration replaces them, and through validation")
    if clears is None:
        assumptions.append("where the trainer empties the cache could not be read from its code: assumed never (the higher figure)")
    else:
        assumptions.append(f"{clears.describe()} (read from the trainer's code)")
        conditional = [t for t in (clears.before_val, clears.after_epoch) if t]
        if conditional and card_bytes is None:
            assumptions.append(f"card unknown (no gpu=): the cache is assumed kept by the clears that need more than "
                               f"{min(conditional):.0%} of it reserved")  # fmt: skip
    if any(e.phase == "val_model_half" for e in trace.events):
        assumptions.append("validation's model.half()/model.float() of the EMA: the fp32 EMA is kept in place, so "
                           "validation holds it next to its fp16 copy (real: freed to the cache, then reallocated)")
    return EpochSimulation(
        epoch1_reserved=Distribution.of([r["epoch1"] for r in runs]),
        steady_reserved=Distribution.of([r["steady"] for r in runs]),
        peak_reserved=Distribution.of(peaks),
        peak_allocated=Distribution.of([r["peak_allocated"] for r in runs]),
        peak_phase=median_run["peak_phase"],
        plan=plan,
        emptied_cache=any(r["emptied"] for r in runs),
        oom=next((r["oom"] for r in runs if r["oom"]), None),
        assumptions=tuple(assumptions),
    )


def _compress(sequence: Sequence[int]) -> list[int]:
    out: list[int] = []
    for item in sequence:
        if len(out) >= MAX_REPEATS and all(x == item for x in out[-MAX_REPEATS:]):
            continue
        out.append(item)
    return out


def _replay_seed(start, train, val, sequence, val_order, id_stride, alloc_conf, clears, card_bytes, capacity_bytes,
                 upper: bool = False, memo: dict | None = None, large_segments_descending: bool = True) -> dict:  # fmt: skip
    """One seed's epochs; ``clears`` says when the cache is emptied (``card_bytes`` None: the card is
    unknown); ``upper``: kernel workspaces at their upper-figure sizes; ``memo``: ``replay``'s, shared by
    the seeds of one simulation."""
    state = {"epoch1": 0, "steady": 0, "emptied": False, "copy": 0}
    carried: list[tuple[int, int]] = []  # (bytes, key) the last training template left alive, oldest first

    def note_steady(allocator) -> None:
        state["steady"] = max(state["steady"], allocator.reserved_bytes)

    def note_epoch1(allocator) -> None:
        state["epoch1"] = allocator.reserved_bytes

    def clear_memory(threshold: float | None) -> Mark:  # BaseTrainer._clear_memory(threshold)
        def clear(allocator) -> None:
            if clears.empties(threshold, allocator.reserved_bytes, card_bytes):
                allocator.empty_cache()
                state["emptied"] = True

        return Mark(clear)

    def free_carried(nbytes: int) -> list[ReplayEvent]:
        match = next((i for i, (size, _) in enumerate(carried) if size == nbytes), None)
        return [] if match is None else [ReplayEvent("free", carried.pop(match)[1], nbytes)]

    def play(template: _Template, fresh: bool):
        """The template's events (a fresh copy gets its own storage ids), with the frees of carried storages."""
        offset = 0
        if fresh:
            state["copy"] += 1
            offset = state["copy"] * id_stride
        if not (template.carried_in or template.carried_out):
            yield Copy(template.events, offset, self_contained=fresh)
            return
        # carried storages land at other addresses each time, so allocator states seldom repeat (the
        # yolov5 loop, yolov5s 640/16: 50 of 555 iterations did): these templates are replayed, not memoized
        frees_at: dict[int, list[int]] = {}
        for position, nbytes in template.carried_in:
            frees_at.setdefault(position, []).append(nbytes)
        start = 0
        for position in sorted(frees_at):
            yield Copy(template.events[start:position], offset)
            yield [free for size in frees_at[position] for free in free_carried(size)]
            start = position
        yield Copy(template.events[start:], offset)
        if template.carried_out:  # what this template leaves alive replaces what is still carried
            yield [free for size, _key in list(carried) for free in free_carried(size)]
            carried.extend((nbytes, sid + offset) for sid, nbytes in template.carried_out)

    def stream():
        yield from play(start, fresh=False)
        for epoch, levels in enumerate(sequence):
            batches = levels[1:] if epoch == 0 else levels  # the traced first iteration is epoch 1's first batch
            for level in batches:
                yield from play(train[level], fresh=True)
                if epoch > 0:
                    yield Mark(note_steady)
            if epoch == 0:
                yield Mark(note_epoch1)
            if epoch == len(sequence) - 1:
                break
            yield clear_memory(clears.before_val)
            for index in val_order:
                yield from play(val[index], fresh=True)
            yield clear_memory(clears.after_epoch)

    allocator = CachingAllocator(parse_alloc_conf(alloc_conf), capacity_bytes=capacity_bytes,
                                 large_segments_descending=large_segments_descending)  # fmt: skip
    run = replay(stream(), allocator, upper=upper, memo=memo)
    peak_event = run.peak_reserved_event
    return {
        "epoch1": state["epoch1"], "steady": state["steady"] or state["epoch1"],
        "peak_reserved": run.stats.peak_reserved_bytes, "peak_allocated": run.stats.peak_allocated_bytes,
        "peak_phase": peak_event.phase if peak_event is not None else "", "oom": run.oom, "emptied": state["emptied"],
    }  # fmt: skip


# -- tracing --------------------------------------------------------------------------------------
class EpochTracing:
    """The ``after_iterations`` hook of ``runner.trace_run``: plans with the built model's stride,
    then traces one training iteration per level and one validation batch per val shape, with the
    validation of the run's loop (Ultralytics' ``BaseValidator`` or the yolov5 repo's ``val.py``)."""

    def __init__(self, loop, *, seeds: Sequence[int], instances: float, train_counts=None, val_sizes=None,
                 val_counts=None, kpt_shape=(17, 3), channels: int = 3, max_instances: int | None = None,
                 augmentations: Sequence[Augmentation] | None = None, images: int | None = None,
                 sigma: float | None = None, val_batch: int | None = None):  # fmt: skip
        self.loop = loop  # the TrainingLoop being traced (yolomem.loops)
        # the validation batch where the dataset sets it (``DatasetBatches``); None: the loop's, at the batch
        self.val_batch = val_batch
        self.seeds, self.instances = tuple(seeds), instances
        self.max_instances, self.augmentations = max_instances, augmentations
        self.images, self.sigma = images, sigma  # without labels: the epoch's length and spread
        self.train_counts, self.val_sizes, self.val_counts = train_counts, val_sizes, val_counts
        self.kpt_shape, self.channels = tuple(kpt_shape), channels
        self.plan: EpochPlan | None = None
        self.stride: int | None = None  # the model's, once traced

    def plan_for(self, task: str, batch: int, imgsz: int, stride: int, first_level_iteration: int) -> EpochPlan:
        """The plan at a (per-rank) batch, as traced; ``yolomem.result.runs`` asks it for derived runs too.
        Classification validates ``imgsz`` squares (its images without objects come from ``epoch_request``)."""
        val_batch = self.val_batch if self.val_batch is not None else self.loop.val_batch_size(task, batch)
        plan = plan_epochs(
            batch=batch, val_batch=val_batch, imgsz=imgsz,
            stride=stride, seeds=self.seeds, train_counts=self.train_counts, instances=self.instances,
            val_sizes=self.val_sizes, val_counts=self.val_counts, max_instances=self.max_instances,
            augmentations=self.augmentations, images=self.images, sigma=self.sigma, square_val=task == "classify",
        )  # fmt: skip
        return replace(plan, first_level_iteration=first_level_iteration, whole_val_pass=self.loop.traces_whole_val_pass)

    def __call__(self, run) -> None:
        from yolomem.loops.batches import SyntheticBatch

        settings = run.settings
        task = getattr(settings, "task", "detect")  # the yolov5 loop's settings trace detection designs only
        nc = int(getattr(run.model, "nc", 80))
        iteration = run.tracer.iteration + 1  # after the configured iterations (and the upper-density one)
        self.stride = run.stride
        self.plan = plan = self.plan_for(task, settings.batch, settings.imgsz, run.stride, iteration)
        seed = self.seeds[0] if self.seeds else 0
        for counts in plan.level_counts:
            batch = SyntheticBatch(task, settings.batch, settings.imgsz, counts, seed + iteration, nc,
                                   self.kpt_shape, self.channels)  # fmt: skip
            run._last_opt_step = -1  # every template steps the optimizer (see the module docstring)
            run.train_iteration(iteration, batch)
            iteration += 1
        if self.loop.traces_whole_val_pass:  # one template: the pass over the batches, in order
            run.tracer.start_iteration(iteration)
            shapes = tuple(plan.val_shapes[i] for i in _compress(plan.val_sequence))
            self.loop.trace_val_pass(run, shapes, seed + iteration, nc, self.kpt_shape, self.channels)
            return
        for shape in plan.val_shapes:
            run.tracer.start_iteration(iteration)
            self.loop.trace_val_pass(run, (shape,), seed + iteration, nc, self.kpt_shape, self.channels)
            iteration += 1

# -- the estimator's entry points -------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetBatches:
    """The batches a dataset of known size lets the trainer make. Ultralytics' ``build_dataloader`` (and
    the yolov5 repo's ``create_dataloader``) cut ``min(batch, len(dataset))`` images per batch, in every
    release yolomem traces: a batch larger than the train split trains at the split's size. The
    validation loader is asked for the loop's validation batch at the batch as asked (2x for detection)
    and cut the same way from the val split. Under DDP each rank draws ``ceil(len / world_size)`` images
    an epoch (torch's ``DistributedSampler``), and no batch is larger than that; validation runs on rank 0."""

    asked: int  # the per-rank batch as asked (batch // world_size)
    train: int  # images per training batch, per rank
    val: int | None  # images per validation batch (None: no val split read)
    train_images: int
    val_images: int | None
    asked_val: int  # the loop's validation batch at the asked batch
    world_size: int
    # the smallest total batch past which no batch changes (a larger one trains the same run): its training
    # batch holds a rank's whole share of the train split, and its validation batch the whole val split
    limit: int

    @staticmethod
    def of(loop, task: str, asked: int, world_size: int, train_images: int, val_images: int | None) -> DatasetBatches:
        share = math.ceil(train_images / world_size)
        asked_val = loop.val_batch_size(task, asked)
        val = min(asked_val, val_images) if val_images else None
        per_rank = share
        if val_images:  # validation batches grow by val_batch_size(task, 1) images per image of batch
            per_rank = max(share, math.ceil(val_images / loop.val_batch_size(task, 1)))
        return DatasetBatches(asked, min(asked, share), val, train_images, val_images or None, asked_val, world_size,
                              per_rank * world_size)  # fmt: skip

    def note(self, data: str, batch: int) -> str | None:
        """What the clamp changed (``batch``: the total batch asked), in one note; None where it changed nothing."""
        parts = []
        if self.train < self.asked and self.world_size == 1:
            parts.append(f"batch={batch} is more than the {self.train_images} train images of data={data}: the "
                         f"dataloader makes batches of min(batch, len(dataset)) = {self.train} (Ultralytics' "
                         f"build_dataloader), so the run trains, and is estimated, at batch {self.train}")  # fmt: skip
        elif self.train < self.asked:
            share = math.ceil(self.train_images / self.world_size)
            parts.append(f"batch={batch} is {self.asked} per GPU, more than each GPU's share of the {self.train_images} "
                         f"train images of data={data} ({share}, torch's DistributedSampler): each GPU trains batches "
                         f"of {self.train}, estimated at batch {self.train * self.world_size}")  # fmt: skip
        if self.val is not None and self.val < self.asked_val and parts:
            parts.append(f"validation batches hold its {self.val} val images, not {self.asked_val}")
        elif self.val is not None and self.val < self.asked_val:
            parts.append(f"data={data}: validation batches hold its {self.val} val images, not the {self.asked_val} of "
                         f"batch={batch} (the dataloader's min(batch, len(dataset)))")  # fmt: skip
        return "; ".join(parts) or None


@dataclass(frozen=True)
class EpochRequest:
    """What ``estimate_config`` needs to trace and simulate epochs for a config."""

    config: object  # the EstimateConfig to trace with (instances = the dataset's mean when data= is given)
    hook: EpochTracing
    dataset: object | None  # yolomem.config.dataset.DatasetSummary
    notes: tuple[str, ...]
    batches: DatasetBatches | None = None  # the batches the data's size allows (None: no dataset read)

    def simulate(self, trace: Trace, alloc_conf, card_bytes, capacity_bytes,
                 upper: tuple[int, int] | None = None, upper_workspaces: bool = False,
                 large_segments_descending: bool = True) -> EpochSimulation:  # fmt: skip
        """The epochs' figures; ``upper`` = (iteration, n_max) of the upper-density iteration,
        ``upper_workspaces`` the workspaces' upper sizes, and ``large_segments_descending`` False for
        the other segment address order, for the upper figure."""
        return simulate_epochs(trace, self.config.iterations, self.hook.plan, alloc_conf=alloc_conf,
                               card_bytes=card_bytes, capacity_bytes=capacity_bytes,
                               clears=self.hook.loop.cache_clears(),
                               carry=self.hook.loop.carries_loop_variables, upper=upper,
                               upper_workspaces=upper_workspaces, large_segments_descending=large_segments_descending)  # fmt: skip


def epoch_request(config, resolved, read_before=None) -> EpochRequest | None:
    """None unless epochs are asked for: ``data=`` given or ``epochs >= 2``, for the Ultralytics loop
    (every task; not RT-DETR, YOLO-World or YOLOE) or the yolov5 repo's (detection designs; not with world_size > 1).
    ``read_before``: the labels of ``data=`` as an earlier request read them (the same data at another batch)."""
    from yolomem.loops import get_loop

    wanted = bool(config.data) or (config.epochs or 0) >= 2
    loop = get_loop(resolved.framework)
    if not wanted or config.step != "train" or not loop.epochs_supported(resolved, config.world_size):
        return None
    notes, dataset = [], None
    train_counts = val_sizes = val_counts = None
    split_sizes = None  # (train images, val images) of the dataset read
    if resolved.task == "classify":  # no objects: every batch alike (one level, nothing drawn)
        images = config.images or DEFAULT_TRAIN_IMAGES
        if config.data:  # a folder: its images counted, no labels to read
            from yolomem.config.dataset import read_classify_folder

            folder = read_classify_folder(config.data)
            images = folder.train_images
            split_sizes = (folder.train_images, folder.val_images)
            notes.append(f"data={config.data}: {folder.train_images} train and {folder.val_images} val images in "
                         f"{folder.classes} classes (a classification folder)")  # fmt: skip
        train_counts = (0,) * images
    elif config.data:
        from yolomem.config.dataset import read_dataset

        if read_before is not None:
            dataset = read_before
        else:
            dataset = loop.kept_images(read_dataset(config.data, seed=config.seed), resolved)
        notes.extend(_dropped_notes(config.data, dataset))
        split_sizes = (dataset.train.images, dataset.val.images if dataset.val is not None else None)
        train_counts = dataset.train.counts
        if dataset.val is not None and dataset.val.sizes:
            val_sizes = dataset.val.sizes
            val_counts = [dataset.val.counts[i] for i in dataset.val.sized_indices]
        notes.append(f"data={config.data}: {dataset.train.images} train images, {dataset.train.mean_objects:.2f} objects/image "
                     f"(max {dataset.train.max_objects}); objects per image drawn from the labels, instances= ignored")  # fmt: skip
        given = [f"{key}=" for key in ("images", "tail", "max_instances") if getattr(config, key) is not None]
        if given:
            notes.append(f"{' and '.join(given)} ignored: the labels of data={config.data} give them")
        config = config.with_changes(instances=round(dataset.train.mean_objects, 3))
        if dataset.train.max_objects > 2000:  # xView has 7,618: legitimate, but worth a look at the labels
            notes.append(f"{dataset.train.max_objects} objects in one image of data={config.data}: the loss pads every "
                         "batch holding it to that many targets (batch x objects x anchors assigner tensors)")  # fmt: skip
    batches = None
    if split_sizes is not None:
        from yolomem.loops.base import rank_batch

        batches = DatasetBatches.of(loop, resolved.task, rank_batch(config), config.world_size, *split_sizes)
        note = batches.note(config.data, config.batch)
        if note:
            notes.append(note)
        if batches.train < batches.asked:
            config = config.with_changes(batch=batches.train * config.world_size)
    seeds = tuple(config.seed + k for k in range(DEFAULT_SEEDS))
    kpt_shape = resolved.kpt_shape
    augmentations = [Augmentation.of_config(config, e) for e in range(SIM_EPOCHS)]
    hook = EpochTracing(loop, seeds=seeds, instances=config.instances, train_counts=train_counts, val_sizes=val_sizes,
                        val_counts=val_counts, kpt_shape=kpt_shape, channels=int(resolved.cfg.get("channels", 3)),
                        max_instances=config.max_instances, augmentations=augmentations, images=config.images,
                        sigma=tail_sigma(config.tail), val_batch=batches.val if batches is not None else None)  # fmt: skip
    return EpochRequest(config, hook, dataset, tuple(notes), batches)


def _dropped_notes(data: str, dataset) -> list[str]:
    """Say which images the trainer drops for a class beyond the YAML's (``TrainingLoop.kept_images``), and
    refuse a split it drops whole, as its dataset does ("No valid images found")."""
    from yolomem.errors import UserError

    splits = [split for split in (dataset.train, dataset.val) if split is not None and split.dropped]
    if not splits:
        return list(dataset.label_notes)
    for split in splits:
        if not split.images:
            raise UserError(f"data={data}: every {split.name} image has a label of a class beyond the "
                            f"{dataset.classes} its YAML names, and Ultralytics drops such images (its dataset then "
                            f"stops: \"No valid images found\"); name every class in 'names'")  # fmt: skip
    dropped = " and ".join(f"{split.dropped} of {split.images + split.dropped} {split.name}" for split in splits)
    return [f"data={data}: {dropped} images have a label of a class beyond the {dataset.classes} its YAML names; "
            f"Ultralytics drops them as corrupt (verify_image_label: \"Label class ... exceeds dataset class count "
            f"{dataset.classes}\"), so they are not counted", *dataset.label_notes]  # fmt: skip
