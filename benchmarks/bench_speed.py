"""Issue 14's speed targets, each as a ratio to one ``yolomem estimate`` process timed in the same run.

    python benchmarks/bench_speed.py                 # all targets, yolov8x as in the issue
    python benchmarks/bench_speed.py fit explain     # some of them
    python benchmarks/bench_speed.py --model yolov8n.yaml --imgsz 320   # a quicker, smaller run
    python benchmarks/bench_speed.py whole           # fit over a whole default run (the yolov5 repo's)

Every command is a fresh process (``python -m yolomem ...``), cold unless said: ``--no-cache`` keeps
the disk cache out (runs are still derived within the command), and the cached estimate gets its own
temporary cache folder. Figures are wall seconds; load on the machine moves them all alike, which is
why the targets are ratios. For each command it also counts the traced runs it made and the runs it
derived or read back (``--verbose``): the work a figure scales with.

Targets (no test asserts them):
- fit <= 1.5 x one estimate; fit --explain <= 3 x; pick over the 5 models of a family <= 5 x;
- the 16-row table <= 3 x;
- an estimate repeated from the cache <= the bare import (torch, Ultralytics, yolomem) + 0.5 s;
- an in-process estimate of yolov8x at batch 16 (after a small warm-up estimate) <= 3 s.

No target, for scale: ``whole``, ``fit yolov5s gpu=T4``, which judges train.py's whole default run (its
100 epochs: validation and epochs 2+ replayed, since train.py keeps its CUDA cache between epochs;
``yolomem.result.fits.judged_run``): every batch probed is traced or derived with validation, and its
epochs replayed four times (the expected and the upper figures).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("estimate", "fit", "explain", "pick", "table", "cached", "inprocess", "whole")
REPEATS = 3  # the cached estimate and the bare import: best of this many runs


CPU = {}  # command -> CPU seconds of it and its worker processes (steadier than wall time on a busy machine)


def _run(args: list[str], env: dict | None = None) -> tuple[float, str]:
    """Wall seconds of a fresh python process, and its stderr (the --verbose lines)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env={**os.environ, **(env or {})},
                          capture_output=True, text=True)  # fmt: skip
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU[" ".join(args)] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode not in (0,):
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds, done.stderr


def _work(stderr: str) -> str:
    traced = stderr.count(": traced\n")
    derived = stderr.count(": derived from traced batches")
    cached = stderr.count(": traced run from the cache")
    again = stderr.count("kept in memory")  # traced, derived or estimated earlier in the command
    return f"{traced} traced, {derived} derived, {cached} from the cache, {again} reused"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help=f"any of {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--model", default="yolov8x.yaml")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--family", default="yolo11", help="pick: the family of 5 models")
    options = parser.parse_args(argv)
    unknown = set(options.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; choose from {', '.join(TARGETS)}")
    wanted = options.targets or list(TARGETS)
    model, imgsz, batch = options.model, f"imgsz={options.imgsz}", f"batch={options.batch}"
    cli = ["-m", "yolomem"]
    rows = []

    args = [*cli, "estimate", model, batch, imgsz, "--json", "--no-cache", "-v"]
    one, err = _run(args)
    one_cpu = CPU[" ".join(args)]
    print(f"one estimate process ({model} {batch} {imgsz}): {one:.1f} s, {one_cpu:.1f} s CPU ({_work(err)})", flush=True)
    print(f"{'':<32}{'wall':>10}{'ratio':>8}   {'CPU':>7}{'ratio':>8}", flush=True)

    def ratio(name: str, args: list[str], target: float | None, env: dict | None = None) -> None:
        seconds, err = _run(args, env)
        cpu = CPU[" ".join(args)]
        rows.append((name, seconds, seconds / one, target, _work(err)))
        aim = f"target <= {target:g} x" if target is not None else "no target"
        print(f"{name:<32}{seconds:>8.1f} s{seconds / one:>8.2f}   {cpu:>5.1f} s{cpu / one_cpu:>8.2f}   {aim}"
              f"   ({_work(err)})", flush=True)  # fmt: skip

    if "fit" in wanted:
        ratio("fit", [*cli, "fit", model, "gpu=RTX-3090", imgsz, "--json", "--no-cache", "-v"], 1.5)
    if "explain" in wanted:
        ratio("fit --explain", [*cli, "fit", model, "gpu=RTX-3090", imgsz, batch, "--explain", "--json",
                                "--no-cache", "-v"], 3)  # fmt: skip
    if "pick" in wanted:
        models = ",".join(f"{options.family}{s}.yaml" for s in "nsmlx")
        ratio(f"pick ({options.family} n..x)", [*cli, "pick", "gpu=RTX-3060-12GB", batch, imgsz, f"models={models}",
                                                "--json", "--no-cache", "-v"], 5)  # fmt: skip
    if "whole" in wanted:
        ratio("fit yolov5s gpu=T4 (100 epochs)", [*cli, "fit", "yolov5s", "gpu=T4", "--json", "--no-cache", "-v"], None)
    if "table" in wanted:
        ratio("table (16 rows)", [*cli, "table", "--json", "--no-cache"], 3)
    if "cached" in wanted:
        # a difference of two short runs: each the best of REPEATS, as timeit takes it (one run swung by 0.5 s
        # with the page cache and the machine's load)
        with tempfile.TemporaryDirectory() as folder:
            env = {"YOLOMEM_CACHE_DIR": folder}
            _run([*cli, "estimate", model, batch, imgsz, "--json"], env)  # fills the cache
            cached, err = min(_run([*cli, "estimate", model, batch, imgsz, "--json", "-v"], env) for _ in range(REPEATS))
        bare = min(_run(["-c", "import torch, ultralytics, yolomem.result.estimate, yolomem.cli.main"])[0]
                   for _ in range(REPEATS))  # fmt: skip
        print(f"{'cached estimate':<32}{cached:>8.1f} s   bare import {bare:.1f} s + {cached - bare:.2f} s"
              f"   target <= + 0.5 s   (best of {REPEATS}; {_work(err)})", flush=True)  # fmt: skip
    if "inprocess" in wanted:
        code = (
            "import time; from yolomem.result import runs; runs.configure(cache=False, derive=False);"
            "from yolomem.result.estimate import estimate;"
            "estimate('yolov8n.yaml', imgsz=64, batch=2, iterations=1);"
            f"t = time.perf_counter(); estimate('{model}', {batch}, {imgsz}); print(time.perf_counter() - t)"
        )
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
        seconds = float(done.stdout.strip().splitlines()[-1])
        print(f"{'in-process estimate':<32}{seconds:>8.1f} s   target <= 3 s   (process {time.perf_counter() - started:.1f} s)",
              flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
