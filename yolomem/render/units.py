"""One rule for sizes and card names, used by every renderer.

- Sizes are GiB (2^30 bytes), the unit PyTorch's allocator and Ultralytics 8.4's GPU_mem work in.
- GB (10^9 bytes) appears only where a trainer prints it (the yolov5 repo's GPU_mem column, Ultralytics
  before 8.3.76), and is then labelled as the trainer's GB.
- Card names: the catalog keys stay what people type (``gpu=RTX-3060-12GB``); shown, a key's "-12GB"
  suffix gives way to the card's memory in GiB, e.g. "RTX-3060 (12 GiB)".
"""

from __future__ import annotations

import re

from yolomem.config.gpus import GiB

_SIZE_SUFFIX = re.compile(r"-\d+GB$")  # the catalog keys' "-12GB" / "-80GB": input names, not sizes
TRAINER_GB = "GB = 10^9 bytes, as the trainer prints it"


def gib(nbytes: int, digits: int = 2) -> str:
    """``7.30 GiB``."""
    return f"{nbytes / GiB:.{digits}f} GiB"


def gib_number(nbytes: int, digits: int = 2) -> str:
    """The number only, for a column whose header says GiB."""
    return f"{nbytes / GiB:.{digits}f}"


def signed_gib(nbytes: int, digits: int = 2) -> str:
    return f"{'+' if nbytes >= 0 else '-'}{abs(nbytes) / GiB:.{digits}f} GiB"


def _short_number(value: float) -> str:
    """12 -> "12", 79.65 -> "79.6", 22.5 -> "22.5"."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def card_name(name: str) -> str:
    """The card without the size in its key: "RTX-3060-12GB" -> "RTX-3060"."""
    return _SIZE_SUFFIX.sub("", name)


def card_label(name: str, total_bytes: int) -> str:
    """The card and its memory in GiB: "RTX-3060 (12 GiB)", "H100 (79.6 GiB)"."""
    return f"{card_name(name)} ({_short_number(total_bytes / GiB)} GiB)"


def gpu_mem_unit_label(unit: str) -> str:
    """The unit of a trainer's GPU_mem figure, spelled out where it is GB."""
    return unit if unit == "GiB" else TRAINER_GB


def gpu_mem(printed: str, unit: str) -> str:
    """A GPU_mem figure as the trainer prints it, with its unit: "2.31G (GiB)", "7.3G (GB)"."""
    return f"{printed} ({unit})"
