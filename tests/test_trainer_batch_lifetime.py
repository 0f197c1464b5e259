"""Ultralytics' own trainer keeps a batch alive past its iteration, as the traced loop now does
(``yolomem.loops.ultralytics.step.UltralyticsRun.train_iteration``).

Truth: a real ``YOLO.train`` on the CPU on a tiny synthetic dataset. Each preprocessed image batch is
watched with a weak reference; at the end of every iteration we read which earlier ones are still alive.
The H200's allocation history shows the same on the GPU (``tests/test_gpu_history.py``).
"""

from __future__ import annotations

import weakref

from yolomem.measure.synthetic_dataset import SyntheticDatasetSpec, write_synthetic_dataset
from yolomem.measure.worker import offline_ultralytics


def test_the_previous_batch_outlives_its_iteration(tmp_path):
    from ultralytics import YOLO
    from ultralytics.models.yolo.detect.train import DetectionTrainer

    data = write_synthetic_dataset(tmp_path / "data", SyntheticDatasetSpec(imgsz=64, train_images=8, val_images=2,
                                                                           instances=2, nc=2))  # fmt: skip
    images: list[weakref.ref] = []
    alive_at_end: list[list[int]] = []
    original = DetectionTrainer.preprocess_batch

    def preprocess_batch(self, batch):
        batch = original(self, batch)
        images.append(weakref.ref(batch["img"]))
        return batch

    def batch_end(trainer):
        alive_at_end.append([i for i, ref in enumerate(images) if ref() is not None])

    DetectionTrainer.preprocess_batch = preprocess_batch
    try:
        model = YOLO("yolov8n.yaml")
        model.add_callback("on_train_batch_end", batch_end)
        with offline_ultralytics():
            model.train(data=str(data.data_yaml), epochs=1, batch=2, imgsz=64, workers=0, plots=False, val=False,
                        device="cpu", project=str(tmp_path / "runs"), exist_ok=True, verbose=False, mosaic=0.0)  # fmt: skip
    finally:
        DetectionTrainer.preprocess_batch = original
    assert len(alive_at_end) == 4
    # at the end of each iteration its own batch is alive (the trainer's ``batch`` is still bound) ...
    assert all(k in alive for k, alive in enumerate(alive_at_end))
    # ... and at the end of every other one the batch before it too (enumerate's reused result tuple)
    assert any(k - 1 in alive for k, alive in enumerate(alive_at_end) if k > 0)
