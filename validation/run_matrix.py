"""Measure the validation matrix on one GPU in a single call of at most 10 minutes.

    python validation/run_matrix.py --out "$OUT" [--limit-s 560] [--parallel 6] [--budget-gib 100]

Writes ``$OUT/measurements.jsonl`` (one ``yolomem measure`` record per config, appended as each
finishes, so a timeout keeps what was done) and ``$OUT/matrix_log.txt`` (what ran, what was skipped).

Order, most useful first, so a cut-off run still answers the main questions:
1. two configs alone on the GPU (label "serial"): clean NVML figures for the CUDA context term;
2. every model at batch 16, AMP on (the default run);
3. one config with ``expandable_segments:True``; AutoBatch ``fwd_bwd`` probes (yolov8n at 480, the
   public issue #1451 sizes, and yolov8s/yolo11s at 640);
4. batch 8 and 32 with AMP on, then batch 8/16/32 with AMP off.
Jobs after (1) run in parallel (label "parallel"): each is its own process with its own caching
allocator, so torch.cuda figures are exact; NVML device totals are shared, so the context figure of a
parallel job comes from NVML's per-process number only. A rough size table keeps the sum of running
jobs under ``--budget-gib`` so that jobs do not run each other out of memory.
"""

from __future__ import annotations

import argparse
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from yolomem.config.settings import EstimateConfig
from yolomem.errors import UserError
from yolomem.measure.run import MeasureSettings, check_cuda, cuda_device_count, measure

MODELS = ["yolov8n", "yolov8s", "yolov8m", "yolov8l", "yolov8x", "yolo11n", "yolo11s", "yolo11m",
          "yolov10n", "yolov10s", "yolov10b"]  # fmt: skip
# Rough GiB at batch 16, 640, AMP (public GPU_mem figures, rounded up); only for scheduling.
SIZE_B16_AMP = {"n": 3.0, "s": 5.0, "m": 9.0, "b": 11.0, "l": 12.0, "x": 18.0}
FP32_FACTOR = 1.7
ITERATIONS = 6
JOB_TIMEOUT_S = 240


def rough_gib(config: EstimateConfig) -> float:
    scale = config.model.removesuffix(".yaml")[-1]
    size = SIZE_B16_AMP.get(scale, 12.0) * max(config.batch / 16, 0.25) * (config.imgsz / 640) ** 2
    return size * (FP32_FACTOR if config.amp == "fp32" else 1.0) + 1.0


def jobs() -> tuple[list[MeasureSettings], list[MeasureSettings]]:
    def job(model, batch=16, amp="fp16", label="parallel", **extra):
        config = EstimateConfig(model=f"{model}.yaml", batch=batch, imgsz=extra.pop("imgsz", 640), amp=amp,
                                iterations=ITERATIONS, **extra)  # fmt: skip
        return MeasureSettings(config, iterations_given=True, timeout_s=JOB_TIMEOUT_S, label=f"matrix {label}")

    serial = [job("yolov8n", label="serial"), job("yolo11n", label="serial")]
    parallel = [job(m) for m in MODELS if m not in {"yolov8n", "yolo11n"}]
    parallel.append(job("yolov8s", alloc_conf="expandable_segments:True"))
    parallel += [job("yolov8n", batch=b, imgsz=480, step="fwd_bwd") for b in (1, 2, 4, 8, 16)]
    parallel += [job(m, step="fwd_bwd") for m in ("yolov8s", "yolo11s")]
    parallel += [job(m, batch=b) for b in (8, 32) for m in MODELS]
    parallel += [job(m, batch=b, amp="fp32") for b in (16, 8, 32) for m in MODELS]
    return serial, parallel


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--limit-s", type=float, default=560.0, help="stop starting jobs so all end by then")
    parser.add_argument("--parallel", type=int, default=6)
    parser.add_argument("--budget-gib", type=float, default=100.0)
    options = parser.parse_args()
    try:
        check_cuda(1, cuda_device_count())
    except UserError as error:
        print(f"run_matrix: error: {error}")
        return 2
    options.out.mkdir(parents=True, exist_ok=True)
    results = options.out / "measurements.jsonl"
    log_path = options.out / "matrix_log.txt"
    started = time.monotonic()
    lock = threading.Lock()

    def log(text: str) -> None:
        line = f"[{time.monotonic() - started:6.1f}s] {text}"
        with lock, open(log_path, "a") as handle:
            handle.write(line + "\n")
        print(line, flush=True)

    def run(settings: MeasureSettings) -> None:
        try:
            record = measure(settings, results)
            log(f"{record.status:5s} {_name(settings)} {record.seconds}s {record.error or ''}")
        except Exception as error:  # noqa: BLE001 - one bad config must not stop the matrix
            log(f"CRASH {_name(settings)}: {type(error).__name__}: {error}")

    def time_left() -> float:
        return options.limit_s - (time.monotonic() - started)

    serial, parallel = jobs()
    for settings in serial:
        if time_left() < 120:
            log(f"skip  {_name(settings)} (time)")
            continue
        run(settings)
    running: dict = {}
    with ThreadPoolExecutor(max_workers=options.parallel) as pool:
        queue = list(parallel)
        while queue or running:
            launched = False
            for settings in list(queue):
                if time_left() < 120:
                    break
                size = rough_gib(settings.config)
                if len(running) < options.parallel and sum(running.values()) + size <= options.budget_gib:
                    running[pool.submit(run, settings)] = size
                    queue.remove(settings)
                    launched = True
            if time_left() < 120 and queue:
                for settings in queue:
                    log(f"skip  {_name(settings)} (time)")
                queue = []
            if running and not launched:
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    running.pop(future)
            elif not running and queue and not launched:
                log(f"skip  {_name(queue.pop(0))} (larger than the budget)")
    log(f"done: {sum(1 for _ in open(results)) if results.exists() else 0} records in {results}")
    return 0


def _name(settings: MeasureSettings) -> str:
    c = settings.config
    return f"{c.model} b{c.batch} {c.imgsz} {c.amp} {c.step}" + (f" {c.alloc_conf}" if c.alloc_conf else "")


if __name__ == "__main__":
    raise SystemExit(main())
