"""The synthetic dataset has the object counts asked for, read back from its label files."""

from __future__ import annotations

import pytest
import yaml

from yolomem.errors import UserError
from yolomem.measure.synthetic_dataset import SyntheticDatasetSpec, read_label_counts, write_synthetic_dataset


def test_fixed_counts_are_exact_in_every_label_file(tmp_path):
    spec = SyntheticDatasetSpec(imgsz=64, train_images=6, val_images=3, instances=5, distribution="fixed", nc=3)
    dataset = write_synthetic_dataset(tmp_path / "d", spec)
    assert read_label_counts(dataset.root, "train") == (5,) * 6
    assert read_label_counts(dataset.root, "val") == (5,) * 3
    assert len(list((dataset.root / "images" / "train").glob("*.jpg"))) == 6


def test_poisson_counts_match_the_spec_and_have_the_asked_mean(tmp_path):
    spec = SyntheticDatasetSpec(imgsz=32, train_images=200, val_images=2, instances=8, seed=3, nc=2)
    dataset = write_synthetic_dataset(tmp_path / "d", spec)
    counts = read_label_counts(dataset.root, "train")
    assert counts == spec.counts("train")
    assert 7.0 < sum(counts) / len(counts) < 9.0
    assert len(set(counts)) > 3  # really varies per image, as the estimator assumes


def test_labels_are_valid_yolo_boxes_and_ultralytics_reads_the_same_counts(tmp_path):
    from ultralytics.data.utils import verify_image_label

    spec = SyntheticDatasetSpec(imgsz=64, train_images=4, val_images=1, instances=3, distribution="fixed", nc=4)
    dataset = write_synthetic_dataset(tmp_path / "d", spec)
    data = yaml.safe_load(dataset.data_yaml.read_text())
    assert data["nc"] == 4 and len(data["names"]) == 4 and data["train"] == "images/train"
    for index in range(4):
        image = dataset.root / "images" / "train" / f"{index:06d}.jpg"
        label = dataset.root / "labels" / "train" / f"{index:06d}.txt"
        # Ultralytics' own label check (the one its dataset cache runs): returns the labels it keeps
        result = verify_image_label((str(image), str(label), "", False, 4, 0, 0, False))
        boxes, message = result[1], result[-1]
        assert boxes.shape == (3, 5), message
        assert (boxes[:, 1:] >= 0).all() and (boxes[:, 1:] <= 1).all()


@pytest.mark.parametrize("task, columns", [("segment", 1 + 16), ("pose", 5 + 17 * 3), ("obb", 9)])
def test_other_tasks_write_their_label_format(tmp_path, task, columns):
    spec = SyntheticDatasetSpec(task=task, imgsz=32, train_images=2, val_images=1, instances=2, distribution="fixed")
    dataset = write_synthetic_dataset(tmp_path / task, spec)
    lines = (dataset.root / "labels" / "train" / "000000.txt").read_text().splitlines()
    assert len(lines) == 2 and all(len(line.split()) == columns for line in lines)
    if task == "pose":
        assert yaml.safe_load(dataset.data_yaml.read_text())["kpt_shape"] == [17, 3]


def test_classification_writes_a_folder_of_class_folders(tmp_path):
    """What ``yolo classify train data=FOLDER`` reads: train/ and val/, one folder per class."""
    dataset = write_synthetic_dataset(tmp_path / "cls", SyntheticDatasetSpec(task="classify", imgsz=32, train_images=6,
                                                                             val_images=3, nc=3))  # fmt: skip
    assert dataset.data_yaml == dataset.root
    assert sorted(p.name for p in (dataset.root / "train").iterdir()) == ["class0", "class1", "class2"]
    assert len(list((dataset.root / "train").glob("*/*.jpg"))) == 6
    assert len(list((dataset.root / "val").glob("*/*.jpg"))) == 3


def test_bad_specs_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="did you mean 'classify'"):
        SyntheticDatasetSpec(task="clasify")
    with pytest.raises(UserError, match="did you mean 'fixed'"):
        SyntheticDatasetSpec(distribution="fixd")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("")
    with pytest.raises(UserError, match="not empty"):
        write_synthetic_dataset(tmp_path / "busy", SyntheticDatasetSpec(imgsz=32, train_images=1, val_images=1))
