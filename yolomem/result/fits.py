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

from yolomem.config.gpus import CUDA_CONTEXT_UPPER_BYTES, Gpu
from yolomem.config.keys import DEFAULT_MARGIN, MARGIN

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
