"""The one definition of "fits": the bytes a run needs against what a card gives it.

A card gives the caching allocator its memory minus the CUDA context (``Gpu.usable_bytes``), minus a
safety margin: a share of that usable memory held back for what the trace does not see (cuDNN/cuBLAS
workspaces, other processes on the card) and for the spread between runs. The margin is a setting,
``margin=`` (default ``DEFAULT_MARGIN``), and every verdict prints it.

A run fits when its requirement is at most that capacity. The requirement is what the caller passes:
today the full peak reserved memory (``torch.cuda.max_memory_reserved()``, replayed without a capacity,
so the card never shrinks it); an upper figure can take its place without touching this module.

Every verdict goes through here: ``estimate``, ``fit``, ``pick``, the strategy ladder, the table, the
plots and the report.
"""

from __future__ import annotations

from dataclasses import dataclass

from yolomem.config.gpus import Gpu
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
        return self.gpu.usable_bytes

    @property
    def margin_bytes(self) -> int:
        return int(self.gpu.usable_bytes * self.margin)

    @property
    def capacity_bytes(self) -> int:
        """What a run may reserve and still fit: usable memory minus the margin."""
        return self.gpu.usable_bytes - self.margin_bytes

    def to_json(self) -> dict:
        return {"gpu": self.gpu.name, "gpu_total_bytes": self.gpu.total_bytes, "context_bytes": self.gpu.context_bytes,
                "margin": self.margin, "capacity_bytes": self.capacity_bytes}  # fmt: skip


def fits(required_bytes: int, budget: Budget) -> bool:
    """True when a run that needs ``required_bytes`` (reserved) fits the budget's card."""
    return required_bytes <= budget.capacity_bytes


def verdict(required_bytes: int, budget: Budget) -> str:
    """"yes": fits with the margin; "near": fits the card only by eating into the margin; "no": does not."""
    if fits(required_bytes, budget):
        return "yes"
    return "near" if fits(required_bytes, Budget(budget.gpu, 0.0)) else "no"
