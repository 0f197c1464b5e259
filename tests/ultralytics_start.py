"""Ultralytics' own ``YOLO(model).train(...)``, run up to the point where training would start, and the
tiny datasets it reads: the trainer's arguments, data and model are settled by then. Outside truth for
what yolomem says the trainer will train (its imgsz, its classes)."""

from __future__ import annotations

import pytest


class _Started(Exception):
    """Raised where the trainer would start training."""


def trainer_at_start(model: str, data: str, tmp_path, monkeypatch, **train_args):
    """The trainer ``YOLO(model).train(data=data, **train_args)`` makes, as ``train()`` would find it."""
    from ultralytics import YOLO
    from ultralytics.engine.trainer import BaseTrainer

    seen = {}

    def start(self):
        seen["trainer"] = self
        raise _Started

    monkeypatch.setattr(BaseTrainer, "train", start)
    with pytest.raises(_Started):
        YOLO(model).train(data=data, project=str(tmp_path / "runs"), device="cpu", workers=0, plots=False, **train_args)
    return seen["trainer"]


def classify_folder(root) -> str:
    """train/ and val/ with one tiny image in each of two class folders."""
    from PIL import Image

    for split in ("train", "val"):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
            Image.new("RGB", (40, 30)).save(root / split / name / "0.png")
    return str(root)


def detect_dataset(root, names: tuple[str, ...] = ("a",)) -> str:
    """A dataset YAML naming ``names``, over one image with one object of class 0."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    Image.new("RGB", (64, 48)).save(root / "images" / "a.jpg")
    (root / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images\nval: images\nnames: [{', '.join(names)}]\n")
    return str(root / "data.yaml")
