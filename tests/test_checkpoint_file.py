"""A checkpoint is read without the code that wrote it, and nothing in it runs (``yolomem.config.checkpoint_file``).

Truth: checkpoints written by the yolov5 repo's own classes (the ``yolov5`` package, 7.0.14) as its train.py,
segment/train.py and classify/train.py save them, under the package's module names and under the repo's
(``models.yolo``, as a clone of the repo pickles them); their parameter counts are the repo's own. An
Ultralytics checkpoint of a model class the installed release does not have stands for a newer release's.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from copy import deepcopy
from pathlib import Path

import pytest
import torch

from yolov5_reference import yolov5_or_reason

from yolomem.config.checkpoint_file import read_checkpoint, written_by
from yolomem.errors import UserError
from yolomem.result.estimate import estimate

ROOT = Path(__file__).resolve().parents[1]


def _package():
    package, reason = yolov5_or_reason()
    if package is None:
        pytest.skip(reason)
    return package


@contextlib.contextmanager
def _repo_module_names():
    """The package's model classes pickled as a clone of the repo names them (``models.yolo.DetectionModel``)."""
    import yolov5.models
    import yolov5.models.common
    import yolov5.models.yolo

    aliases = {"models": yolov5.models, "models.yolo": yolov5.models.yolo, "models.common": yolov5.models.common}
    renamed = [(cls, cls.__module__) for module in aliases.values() for cls in vars(module).values()
               if isinstance(cls, type) and cls.__module__.startswith("yolov5.models.")]  # fmt: skip
    saved = {name: sys.modules.get(name) for name in aliases}
    sys.modules.update(aliases)
    for cls, module in renamed:
        cls.__module__ = module.removeprefix("yolov5.")
    try:
        yield
    finally:
        for cls, module in renamed:
            cls.__module__ = module
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _repo_checkpoints(folder: Path) -> dict[str, tuple[Path, int]]:
    """Checkpoints as the repo's three train scripts save them, and each model's parameter count."""
    package = _package()
    from yolov5.models.yolo import ClassificationModel, DetectionModel, SegmentationModel
    from yolov5.utils.torch_utils import ModelEMA

    models = Path(package.__file__).parent / "models"
    opt = {"imgsz": 512, "batch_size": 8, "data": Path("data/custom.yaml")}  # vars(opt) holds Paths too
    detection = DetectionModel(str(models / "yolov5s.yaml"), ch=3, nc=3)
    segmentation = SegmentationModel(str(models / "segment" / "yolov5n-seg.yaml"), ch=3, nc=2)
    classifier = ClassificationModel(model=DetectionModel(str(models / "yolov5s.yaml"), nc=80), nc=7, cutoff=10)
    written = {}
    for name, model, ema in (("det", detection, True), ("seg", segmentation, True), ("cls", classifier, False)):
        for form in ("package", "repo"):
            path = folder / f"{name}-{form}.pt"
            with _repo_module_names() if form == "repo" else contextlib.nullcontext():
                torch.save({"epoch": 0, "best_fitness": 0.0, "model": deepcopy(model).half(),
                            "ema": deepcopy(ModelEMA(model).ema).half() if ema else None, "updates": 0,
                            "optimizer": None, "opt": opt, "date": "2026-12-07"}, path)  # fmt: skip
            written[f"{name}-{form}"] = path, sum(p.numel() for p in model.parameters())
    return written


def test_repo_checkpoints_read_without_the_repo(tmp_path):
    written = _repo_checkpoints(tmp_path)
    assert read_checkpoint(written["det-repo"][0]).model_class == "models.yolo.DetectionModel"
    # a process without the package, told not to import it: the reader never imports the repo's modules
    code = ("import sys; from yolomem.config.checkpoint_file import read_checkpoint as r;"
            f"c = r({str(written['det-repo'][0])!r}); print(c.written_by, c.yaml['nc'], c.contents['opt']['imgsz'],"
            "any(m.split('.')[0] in ('models', 'yolov5') for m in sys.modules))")  # fmt: skip
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the package only where .ci/run puts it
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True, text=True,
                          check=True)  # fmt: skip
    assert done.stdout.split() == ["yolov5", "3", "512", "False"]


@pytest.mark.parametrize(("name", "same_as", "nc"), [("det", "yolov5s", 3), ("seg", "yolov5n-seg", 2), ("cls", "yolov5s-cls", 7)])
@pytest.mark.parametrize("form", ["package", "repo"])
def test_a_repo_checkpoint_is_estimated_as_the_model_it_holds(tmp_path, name, same_as, nc, form):
    path, repo_params = _repo_checkpoints(tmp_path)[f"{name}-{form}"]
    assert written_by(path) == "yolov5"
    result = estimate(str(path), imgsz=64, batch=2)  # no framework=: the checkpoint selects the repo's loop
    assert result.config.framework == "yolov5"
    assert result.params == repo_params  # the repo's own count for the model it saved
    assert any(f"{path.name}: a yolov5 repo checkpoint" in note and f"nc={nc}" in note for note in result.notes)
    named = estimate(same_as, framework="yolov5", nc=nc, imgsz=64, batch=2)
    assert (result.task, result.peak_reserved_bytes) == (named.task, named.peak_reserved_bytes)


def test_a_pasted_train_py_line_reads_its_weights_checkpoint(tmp_path, capsys):
    from yolomem.cli.main import main

    path, repo_params = _repo_checkpoints(tmp_path)["det-repo"]
    assert main(["python", "train.py", "--img", "64", "--batch", "2", "--weights", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    assert f'"params": {repo_params}' in out and '"framework": "yolov5"' in out


def _ultralytics_checkpoint_of_a_class_not_installed(path: Path, cfg: dict) -> None:
    """A checkpoint whose model class the installed Ultralytics lacks, as a newer release's would be."""
    import ultralytics.nn.tasks as tasks

    newer = type("NewerDetectionModel", (torch.nn.Module,), {"__module__": "ultralytics.nn.tasks"})
    model = newer()
    model.yaml = cfg
    tasks.NewerDetectionModel = newer  # pickle looks the class up by name to save it
    try:
        torch.save({"model": model, "train_args": {"imgsz": 320}}, path)
    finally:
        del tasks.NewerDetectionModel
    with pytest.raises(AttributeError):  # what torch.load itself does with it
        torch.load(path, weights_only=False)


def test_an_ultralytics_checkpoint_of_another_release_reads(tmp_path):
    from ultralytics.nn.tasks import yaml_model_load

    path = tmp_path / "newer.pt"
    _ultralytics_checkpoint_of_a_class_not_installed(path, yaml_model_load("yolov8n.yaml"))
    result = estimate(str(path), batch=2)
    assert result.config.imgsz == 320  # its train_args, read from the inert copy
    assert result.params == estimate("yolov8n.yaml", imgsz=64, batch=2).params


def test_a_module_the_installed_release_lacks_is_named(tmp_path):
    from ultralytics.nn.tasks import yaml_model_load

    cfg = yaml_model_load("yolov8n.yaml")
    cfg["backbone"][2] = [-1, 1, "C9k9", [64, True]]
    path = tmp_path / "future.pt"
    _ultralytics_checkpoint_of_a_class_not_installed(path, cfg)
    with pytest.raises(UserError, match=r"layer 2 uses module 'C9k9', which Ultralytics \S+ does not have"):
        estimate(str(path), batch=2)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)  # what torch.load(weights_only=False) would run


def test_nothing_in_a_checkpoint_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "payload.pt"
    torch.save({"model": _Payload(marker), "train_args": {}}, path)
    checkpoint = read_checkpoint(path)
    assert not marker.exists()
    assert checkpoint.written_by is None
    with pytest.raises(UserError, match="holds no Ultralytics model with a 'yaml' config"):
        estimate(str(path))
    torch.load(path, weights_only=False)  # the check can fail: the same file, loaded by torch, runs it
    assert marker.exists()


def test_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("not a checkpoint")
    with pytest.raises(UserError, match=r"^cannot read checkpoint '.*notes.pt': UnpicklingError"):
        read_checkpoint(path)
    assert written_by(path) is None


def test_classify_train_py_refuses_a_detection_checkpoint_in_one_line(tmp_path, capsys):
    from yolomem.cli.main import main

    path, _ = _repo_checkpoints(tmp_path)["det-package"]
    assert main(["python", "classify/train.py", "--model", str(path), "--img", "64"]) == 2
    err = capsys.readouterr().err
    assert "a detection checkpoint, which the script cuts into a classifier at layer 10" in err and err.count("\n") == 1
