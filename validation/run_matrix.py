"""Measure the validation matrix on one GPU in a single call of at most 10 minutes.

    python validation/run_matrix.py --out "$OUT" [--limit-s 520] [--parallel 8] [--budget-gib 100]
                                    [--history-dir DIR] [--release-path DIR]

Writes ``$OUT/measurements.jsonl`` (one ``yolomem measure`` record per config, appended as each
finishes, so a timeout keeps what was done), ``$OUT/matrix_log.txt`` (what ran, what was skipped) and
``$OUT/worker_errors.txt`` (the stderr tail of each failed worker). ``--release-path`` adds a short matrix
for a second Ultralytics release installed in that folder (``pip install --target``), put first on the
PYTHONPATH of those jobs' workers.

Order, most useful first, so a cut-off run still answers issue 12's questions:
1. two configs alone on the GPU (label "serial"): clean NVML figures for the CUDA context term;
2. allocation histories (``yolomem.measure.history``, into ``--history-dir``): the GPU's own event stream
   for the default AMP run, FP32, an AutoBatch probe, yolo11 and a segment model, to set against the
   trace (kernel workspaces, what else the trace does not see);
3. every model at batch 16, AMP on; the other tasks; FP32; AutoBatch ``fwd_bwd`` probes; dense data;
   batch 8 and 32; bf16; ``expandable_segments:True``.
Jobs after (1) run in parallel (label "parallel"): each is its own process with its own caching
allocator, so torch.cuda figures are exact; NVML device totals are shared, so the context figure of a
parallel job comes from NVML's per-process number only. A rough size table keeps the sum of running
jobs under ``--budget-gib`` so that jobs do not run each other out of memory.
Every synthetic image holds exactly ``instances`` objects (``max_instances`` equal to it), so the
estimate of the same config has no density to guess.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import replace
from pathlib import Path

from yolomem.config.settings import EstimateConfig
from yolomem.errors import UserError
from yolomem.measure.run import MeasureSettings, check_cuda, cuda_device_count, launch_subprocess, measure

# Rough GiB at batch 16, 640, AMP (public GPU_mem figures, rounded up); only for scheduling.
SIZE_B16_AMP = {"n": 3.0, "s": 5.0, "m": 9.0, "b": 11.0, "l": 12.0, "x": 18.0, "t": 3.0}
FP32_FACTOR = 1.7
ITERATIONS = 6
JOB_TIMEOUT_S = 240
INSTANCES = 8


def rough_gib(config: EstimateConfig) -> float:
    scale = config.model.removesuffix(".yaml").split("-")[0][-1]
    size = SIZE_B16_AMP.get(scale, 12.0) * max(config.batch / 16, 0.25) * (config.imgsz / 640) ** 2
    dense = max(1.0, config.instances / 50)  # the assigner's tensors grow with the objects
    return size * (FP32_FACTOR if config.amp == "fp32" else 1.0) * dense + 1.0


def _job(model, batch=16, amp="fp16", label="parallel", history=None, **extra):
    instances = extra.pop("instances", INSTANCES)
    config = EstimateConfig(model=f"{model}.yaml", batch=batch, imgsz=extra.pop("imgsz", 640), amp=amp,
                            iterations=ITERATIONS, instances=instances, max_instances=instances, **extra)  # fmt: skip
    return MeasureSettings(config, iterations_given=True, timeout_s=JOB_TIMEOUT_S, label=f"matrix {label}",
                           history=history)  # fmt: skip


def main_jobs(history_dir: Path) -> tuple[list[MeasureSettings], list[MeasureSettings]]:
    def traced(name, model, **extra):
        return _job(model, label="history", history=str(history_dir / f"{name}.json.gz"), **extra)

    serial = [_job("yolov8n", label="serial"), _job("yolov8s", amp="fp32", label="serial")]
    parallel = [
        traced("yolov8n-b16-fp16", "yolov8n"), traced("yolov8s-b16-fp32", "yolov8s", amp="fp32"),
        traced("yolov8n-b2-480-fwd_bwd", "yolov8n", batch=2, imgsz=480, step="fwd_bwd"),
        traced("yolo11s-b16-fp16", "yolo11s"), traced("yolov8n-seg-b16-fp16", "yolov8n-seg"),
    ]
    parallel += [_job(m) for m in ("yolov8s", "yolov8m", "yolo11n", "yolo11s", "yolo11m", "yolov8l", "yolov8x",
                                   "yolov10n", "yolov10s", "yolov10b", "yolo12n", "yolo12s", "yolov9s", "yolov5su")]
    parallel += [_job("yolov8s-seg"), _job("yolov8n-pose"), _job("yolov8n-obb", batch=8, imgsz=1024),
                 _job("yolov8n-cls", batch=64, imgsz=224), _job("yolo11n-seg"), _job("yolov8s-pose")]
    parallel += [_job(m, amp="fp32") for m in ("yolov8n", "yolov8m", "yolo11n", "yolo11m", "yolov8s-seg")]
    parallel += [_job("yolov8n", batch=b, imgsz=480, step="fwd_bwd") for b in (1, 4, 8, 16)]
    parallel += [_job(m, batch=b, step="fwd_bwd") for m in ("yolov8s", "yolo11s") for b in (1, 16)]
    parallel += [_job("yolov8s", instances=n) for n in (50, 200)]
    parallel += [_job(m, batch=b) for b in (8, 32) for m in ("yolov8n", "yolov8s", "yolov8m", "yolo11s")]
    parallel += [_job("yolov8s", amp="bf16"), _job("yolov8s", alloc_conf="expandable_segments:True")]
    parallel += [_job(m, batch=b, amp="fp32") for b in (8, 32) for m in ("yolov8s", "yolo11s")]
    return serial, parallel


def release_jobs(history_dir: Path) -> list[MeasureSettings]:
    """A short matrix for a second Ultralytics release (8.3.x, what most users have)."""
    jobs = [_job("yolov8s", label="release history", history=str(history_dir / "release-yolov8s-b16-fp16.json.gz"))]
    jobs += [_job(m, label="release") for m in ("yolov8n", "yolo11s", "yolov8m", "yolo11n", "yolov8n-seg")]
    jobs += [_job(m, amp="fp32", label="release") for m in ("yolov8s", "yolo11n")]
    jobs += [_job(m, batch=b, label="release") for b in (8, 32) for m in ("yolov8s", "yolo11s")]
    return jobs


def followup_jobs(history_dir: Path) -> tuple[list[MeasureSettings], list[MeasureSettings]]:
    """The second call: classification, small batches and large images, dense data, more histories."""
    def traced(name, model, **extra):
        return _job(model, label="history", history=str(history_dir / f"{name}.json.gz"), **extra)

    parallel = [
        traced("yolov8n-b16-fp32", "yolov8n", amp="fp32"), traced("yolov8s-b16-fwd_bwd", "yolov8s", step="fwd_bwd"),
        traced("yolov8s-b16-fp16-inst200", "yolov8s", instances=200),
        traced("yolov8n-cls-b64-224-fp16", "yolov8n-cls", batch=64, imgsz=224, nc=10),
        traced("yolov8n-pose-b16-fp16", "yolov8n-pose"), traced("yolov8n-obb-b8-1024-fp16", "yolov8n-obb", batch=8, imgsz=1024),
        traced("yolo11n-b16-fp16", "yolo11n"), traced("yolov8n-b16-480-fwd_bwd", "yolov8n", imgsz=480, step="fwd_bwd"),
    ]
    parallel += [_job(m, batch=b, imgsz=224, nc=10, amp=a) for m, b in (("yolov8n-cls", 64), ("yolo11n-cls", 64),
                 ("yolov8s-cls", 128)) for a in ("fp16", "fp32")]  # fmt: skip
    parallel += [_job(m, batch=b) for m in ("yolov8n", "yolov8s", "yolo11n") for b in (1, 2, 4)]
    parallel += [_job("yolov8n-obb", batch=8, imgsz=1024, instances=50), _job("yolov8n-obb", batch=8, imgsz=1024, amp="fp32")]
    parallel += [_job("yolov8n", batch=8, imgsz=1280), _job("yolov8s", batch=4, imgsz=1280), _job("yolov8x", batch=4, imgsz=1280),
                 _job("yolo11x", batch=8), _job("yolov8n", batch=64, imgsz=320), _job("yolo11m", batch=16, imgsz=960)]
    parallel += [_job(m, instances=n) for m in ("yolov8n", "yolo11s") for n in (100, 400)]
    parallel += [_job("yolov8n-seg", instances=50), _job("yolov8n-pose", instances=50)]
    parallel += [_job(m, alloc_conf="expandable_segments:True") for m in ("yolov8n", "yolov8m", "yolo11s")]
    parallel += [_job(m, amp="fp32") for m in ("yolov8l", "yolov10s", "yolo12n", "yolov8n-pose")]
    parallel += [_job(m, batch=b, step="fwd_bwd") for m in ("yolov8m", "yolo11n") for b in (1, 2, 4, 8)]
    parallel += [_job(m, amp="bf16") for m in ("yolov8n", "yolo11s")]
    return [], parallel


def retake_jobs(history_dir: Path) -> tuple[list[MeasureSettings], list[MeasureSettings]]:
    """The third call: pose with the YAML's classes (the first two calls' synthetic pose data had 80, where
    the YAML and the estimate have 1), and two more histories."""
    parallel = [_job("yolov8n-pose", label="history", history=str(history_dir / "yolov8n-pose-nc1-b16-fp16.json.gz")),
                _job("yolov8s", label="history", history=str(history_dir / "yolov8s-b16-fp16.json.gz"))]
    parallel += [_job(m, amp=a) for m in ("yolov8n-pose", "yolov8s-pose", "yolo11n-pose") for a in ("fp16", "fp32")]
    parallel += [_job("yolov8n-pose", instances=50), _job("yolov8n-pose", batch=32), _job("yolov8m-pose")]
    return [], parallel


def yolov5_jobs(history_dir: Path) -> tuple[list[MeasureSettings], list[MeasureSettings]]:
    """The yolov5 repo's train.py (``framework=yolov5``; the ``yolov5`` package on the PYTHONPATH): issue 12's
    gap of the yolov5 loop (8-11 % below both public T4 figures), with a history of the tutorial's config."""
    def job(model, batch=16, **extra):
        return _job(model, batch=batch, framework="yolov5", **extra)

    parallel = [job("yolov5s", label="history", history=str(history_dir / "yolov5s-repo-b16-fp16.json.gz"))]
    parallel += [job(m) for m in ("yolov5n", "yolov5m", "yolov5l")]
    parallel += [job("yolov5s", batch=b) for b in (4, 8, 32)]
    parallel += [job("yolov5s", instances=50), job("yolov5s6", imgsz=1280, batch=4)]
    return [], parallel


def schedule(history_dir: Path, with_release: bool, name: str = "main") -> tuple[list[MeasureSettings], list[MeasureSettings]]:
    """Serial jobs, then the parallel queue: the second release's history after the first 8 jobs, its other jobs after 26."""
    serial, parallel = {"main": main_jobs, "followup": followup_jobs, "retake": retake_jobs,
                        "yolov5": yolov5_jobs}[name](history_dir)
    if with_release:
        release = release_jobs(history_dir)
        parallel = parallel[:8] + release[:1] + parallel[8:26] + release[1:] + parallel[26:]
    return serial, parallel


def launcher(release_path: str | None, errors: Path, lock: threading.Lock):
    """Runs a worker; a release job puts its Ultralytics first on PYTHONPATH; a failed worker's stderr is kept."""

    def launch(command, env, timeout_s, release: bool = False):
        if release:
            env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [release_path, env.get("PYTHONPATH")]))}
        outcome = launch_subprocess(command, env, timeout_s)
        if outcome.returncode != 0 or outcome.timed_out:
            with lock, open(errors, "a") as handle:
                handle.write(f"==== {' '.join(command)} (rc {outcome.returncode}, release {release})\n")
                handle.write("\n".join((outcome.stderr or "").splitlines()[-40:]) + "\n")
        return outcome

    return launch


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--limit-s", type=float, default=520.0, help="stop starting jobs so all end by then")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--budget-gib", type=float, default=100.0)
    parser.add_argument("--history-dir", type=Path, default=None, help="where allocation histories go [--out]")
    parser.add_argument("--set", choices=("main", "followup", "retake", "yolov5"), default="main", help="which job list")
    parser.add_argument("--release-path", default=None,
                        help="a folder holding a second Ultralytics release (pip install --target): adds its jobs")
    options = parser.parse_args()
    try:
        check_cuda(1, cuda_device_count())
    except UserError as error:
        print(f"run_matrix: error: {error}")
        return 2
    options.out.mkdir(parents=True, exist_ok=True)
    results = options.out / "measurements.jsonl"
    log_path = options.out / "matrix_log.txt"
    history_dir = options.history_dir or options.out
    history_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    lock = threading.Lock()
    launch = launcher(options.release_path, options.out / "worker_errors.txt", lock)

    def log(text: str) -> None:
        line = f"[{time.monotonic() - started:6.1f}s] {text}"
        with lock, open(log_path, "a") as handle:
            handle.write(line + "\n")
        print(line, flush=True)

    def time_left() -> float:
        return options.limit_s - (time.monotonic() - started)

    def run(settings: MeasureSettings) -> None:
        release = (settings.label or "").startswith("matrix release")
        settings = replace(settings, timeout_s=max(30.0, min(settings.timeout_s, time_left())))
        try:
            record = measure(settings, results, launch=lambda c, e, t: launch(c, e, t, release))
            log(f"{record.status:5s} {_name(settings)} {record.environment.ultralytics} {record.seconds:.0f}s "
                f"{record.error or ''}")  # fmt: skip
        except Exception as error:  # noqa: BLE001 - one bad config must not stop the matrix
            log(f"CRASH {_name(settings)}: {type(error).__name__}: {error}")

    serial, parallel = schedule(history_dir, options.release_path is not None, options.set)
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
                if time_left() < 90:
                    break
                size = rough_gib(settings.config)
                if len(running) < options.parallel and sum(running.values()) + size <= options.budget_gib:
                    running[pool.submit(run, settings)] = size
                    queue.remove(settings)
                    launched = True
            if time_left() < 90 and queue:
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
    extra = (f" {c.alloc_conf}" if c.alloc_conf else "") + (f" instances={c.instances:g}" if c.instances != INSTANCES else "")
    return f"{c.model} b{c.batch} {c.imgsz} {c.amp} {c.step}{extra}"


if __name__ == "__main__":
    raise SystemExit(main())
