"""Ultralytics up to 8.0.135 kept its trainer, data and utilities under ``ultralytics.yolo``; yolomem reads
them under the present names through ``yolomem.loops.ultralytics.legacy_layout``. The matrix
(``.ci/ultralytics_matrix.py``: 8.0.35 to 8.0.135) traces the real releases; this checks the aliasing on
a stand-in package laid out the old way, in a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from yolomem.loops.ultralytics.legacy_layout import has_legacy_layout, old_name, yaml_dir


def test_new_names_map_to_the_old_layout():
    assert old_name("ultralytics.engine.trainer") == "ultralytics.yolo.engine.trainer"
    assert old_name("ultralytics.utils") == "ultralytics.yolo.utils"
    assert old_name("ultralytics.models.yolo.detect.train") == "ultralytics.yolo.v8.detect.train"
    assert old_name("ultralytics.models.rtdetr") == "ultralytics.vit.rtdetr"
    assert old_name("ultralytics.nn.tasks") is None  # ultralytics.nn did not move
    assert old_name("ultralytics.engineering") is None  # a name that only starts alike


def test_the_installed_release_has_the_present_layout():
    import ultralytics

    assert not has_legacy_layout()
    package = Path(ultralytics.__file__).parent
    assert yaml_dir(package, "models").parts[-2:] == ("cfg", "models")
    assert yaml_dir(package, "datasets").parts[-2:] == ("cfg", "datasets")


def test_an_old_layout_is_read_under_the_new_names_as_the_same_modules(tmp_path):
    package = tmp_path / "ultralytics"
    for folder in ("yolo/engine", "yolo/utils", "yolo/v8/detect", "nn", "models/v8"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "models" / "v8" / "__init__.py").unlink()  # a folder of YAMLs, as it was
    (package / "models" / "v8" / "yolov8.yaml").write_text("nc: 80\n")
    (package / "datasets").mkdir()
    (package / "datasets" / "coco8.yaml").write_text("train: images/train\nval: images/val\n")
    (package / "__init__.py").write_text("__version__ = '8.0.120'\n")
    (package / "yolo" / "__init__.py").write_text("")
    (package / "yolo" / "engine" / "trainer.py").write_text("class BaseTrainer:\n    pass\n")
    (package / "yolo" / "utils" / "ops.py").write_text("STATE = []\n")
    (package / "yolo" / "v8" / "detect" / "train.py").write_text(
        "from ultralytics.yolo.engine.trainer import BaseTrainer\nclass DetectionTrainer(BaseTrainer):\n    pass\n")
    script = (
        "import sys, yolomem\n"
        "from ultralytics.engine.trainer import BaseTrainer\n"
        "from ultralytics.models.yolo.detect.train import DetectionTrainer\n"
        "import ultralytics.utils.ops as new, ultralytics.yolo.utils.ops as old\n"
        "assert new is old and issubclass(DetectionTrainer, BaseTrainer)\n"
        "assert BaseTrainer.__module__ == 'ultralytics.yolo.engine.trainer'  # its own name, kept\n"
        "from yolomem.loops.ultralytics.models import _models_dir\n"
        "from yolomem.config.dataset import shipped_dataset_names\n"
        "print(_models_dir().relative_to(sys.argv[1]), shipped_dataset_names())\n"
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"{os.path.join('ultralytics', 'models')} ['coco8.yaml']"
