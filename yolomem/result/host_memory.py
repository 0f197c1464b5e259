"""Host memory beside the GPU: the image cache (``cache=ram`` / ``cache=disk``) and dataloader workers.

Cache sizes follow ``ultralytics/data/base.py``:
- ``cache=ram`` stores each image as ``load_image`` returns it: resized so the long side is ``imgsz``
  (``r = imgsz / max(h0, w0)``, up or down), uint8, 3 channels. ``check_cache_ram`` extrapolates
  from 30 images and asks for ``(1 + safety_margin)`` times that, ``safety_margin = 1.0``: twice the
  images. Both the train and the val dataset are built with the same ``cache`` setting.
- ``cache=disk`` writes each image as an ``.npy`` at its original size; ``check_cache_disk`` asks
  for ``1 + 0.1`` times that.
Image sizes come from file headers (``yolomem.config.dataset``); a train split larger than the header
sample is extrapolated from the sample, as Ultralytics does from its 30.

Workers (rough, stated as such): each worker process keeps the mosaic buffer
(``max_buffer_length = min(images, batch * 8, 1000)`` resized images, unless ``cache=ram``) and
``PREFETCH_FACTOR`` collated batches of ``imgsz``-square uint8 images, plus its own interpreter
(``WORKER_BASE_BYTES``, an assumption: a forked worker's private memory after importing torch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from yolomem.config.dataset import DatasetSummary, SplitSummary

CHANNELS = 3
RAM_SAFETY_MARGIN = 1.0  # BaseDataset.check_cache_ram(safety_margin=1.0)
DISK_SAFETY_MARGIN = 0.1  # BaseDataset.check_cache_disk(safety_margin=0.1)
MOSAIC_BUFFER_MAX = 1000  # BaseDataset: min((ni, batch_size * 8, 1000))
PREFETCH_FACTOR = 2  # torch DataLoader default, which Ultralytics' InfiniteDataLoader keeps
WORKER_BASE_BYTES = 200 << 20  # assumption, see module docstring


@dataclass(frozen=True)
class HostMemory:
    cache: str | None  # "ram" | "disk" | None: what the user asked for
    cache_ram_bytes: int  # the images as cache=ram holds them (train + val)
    cache_ram_required_bytes: int  # what check_cache_ram asks to be available (with its margin)
    cache_disk_bytes: int  # .npy files of cache=disk (train + val)
    cache_disk_required_bytes: int  # what check_cache_disk asks to be free
    workers: int
    workers_bytes: int  # rough, see the module docstring

    def to_json(self) -> dict:
        return {
            "cache": self.cache,
            "cache_ram_bytes": self.cache_ram_bytes,
            "cache_ram_required_bytes": self.cache_ram_required_bytes,
            "cache_disk_bytes": self.cache_disk_bytes,
            "cache_disk_required_bytes": self.cache_disk_required_bytes,
            "workers": self.workers,
            "workers_bytes": self.workers_bytes,
        }


def cached_image_bytes(height: int, width: int, imgsz: int) -> int:
    """Bytes of one image as ``load_image(rect_mode=True)`` returns it (long side resized to imgsz)."""
    r = imgsz / max(height, width)
    h, w = (min(math.ceil(height * r), imgsz), min(math.ceil(width * r), imgsz)) if r != 1 else (height, width)
    return h * w * CHANNELS


def _split_bytes(split: SplitSummary, per_image) -> int:
    """Extrapolate from the images whose headers were read to the whole split."""
    if not split.sizes:
        return 0
    sampled = sum(per_image(h, w) for h, w in split.sizes)
    return round(sampled * split.images / len(split.sizes))


def host_memory(dataset: DatasetSummary, imgsz: int, batch: int, workers: int, cache: str | None) -> HostMemory:
    splits = [s for s in (dataset.train, dataset.val) if s is not None]
    ram = sum(_split_bytes(s, lambda h, w: cached_image_bytes(h, w, imgsz)) for s in splits)
    disk = sum(_split_bytes(s, lambda h, w: h * w * CHANNELS) for s in splits)
    train = dataset.train
    mean_resized = _split_bytes(train, lambda h, w: cached_image_bytes(h, w, imgsz)) / max(train.images, 1)
    buffer_images = 0 if cache == "ram" else min(train.images, batch * 8, MOSAIC_BUFFER_MAX)
    per_worker = WORKER_BASE_BYTES + buffer_images * mean_resized + PREFETCH_FACTOR * batch * imgsz * imgsz * CHANNELS
    return HostMemory(
        cache=cache,
        cache_ram_bytes=ram,
        cache_ram_required_bytes=round(ram * (1 + RAM_SAFETY_MARGIN)),
        cache_disk_bytes=disk,
        cache_disk_required_bytes=round(disk * (1 + DISK_SAFETY_MARGIN)),
        workers=workers,
        workers_bytes=round(workers * per_worker),
    )
