"""What the trainer does after an out-of-memory error in its first epoch: from 8.4.13 Ultralytics catches
it in the step (``BaseTrainer._do_train``: preprocess, forward, loss and backward inside a ``try``), halves
the batch (``max(batch // 2, 1)``), rebuilds its dataloaders and goes on, up to 3 times, on one GPU only;
in a later epoch, in validation, in the optimizer step or under DDP the error stops the run. So a run
that does not fit may not stop there, but train at a smaller batch than asked, with another
``accumulate`` (``nbs / batch``).

Each halved batch is estimated as any batch is (its own trace or a derived one), and judged on the card
as the asked one was: a typical run at it goes on, or runs out of memory where the next retry, or the
end of the retries, takes over. The retry count is the installed release's own (``TrainingLoop.oom_retries``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from yolomem.allocator.replay import OomPoint

# the phases of the trainer's try block: an out-of-memory error there is retried at a smaller batch
RETRIED_PHASES = frozenset({"preprocess", "forward", "loss", "backward"})


@dataclass(frozen=True)
class RetriedBatch:
    batch: int
    peak_reserved_bytes: int
    peak_reserved_upper_bytes: int
    fits: bool  # the upper figure within the card's capacity (yolomem.result.fits)
    oom: OomPoint | None  # where a typical run at this batch runs out of memory; None: it goes on

    def to_json(self) -> dict:
        return {"batch": self.batch, "peak_reserved_bytes": self.peak_reserved_bytes,
                "peak_reserved_upper_bytes": self.peak_reserved_upper_bytes, "fits": self.fits,
                "oom": self.oom.to_json() if self.oom else None}  # fmt: skip


@dataclass(frozen=True)
class OomRetry:
    """The batches the trainer retries at after a typical run runs out of memory in its first epoch."""

    trainer: str  # e.g. "ultralytics 8.4.190"
    retries: int  # the most it retries
    batches: tuple[RetriedBatch, ...]

    @property
    def trains_at(self) -> int | None:
        """The batch the run goes on at; None when every retry runs out too."""
        last = self.batches[-1] if self.batches else None
        return last.batch if last is not None and last.oom is None else None

    def to_json(self) -> dict:
        return {"trainer": self.trainer, "retries": self.retries, "trains_at": self.trains_at,
                "batches": [batch.to_json() for batch in self.batches]}  # fmt: skip

    def summary(self) -> str:
        """'batch 8: goes on (upper 9.80 GiB: fits)', or each batch tried and where it stops."""
        if not self.batches:
            return "batch 1 cannot be halved; the error stops the run"
        steps = []
        for tried in self.batches:
            if tried.oom is None:
                verdict = "fits" if tried.fits else "does not fit"
                steps.append(f"batch {tried.batch}: goes on (upper {tried.peak_reserved_upper_bytes / 2**30:.2f} GiB: {verdict})")
            else:
                steps.append(f"batch {tried.batch}: runs out again ({tried.oom.where})")
        text = ", then ".join(steps)
        return text if self.trains_at is not None else f"{text}; the error then stops the run"

    def note(self, asked: int, nbs: int) -> str:
        text = (f"{self.trainer} catches an out-of-memory error in the first epoch's step and halves the batch, "
                f"up to {self.retries} times on one GPU: {self.summary()}")  # fmt: skip
        if self.trains_at is None:
            return text
        text = f"{text}; so the run trains at batch {self.trains_at}, not {asked}"
        now, before = _accumulate(nbs, self.trains_at), _accumulate(nbs, asked)
        if now == before:  # both at or above nbs: every batch steps the optimizer, as before
            return text
        return f"{text}, and steps the optimizer every {now} batches instead of {before} (nbs={nbs})"


def _accumulate(nbs: int, batch: int) -> int:
    return max(round(nbs / batch), 1)  # BaseTrainer: self.accumulate


def retried(oom: OomPoint | None, in_step: bool) -> bool:
    """Whether the trainer's try block catches ``oom``: an error in a first-epoch training step."""
    return oom is not None and in_step and oom.phase in RETRIED_PHASES


def follow_retries(asked: int, retries: int, trainer: str,
                   judge: Callable[[int], tuple[RetriedBatch, bool]]) -> OomRetry:  # fmt: skip
    """Halve ``asked`` as the trainer does, up to ``retries`` times: ``judge(batch)`` gives the batch's
    outcome on the card and whether its own error is one the trainer retries (``retried``)."""
    batch, tried = asked, []
    for _ in range(retries):
        if batch == 1:  # max(1 // 2, 1): the same batch again, and the same error
            break
        batch = max(batch // 2, 1)
        outcome, again = judge(batch)
        tried.append(outcome)
        if outcome.oom is None or not again:
            break
    return OomRetry(trainer, retries, tuple(tried))
