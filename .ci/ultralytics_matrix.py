#!/usr/bin/env python3
"""CI: yolomem against a matrix of Ultralytics releases, each installed on its own, in parallel processes.

Per release (``pip install --no-deps --target <tmp>/<release>``, first on ``PYTHONPATH``, its own
``YOLO_CONFIG_DIR``):
- the trace-equality tests (fake trace == real CPU run) and the release-probe tests; where the
  validator changed (``VAL_PASS_RELEASES``), the validation pass against the release's own validator;
- a smoke estimate per task (detect, segment, pose, obb, classify) at a small imgsz, one whole-epochs
  estimate (does the simulated cache clear follow the release?), and the 640/16 AMP figure of
  yolo11s (yolov8s before 8.3, which has no yolo11);
- where a line of releases starts or ends (``WHOLE_SMOKE_RELEASES``): RT-DETR, the newest generation's
  segmentation epochs, and ``deploy``: predict per task, segmentation's validation and exported pipelines
  (``_deploy_smoke``);
- AutoBatch (``batch=-1``): the release's own pick on a simulated GTX 1650, and the estimate at it.
Prints one line per release and exits 1 if any release failed.

The matrix: the oldest release yolomem traces whose import needs no IPython (8.0.37), the first that
imports with YOLO_CONFIG_DIR set (8.0.59, which also empties the cache between epochs), the last before
the present package layout (8.0.135: all three read through loops/ultralytics/legacy_layout.py), the last of
8.0, first and last of 8.1, 8.2, 8.3, the newest 8.4, 8.3.74 (the issue's release), and each
release where the trainer, validator, optimizer choice, assigner or GPU_mem unit changed memory
behaviour (see loops/ultralytics/release.py and the README's "Ultralytics releases"). CI runs all but the
four of ``BY_HAND_ONLY``, each close to a neighbour CI runs (why each: where they are listed).

    python .ci/ultralytics_matrix.py              # CI's matrix, os.cpu_count() processes
    python .ci/ultralytics_matrix.py --all        # every release of RELEASES
    python .ci/ultralytics_matrix.py -j 2 8.3.74  # one release
    python .ci/ultralytics_matrix.py --beside PID # one at a time while PID runs, then os.cpu_count()
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RELEASES = (
    "8.0.37",  # the oldest traced is 8.0.35 (8.0.7-8.0.34 are not on PyPI), whose checks import IPython, a
    # dependency it declares; 8.0.37 no longer does: trainers named in strings (MODEL_MAP), one model YAML per
    # scale, check_file without hard, no amp option and no check_amp (AMP on every GPU), no TASK2DATA, no
    # empty_cache between epochs, the roll-out assigner, classifiers without a stride
    "8.0.59",  # the old package layout (ultralytics.yolo.*), TASK_MAP a module dict; the loss in the
    # trainer (criterion), build_optimizer static with no optimizer=auto, classifiers asked for 640 at 224, the
    # assigner's F.one_hot (traced as CUDA computes it), empty_cache after each epoch, no pose models yet
    "8.0.70",  # pose models arrive
    "8.0.112",  # last static build_optimizer (SGD by default); the loss in the model from 8.0.111
    "8.0.113",  # optimizer=auto: NAdam up to 6000 iterations
    "8.0.114",  # optimizer=auto: AdamW up to 10k iterations
    "8.0.135",  # last of the old layout
    "8.0.239",  # last 8.0
    "8.1.0", "8.1.47",  # first and last 8.1
    "8.2.0",  # first 8.2
    "8.2.94",  # _clear_memory() after each epoch (was an inline empty_cache)
    "8.2.96",  # validation halves the EMA only with AMP
    "8.2.103",  # last 8.2
    "8.3.0",  # first 8.3, yolo11
    "8.3.74",  # the release
    "8.3.76",  # GPU_mem in GiB
    "8.3.87",  # cache emptied after an epoch only above 90 % of the card
    "8.3.109",  # ... above 50 %
    "8.3.152",  # ... and before validation too
    "8.3.190",  # non_max_suppression moves to ultralytics.utils.nms
    "8.3.253",  # last 8.3
    "8.4.0",  # optimizer=auto -> MuSGD, multi_scale a fraction, dict head outputs
    "8.4.8",  # optimizer=auto -> AdamW again for short runs
    "8.4.62",  # validation keeps the EMA fp32 under autocast
    "8.4.104",  # validation's loss items by name: the last one outlives the loss
    "8.4.134",  # sparse assigner (dense-image memory)
    "8.4.154",  # fused Adam/AdamW on CUDA; still epoch == epochs - close_mosaic (8.4.157 closes once at >=)
    "8.4.190",  # newest tested
)  # fmt: skip
# Releases CI leaves to a run by hand (``--all``), each diffed against its neighbours' sources (2026-12-08): 8.3.76
# changes only the GPU_mem unit and a timer from 8.3.74 (GB at 8.3.74, GiB at 8.3.87, both in CI); 8.0.239 only the
# device of the validator's timers from 8.1.0; 8.0.70 adds pose, which 8.0.112 on trains, to 8.0.59; 8.0.135 ends the
# old layout that 8.0.59-8.0.114 run, some lines of its loss, ops and model code changed since 8.0.114. (8.3.190
# stays: its trainer, validator, loss and assigner differ from both 8.3.152's and 8.3.253's.) CI's time: four fewer
# releases of the 29, about 6 CPU-minutes.
BY_HAND_ONLY = {"8.0.70", "8.0.135", "8.0.239", "8.3.76"}
CI_RELEASES = tuple(release for release in RELEASES if release not in BY_HAND_ONLY)
# Import-time dependencies of older releases that a --no-deps install leaves out (a user's environment has them).
# py-cpuinfo: select_device's CPU name, up to 8.2.0; setuptools<81: 8.0's checks import pkg_resources;
# seaborn: imported when utils.plotting loads, in releases up to 8.0.50
OLD_RELEASE_DEPS = ("tqdm", "pandas", "hub-sdk", "py-cpuinfo", "setuptools<81", "seaborn")
# Releases whose import fails with YOLO_CONFIG_DIR set (they join it, a str, to a file name); releases up to
# 8.0.55 do not read it. Their settings are isolated by HOME instead (only theirs: the later releases read
# YOLO_CONFIG_DIR, and a HOME of its own moves every other tool's cache too).
NO_CONFIG_DIR = {"8.0.56", "8.0.57", "8.0.58"}  # not in RELEASES: for a run by hand (python .ci/ultralytics_matrix.py 8.0.57)
OWN_HOME_BEFORE = (8, 0, 59)
TESTS = ("tests/test_trace_matches_real.py", "tests/test_release_probes.py", "tests/test_tracer_indexing.py",
         "tests/test_label_layouts.py")
# The validation pass against the release's own validator (about 20 s): where BaseValidator changed
VAL_PASS_TEST = "tests/test_val_pass_matches_real.py"
VAL_PASS_RELEASES = {"8.0.37", "8.0.59", "8.0.70", "8.0.114", "8.0.239", "8.1.0", "8.2.96", "8.3.253", "8.4.0", "8.4.62", "8.4.104", "8.4.190"}
# The whole smoke (RT-DETR, the newest generation's segmentation epochs, deploy's pipelines) where a line of
# releases starts or ends, and at the release; the releases between, each a boundary of one behaviour,
# get the estimate per task, the epochs, checkpointing, AutoBatch and the 640/16 figure (CI's time: 29
# releases of the whole smoke were about a third of it)
WHOLE_SMOKE_RELEASES = {"8.0.37", "8.0.114", "8.0.135", "8.0.239", "8.1.0", "8.1.47", "8.2.0", "8.2.103", "8.3.0", "8.3.74",
                        "8.3.253", "8.4.0", "8.4.190"}  # fmt: skip
# the trace-equality test at imgsz 64 only: 128 adds minutes per release, no new code path; the CLI's refusals of
# a stand-in release (a package of a few lines, in a subprocess) read nothing of the installed one
TEST_FILTER = "not 128 and not fails_its_own_import and not stops_an_import"
# imgsz 128 keeps every task's loss busy (objects cover anchors); batch 3 dodges 8.4.0's segment bug at batch 2
SMOKE_MODELS = ("yolov8n.yaml", "yolov8n-seg.yaml", "yolov8n-pose.yaml", "yolov8n-obb.yaml", "yolov8n-cls.yaml")


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check", *args],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip


def _env(release: str, site: Path, deps: Path, config_dir: Path) -> dict[str, str]:
    # its own trace cache too: every release's figures are traced here, not read back from another run
    env = dict(os.environ, YOLO_OFFLINE="1", YOLO_CONFIG_DIR=str(config_dir), OMP_NUM_THREADS="1",
               YOLOMEM_CACHE_DIR=str(config_dir.parent / "trace-cache"))
    if tuple(int(part) for part in release.split(".")) < OWN_HOME_BEFORE:
        env["HOME"] = str(config_dir)  # its settings go to ~/.config/Ultralytics
    if release in NO_CONFIG_DIR:
        del env["YOLO_CONFIG_DIR"]
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(deps), str(REPO)])
    return env


def run_release(release: str, workdir: Path, deps: Path, suite_release: str | None = None) -> dict:
    """``suite_release``: the release the test suite beside the matrix runs its tests on (CI's), whose
    tests are not run twice."""
    started = time.perf_counter()
    site, config_dir = workdir / release / "site", workdir / release / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    result: dict = {"release": release}
    try:
        _pip("--target", str(site), f"ultralytics=={release}")
    except subprocess.CalledProcessError as error:
        return result | {"ok": False, "error": f"pip: {error.stderr.decode()[-300:]}"}
    env = _env(release, site, deps, config_dir)
    tests_here = (*TESTS, VAL_PASS_TEST) if release in VAL_PASS_RELEASES else TESTS
    command = [sys.executable, __file__, "--smoke"]
    if release == suite_release:
        result["tests"] = "tests: in the test suite beside, on this release"
    else:
        command += ["--tests", *tests_here]
    # one process: the smoke, then the tests (imports and the fake machinery's warm-up once, not twice)
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    try:
        found = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        found = {"smoke": {"error": (done.stderr or done.stdout)[-400:]}}
    result["smoke"] = found["smoke"]
    result.setdefault("tests", found.get("tests"))
    result["ok"] = done.returncode == 0 and "error" not in result["smoke"]
    result["seconds"] = round(time.perf_counter() - started)
    return result


def _shipped(models: tuple[str, ...]) -> list[str]:
    """The models the installed release ships (OBB from 8.1.0)."""
    from yolomem.loops import get_loop

    names = get_loop("ultralytics").model_names()
    return [model for model in models if model in names]


class _TestCounts:
    """pytest's closing figures ("42 passed, 3 skipped, 3 deselected in 31.9 s"), for the matrix's line."""

    def __init__(self) -> None:
        self.line = None
        self._started = time.perf_counter()

    def pytest_terminal_summary(self, terminalreporter) -> None:
        stats = terminalreporter.stats
        counts = ", ".join(f"{len(stats[kind])} {kind}" for kind in ("failed", "error", "passed", "skipped", "deselected")
                           if stats.get(kind))  # fmt: skip
        self.line = f"{counts} in {time.perf_counter() - self._started:.1f} s"


def smoke_then_tests(tests: list[str]) -> int:
    """In a release's environment: the smoke, then ``tests`` under pytest in this process. Prints one JSON
    line, ``{"smoke": ..., "tests": pytest's figures}``; 1 if either failed."""
    out = smoke()
    summary, tests_status = None, 0
    if tests:
        import pytest

        counts = _TestCounts()
        tests_status = pytest.main(["-q", "-p", "no:cacheprovider", "-k", TEST_FILTER, *tests], plugins=[counts])
        summary = counts.line
    print(json.dumps({"smoke": out, "tests": summary}))
    return 1 if "error" in out or tests_status else 0


def smoke() -> dict:
    """One estimate per task, epochs, the 640/16 figures, ...: what each gave, and ``error`` where any failed."""
    from yolomem.loops.ultralytics.release import release
    from yolomem.result.estimate import estimate

    installed = release()
    out: dict = {"version": installed.version, "unit": installed.gpu_mem_unit,
                 "clears": installed.cache_clears.describe() if installed.cache_clears else None}  # fmt: skip
    failures = []
    for model in _shipped(SMOKE_MODELS):
        try:
            est = estimate(model, imgsz=128, batch=3, iterations=1)
            out[est.task] = est.gpu_mem_printed
        except Exception as error:  # noqa: BLE001 - reported per task, the matrix goes on
            failures.append(f"{model}: {type(error).__name__}: {error}")
    try:
        est = estimate("yolov8n.yaml", imgsz=128, batch=4, iterations=1, epochs=2)
        out["epochs"] = {"epoch1": est.epoch1_reserved_bytes, "steady": est.steady_reserved_bytes,
                         "emptied_cache": est.epochs.emptied_cache, "json_version": est.to_json()["ultralytics_version"]}  # fmt: skip
    except Exception as error:  # noqa: BLE001
        failures.append(f"epochs: {type(error).__name__}: {error}")
    from yolomem.loops import get_loop

    big = "yolo11s.yaml" if "yolo11s.yaml" in get_loop("ultralytics").model_names() else "yolov8s.yaml"  # 8.3.0+
    try:
        est = estimate(big, imgsz=640, batch=16, amp=True)
        out[big] = {"gpu_mem": est.gpu_mem_printed, "peak_reserved_bytes": est.peak_reserved_bytes, "optimizer": est.config.optimizer}
    except Exception as error:  # noqa: BLE001
        failures.append(f"{big}: {type(error).__name__}: {error}")
    # RT-DETR: 8.3's loss builds its items with torch.as_tensor of a list of tensors, 8.1-8.2's trainer
    # calls super() in preprocess_batch; checkpointing: unwrap_model is 8.3.x and later; the newest
    # generation's segmentation (YOLO26, 8.4.0+: semantic masks; 8.4.190: a mask-IoU assigner) with epochs;
    # classification's validation pass (the EMA halved in place up to 8.4.61, autocast after)
    newest_seg = next(m for m in ("yolo26n-seg.yaml", "yolo11n-seg.yaml", "yolov8n-seg.yaml") if m in get_loop("ultralytics").model_names())
    from yolomem.loops.ultralytics import families

    whole = installed.version in WHOLE_SMOKE_RELEASES
    rtdetr = (("rtdetr", "rtdetr-l.yaml", {"imgsz": 320, "batch": 2}),) if whole and families.reachable(families.RTDETR) else ()  # 8.0.143
    seg_epochs = ((newest_seg[:-5], newest_seg, {"imgsz": 128, "batch": 3, "epochs": 2}),) if whole else ()
    for key, model, extra in (*rtdetr, *seg_epochs,
                              ("checkpoint", "yolov8n.yaml", {"imgsz": 128, "batch": 3, "checkpoint": True}),
                              ("classify-epochs", "yolov8n-cls.yaml", {"imgsz": 64, "batch": 3, "epochs": 2})):  # fmt: skip
        try:
            out[key] = estimate(model, iterations=1, **extra).gpu_mem_printed
        except Exception as error:  # noqa: BLE001
            failures.append(f"{model} {extra}: {type(error).__name__}: {error}")
    # AutoBatch (batch=-1): the release's trainer, check_train_batch_size and profiler run on the simulated card
    try:
        est = estimate("yolov8n.yaml", imgsz=320, batch=-1, gpu="GTX-1650", iterations=1)
        out["autobatch"] = {"batch": est.config.batch, "fits": est.fits}
    except Exception as error:  # noqa: BLE001
        failures.append(f"autobatch: {type(error).__name__}: {error}")
    if whole:
        failures += _deploy_smoke(out)
    if failures:
        out["error"] = failures
    return out


def _deploy_smoke(out: dict) -> list[str]:
    """``deploy``'s predict of each task, segmentation's validation (mask IoU by value) and its ONNX and
    TensorRT pipelines: the predictors, validators and AutoBackend differ across releases."""
    from yolomem.deployment.estimate import deploy

    failures, figures = [], {}
    calls = [(model, {}) for model in _shipped(SMOKE_MODELS)] + [
        ("yolov8n.yaml", {"precision": "fp16"}),  # AutoBackend's fp16 flag: on itself, on its format backend from 8.4
        ("yolov8n-seg.yaml", {"mode": "val"}), ("yolov8n-seg.yaml", {"format": "onnx"}),
        ("yolov8n-pose.yaml", {"format": "engine", "precision": "int8"}),
    ]  # fmt: skip
    calls = [(model, extra) for model, extra in calls if model in _shipped((model,))]  # pose from 8.0.70
    for model, extra in calls:
        label = " ".join([model[:-5], *map(str, extra.values())])
        try:
            figures[label] = round(deploy(model, imgsz=128, batch=2, **extra).runtime_bytes / 2**20)
        except Exception as error:  # noqa: BLE001 - reported per call, the matrix goes on
            failures.append(f"deploy {label}: {type(error).__name__}: {error}")
    out["deploy_mib"] = figures
    return failures


def heaviest_first(releases: list[str], suite_release: str | None = None) -> list[str]:
    """Releases with more to run first (the validation pass, the whole smoke, YOLO26's trace tests from 8.4.0):
    beside the test suite they run one at a time, and what is left when it ends shares the cores. Last in
    line, 8.4.0 (about 330 s here, its MuSGD step real on the CPU) alone made the end of CI wait minutes.
    ``suite_release`` runs its smoke only (``run_release``)."""

    def work(release: str) -> int:
        if release == suite_release:
            return 0
        newest = tuple(int(part) for part in release.split(".")) >= (8, 4, 0)
        return (release in VAL_PASS_RELEASES) + (release in WHOLE_SMOKE_RELEASES) + newest

    return sorted(releases, key=work, reverse=True)  # stable: the listed order within equal work


def _line(result: dict) -> str:
    smoke = result.get("smoke", {})
    if not isinstance(smoke, dict) or "version" not in smoke:
        return f"{result['release']:>8}  FAIL  {result.get('error') or smoke}"
    tasks = " ".join(f"{t}={smoke.get(t, '-')}" for t in ("detect", "segment", "pose", "obb", "classify"))
    big = " ".join(f"{m[:-5]}={smoke[m]['gpu_mem']}" for m in ("yolov8s.yaml", "yolo11s.yaml") if m in smoke)
    epochs = smoke.get("epochs", {})
    steady = f"steady {epochs['steady'] / 2**30:.3f} GiB (epoch1 {epochs['epoch1'] / 2**30:.3f}, emptied={epochs['emptied_cache']})" if epochs else "-"
    status = "ok  " if result["ok"] else "FAIL"
    detail = "" if result["ok"] else f"  {smoke.get('error', '')}"
    return (f"{result['release']:>8}  {status}  [{result.get('tests')}]  {result.get('seconds', '?')} s\n"
            f"          {tasks}  |  640/16 AMP: {big}  |  yolov8n 128/4 epochs=2: {steady}\n"
            f"          {smoke.get('clears')}  |  AutoBatch yolov8n 320 on GTX-1650: {smoke.get('autobatch')}{detail}")  # fmt: skip


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("releases", nargs="*", help="releases to run (default: CI's, all but BY_HAND_ONLY)")
    parser.add_argument("--all", action="store_true", help="every release of RELEASES, BY_HAND_ONLY's too")
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--workdir", help="where releases are installed (default: a temporary folder)")
    parser.add_argument("--beside", type=int, help="a process ID: run one release at a time while it lives")
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tests", nargs="*", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        return smoke_then_tests(args.tests)
    args.releases = args.releases or list(RELEASES if args.all else CI_RELEASES)
    # beside the test suite (CI), the suite's own release is tested there: run its tests once
    suite_release = importlib.metadata.version("ultralytics") if args.beside else None
    with tempfile.TemporaryDirectory(prefix="ultralytics-matrix-") as tmp:
        workdir = Path(args.workdir or tmp)
        deps = workdir / "old-release-deps"
        _pip("--target", str(deps), *OLD_RELEASE_DEPS)
        results, waiting, running = [], heaviest_first(args.releases, suite_release), set()
        with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs) as pool:
            while waiting or running:
                # beside another job (CI's test run), one release at a time until it ends, then all jobs
                allowed = 1 if args.beside and _alive(args.beside) else args.jobs
                while waiting and len(running) < allowed:
                    running.add(pool.submit(run_release, waiting.pop(0), workdir, deps, suite_release))
                done, running = concurrent.futures.wait(running, timeout=5, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    results.append(future.result())
                    print(_line(results[-1]), flush=True)
    failed = [r["release"] for r in results if not r["ok"]]
    print(f"\n{len(results) - len(failed)} of {len(results)} releases passed" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
