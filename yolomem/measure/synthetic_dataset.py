"""A synthetic Ultralytics dataset written to disk: images and YOLO labels with chosen object counts.

``yolomem measure`` trains on it, so a measurement needs no download and its objects per image are
known. Object counts follow the estimator's own assumption (``yolomem.loops.batches``): a Poisson draw with
mean ``instances`` per image (``distribution="poisson"``), or exactly ``round(instances)`` in every
image (``distribution="fixed"``). Box sides use the estimator's log-uniform range; boxes lie fully
inside the image, so Ultralytics keeps every one of them when geometric augmentation is off (the
measure runner turns mosaic, scale and translate off by default for that reason).

Images are flat grey with one filled rectangle per object: cheap to encode and decode, so the
dataloader does not slow the GPU measurement. Layout (Ultralytics' "images/ -> labels/" convention)::

    root/data.yaml
    root/images/{train,val}/000000.jpg
    root/labels/{train,val}/000000.txt

Label lines per task (coordinates normalised to [0, 1]):
    detect   ``cls cx cy w h``
    segment  ``cls x1 y1 x2 y2 ...`` (an 8-point polygon inside the box)
    pose     ``cls cx cy w h kx ky v ...`` (``kpt_shape`` keypoints inside the box)
    obb      ``cls x1 y1 x2 y2 x3 y3 x4 y4`` (the box corners)

Classification has no labels or YAML: Ultralytics reads a folder of class folders, so ``data=`` is the
root itself, and image ``i`` of a split is drawn for class ``i % nc`` (objects play no part)::

    root/{train,val}/class{c}/000000.jpg
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from yolomem.loops.batches import BOX_SIDE_RANGE
from yolomem.errors import UserError, unknown

TASKS = ("detect", "segment", "pose", "obb", "classify")
DISTRIBUTIONS = ("poisson", "fixed")
POLYGON_POINTS = 8
BACKGROUND = 114  # Ultralytics' letterbox grey


@dataclass(frozen=True)
class SyntheticDatasetSpec:
    task: str = "detect"
    imgsz: int = 640
    train_images: int = 32
    val_images: int = 16
    instances: float = 8.0
    distribution: str = "poisson"
    nc: int = 80
    seed: int = 0
    kpt_shape: tuple[int, int] = (17, 3)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise unknown("task for a synthetic dataset", self.task, TASKS)
        if self.distribution not in DISTRIBUTIONS:
            raise unknown("object-count distribution", self.distribution, DISTRIBUTIONS)
        for name in ("imgsz", "train_images", "val_images", "nc"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{name}={value!r} must be a positive whole number")
        if not (self.instances >= 0 and math.isfinite(self.instances)):
            raise UserError(f"instances={self.instances!r} must be a number of objects per image >= 0")

    def counts(self, split: str) -> tuple[int, ...]:
        """Objects in each image of ``split`` ("train" or "val"), in file order."""
        size = self.train_images if split == "train" else self.val_images
        if self.distribution == "fixed":
            return (round(self.instances),) * size
        rng = np.random.default_rng([self.seed, 0 if split == "train" else 1])
        return tuple(int(c) for c in rng.poisson(self.instances, size=size))


@dataclass(frozen=True)
class SyntheticDataset:
    root: Path
    data_yaml: Path  # classification: the root folder, which is what data= takes there
    spec: SyntheticDatasetSpec


def write_synthetic_dataset(root: Path | str, spec: SyntheticDatasetSpec) -> SyntheticDataset:
    """Write the dataset under ``root`` (which must be empty or absent) and return where its YAML is."""
    import cv2
    import yaml

    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise UserError(f"{root} is not empty; a synthetic dataset needs a fresh folder")
    if spec.task == "classify":
        return _write_class_folders(root, spec)
    for split in ("train", "val"):
        images, labels = root / "images" / split, root / "labels" / split
        images.mkdir(parents=True)
        labels.mkdir(parents=True)
        rng = np.random.default_rng([spec.seed, 2 if split == "train" else 3])
        for index, count in enumerate(spec.counts(split)):
            image = np.full((spec.imgsz, spec.imgsz, 3), BACKGROUND, dtype=np.uint8)  # (H, W, 3) BGR
            lines = []
            for _ in range(count):
                cls = int(rng.integers(spec.nc))
                cx, cy, w, h = _box(rng)
                _draw(image, cx, cy, w, h, colour=int(40 + (cls * 53) % 200))
                lines.append(_label_line(spec, rng, cls, cx, cy, w, h))
            cv2.imwrite(str(images / f"{index:06d}.jpg"), image)
            (labels / f"{index:06d}.txt").write_text("".join(line + "\n" for line in lines))
    data = {
        "path": str(root.resolve()),
        "train": "images/train",
        "val": "images/val",
        "nc": spec.nc,
        "names": {i: f"class{i}" for i in range(spec.nc)},
    }
    if spec.task == "pose":
        data["kpt_shape"] = list(spec.kpt_shape)
        data["flip_idx"] = list(range(spec.kpt_shape[0]))  # symmetric points are not modelled; identity
    data_yaml = root / "data.yaml"
    data_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    return SyntheticDataset(root, data_yaml, spec)


def _write_class_folders(root: Path, spec: SyntheticDatasetSpec) -> SyntheticDataset:
    import cv2

    for split in ("train", "val"):
        size = spec.train_images if split == "train" else spec.val_images
        for index in range(size):
            folder = root / split / f"class{index % spec.nc}"
            folder.mkdir(parents=True, exist_ok=True)
            image = np.full((spec.imgsz, spec.imgsz, 3), BACKGROUND + index % 100, dtype=np.uint8)
            cv2.imwrite(str(folder / f"{index:06d}.jpg"), image)
    return SyntheticDataset(root, root, spec)


def read_label_counts(root: Path | str, split: str) -> tuple[int, ...]:
    """Objects per image read back from the label files, in file order (what Ultralytics will see)."""
    labels = sorted((Path(root) / "labels" / split).glob("*.txt"))
    return tuple(sum(1 for line in path.read_text().splitlines() if line.strip()) for path in labels)


def _box(rng: np.random.Generator) -> tuple[float, float, float, float]:
    """Centre and size, normalised; sides log-uniform in BOX_SIDE_RANGE, the box fully inside the image."""
    low, high = (math.log(x) for x in BOX_SIDE_RANGE)
    w, h = (float(math.exp(rng.uniform(low, high))) for _ in range(2))
    cx = float(rng.uniform(w / 2, 1 - w / 2))
    cy = float(rng.uniform(h / 2, 1 - h / 2))
    return cx, cy, w, h


def _draw(image: np.ndarray, cx: float, cy: float, w: float, h: float, colour: int) -> None:
    size = image.shape[0]
    x0, y0 = int((cx - w / 2) * size), int((cy - h / 2) * size)
    x1, y1 = max(int((cx + w / 2) * size), x0 + 1), max(int((cy + h / 2) * size), y0 + 1)
    image[y0:y1, x0:x1] = colour


def _label_line(spec: SyntheticDatasetSpec, rng: np.random.Generator, cls: int, cx, cy, w, h) -> str:
    def fmt(values) -> str:
        return " ".join(f"{v:.6f}" for v in values)

    if spec.task == "detect":
        return f"{cls} {fmt((cx, cy, w, h))}"
    if spec.task == "obb":
        x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        return f"{cls} {fmt((x0, y0, x1, y0, x1, y1, x0, y1))}"
    if spec.task == "segment":
        angles = np.linspace(0, 2 * math.pi, POLYGON_POINTS, endpoint=False)
        points = np.stack([cx + 0.5 * w * np.cos(angles), cy + 0.5 * h * np.sin(angles)], axis=1).ravel()
        return f"{cls} {fmt(points)}"
    # pose: keypoints inside the box; visibility 2 (labelled, visible) when kpt_shape has a third column
    count, dims = spec.kpt_shape
    xs = rng.uniform(cx - w / 2, cx + w / 2, size=count)
    ys = rng.uniform(cy - h / 2, cy + h / 2, size=count)
    columns = [xs, ys] + ([np.full(count, 2.0)] if dims == 3 else [])
    keypoints = np.stack(columns, axis=1).ravel()
    return f"{cls} {fmt((cx, cy, w, h))} {fmt(keypoints)}"


__all__ = ["SyntheticDataset", "SyntheticDatasetSpec", "read_label_counts", "write_synthetic_dataset"]
