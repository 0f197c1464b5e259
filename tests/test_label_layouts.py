"""A dataset whose label rows do not fit the model's task (box rows for a pose, segment or OBB model,
keypoint rows for a detect model): yolomem keeps the images the installed Ultralytics keeps, and
stops where it stops. The truth is the release's own dataset, built as its trainer builds it
(``build_yolo_dataset``) on the very files yolomem reads. Runs under every release of the CI matrix."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from yolomem.config.settings import EstimateConfig
from yolomem.errors import UserError
from yolomem.measure.synthetic_dataset import SyntheticDatasetSpec, write_synthetic_dataset

# (model, the task the labels were written for, kpt_shape in the YAML, images of another task's labels)
CASES = {
    "pose model, box rows": ("yolov8n-pose.yaml", "detect", (17, 3), None),
    "pose model, some box rows": ("yolov8n-pose.yaml", "pose", (17, 3), "detect"),
    "detect model, keypoint rows": ("yolov8n.yaml", "pose", (17, 3), None),
    "detect model, keypoint rows, no kpt_shape": ("yolov8n.yaml", "pose", None, None),
    "segment model, box rows": ("yolov8n-seg.yaml", "detect", None, None),
    "segment model, some box rows": ("yolov8n-seg.yaml", "segment", None, "detect"),
    "obb model, box rows": ("yolov8n-obb.yaml", "detect", None, None),
    "obb model, corner rows": ("yolov8n-obb.yaml", "obb", None, None),
}
TASK_OF = {"yolov8n.yaml": "detect", "yolov8n-pose.yaml": "pose", "yolov8n-seg.yaml": "segment", "yolov8n-obb.yaml": "obb"}


def _dataset(root: Path, labels_task: str, kpt_shape, other_task: str | None) -> Path:
    """A synthetic dataset of ``labels_task`` rows; with ``other_task``, the first train and val image's
    labels replaced by that task's rows. Its YAML gives ``kpt_shape`` or none."""
    spec = SyntheticDatasetSpec(task=labels_task, imgsz=64, train_images=6, val_images=3, instances=3,
                                distribution="fixed", nc=2, kpt_shape=kpt_shape or (17, 3))  # fmt: skip
    dataset = write_synthetic_dataset(root / "main", spec)
    if other_task is not None:
        other = write_synthetic_dataset(root / "other", SyntheticDatasetSpec(
            task=other_task, imgsz=64, train_images=1, val_images=1, instances=3, distribution="fixed", nc=2))  # fmt: skip
        for split in ("train", "val"):
            shutil.copy(other.root / "labels" / split / "000000.txt", dataset.root / "labels" / split / "000000.txt")
    data = yaml.safe_load(dataset.data_yaml.read_text())
    data.pop("kpt_shape", None)
    if kpt_shape:
        data["kpt_shape"] = list(kpt_shape)
    dataset.data_yaml.write_text(yaml.safe_dump(data))
    return dataset.data_yaml


def _release_dataset(yaml_path: Path, task: str, split: str):
    """The installed release's dataset of ``split``, as its trainer builds it; or the error it raises."""
    from yolomem.loops.ultralytics.release import release

    release()  # the present module names, on the old layout too
    try:
        from ultralytics.data.build import build_yolo_dataset
    except ImportError:
        pytest.skip("this release has no build_yolo_dataset (up to 8.0.88)")
    from ultralytics.cfg import get_cfg
    from ultralytics.utils import DEFAULT_CFG

    data = yaml.safe_load(yaml_path.read_text())
    data.update(nc=len(data["names"]), channels=3)
    cfg = get_cfg(DEFAULT_CFG, {"task": task, "imgsz": 64})
    try:
        return build_yolo_dataset(cfg, str(yaml_path.parent / data[split]), 2, data, mode="train" if split == "train" else "val")
    except (ValueError, RuntimeError) as error:
        return error


@pytest.mark.parametrize("case", CASES)
def test_yolomem_keeps_the_images_the_release_keeps_and_stops_where_it_stops(case, tmp_path):
    from yolomem.loops import resolve_model
    from yolomem.result.prepare import prepare

    model, labels_task, kpt_shape, other_task = CASES[case]
    try:
        resolve_model(model)
    except UserError:
        pytest.skip(f"{model} is not in this release")
    yaml_path = _dataset(tmp_path, labels_task, kpt_shape, other_task)
    truth = {split: _release_dataset(yaml_path, TASK_OF[model], split) for split in ("train", "val")}
    config = EstimateConfig(model=model, data=str(yaml_path), batch=2, imgsz=64)
    if TASK_OF[model] == "pose" and kpt_shape is None:
        pytest.skip("a pose model needs the YAML's kpt_shape (refused before any label is read)")
    stops = [error for error in truth.values() if isinstance(error, Exception)]
    if stops:
        with pytest.raises(UserError) as refused:
            prepare(config)
        assert "\n" not in str(refused.value)
        return
    dataset = prepare(config).request.dataset
    for split in ("train", "val"):
        built = truth[split]
        assert getattr(dataset, split).images == len(built.labels), split
        kept_counts = [len(label["cls"]) for label in built.labels]
        assert list(getattr(dataset, split).counts) == kept_counts, split


def test_box_rows_for_a_segment_model_are_named_where_the_release_trains_them(tmp_path):
    """Where the release does not stop on box rows (before 8.4.83), it trains them without masks, and
    the estimate says so; where it stops, the refusal quotes it."""
    from yolomem.result.prepare import prepare

    yaml_path = _dataset(tmp_path, "detect", None, None)
    truth = _release_dataset(yaml_path, "segment", "train")
    config = EstimateConfig(model="yolov8n-seg.yaml", data=str(yaml_path), batch=2, imgsz=64)
    if isinstance(truth, Exception):
        with pytest.raises(UserError, match="requires equal numbers of boxes and segments"):
            prepare(config)
        return
    assert not any(len(label["segments"]) for label in truth.labels)  # the release's masks: none
    notes = " ".join(prepare(config).notes)
    assert "6 of 6 train and 3 of 3 val images have box rows" in notes and "a segment model gets no masks" in notes
