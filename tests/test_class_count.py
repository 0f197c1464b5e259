"""The model is built with the dataset's classes, as the trainer builds it: ``nc=``, else ``data=``'s
class names, else those of Ultralytics' default data for the task (``TASK2DATA``), read from the
dataset YAMLs the installed Ultralytics ships. Ground truth: those YAMLs and Ultralytics' own mapping."""

from __future__ import annotations

import pytest
import yaml

from yolomem.config.settings import EstimateConfig
from yolomem.result.prepare import prepare


def _shipped_classes(name: str) -> int:
    from pathlib import Path

    import ultralytics

    return len(yaml.safe_load((Path(ultralytics.__file__).parent / "cfg" / "datasets" / name).read_text())["names"])


@pytest.mark.parametrize(("model", "task"), [("yolo11n-pose.yaml", "pose"), ("yolov8n-obb.yaml", "obb")])
def test_without_data_the_task_default_datasets_classes_build_the_model(model, task):
    from ultralytics.cfg import TASK2DATA

    prepared = prepare(EstimateConfig(model=model))
    assert prepared.config.nc == _shipped_classes(TASK2DATA[task]) != prepared.resolved.cfg["nc"]  # 1 and 15, not 80
    assert any(note.startswith(f"nc={prepared.config.nc}: the classes of {TASK2DATA[task]}") for note in prepared.notes)


def test_detection_keeps_its_80_and_nc_given_wins():
    assert prepare(EstimateConfig(model="yolov8n.yaml")).config.nc is None  # coco8's 80 = the YAML's: nothing to say
    assert prepare(EstimateConfig(model="yolo11n-pose.yaml", nc=5)).config.nc == 5
    assert prepare(EstimateConfig(model="yolo11n-cls.yaml")).config.nc is None  # ImageNet's head, as published


def _three_classes(tmp_path) -> str:
    """A dataset YAML naming 3 classes, over one image labelled with class 2."""
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.new("RGB", (64, 48)).save(tmp_path / "images" / "a.jpg")
    (tmp_path / "labels" / "a.txt").write_text("2 0.5 0.5 0.2 0.2\n")
    (tmp_path / "three.yaml").write_text(f"path: {tmp_path}\ntrain: images\nval: images\nnames: [a, b, c]\n")
    return str(tmp_path / "three.yaml")


def test_data_names_set_the_classes(tmp_path):
    local = prepare(EstimateConfig(model="yolov8n.yaml", data=_three_classes(tmp_path)))
    assert local.config.nc == 3
    shipped = prepare(EstimateConfig(model="yolov8n.yaml", data="VisDrone.yaml"))  # not on disk: Ultralytics' copy
    assert shipped.config.nc == _shipped_classes("VisDrone.yaml") == 10


def _checkpoint(path, nc: int):
    """A local checkpoint as ``YOLO(...).save`` writes it: the model (with its ``yaml``) under ``model``."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    torch.save({"model": DetectionModel("yolov8n.yaml", nc=nc, verbose=False)}, path)
    return str(path)


def test_a_checkpoint_is_built_with_the_datas_classes_too(tmp_path):
    # Ultralytics' trainer builds the checkpoint's model.yaml with the data's nc and loads the weights that
    # match (DetectionTrainer.get_model); without data= it trains on TASK2DATA (coco8, 80), not its own data
    data = _three_classes(tmp_path)
    coco = _checkpoint(tmp_path / "coco.pt", 80)
    with_data = prepare(EstimateConfig(model=coco, data=data))
    assert with_data.config.nc == 3
    says = f"nc=3: the classes of data={tmp_path / 'three.yaml'} (the trainer builds the model with them; coco.pt says 80)"
    assert says in with_data.notes
    three = _checkpoint(tmp_path / "three.pt", 3)
    assert prepare(EstimateConfig(model=three)).config.nc == _shipped_classes("coco8.yaml") == 80
    assert prepare(EstimateConfig(model=three, nc=3)).config.nc == 3


def test_a_pose_model_takes_the_datas_keypoints_as_its_trainer_builds_it(tmp_path):
    """PoseTrainer builds PoseModel(cfg, nc=..., data_kpt_shape=data["kpt_shape"]): the data's keypoints
    size the head. yolomem built the YAML's 17 x 3 whatever the data said. Ultralytics' own class is the truth."""
    from ultralytics.nn.tasks import PoseModel

    from yolomem.errors import UserError
    from yolomem.loops import get_loop

    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "images" / "a.png")  # unlabelled: the keypoints are the YAML's
    data = tmp_path / "hands.yaml"
    data.write_text(yaml.safe_dump({"path": str(tmp_path), "train": "images", "val": "images", "names": ["hand"],
                                    "kpt_shape": [21, 3]}))  # fmt: skip
    prepared = prepare(EstimateConfig(model="yolo11n-pose.yaml", data=str(data)))
    assert prepared.resolved.kpt_shape == (21, 3) and any("kpt_shape=[21, 3]" in note for note in prepared.notes)
    built = get_loop("ultralytics").count_params(prepared.resolved, prepared.config.nc)
    truth = PoseModel("yolo11n-pose.yaml", nc=1, data_kpt_shape=(21, 3), verbose=False)
    assert built == sum(p.numel() for p in truth.parameters())
    data.write_text(yaml.safe_dump({"path": str(tmp_path), "train": "images", "val": "images", "names": ["hand"]}))
    with pytest.raises(UserError, match="gives no kpt_shape"):
        prepare(EstimateConfig(model="yolo11n-pose.yaml", data=str(data)))


def test_single_cls_builds_one_class_where_the_installed_trainer_does(tmp_path, monkeypatch):
    """Ultralytics from 8.3.79 makes the data one class under single_cls (get_dataset), and its trainer
    builds the model with it; before, it relabels every object class 0 and keeps the data's classes.
    Truth: the model Ultralytics' own trainer has built when training would start."""
    from ultralytics_start import detect_dataset, trainer_at_start

    data = detect_dataset(tmp_path / "data", names=("a", "b", "c"))
    trainer = trainer_at_start("yolov8n.yaml", data, tmp_path, monkeypatch, single_cls=True, imgsz=64)
    trainer.setup_model()  # as _setup_train builds it: the YAML with the data's classes
    built = trainer.model.model[-1].nc
    prepared = prepare(EstimateConfig.from_words(["yolov8n.yaml", f"data={data}", "single_cls=True"]))
    assert (prepared.config.nc or 80) == built
    assert any(note.startswith("single_cls=True") for note in prepared.notes)
    assert prepare(EstimateConfig.from_words(["yolov8n.yaml", f"data={data}"])).config.nc == 3


def test_single_cls_builds_one_class_in_the_yolov5_repo():
    from yolov5_reference import yolov5_or_reason

    yolov5, reason = yolov5_or_reason()
    if yolov5 is None:
        pytest.skip(reason)
    from pathlib import Path

    source = (Path(yolov5.__file__).parent / "train.py").read_text()
    assert "nc = 1 if single_cls else int(data_dict['nc'])" in source
    assert prepare(EstimateConfig.from_words(["yolov5s", "single_cls=True"])).config.nc == 1
