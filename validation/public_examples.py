"""Build tests/data/sample_results.jsonl from tests/data/reference/measured_public_examples.csv (a copy of shared/reference/).

Run once by hand (``python validation/public_examples.py OUT.jsonl``); the output is checked in. Every
row is marked ``source="public"``: figures copied from public logs, never our own measurements. Units:
the CSV's ``value_gb`` is bytes / 1e9 (``unit=GB(1e9)`` in every row), so bytes = value_gb * 1e9.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone

from yolomem.measure.log import append_record
from yolomem.measure.run import SCHEMA_VERSION, SOURCE_PUBLIC, Environment, MeasurementRecord

CREATED = datetime.now(timezone.utc).isoformat(timespec="seconds")  # when this file was built
YOLOV8N_NC1 = "3,011,043 params in the issue = yolov8n.yaml with nc=1 (checked with DetectionModel)"


def _record(config: dict, metric: str, value_gb: float, reference: str, gpu: str, total: float, versions: dict,
            notes: list[str]) -> dict:
    base = {"model": "yolov8n.yaml", "imgsz": 640, "batch": 16, "amp": "fp16", "optimizer": "auto", "step": "train"}
    return MeasurementRecord(
        schema_version=SCHEMA_VERSION, source=SOURCE_PUBLIC, created=CREATED, config=base | config, status="ok",
        error=None, measured={metric: round(value_gb * 1e9)},
        environment=Environment(gpu_name=gpu, gpu_total_bytes=round(total * 2**20), **versions),
        reference=reference, notes=tuple(["unit=GB(1e9): bytes = value * 1e9, printed to 3 significant digits"] + notes),
    ).to_json()


def rows() -> list[dict]:
    yolo11 = ("https://github.com/ultralytics/notebooks/blob/abd92b0117d05b8f22044170bd70261418419b5e/notebooks/"
              "how-to-train-ultralytics-yolo-on-brain-tumor-detection-dataset.ipynb")
    issue = "https://github.com/ultralytics/ultralytics/issues/1451"
    v5 = "https://github.com/ultralytics/yolov5/blob/5081342f04fb287fc2e5f2b5a4e06752b7937b1c/tutorial.ipynb"
    out = [_record(
        {"model": "yolo11n.yaml", "instances": 1.0}, "peak_reserved_bytes", 2.43, yolo11, "Tesla T4", 15102,
        {"torch": "2.5.1+cu121", "ultralytics": "8.3.57"},
        ["GPU_mem at the end of epoch 1/10 (memory_reserved)", "brain-tumor dataset: about 1 object per image (assumed instances=1)"],
    )]  # fmt: skip
    for batch, value in ((1, 0.285), (2, 0.445), (4, 0.470), (8, 0.719), (16, 1.197)):
        out.append(_record(
            {"model": "yolov8n.yaml", "imgsz": 480, "batch": batch, "nc": 1, "step": "fwd_bwd"}, "peak_reserved_bytes",
            value, issue, "NVIDIA GeForce RTX 4090", 23.99e9 / 2**20, {"ultralytics": "8.0.5x"},
            ["AutoBatch profile row: memory_reserved after fwd+bwd", YOLOV8N_NC1],
        ))  # fmt: skip
    for metric, value, note in (("peak_reserved_bytes", 3.91, "epoch 0/2 (first epoch)"),
                                ("steady_reserved_bytes", 4.76, "epoch 1/2 (after the first validation)")):
        out.append(_record(
            {"model": "yolov5s.yaml", "framework": "yolov5", "instances": 7.3}, metric, value, v5, "Tesla T4", 15102,
            {"torch": "2.0.0+cu118", "ultralytics": "yolov5 v7.0-136-g71244ae"},
            [f"yolov5 train.py GPU_mem, {note}", "coco128: 929 labels / 128 images = 7.3 objects per image"],
        ))  # fmt: skip
    return out


if __name__ == "__main__":
    for row in rows():
        append_record(sys.argv[1], row)
