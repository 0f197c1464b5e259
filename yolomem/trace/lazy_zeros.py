"""Real zeros whose host memory is taken only where they are written.

NMS decides by value, so the validation pass gives it real predictions of the model output's shape
(``yolomem.loops.val_pass.synthetic_predictions``): (B, 4 + nc, anchors), 23 GB of float32 at a
validation batch of 2048 at imgsz 1280. Their stand-in values (box channels, and the scores that pass
``conf``) fill about 6 % of that; the rest stays zero. An anonymous private mapping is zero-filled by
the kernel page by page on first write, and reads of pages never written all map the kernel's one
shared zero page. So a tensor made here holds the pages written into it and no more.
"""
from __future__ import annotations

import math
import mmap

import torch

# Below this, a plain allocation: the mapping's page granularity buys nothing.
SMALL_BYTES = 1 << 20


def lazy_zeros(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A contiguous CPU tensor of zeros, writable, whose pages are taken on first write."""
    nbytes = math.prod(shape) * dtype.itemsize
    private = getattr(mmap, "MAP_PRIVATE", None)  # absent on Windows
    if nbytes < SMALL_BYTES or private is None:
        return torch.zeros(shape, dtype=dtype)
    mapping = mmap.mmap(-1, nbytes, flags=private)  # MAP_SHARED, the default, would commit pages on read
    if hasattr(mmap, "MADV_NOHUGEPAGE"):  # a write would otherwise take 2 MiB pages where THP is "always"
        mapping.madvise(mmap.MADV_NOHUGEPAGE)
    # frombuffer keeps a reference to the mapping: it is unmapped when the tensor's storage dies
    return torch.frombuffer(mapping, dtype=dtype).view(shape)
