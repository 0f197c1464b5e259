"""A pasted ``yolo predict|track|val|export ...`` line is sized by ``yolomem deploy`` as Ultralytics' CLI runs it.

Truth: Ultralytics' own CLI (``ultralytics.cfg.entrypoint``) on the same line, up to the call it ends with,
``getattr(model, mode)(**overrides)``: the model class is a stand-in that records the mode and the arguments
(no weights are read or downloaded).
"""

from __future__ import annotations

import pytest

from yolomem.cli.main import main
from yolomem.deployment.config import DeployConfig
from yolomem.errors import UserError

LINES = [
    "yolo predict model=yolo11n.pt source=img.jpg imgsz=320 half=True batch=4 device=0 conf=0.25",
    "yolo segment val model=yolo11n-seg.pt data=coco8-seg.yaml batch=8 half=True",
    "yolo export model=yolo11n.pt format=engine half=True batch=8 dynamic=True imgsz=320",
    "yolo export model=yolo11n.pt format=onnx batch=2",
    "yolo track model=yolo11n.pt source=video.mp4 imgsz=480",
]


def _ultralytics_reads(line: str, monkeypatch) -> tuple[str, str, dict]:
    """The model, the mode and the arguments Ultralytics' CLI calls the model with for ``line``."""
    import ultralytics
    from ultralytics.cfg import entrypoint

    called = []

    class Recorder:
        def __init__(self, model, task=None):
            self.model, self.task = model, task

        def __getattr__(self, mode):
            return lambda **overrides: called.append((self.model, mode, overrides))

    monkeypatch.setattr(ultralytics, "YOLO", Recorder)
    entrypoint(debug=line)
    return called[0]


def _precision(overrides: dict) -> str:
    """8.4's entrypoint turns half=True into quantize=16 (int8=True into 8); earlier releases keep half/int8."""
    quantize = str(overrides.get("quantize"))
    if quantize == "16" or overrides.get("half"):
        return "fp16"
    return "int8" if quantize == "8" or overrides.get("int8") else "fp32"


@pytest.mark.parametrize("line", LINES)
def test_a_pasted_yolo_line_is_the_run_ultralytics_cli_makes(line, monkeypatch):
    model, mode, overrides = _ultralytics_reads(line, monkeypatch)
    config = DeployConfig.from_words(line.split())
    assert config.model == model
    assert config.mode == ("val" if mode == "val" else "predict")
    assert config.format == (overrides["format"] if mode == "export" else "torch")
    assert config.precision == _precision(overrides)
    assert config.resolved_batch == overrides.get("batch", 16 if mode == "val" else 1)
    assert config.imgsz == overrides.get("imgsz", 640)
    assert config.device is None  # device=0 is a GPU index there: not a card here
    assert config.notes[0].startswith(f"yolo {mode}: ")


def test_what_the_line_says_beside_the_figures(capsys):
    assert main(["deploy", *LINES[0].split(), "--json"]) == 0
    out = capsys.readouterr().out
    for said in ("device=0: Ultralytics' GPU index, not a card", "source=img.jpg does not change GPU memory; ignored",
                 "half=True: precision=fp16"):  # fmt: skip
        assert said in out


def test_an_exported_model_file_is_sized_in_its_runtime():
    config = DeployConfig.from_words("yolo predict model=runs/weights/yolo11n.engine imgsz=320 half=True".split())
    assert (config.model, config.format, config.precision) == ("yolo11n.pt", "engine", "fp16")
    assert any("sized as yolo11n.pt exported to engine" in note for note in config.notes)


@pytest.mark.parametrize(("line", "fragment"), [
    ("yolo export model=yolo11n.pt", "exports TorchScript, which deploy does not size"),  # Ultralytics' default format
    ("yolo train model=yolo11n.pt data=coco8.yaml", "'yolomem estimate yolo train ...' sizes it"),
    ("yolo model=yolo11n.pt imgsz=320", "a yolo line names its mode"),
    ("yolo export model=yolo11n.pt format=openvino", "the openvino runtime is not modelled"),
])  # fmt: skip
def test_a_line_deploy_cannot_size_is_one_line(line, fragment, capsys):
    with pytest.raises(UserError, match=fragment):
        DeployConfig.from_words(line.split())
    assert main(["deploy", *line.split()]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1


def test_without_a_command_a_predict_line_is_deploys(capsys):
    assert main([*LINES[0].split(), "--json"]) == 0  # no command: the default, estimate, would size training
    assert '"mode": "predict"' in capsys.readouterr().out


def test_a_training_command_refuses_a_predict_line_in_one_line(capsys):
    assert main(["estimate", "yolo", "val", "model=yolo11n.pt"]) == 2
    err = capsys.readouterr().err
    assert "a yolo val line runs a trained model: 'yolomem deploy yolo val ...' sizes it" in err and err.count("\n") == 1


def test_an_exported_file_is_sized_from_the_checkpoint_beside_it(tmp_path, capsys):
    """``yolo export`` writes ``best.engine`` next to ``best.pt``: that checkpoint is what is sized. Without
    it (and not a published name) the line is refused in one line that names the file it needs."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    checkpoint = str(tmp_path / "best.pt")  # as Ultralytics saves one: the model and its training arguments
    torch.save({"model": DetectionModel("yolov8n.yaml", nc=1, verbose=False), "train_args": {"imgsz": 320}}, checkpoint)
    engine = str(tmp_path / "best.engine")
    config = DeployConfig.from_words(f"yolo predict model={engine} half=True".split())
    assert (config.model, config.format) == (checkpoint, "engine")
    assert main(["deploy", "yolo", "predict", f"model={tmp_path / 'elsewhere' / 'best.engine'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'elsewhere' / 'best.pt'}, which is not on disk" in err
