"""Synthetic batches (yolomem.loops.batches): one densest image and identical typical images, so every
data-dependent size is affine in the batch (what yolomem.trace.derive needs)."""

from __future__ import annotations

import torch

from yolomem.loops.batches import DENSEST_OF, SyntheticBatch, densest_count


def test_the_densest_image_does_not_depend_on_the_batch():
    draws = [SyntheticBatch.draw("detect", batch, 640, 8.0, seed=3) for batch in (1, 2, 16, 200)]
    assert len({b.counts[0] for b in draws}) == 1
    assert draws[2].counts == (draws[2].counts[0],) + (8,) * 15
    assert all(b.counts[0] == max(b.counts) for b in draws)


def test_the_densest_image_is_the_most_of_sixteen_draws():
    counts = [densest_count(8.0, seed) for seed in range(200)]
    assert DENSEST_OF == 16 and 12 <= sorted(counts)[100] <= 15  # the median of max(16 x Poisson(8))
    assert densest_count(0.0, 1) == 0


def test_typical_images_hold_the_same_objects():
    data = SyntheticBatch.draw("pose", 4, 640, 3.0, seed=1).as_dict()
    idx = data["batch_idx"]
    boxes = [data["bboxes"][idx == i] for i in range(4)]
    assert torch.equal(boxes[1], boxes[2]) and torch.equal(boxes[2], boxes[3])
    assert len(boxes[1]) == 3 and len(boxes[0]) == densest_count(3.0, 1) > 3
    assert data["keypoints"].shape[0] == len(idx)


def test_targets_grow_by_the_same_amount_with_each_image():
    sizes = [SyntheticBatch.draw("segment", b, 160, 4.5, seed=0).as_dict()["bboxes"].shape[0] for b in (2, 3, 4, 9)]
    assert [b - a for a, b in zip(sizes, sizes[1:])] == [5, 5, 25]  # 4.5 objects: 5 per typical image


def test_overlap_masks_of_a_dense_image_stay_int32():
    """polygons2masks_overlap: an image of more than 255 objects gets an int32 index map (uint8 would wrap)."""
    import torch

    from yolomem.loops.batches import SyntheticBatch

    dense = SyntheticBatch("segment", 2, 128, (300, 3), seed=0).as_dict()["masks"]
    assert dense.dtype == torch.int32 and int(dense.max()) > 255
    assert SyntheticBatch("segment", 2, 128, (30, 3), seed=0).as_dict()["masks"].dtype == torch.uint8
    assert SyntheticBatch("segment", 2, 128, (300, 3), seed=0).as_dict(overlap_mask=False)["masks"].dtype == torch.uint8


def _label_bytes(data: dict) -> int:
    return sum(value.numel() * value.element_size() for key, value in data.items() if key != "img")


def test_host_bytes_counts_the_arrays_as_dict_makes():
    """Each label array exists twice while ``as_dict`` runs: numpy's, and the tensor copied from it."""
    for task in ("detect", "segment", "pose", "obb", "classify"):
        batch = SyntheticBatch.draw(task, 3, 160, 6.0, seed=2)
        for semantic in (False, True):
            assert batch.host_bytes(semantic_masks=semantic) == 2 * _label_bytes(batch.as_dict(semantic_masks=semantic)), task
    dense = SyntheticBatch("segment", 2, 64, (300, 1))  # more than 255 objects: int32 index maps
    assert dense.host_bytes() == 2 * _label_bytes(dense.as_dict())


def test_a_batch_whose_labels_would_fill_the_host_is_refused_before_anything_is_made():
    import pytest

    from yolomem.errors import UserError

    huge = SyntheticBatch("segment", 4, 40000, (29, 8, 8, 8))  # 1.6 GB of float32 semantic masks alone
    with pytest.raises(UserError, match=r"batch=4 at imgsz=40000 .* GiB of host memory .* smaller batch or imgsz"):
        huge.as_dict(semantic_masks=True)
