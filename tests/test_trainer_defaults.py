"""Keys the user leaves out that the trainer sets per model: Ultralytics trains a classifier at imgsz 224
(``ClassificationTrainer``) and a checkpoint at the imgsz it was trained at (``Model.train`` keeps its
``train_args``); the yolov5 repo's classify/train.py defaults to 224 and batch 64.

Truth: Ultralytics' own ``YOLO(...).train()`` on a tiny dataset, up to where training would start
(``tests/ultralytics_start.py``); the yolov5 repo's ``parse_opt``, read from its file."""

from __future__ import annotations

import ast

import pytest

from ultralytics_start import classify_folder, detect_dataset, trainer_at_start

from yolomem.config.settings import EstimateConfig
from yolomem.result.prepare import prepare


def test_a_classifier_trains_at_what_ultralytics_trainer_sets(tmp_path, monkeypatch):
    truth = trainer_at_start("yolov8n-cls.yaml", classify_folder(tmp_path / "data"), tmp_path, monkeypatch).args.imgsz
    prepared = prepare(EstimateConfig.from_words(["yolov8n-cls.yaml"]))
    assert prepared.config.imgsz == truth == 224
    assert "imgsz=224 (not given): what Ultralytics' classify trainer trains at" in prepared.notes
    assert prepare(EstimateConfig.from_words(["yolov8n.yaml"])).config.imgsz == 640  # detection: default.yaml's
    given = prepare(EstimateConfig.from_words(["yolov8n-cls.yaml", "imgsz=640"]))
    assert given.config.imgsz == 640 and not any("not given" in note for note in given.notes)


def _checkpoint_trained_at(tmp_path, imgsz: int, **train_args) -> str:
    """A local checkpoint as Ultralytics saves one: the model, and the arguments it was trained with."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    path = tmp_path / "best.pt"
    model = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
    torch.save({"model": model, "train_args": {"imgsz": imgsz, **train_args}}, path)
    return str(path)


def test_a_checkpoint_trains_at_the_imgsz_it_was_trained_at(tmp_path, monkeypatch):
    path = _checkpoint_trained_at(tmp_path, 320)
    truth = trainer_at_start(path, detect_dataset(tmp_path / "data"), tmp_path, monkeypatch).args.imgsz
    prepared = prepare(EstimateConfig.from_words([path]))
    assert prepared.config.imgsz == truth == 320
    said = "imgsz=320 (not given): as best.pt was trained (its train_args), which Ultralytics' Model.train keeps"
    assert said in prepared.notes
    assert prepare(EstimateConfig.from_words([path, "imgsz=640"])).config.imgsz == 640


def test_a_checkpoint_trained_single_cls_is_fine_tuned_single_cls(tmp_path, monkeypatch):
    """``Model.train`` keeps the checkpoint's single_cls too (``_reset_ckpt_args``); where the installed
    release makes that one class (8.3.79+), the model is built with nc=1 whatever the data names."""
    path = _checkpoint_trained_at(tmp_path, 320, single_cls=True)
    data = detect_dataset(tmp_path / "data", names=("a", "b", "c"))
    trainer = trainer_at_start(path, data, tmp_path, monkeypatch)
    # Model.train has built the checkpoint's model with the data by now (get_model, before train())
    prepared = prepare(EstimateConfig.from_words([path, f"data={data}"]))
    assert prepared.config.single_cls is trainer.args.single_cls is True
    assert (prepared.config.nc or 80) == trainer.model.model[-1].nc
    assert "imgsz=320 and single_cls=True (not given): as best.pt was trained (its train_args), which Ultralytics' " \
           "Model.train keeps" in prepared.notes
    assert prepare(EstimateConfig.from_words([path, f"data={data}", "single_cls=False"])).config.nc == 3


def test_deploy_runs_a_checkpoint_at_the_imgsz_it_was_trained_at(tmp_path):
    """Ultralytics' predict (and val, export) start from the checkpoint's arguments: truth is its own
    predictor after one call."""
    import numpy as np
    from ultralytics import YOLO

    from yolomem.deployment.estimate import deploy

    path = _checkpoint_trained_at(tmp_path, 320)
    model = YOLO(path)
    model.predict(np.zeros((64, 64, 3), np.uint8), device="cpu", verbose=False)
    assert deploy(path).config["imgsz"] == model.predictor.args.imgsz == 320
    assert deploy(path, imgsz=640).config["imgsz"] == 640
    assert deploy("yolo11n-obb.pt").config["imgsz"] == 1024  # the published weights (the docs' model table)


@pytest.mark.parametrize(("weights", "imgsz"), [("yolo11n-obb.pt", 1024), ("yolov8s-obb.pt", 1024), ("yolov5s6u.pt", 1280),
                                              ("yolov8n-cls.pt", 224), ("yolo11n-seg.pt", 640), ("yolov8n.pt", 640)])
def test_a_published_weights_name_trains_at_the_imgsz_it_was_trained_at(weights, imgsz):
    """Not on disk, the name stands for its YAML; Ultralytics would download the weights, whose train_args
    hold the imgsz of the docs' model tables ("size (pixels)": 1024 for OBB on DOTAv1, 1280 for P6)."""
    prepared = prepare(EstimateConfig.from_words([weights]))
    assert prepared.config.imgsz == imgsz
    assert any(f"published {weights}" in note for note in prepared.notes) == (imgsz != 640)
    assert prepare(EstimateConfig.from_words([weights, "imgsz=640"])).config.imgsz == 640
    if weights == "yolo11n-obb.pt":  # a YAML has no training imgsz of its own: default.yaml's
        assert prepare(EstimateConfig.from_words(["yolo11n-obb.yaml"])).config.imgsz == 640


def _yolov5_parse_opt_defaults(script) -> dict[str, object]:
    """``parser.add_argument('--name', ..., default=X)`` of a yolov5 repo script, read from its file (it
    imports roboflow and more at the top, which the test environment does not have)."""
    defaults = {}
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            for keyword in node.keywords:
                if keyword.arg == "default" and isinstance(keyword.value, ast.Constant):
                    defaults[node.args[0].value] = keyword.value.value
    return defaults


def test_a_yolov5_classifier_takes_classify_train_pys_defaults():
    from yolov5_reference import yolov5_or_reason

    yolov5, reason = yolov5_or_reason()
    if yolov5 is None:
        pytest.skip(reason)
    from pathlib import Path

    repo = _yolov5_parse_opt_defaults(Path(yolov5.__file__).parent / "classify" / "train.py")
    prepared = prepare(EstimateConfig.from_words(["yolov5s-cls"]))
    assert (prepared.config.imgsz, prepared.config.batch) == (repo["--imgsz"], repo["--batch-size"]) == (224, 64)
    assert "imgsz=224 and batch=64 (not given): classify/train.py's default" in prepared.notes
    detect = _yolov5_parse_opt_defaults(Path(yolov5.__file__).parent / "train.py")
    plain = prepare(EstimateConfig.from_words(["yolov5s"])).config
    assert (plain.imgsz, plain.batch) == (detect["--imgsz"], detect["--batch-size"])  # yolomem's own defaults
    assert prepare(EstimateConfig.from_words(["yolov5s-cls", "batch=8"])).config.batch == 8


def test_a_key_set_later_is_no_longer_left_to_the_trainer():
    config = EstimateConfig.from_words(["yolov8n-cls.yaml"])
    assert config.left_to_trainer == ("imgsz", "batch", "single_cls")
    assert config.with_changes(imgsz=640).left_to_trainer == ("batch", "single_cls")  # a sweep's imgsz=640 is 640
    assert prepare(config.with_changes(imgsz=640)).config.imgsz == 640
    assert prepare(config.with_changes(batch=32)).config.imgsz == 224  # a batch sweep keeps the trainer's imgsz
    assert EstimateConfig.from_json(config.to_json()) == config  # the JSON form keeps what was left out
    assert EstimateConfig.from_json(prepare(config).config.to_json()).imgsz == 224
    assert EstimateConfig(model="yolov8n-cls.yaml").left_to_trainer == ()  # built directly: as given


def test_pick_and_fit_judge_a_classifier_at_its_trainers_imgsz():
    from yolomem.sweeps.fit import largest_batch
    from yolomem.sweeps.pick import pick_models

    picked = pick_models(gpu_mem=24, models=("yolov8n-cls.yaml",), iterations=1)
    assert picked.imgsz == picked.rows[0].estimate.config.imgsz == 224
    assert pick_models(gpu_mem=24, imgsz=96, models=("yolov8n-cls.yaml",), iterations=1).imgsz == 96
    fit = largest_batch(EstimateConfig.from_words(["yolov8n-cls.yaml", "gpu_mem=1", "iterations=1"]))
    assert fit.imgsz == 224 and fit.probes and {probe.imgsz for probe in fit.probes} == {224}


def test_optimizer_auto_is_the_trainers_pick_for_the_runs_length(tmp_path):
    """The trainer passes ``build_optimizer`` the run's length (``_setup_train``; 8.4: ``_build_train_pipeline``),
    and ``auto`` picks by it: the pick is
    Ultralytics' own ``build_optimizer`` at that length (the release probe builds it on a stand-in model)."""
    import inspect
    import math

    from ultralytics.engine.trainer import BaseTrainer

    from yolomem.loops.ultralytics.release import _probe_build

    source = inspect.getsource(BaseTrainer)
    assert "math.ceil(len(self.train_loader.dataset) / max(self.batch_size, self.args.nbs)) * self.epochs" in source
    for images, epochs in ((200_000, 100), (3_000, None), (20_000, 30)):
        words = ["yolov8n.yaml", f"images={images}"] + ([f"epochs={epochs}"] if epochs else [])
        prepared = prepare(EstimateConfig.from_words(words))
        iterations = math.ceil(images / 64) * (epochs or 100)  # batch 16 < nbs 64; the trainer's default 100 epochs
        assert prepared.config.optimizer == type(_probe_build("auto", iterations)).__name__
        assert any(note.startswith("optimizer=auto: ") and f"is {iterations} iterations" in note for note in prepared.notes)
    data = detect_dataset(tmp_path / "data")  # one image: 100 iterations
    assert prepare(EstimateConfig.from_words(["yolov8n.yaml", f"data={data}"])).config.optimizer == type(_probe_build("auto", 100)).__name__
    unknown = prepare(EstimateConfig.from_words(["yolov8n.yaml"]))  # no length known: the runner assumes a short run
    assert unknown.config.optimizer == "auto"
