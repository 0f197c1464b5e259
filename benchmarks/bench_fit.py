"""How many traces and seconds ``largest_batch`` needs, and how close the two-trace line was.

    python benchmarks/bench_fit.py                       # yolov8n imgsz=320 on a 2 GiB custom card
    python benchmarks/bench_fit.py yolov8x.yaml gpu=RTX-3090 imgsz=640

Target: the answer in at most ~6 traces (two for the line, the rest to confirm it).
"""

from __future__ import annotations

import sys
import time

from yolomem.config.settings import EstimateConfig
from yolomem.sweeps.fit import largest_batch


def main(argv: list[str]) -> None:
    words = argv or ["yolov8n.yaml", "gpu_mem=2", "imgsz=320", "iterations=1"]
    config = EstimateConfig.from_words(words)
    started = time.perf_counter()
    result = largest_batch(config, margin=0.1)
    seconds = time.perf_counter() - started
    print(f"config: {' '.join(words)}")
    print(f"max_batch={result.max_batch} predicted_by_line={result.predicted} traces={len(result.probes)} seconds={seconds:.1f}")
    print(f"seconds per trace: {sum(p.seconds for p in result.probes) / len(result.probes):.1f}")
    print(f"command: {result.train_command}")


if __name__ == "__main__":
    main(sys.argv[1:])
