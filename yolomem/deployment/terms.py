"""One line of a deployment's memory: a figure, the range it may take, and how it was found."""

from __future__ import annotations

from dataclasses import dataclass

BASES = ("traced", "planned", "counted", "reported", "assumed")


@dataclass(frozen=True)
class Term:
    """``bytes`` is the figure the totals use (the high end where the truth is a range: never
    optimistic); ``low``..``high`` is what the graph and the sources allow.

    ``basis``: ``traced`` (the installed code ran under the tracer), ``planned`` (a liveness plan over
    the exported graph), ``counted`` (weights times bytes per element), ``reported`` (a figure from
    a published log), ``assumed`` (a stated default)."""

    key: str  # stable JSON key
    label: str
    bytes: int
    low: int
    high: int
    basis: str
    note: str = ""

    def __post_init__(self) -> None:
        if self.basis not in BASES:
            raise ValueError(f"basis {self.basis!r} is not one of {BASES}")
        if not self.low <= self.bytes <= self.high:
            raise ValueError(f"term {self.key}: {self.bytes} is outside [{self.low}, {self.high}]")

    @staticmethod
    def exact(key: str, label: str, nbytes: int, basis: str, note: str = "") -> Term:
        return Term(key, label, nbytes, nbytes, nbytes, basis, note)

    def to_json(self) -> dict:
        return {"key": self.key, "label": self.label, "bytes": self.bytes, "low": self.low, "high": self.high,
                "basis": self.basis, "note": self.note}  # fmt: skip


def total(terms: tuple[Term, ...] | list[Term]) -> tuple[int, int, int]:
    """(bytes, low, high) summed over ``terms``."""
    return sum(t.bytes for t in terms), sum(t.low for t in terms), sum(t.high for t in terms)
