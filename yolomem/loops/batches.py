"""Synthetic training batches: the shapes a dataloader would hand the trainer, and real targets.

Images are created inside the trace (fake there: no memory); the targets are small, so they are real
tensors, and the loss and its assigner see real object counts and real box geometry.

Objects per image. ``instances`` is the mean number of labelled objects per image. The estimator picks
the objects of each traced batch with ``yolomem.loops.density`` (a typical batch, the epoch's densest):
one densest sample, which sets the assigner's ``n_max_boxes`` (every (batch, n_max, anchors) tensor),
and ``batch - 1`` typical samples that hold the same objects (``dense_counts``). Memory depends on
the densest sample and on totals, not on how objects spread over the other samples; so batches of
this form make every size in a training step exactly affine in the batch, and ``yolomem.trace.derive``
derives the stream at any batch from traces at a few. ``draw`` without counts (no density plan:
classification, AutoBatch probes) takes the densest of ``DENSEST_OF`` Poisson draws, then typical
images of ``round(instances)``.
Box width and height are fractions of the image drawn log-uniformly from [0.02, min(0.6, 1/sqrt(objects
in the image))], centres uniformly: a COCO-like range of anchors inside each box, and in a dense image
(hundreds of objects) small boxes that tile it, as real dense data has. Images with the same number of
objects hold the same boxes (``SyntheticBatch.as_dict``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from yolomem.errors import UserError


BOX_SIDE_RANGE = (0.02, 0.6)  # fraction of the image side, log-uniform


def box_side_limit(counts) -> np.ndarray:
    """The largest box side (fraction of the image) drawn for an image holding ``counts`` objects."""
    low, high = BOX_SIDE_RANGE
    return np.clip(1 / np.sqrt(np.maximum(np.asarray(counts, dtype=np.float64), 1)), low * 1.0001, high)


MASK_RATIO = 4  # Ultralytics' default mask_ratio: masks are imgsz / 4
# The labels and masks of a synthetic batch are real host arrays (the images are fake in a trace). A
# request that needs more refuses in one line: yolov8n-seg at imgsz 40000, batch 4 held 3 GB of masks,
# and pose labels grow by 228 bytes an object.
HOST_LABEL_BYTES_MAX = 2 << 30
DENSEST_OF = 16  # the densest image holds the most objects among this many draws (Ultralytics' default batch)


def densest_count(instances: float, seed: int) -> int:
    """Objects in the densest image: the most among ``DENSEST_OF`` Poisson draws (seeded)."""
    if instances <= 0:
        return 0
    return int(np.random.default_rng(seed).poisson(instances, size=DENSEST_OF).max())


def typical_count(instances: float, densest: int) -> int:
    """Objects in every other image: the mean, rounded, and never more than the densest image."""
    return min(math.floor(instances + 0.5), densest)  # halves round up (round() would go to even)


def foreground_per_image(counts, topk: int) -> tuple[int, ...]:
    """Foreground anchors the assigner picks in each image: at most top-k per object."""
    return tuple(topk * count for count in counts)


def dense_counts(batch: int, densest: int, typical: int) -> tuple[int, ...]:
    """Objects per image of a batch: the densest image first, then ``batch - 1`` typical ones."""
    return (densest,) + (typical,) * (batch - 1)


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
        """A batch with the given objects per image, or the densest of ``DENSEST_OF`` Poisson draws and
        typical images when ``counts`` is None."""
        if counts is None:
            densest = densest_count(instances, seed)
            counts = dense_counts(batch, densest, typical_count(instances, densest))
        return SyntheticBatch(task, batch, imgsz, counts, seed, nc, tuple(kpt_shape), channels)

    def expected_positives_per_image(self, topk: int) -> tuple[int, ...]:
        return foreground_per_image(self.counts, topk)

    def float_images(self) -> torch.Tensor:
        return torch.empty(self.batch, self.channels, self.imgsz, self.imgsz)

    def as_dict(self, overlap_mask: bool = True, semantic_masks: bool = False) -> dict:
        """The batch dict Ultralytics' collate_fn produces for this task; segmentation masks as one index
        map per image (``overlap_mask=True``, Ultralytics' default) or one mask per object.
        ``semantic_masks``: segmentation batches also carry ``sem_masks``, each pixel the class of the object
        that covers it, float32 (B, H/4, W/4), as ``Format`` makes them from 8.4.0 on (YOLO26-seg's loss
        reads them; the trainer moves them to the GPU for every segmentation model)."""
        self._check_host_bytes(overlap_mask, semantic_masks)
        rng = np.random.default_rng(self.seed + 1)
        if self.task == "classify":  # ClassificationDataset yields normalised float32 images
            images = torch.zeros((self.batch, self.channels, self.imgsz, self.imgsz), dtype=torch.float32)
            return {"img": images, "cls": torch.tensor(rng.integers(0, self.nc, self.batch), dtype=torch.int64)}
        images = torch.zeros((self.batch, self.channels, self.imgsz, self.imgsz), dtype=torch.uint8)
        batch_idx = np.repeat(np.arange(self.batch), self.counts).astype(np.float32)
        # one draw per distinct count, in order of first appearance: images with equal counts share objects
        drawn: dict[int, dict[str, np.ndarray]] = {}
        for count in self.counts:
            if count not in drawn:
                drawn[count] = self._objects(rng, count)

        def joined(key: str) -> np.ndarray:
            return np.concatenate([drawn[count][key] for count in self.counts])

        boxes = joined("boxes")
        data = {
            "img": images,
            "batch_idx": torch.tensor(batch_idx),
            "cls": torch.tensor(joined("cls")),
            "bboxes": torch.tensor(boxes),
        }
        if self.task == "obb":
            data["bboxes"] = torch.tensor(np.concatenate([boxes, joined("angle")], axis=1))
        if self.task == "pose":
            data["keypoints"] = torch.tensor(joined("kpts"))
        if self.task == "segment":
            side_px = self.imgsz // MASK_RATIO
            masks = self._overlap_masks(rng, boxes, side_px)
            if semantic_masks:
                data["sem_masks"] = torch.tensor(self._semantic_masks(masks, joined("cls")))
            if not overlap_mask:  # one mask per object, in label order
                per_object = [masks[i] == k + 1 for i, count in enumerate(self.counts) for k in range(count)]
                masks = np.stack(per_object) if per_object else np.zeros((0, side_px, side_px), bool)
            # overlap maps keep their dtype (int32 past 255 objects); per-object masks are uint8 (polygons2masks)
            data["masks"] = torch.tensor(masks if overlap_mask else masks.astype(np.uint8))
        return data

    def host_bytes(self, overlap_mask: bool = True, semantic_masks: bool = False) -> int:
        """Host memory of the labels and masks ``as_dict`` makes, counted from their shapes: each numpy
        array and its tensor copy, alive together until it returns (the images are fake inside a trace)."""
        if self.task == "classify":
            return 2 * self.batch * 8  # one int64 class per image
        objects = sum(self.counts)
        per_object = 4 + 4 + (20 if self.task == "obb" else 16)  # batch_idx, cls, boxes (with the angle), float32
        if self.task == "pose":
            per_object += 4 * math.prod(self.kpt_shape)
        total = objects * per_object
        if self.task == "segment":
            pixels = (self.imgsz // MASK_RATIO) ** 2
            dense = max(self.counts, default=0) > 255
            maps = self.batch * pixels * (4 if dense else 1)
            total += maps + (self.batch * pixels * 4 if semantic_masks else 0)
            if not overlap_mask:  # one boolean mask per object, then the same as uint8
                total += 2 * objects * pixels
        return 2 * total

    def _check_host_bytes(self, overlap_mask: bool, semantic_masks: bool) -> None:
        needed = self.host_bytes(overlap_mask, semantic_masks)
        if needed > HOST_LABEL_BYTES_MAX:
            what = "labels and masks" if self.task == "segment" else "labels"
            raise UserError(f"batch={self.batch} at imgsz={self.imgsz} with {max(self.counts, default=0)} objects in "
                            f"its densest image needs {needed / (1 << 30):.1f} GiB of host memory for its synthetic "
                            f"{what}, more than yolomem holds ({HOST_LABEL_BYTES_MAX >> 30} GiB); ask for a smaller "
                            "batch or imgsz")  # fmt: skip

    def _objects(self, rng, count: int) -> dict[str, np.ndarray]:
        """Boxes (cx, cy, w, h), classes, angles and keypoints of one image's ``count`` objects."""
        low, high = BOX_SIDE_RANGE[0], float(box_side_limit(count))
        side = np.exp(np.log(low) + rng.uniform(size=(count, 2)) * (np.log(high) - np.log(low)))
        centre = rng.uniform(side / 2, 1 - side / 2)
        kpts = rng.uniform(0, 1, (count, *self.kpt_shape)).astype(np.float32)
        if self.kpt_shape[1] == 3:
            kpts[..., 2] = 2.0  # visible
        return {
            "boxes": np.concatenate([centre, side], axis=1).astype(np.float32),
            "cls": rng.integers(0, self.nc, (count, 1)).astype(np.float32),
            "angle": rng.uniform(-np.pi / 4, np.pi / 4, (count, 1)).astype(np.float32),
            "kpts": kpts,
        }

    def _semantic_masks(self, overlap: np.ndarray, cls: np.ndarray) -> np.ndarray:
        """``Format``'s ``sem_masks``: the class of the object each pixel's overlap index names, 0 where none."""
        semantic = np.zeros(overlap.shape, dtype=np.float32)
        start = 0
        for image, count in enumerate(self.counts):
            classes = np.concatenate([[0.0], cls[start : start + count, 0]]).astype(np.float32)
            semantic[image] = classes[overlap[image]]
            start += count
        return semantic

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
