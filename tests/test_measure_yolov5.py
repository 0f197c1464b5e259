"""``measure framework=yolov5``: the worker runs the yolov5 repo's own train.py (the ``yolov5`` package on
PyPI, as ``.ci/run`` installs it) on the synthetic dataset, on the CPU with fake counters here."""

from __future__ import annotations

import os

import pytest
from yolov5_reference import yolov5_or_reason

from yolomem.config.settings import EstimateConfig
from yolomem.errors import UserError
from yolomem.measure.run import MeasureSettings, measure
from yolomem.measure.worker import run_rank

from test_measure import FakeMemory


@pytest.fixture
def yolov5_package():
    package, reason = yolov5_or_reason()
    if package is None:
        pytest.skip(reason)
    return package


def test_worker_runs_the_repos_train_py_through_every_phase_on_cpu(tmp_path, yolov5_package):
    """The repo's train() on the CPU (tiny): its callbacks mark the phases Ultralytics' do, in order; each
    training batch is one reading; the offline patches and what train.py sets for the process are undone."""
    import torch
    import yolov5.utils.general as general

    from yolomem.measure.yolov5_train import import_train

    train_module = import_train()  # as the worker imports it (a stand-in for the Roboflow helper where roboflow is missing)
    def state():
        return (train_module.check_amp, general.check_font, torch.are_deterministic_algorithms_enabled(),
                *(os.environ.get(name) for name in ("CUDA_VISIBLE_DEVICES", "CUBLAS_WORKSPACE_CONFIG", "PYTHONHASHSEED")))

    before = state()
    config = EstimateConfig(model="yolov5n", framework="yolov5", imgsz=64, batch=2, iterations=2, instances=2)
    result = run_rank(MeasureSettings(config, iterations_given=True).worker_request(), 0, tmp_path, FakeMemory, device="cpu")
    assert result.status == "ok", result.error
    assert list(result.phases) == ["setup", "train", "epoch_end", "val", "save", "final_val", "teardown"]
    assert len(result.reserved_per_iteration) == 2 and result.batch_used == 2
    assert any(note.startswith("yolov5 7.0") and "yolov5n.yaml" in note for note in result.notes), result.notes
    assert state() == before
    assert (tmp_path / "rank0" / "runs" / "run" / "weights" / "best.pt").is_file()  # it trained and saved, as train.py does


@pytest.mark.parametrize("words, error", [
    ({"model": "yolov3"}, "'yolov3' is a darknet cfg"),
    ({"model": "yolov5s-seg"}, "'yolov5s-seg' is a segment model"),
    ({"model": "yolov5s", "amp": "fp32"}, "train.py has no precision option"),
    ({"model": "yolov5s", "step": "fwd_bwd"}, "step=train, world_size=1"),
    ({"model": "yolov5s", "nbs": 32}, "train.py fixes nbs = 64"),
    ({"model": "yolov5s", "freeze": (3,)}, "cannot freeze layer 3 alone"),
])  # fmt: skip
def test_what_the_yolov5_run_cannot_measure_is_refused_before_cuda(tmp_path, yolov5_package, words, error):
    launched = []
    with pytest.raises(UserError, match=error):
        measure(MeasureSettings(EstimateConfig(framework="yolov5", **words)), tmp_path / "r.jsonl",
                launch=lambda *a: launched.append(a), device_count=lambda: 0)  # fmt: skip
    assert launched == []


def test_freeze_is_written_as_train_py_reads_it():
    from yolomem.measure.yolov5_train import train_py_freeze

    assert train_py_freeze(()) == [0] and train_py_freeze((0, 1, 2)) == [3] and train_py_freeze((0,)) == [1]
    assert train_py_freeze((3, 5)) == [3, 5]


@pytest.mark.parametrize("gpus, says", [(1, "pip install yolov5"), (0, "measure needs a CUDA GPU")])
def test_without_the_package_the_refusal_names_the_install_or_first_the_gpu(tmp_path, monkeypatch, gpus, says):
    """Without the yolov5 package the line names its install; on a machine without CUDA the package would
    not help, so the line names the GPU."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "yolov5" else real(name, *a))
    with pytest.raises(UserError, match=says):
        measure(MeasureSettings(EstimateConfig(model="yolov5s", framework="yolov5")), tmp_path / "r.jsonl",
                launch=lambda *a: None, device_count=lambda: gpus)  # fmt: skip
