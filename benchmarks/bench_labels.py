"""Time reading a generated 100k-image dataset (labels + PNG headers): ``python benchmarks/bench_labels.py [N]``."""

from __future__ import annotations

import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

from yolomem.config.dataset import read_dataset


def _png_header(width: int, height: int) -> bytes:
    chunk = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))


def main(n: int = 100_000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        for split, count in (("train", n), ("val", max(n // 20, 1))):
            images, labels = root / "images" / split, root / "labels" / split
            images.mkdir(parents=True)
            labels.mkdir(parents=True)
            for i in range(count):
                (images / f"{i:06d}.png").write_bytes(_png_header(640, 480 + (i % 5) * 32))
                objects = i % 17
                (labels / f"{i:06d}.txt").write_text("".join(f"{k % 80} 0.5 0.5 0.{k % 9 + 1} 0.1\n" for k in range(objects)))
        (root / "data.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/val\n")
        generated = time.perf_counter() - started
        import ultralytics.data.utils  # noqa: F401 - loaded already in an estimate; keep its import out of the timing

        started = time.perf_counter()
        data = read_dataset(root / "data.yaml")
        elapsed = time.perf_counter() - started
        print(f"generated {n} train + {n // 20} val images in {generated:.1f} s")
        print(f"read_dataset: {elapsed:.2f} s ({data.train.images} train, mean {data.train.mean_objects:.2f} "
              f"objects/image, max {data.train.max_objects}; {len(data.train.sizes)} train + {len(data.val.sizes)} val headers)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
