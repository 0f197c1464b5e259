"""Issue 11, item 2: ``multi_scale`` reaches the trainer. Ultralytics' ``preprocess_batch`` draws each
batch's size with ``random.randrange``; the peak comes from the largest size it can draw, rounded to
the stride, so that is the size traced."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from yolomem.loops.ultralytics.step import largest_draw
from yolomem.result.estimate import estimate

SMALL = {"imgsz": 320, "batch": 4, "iterations": 1}


@pytest.mark.parametrize(("imgsz", "multi_scale"), [(640, 0.5), (320, 0.3), (640, 0.33), (96, 0.1)])
def test_the_largest_draw_is_the_size_autobatch_plans_for(imgsz, multi_scale):
    """Ultralytics' own preprocess_batch under ``largest_draw``, against the size its AutoBatch sizes for
    (``BaseTrainer.auto_batch``: ceil(imgsz * (1 + multi_scale) / stride) * stride)."""
    from ultralytics.models.yolo.detect import DetectionTrainer

    stride = 32
    shim = SimpleNamespace(args=SimpleNamespace(imgsz=imgsz, multi_scale=multi_scale), stride=stride, device=torch.device("cpu"))
    batch = {"img": torch.zeros(1, 3, imgsz, imgsz, dtype=torch.uint8)}
    with largest_draw() as draws:
        out = DetectionTrainer.preprocess_batch(shim, batch)
    assert draws and out["img"].shape[-2:] == (math.ceil(imgsz * (1 + multi_scale) / stride) * stride,) * 2


def test_multi_scale_is_traced_at_its_largest_size():
    plain = estimate("yolov8n.yaml", **SMALL)
    scaled = estimate("yolov8n.yaml", multi_scale=0.5, **SMALL)
    at_480 = estimate("yolov8n.yaml", **{**SMALL, "imgsz": 480})
    assert scaled.peak_reserved_bytes > 1.5 * plain.peak_reserved_bytes
    assert scaled.peak_reserved_bytes >= 0.95 * at_480.peak_reserved_bytes  # plus the 320 input it resized
    assert any("up to 480" in note for note in scaled.notes)


def test_a_trainer_that_never_rescales_says_so():
    result = estimate("yolov8n-cls.yaml", imgsz=64, batch=2, iterations=1, multi_scale=0.5)
    assert any("does not rescale" in note for note in result.notes)
