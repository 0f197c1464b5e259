"""Synthetic training batches: the shapes a dataloader would hand the trainer, and real targets.

Images are created inside the trace (fake there: no memory); the targets are small, so they are real
tensors, and the loss and its assigner see real object counts and real box geometry.

Objects per image. ``instances`` is the mean number of labelled objects per image. Per-image counts
are drawn from a Poisson distribution with that mean, with a seeded generator, so the densest image of
a batch (which sets the assigner's ``n_max_boxes``) is realistic: for 16 images at a mean of 8, the
maximum is typically 13-14. Box width and height are fractions of the image drawn log-uniformly from
[0.02, min(0.6, 1/sqrt(objects in the image))], centres uniformly: a COCO-like range of anchors inside
each box, and in a dense image (hundreds of objects) small boxes that tile it, as real dense data has.
The estimator picks the counts of each traced batch with ``yolomem.loops.density`` (a typical batch, the
epoch's densest); ``draw`` is the plain Poisson draw used where no density plan applies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


BOX_SIDE_RANGE = (0.02, 0.6)  # fraction of the image side, log-uniform


def box_side_limit(counts) -> np.ndarray:
    """The largest box side (fraction of the image) drawn for an image holding ``counts`` objects."""
    low, high = BOX_SIDE_RANGE
    return np.clip(1 / np.sqrt(np.maximum(np.asarray(counts, dtype=np.float64), 1)), low * 1.0001, high)
MASK_RATIO = 4  # Ultralytics' default mask_ratio: masks are imgsz / 4


@dataclass(frozen=True)
class SyntheticBatch:
    task: str
    batch: int
    imgsz: int
    counts: tuple[int, ...]  # objects in each image
    seed: int = 0
    nc: int = 80
    kpt_shape: tuple[int, int] = (17, 3)
    channels: int = 3

    @staticmethod
    def draw(task: str, batch: int, imgsz: int, instances: float, seed: int, nc: int = 80,
             kpt_shape: tuple[int, int] = (17, 3), channels: int = 3, counts: tuple[int, ...] | None = None) -> SyntheticBatch:
        """A batch with the given objects per image, or Poisson(instances) draws when ``counts`` is None."""
        if counts is None:
            counts = tuple(int(c) for c in np.random.default_rng(seed).poisson(instances, size=batch))
        return SyntheticBatch(task, batch, imgsz, counts, seed, nc, tuple(kpt_shape), channels)

    @property
    def total_objects(self) -> int:
        return sum(self.counts)

    def expected_positives(self, topk: int) -> int:
        """Foreground anchors the assigner picks: at most top-k per object."""
        return topk * self.total_objects

    def float_images(self) -> torch.Tensor:
        return torch.empty(self.batch, self.channels, self.imgsz, self.imgsz)

    def as_dict(self) -> dict:
        """The batch dict Ultralytics' collate_fn produces for this task."""
        rng = np.random.default_rng(self.seed + 1)
        if self.task == "classify":  # ClassificationDataset yields normalised float32 images
            images = torch.zeros((self.batch, self.channels, self.imgsz, self.imgsz), dtype=torch.float32)
            return {"img": images, "cls": torch.tensor(rng.integers(0, self.nc, self.batch), dtype=torch.int64)}
        images = torch.zeros((self.batch, self.channels, self.imgsz, self.imgsz), dtype=torch.uint8)
        n = self.total_objects
        batch_idx = np.repeat(np.arange(self.batch), self.counts).astype(np.float32)
        high = np.repeat(box_side_limit(self.counts), self.counts)[:, None]  # (n, 1) per object
        low = BOX_SIDE_RANGE[0]
        side = np.exp(np.log(low) + rng.uniform(size=(n, 2)) * (np.log(high) - np.log(low)))
        centre = rng.uniform(side / 2, 1 - side / 2)
        boxes = np.concatenate([centre, side], axis=1).astype(np.float32)
        data = {
            "img": images,
            "batch_idx": torch.tensor(batch_idx),
            "cls": torch.tensor(rng.integers(0, self.nc, (n, 1)).astype(np.float32)),
            "bboxes": torch.tensor(boxes),
        }
        if self.task == "obb":
            angle = rng.uniform(-np.pi / 4, np.pi / 4, (n, 1)).astype(np.float32)
            data["bboxes"] = torch.tensor(np.concatenate([boxes, angle], axis=1))
        if self.task == "pose":
            kpts = rng.uniform(0, 1, (n, *self.kpt_shape)).astype(np.float32)
            if self.kpt_shape[1] == 3:
                kpts[..., 2] = 2.0  # visible
            data["keypoints"] = torch.tensor(kpts)
        if self.task == "segment":
            side_px = self.imgsz // MASK_RATIO
            data["masks"] = torch.tensor(self._overlap_masks(rng, boxes, side_px))
        return data

    def _overlap_masks(self, rng, boxes: np.ndarray, side: int) -> np.ndarray:
        """Overlap-style masks (overlap_mask=True): one (side, side) index map per image. Ultralytics'
        ``polygons2masks_overlap`` makes an image's map int32 when it holds more than 255 objects (uint8
        otherwise), and ``collate_fn``'s ``torch.cat`` promotes the whole batch to it."""
        dense = max(self.counts, default=0) > 255
        masks = np.zeros((self.batch, side, side), dtype=np.int32 if dense else np.uint8)
        start = 0
        for image, count in enumerate(self.counts):
            for k in range(count):
                cx, cy, w, h = boxes[start + k] * side
                x0, x1 = int(max(cx - w / 2, 0)), int(min(cx + w / 2, side))
                y0, y1 = int(max(cy - h / 2, 0)), int(min(cy + h / 2, side))
                masks[image, y0:y1, x0:x1] = k + 1
            start += count
        return masks
