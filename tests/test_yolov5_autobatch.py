"""The yolov5 repo's AutoBatch (``--batch-size -1``): our transcription (yolomem.loops.yolov5.autobatch)
reads and picks what the repo's own code does on the same simulated card.

Outside truth: the ``yolov5`` package (PyPI, 7.0.x, the repo packaged; ``tests/yolov5_reference.py``
says how CI installs it). Its ``check_train_batch_size`` runs for real on CPU tensors under the same
``Tracer``, with its model where train.py has it (``Model(...).to(device)``), and CUDA's memory
queries answered by a ``SimulatedCard`` fed that run's allocations. Ours runs on fake tensors. Both in
fp32 (CUDA autocast cannot run on a CPU), at a small image size so the real run is quick.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from unittest import mock

import pytest

from yolomem.cli.main import main
from yolomem.config.gpus import find_gpu
from yolomem.config.settings import EstimateConfig
from yolomem.loops import resolve_model
from yolomem.loops.yolov5.autobatch import BATCH_SIZES, pick_batch

IMGSZ, NC = 64, 80


def _config(model: str, **keys) -> EstimateConfig:
    return EstimateConfig(model=model, imgsz=IMGSZ, amp="fp32", framework="yolov5", nc=NC, **keys)


def _ours(model: str, gpu_mem: float):
    return pick_batch(_config(model), resolve_model(model, "yolov5"), find_gpu("", gpu_mem))


def _repo(yaml_name: str, gpu_mem: float) -> tuple[int, list[float | None]]:
    """The package's check_train_batch_size on the simulated card: its pick and its profiler's readings."""
    import yolov5
    from yolov5.models.yolo import Model
    from yolov5.utils import autobatch as module
    from yolov5.utils import torch_utils

    from yolomem.loops.autobatch_card import CudaIsTheTrace, HostBatch, OnDevice, SimulatedCard, TorchWith, TrainerModel
    from yolomem.loops.base import tracing
    from yolomem.loops.ultralytics.step import CloneOnDeepcopy
    from yolov5_reference import to_device

    readings: list[float | None] = []
    with tracing(_config(yaml_name), fake=False, oracle=None) as (tracer, _):
        model = Model(str(Path(yolov5.__file__).parent / "models" / yaml_name), ch=3, nc=NC)
        detect = model.model[-1]
        detect.stride = to_device(detect.stride)  # Model(...).to(device): Detect's own GPU copy of its stride
        tracer.forget()
        tracer.track_existing([*model.parameters(), *model.buffers(), detect.stride], "parameter")
        card = SimulatedCard(tracer, find_gpu("", gpu_mem))

        def profile(inputs, ops, n=10, device=None):
            results = torch_utils.profile(inputs, OnDevice(ops.model), n=n, device=device)
            readings.extend(result[2] if result else None for result in results)
            return results

        host_batches = TorchWith(empty=lambda *shape, **_: HostBatch(tracer, *shape))
        with card.answering_cuda(lambda enabled=True, **_: contextlib.nullcontext()), CloneOnDeepcopy(), \
                CudaIsTheTrace(), mock.patch.object(module, "torch", host_batches), \
                mock.patch.object(module, "profile", profile), contextlib.redirect_stdout(None):  # fmt: skip
            batch = module.check_train_batch_size(TrainerModel(model), IMGSZ, amp=False)
        tracer.detach_finalizers()
    return batch, readings


@pytest.fixture(scope="module")
def yolov5_package():
    from yolov5_reference import yolov5_or_reason

    package, reason = yolov5_or_reason()
    if package is None:
        pytest.skip(reason)
    warnings.filterwarnings("ignore")
    from yolov5.utils.general import LOGGER

    LOGGER.setLevel("ERROR")
    return package


@pytest.mark.parametrize(
    "ours, yaml_name, gpu_mem",
    [("yolov5n", "yolov5n.yaml", 2.0),  # every probe fits: the line decides
     ("yolov5n", "yolov5n.yaml", 0.70),  # 48.8 MiB after the context: batch 8 fails, and caps the pick at 4
     ("yolov5n-seg", "segment/yolov5n-seg.yaml", 2.0)],  # the head's tuple: no backward in the probe
    ids=["detect", "detect-small-card", "segment"])  # fmt: skip
def test_readings_and_pick_are_the_repos(yolov5_package, ours, yaml_name, gpu_mem):
    repo_batch, repo_readings = _repo(yaml_name, gpu_mem)
    pick = _ours(ours, gpu_mem)
    assert len(repo_readings) == len(BATCH_SIZES)
    assert [p.reading for p in pick.probes] == repo_readings
    assert pick.batch == repo_batch
    assert [p.batch for p in pick.probes] == list(BATCH_SIZES)


def test_a_small_card_fails_a_probe_as_the_repo_does(yolov5_package):
    batch, readings = _repo("yolov5n.yaml", 0.70)
    assert readings[:3] == [r for r in readings if r is not None] and readings[3:] == [None, None]
    assert batch == 4  # the line alone would pick hundreds: the failed probe caps it at the batch before


def test_the_run_is_estimated_at_the_repos_pick(capsys):
    assert main(["estimate", "yolov5n", "imgsz=320", "batch=-1", "gpu=GTX-1650", "iterations=1", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    picked = payload["autobatch"]
    assert picked["framework"] == "yolov5" and picked["release"] == "yolov5 v7.0"
    assert payload["config"]["batch"] == picked["batch"] > 16  # a 4 GiB card holds more than 16 yolov5n images at 320
    readings = [reading for _, reading in picked["probes"]]
    assert readings == sorted(readings) and readings[0] > 0  # memory grows with the batch
    assert f"Using batch-size {picked['batch']} " in picked["log"][-1]  # the repo's own line, with what it returned
    assert any("AutoBatch, as yolov5 v7.0 train.py runs it" in note for note in payload["notes"])


@pytest.mark.parametrize(
    "args, words",
    [(["yolov5n", "batch=0.7", "gpu=T4"], "only for --batch-size -1"),
     (["yolov5n", "batch=-1", "gpu=T4", "world_size=2"], "not compatible with YOLOv5 Multi-GPU DDP"),
     (["yolov5s-cls", "batch=-1", "gpu=T4"], "classify/train.py has no AutoBatch"),
     (["yolov5n", "batch=-1"], "add gpu=NAME")])  # fmt: skip
def test_what_train_py_does_not_run_autobatch_for_says_so_in_one_line(args, words, capsys):
    assert main(["estimate", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1 and "Traceback" not in err
