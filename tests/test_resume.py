"""``yolo train resume model=last.pt`` is estimated as the run the installed release resumes.

Truth: Ultralytics' own ``YOLO(last.pt).train(resume=True, ...)`` up to where training would start
(``tests/ultralytics_start.py``): its ``check_resume`` has put the checkpoint's ``train_args`` in place by then,
with the line's arguments that the release allows.
"""

from __future__ import annotations

import json

import pytest
from ultralytics_start import detect_dataset, trainer_at_start

from yolomem.cli.main import main
from yolomem.config.settings import EstimateConfig
from yolomem.errors import UserError
from yolomem.loops.ultralytics.resume import takes_overrides
from yolomem.result.prepare import prepare

TRAINED = {"imgsz": 512, "batch": 24, "epochs": 50, "amp": False, "optimizer": "AdamW", "workers": 2, "nbs": 48}


def _last_checkpoint(tmp_path, data: str, finished: bool = False) -> str:
    """A checkpoint as Ultralytics' trainer saves one mid-run (the EMA model, the epoch, the optimizer's
    state and the train_args), or after ``strip_optimizer`` at the end (epoch -1, no optimizer state)."""
    import torch
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    path = tmp_path / "last.pt"
    train_args = vars(get_cfg(overrides={"model": "yolov8n.yaml", "data": data, **TRAINED}))
    model = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
    optimizer = None if finished else torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9).state_dict()
    torch.save({"epoch": -1 if finished else 7, "best_fitness": None, "model": None, "ema": model.half(),
                "updates": 70, "optimizer": optimizer, "train_args": train_args}, path)  # fmt: skip
    return str(path)


# the line's arguments: ones a resume may change from 8.0.155 (imgsz, batch) and one it never does (optimizer)
@pytest.mark.parametrize("line", [{}, {"batch": 8, "imgsz": 320, "optimizer": "SGD"}], ids=["bare", "overrides"])
def test_a_resume_trains_what_the_release_resumes(line, tmp_path, monkeypatch):
    data = detect_dataset(tmp_path / "data")
    path = _last_checkpoint(tmp_path, data)
    truth = trainer_at_start(path, data, tmp_path, monkeypatch, resume=True, **line).args
    # trainer_at_start passes device=cpu and workers=0 too (the trainer sets workers=0 on a CPU: not compared)
    words = ["resume", f"model={path}", f"data={data}", "device=cpu", "workers=0", *(f"{k}={v}" for k, v in line.items())]
    config = EstimateConfig.from_words(["yolo", "train", *words])
    assert (config.imgsz, config.batch, config.optimizer, config.epochs, config.nbs) == \
        (truth.imgsz, truth.batch, truth.optimizer, truth.epochs, truth.nbs)  # fmt: skip
    assert config.amp == ("fp16" if truth.amp else "fp32") == "fp32"
    assert config.model == path
    if line:
        assert (config.batch, config.imgsz, config.optimizer) == ((8, 320) if takes_overrides() else (24, 512)) + ("AdamW",)
        assert any(note.startswith("optimizer=SGD: a resumed run keeps its checkpoint's optimizer=AdamW")
                   for note in config.notes)  # fmt: skip


def test_the_pasted_resume_line_estimates_the_checkpoints_run(tmp_path, capsys):
    data = detect_dataset(tmp_path / "data")
    path = _last_checkpoint(tmp_path, data)
    assert main(["yolo", "train", "resume", f"model={path}", "imgsz=64", "batch=1", "--json"]) == 0  # the data: 1 image
    result = json.loads(capsys.readouterr().out)
    imgsz = 64 if takes_overrides() else 512  # releases before the overrides resume at the checkpoint's
    assert (result["config"]["imgsz"], result["config"]["batch"], result["config"]["amp"]) == (imgsz, 1, "fp32")
    assert result["config"]["optimizer"] == "AdamW" and result["config"]["epochs"] == 50
    assert result["config"]["data"] == data  # the checkpoint's dataset, read for its objects per image
    assert any(note.startswith("resume: last.pt's run as the installed release resumes it") for note in result["notes"])


def test_a_resume_without_its_checkpoint_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"resume needs the run's checkpoint on disk: 'yolo train resume model="):
        EstimateConfig.from_words(["yolo", "train", "resume", "model=yolov8n.yaml"])


def test_a_finished_runs_checkpoint_resumes_as_the_release_says(tmp_path, monkeypatch):
    """8.4.129+ starts a new training from a checkpoint without optimizer state (its own warning), which
    keeps the checkpoint's imgsz; earlier releases stop in resume_training ("nothing to resume")."""
    import inspect

    from ultralytics.engine.model import Model

    data = detect_dataset(tmp_path / "data")
    path = _last_checkpoint(tmp_path, data, finished=True)
    words = ["yolo", "train", "resume", f"model={path}", f"data={data}"]
    if "resumable training checkpoint" not in inspect.getsource(Model.train):
        with pytest.raises(UserError, match="training is finished, nothing to resume"):
            EstimateConfig.from_words(words)
        return
    truth = trainer_at_start(path, data, tmp_path, monkeypatch, resume=True).args
    config = EstimateConfig.from_words(words)
    imgsz = prepare(config).config.imgsz  # the checkpoint's, as Model.train keeps it (prepare fills it in)
    assert (imgsz, config.batch, config.optimizer) == (truth.imgsz, truth.batch, truth.optimizer) == (512, 16, "auto")
    assert any("is not a resumable training checkpoint" in note for note in config.notes)


def test_fits_line_for_a_resume_reads_back_into_its_config(tmp_path):
    from yolomem.sweeps.fit import yolo_train_command

    path = _last_checkpoint(tmp_path, detect_dataset(tmp_path / "data"))
    config = EstimateConfig.from_words(["yolo", "train", "resume", f"model={path}"]).with_changes(batch=8)
    line = yolo_train_command(config)
    assert line.startswith(f"yolo train resume model={path} batch=8 imgsz=512")
    again = EstimateConfig.from_words(line.partition("  #")[0].split())
    batch = 8 if takes_overrides() else 24  # the checkpoint's, where the release takes no overrides (its line says so)
    assert (again.resume, again.batch, again.imgsz, again.optimizer, again.epochs) == (path, batch, 512, "AdamW", 50)


def test_python_api_takes_resume_as_a_bool(tmp_path):
    path = _last_checkpoint(tmp_path, detect_dataset(tmp_path / "data"))
    resumed = EstimateConfig.from_mapping({"model": path, "resume": True})
    assert (resumed.resume, resumed.batch, resumed.optimizer) == (path, 24, "AdamW")
    fresh = EstimateConfig.from_mapping({"model": path, "resume": False})
    assert (fresh.resume, fresh.batch, fresh.optimizer) == (None, 16, "auto")


def test_a_resumed_config_reads_back_from_json_without_its_checkpoint(tmp_path):
    from pathlib import Path

    path = _last_checkpoint(tmp_path, detect_dataset(tmp_path / "data"))
    config = EstimateConfig.from_words(["yolo", "train", "resume", f"model={path}"])
    Path(path).unlink()  # a results file read back after the run's folder is gone
    again = EstimateConfig.from_json(config.to_json())
    assert again == config and again.resume == path
