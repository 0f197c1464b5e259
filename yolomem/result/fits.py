"""The one definition of "fits": the bytes a run needs against what a card gives it.

A card gives a training run its memory minus the CUDA context, minus a safety margin: a share of what
is left held back for what the trace does not see (other processes on the card, allocations no kernel
rule covers) and for the spread between runs. The margin is a setting, ``margin=`` (default
``DEFAULT_MARGIN``), and every verdict prints it. The context a verdict assumes is the upper figure's
(``CUDA_CONTEXT_UPPER_BYTES``, the most measured), as the requirement it is compared with is
the upper figure; ``usable_bytes`` stays the typical run's (``Gpu.usable_bytes``), for where a typical
run would stop on the card.

A run fits when its requirement is at most that capacity. The requirement is what the caller passes:
the upper figure's peak reserved memory (``Estimate.peak_reserved_upper_bytes``: the full requirement,
replayed without a capacity, with each stated uncertainty at its high end), so a run 9 in 10 stay under
must fit, not only the typical one.

Every verdict goes through here: ``estimate``, ``fit``, ``pick``, the strategy ladder, the table, the
plots and the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from yolomem.config.gpus import CUDA_CONTEXT_UPPER_BYTES, Gpu
from yolomem.config.keys import DEFAULT_MARGIN, MARGIN

if TYPE_CHECKING:
    from yolomem.config.settings import EstimateConfig

__all__ = ["DEFAULT_MARGIN", "Budget", "fits", "verdict"]


@dataclass(frozen=True)
class Budget:
    """What a card gives a training run, and how that number is made."""

    gpu: Gpu
    margin: float = DEFAULT_MARGIN  # share of the usable memory held back

    def __post_init__(self) -> None:
        MARGIN.check(self.margin)

    @property
    def usable_bytes(self) -> int:
        """What a typical run's allocator can get: the card minus the typical context."""
        return self.gpu.usable_bytes

    @property
    def host_bytes(self) -> int:
        """On a Jetson the GPU shares the module's DRAM, so the training process's own host memory comes
        out of it too: Python with torch, Ultralytics and the CUDA runtime, and the kernel libraries the
        first step loads (``yolomem.deployment.host``: the high end of each, from the logs it cites).
        Dataloader workers and an image cache come on top (``Estimate.host`` with ``data=``). 0 on a card
        with memory of its own."""
        if not self.gpu.shared_memory:
            return 0
        from yolomem.deployment.host import PROCESS, TORCH_LIBRARIES

        return PROCESS[1] + TORCH_LIBRARIES[1]

    @property
    def after_context_bytes(self) -> int:
        """The card minus the context the verdicts assume, and on a Jetson minus the process's host memory
        (``host_bytes``); none left on a card they alone fill."""
        return max(self.gpu.total_bytes - self.context_bytes - self.host_bytes, 0)

    def held_back(self) -> str:
        """What the capacity leaves out, in words: 'the CUDA context' (and the process's RAM on a Jetson)."""
        if self.host_bytes:
            return f"the CUDA context and the training process's RAM ({self.host_bytes / 2**30:.2f} GiB, shared memory)"
        return "the CUDA context"

    @property
    def margin_bytes(self) -> int:
        """The share of the card (after the verdict's context) held back."""
        return int(self.after_context_bytes * self.margin)

    @property
    def context_bytes(self) -> int:
        """The CUDA context the verdicts assume: the upper figure's."""
        return CUDA_CONTEXT_UPPER_BYTES

    @property
    def capacity_bytes(self) -> int:
        """What a run may reserve and still fit: the card minus the context minus the margin (none on a
        card the context alone fills)."""
        return self.after_context_bytes - self.margin_bytes

    def to_json(self) -> dict:
        return {"gpu": self.gpu.name, "gpu_total_bytes": self.gpu.total_bytes, "context_bytes": self.context_bytes,
                "host_bytes": self.host_bytes, "margin": self.margin, "capacity_bytes": self.capacity_bytes}  # fmt: skip


def fits(required_bytes: int, budget: Budget) -> bool:
    """True when a run that needs ``required_bytes`` (reserved) fits the budget's card."""
    return required_bytes <= budget.capacity_bytes


def verdict(required_bytes: int, budget: Budget) -> str:
    """"yes": fits with the margin; "near": fits the card only by eating into the margin; "no": does not."""
    if fits(required_bytes, budget):
        return "yes"
    return "near" if fits(required_bytes, Budget(budget.gpu, 0.0)) else "no"


def judged_run(config: EstimateConfig, budget: Budget) -> EstimateConfig:
    """The run a verdict on ``budget``'s card judges: ``config``, or where it gives neither ``epochs=`` nor
    ``data=`` (an estimate of epoch 1's training iterations) and its trainer keeps the CUDA cache from one
    epoch into the next on this card, the run that trainer trains when not told its length, with its
    validation passes and epoch 2+ simulated (``yolomem.result.epochs``), and a note saying so.

    Why: a trainer that empties its cache after each epoch (Ultralytics 8.0.59 to 8.3.86 always, from
    8.3.109 above half the card, ``TrainingLoop.cache_clears``) starts epoch 2 where epoch 1 started, and
    the margin covers its validation pass. One that keeps it (the yolov5 repo's train.py never empties it;
    Ultralytics up to 8.0.58 neither; 8.3.87 to 8.3.108 only above 90 % of the card, more than a run at a
    verdict's edge reserves) starts epoch 2 on top of what validation reserved: the measured yolov5s run
    of shared/reference/measured_public_examples.csv printed 3.91 G in epoch 0 and 4.76 G in epoch 1
    (+22 %), more than any margin holds. The clear is judged at the budget's capacity, the most a run
    that fits reserves."""
    kept = cache_kept_between_epochs(config, budget)
    if kept is None:
        return config
    note = (f"epochs not given: judged over the run the trainer trains by default, {kept.epochs} epochs ({kept.source}), "
            f"with validation and epoch 2+, since on {budget.gpu.name} {kept.why}; epochs=1 judges epoch 1 alone")  # fmt: skip
    return config.with_changes(epochs=kept.epochs, notes=(*config.notes, note))


@dataclass(frozen=True)
class KeptCache:
    """A run whose trainer keeps the CUDA cache from one epoch into the next (``cache_kept_between_epochs``)."""

    trainer: str  # "the yolov5 repo's train.py", "ultralytics 8.3.100"
    does: str  # what it does with the cache after an epoch, following its name
    epochs: int  # the epochs it trains when not told
    source: str  # where that number comes from

    @property
    def why(self) -> str:
        """Why epoch 1 alone is not the run's requirement, in words."""
        return f"{self.trainer} {self.does}, so epoch 2+ starts on top of what validation reserved"


def cache_kept_between_epochs(config: EstimateConfig, budget: Budget) -> KeptCache | None:
    """Where ``config`` is epoch 1 alone (neither ``epochs=`` nor ``data=``) and its trainer would not empty
    the cache after the epoch of a run that fills ``budget``'s capacity, with whole epochs simulable for it."""
    from yolomem.loops import get_loop, resolve_model

    if config.epochs or config.data or config.step != "train":
        return None
    resolved = resolve_model(config.model, config.framework)
    loop = get_loop(resolved.framework)
    clears = loop.cache_clears()
    if clears is not None and clears.empties(clears.after_epoch, budget.capacity_bytes, budget.gpu.total_bytes):
        return None
    if not loop.epochs_supported(resolved, config.world_size):
        return None
    epochs, source = loop.default_epochs(resolved)
    trainer, _ = loop.oom_retries(config)
    does = clears.after_epoch_words() if clears is not None else "empties the CUDA cache at points that could not be read"
    return KeptCache(trainer, does, epochs, source)
