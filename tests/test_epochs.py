"""Simulated epochs: planning, rect validation shapes, and the replay of training + validation."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from yolomem.loops.density import Augmentation
from yolomem.result.epochs import plan_epochs, rect_val_shapes, simulate_epochs


def test_rect_shapes_match_ultralytics_set_rectangle():
    from ultralytics.data.base import BaseDataset

    rng = np.random.default_rng(0)
    sizes = [(int(h), int(w)) for h, w in rng.integers(200, 1300, size=(37, 2))]
    stub = SimpleNamespace(
        ni=len(sizes), batch_size=8, labels=[{"shape": s} for s in sizes], im_files=[str(i) for i in range(len(sizes))],
        imgsz=640, stride=32, pad=0.5,
    )  # fmt: skip
    BaseDataset.set_rectangle(stub)
    expected = [tuple(int(x) for x in shape) for shape in stub.batch_shapes]
    assert rect_val_shapes(sizes, 8, 640, 32) == expected


def test_square_images_letterbox_to_imgsz_plus_half_stride_pad():
    assert rect_val_shapes([(640, 640)] * 3, 2, 640, 32) == [(672, 672), (672, 672)]


def test_plan_is_deterministic_and_covers_the_densest_image():
    counts = [1] * 500 + [40]  # one crowded image
    whole_images = [Augmentation(mosaic=0.0, scale=0.0, translate=0.0)] * 3  # no mosaic, no crop: images as labelled
    kwargs = dict(batch=4, val_batch=8, imgsz=640, stride=32, seeds=(0, 1, 2), train_counts=counts,
                  val_sizes=[(480, 640)] * 20 + [(640, 480)] * 4, val_counts=[2] * 24,
                  augmentations=whole_images)  # fmt: skip
    a, b = plan_epochs(**kwargs), plan_epochs(**kwargs)
    assert a == b
    assert max(a.levels) == 40  # the densest image lands in some batch of every epoch
    for seed_sequence in a.sequences:
        for epoch in seed_sequence:
            assert a.levels.index(40) in epoch
    assert a.batches_per_epoch == 126
    # 8 wide, 8 wide, then 4 wide + 4 tall: a mixed batch is square
    assert {(s.height, s.width) for s in a.val_shapes} == {(512, 672), (672, 672)}
    assert a.val_sequence == (0, 0, 1)
    assert plan_epochs(**{**kwargs, "seeds": (5, 6, 7)}).sequences != a.sequences


def test_plan_with_mosaics_packs_more_than_the_densest_image():
    """With Ultralytics' default mosaic, a training sample holds parts of 4 images: the densest sample
    of 3 epochs of COCO-like images (Poisson-lognormal around 7.3) is far above a Poisson batch's 12-13."""
    plan = plan_epochs(batch=16, val_batch=32, imgsz=640, stride=32, seeds=(0, 1, 2), instances=7.3)
    assert max(plan.levels) > 3 * 13
    assert plan.batches_per_epoch == 125  # the density model's default 2000 images


@pytest.fixture(scope="module")
def tiny_epochs():
    from yolomem.result.estimate import estimate

    return estimate("yolov8n.yaml", imgsz=64, batch=2, iterations=1, epochs=2, instances=3)


@pytest.mark.parametrize("model", ["yolov8n-pose.yaml", "yolov8n-seg.yaml", "yolov8n-obb.yaml"])
def test_every_task_validates_with_the_class_count_its_model_has(model):
    """Pose YAMLs have nc=1: validation's NMS was given 80 classes and asked for a (0, -22) tensor
    (issue #12: "a pose run at 800 with epochs=2: negative dimension -22")."""
    from yolomem.result.estimate import estimate

    result = estimate(model, imgsz=64, batch=2, iterations=1, epochs=2, instances=3)
    assert result.epochs is not None and result.steady_reserved_bytes >= result.epoch1_reserved_bytes
    assert any(event.phase == "val_nms" for event in result.trace.events)


def test_rotated_nms_takes_the_fitted_candidates_and_says_what_the_cap_would_cost():
    """obb validation's NMS builds (n, n) float32 matrices (batch_probiou): at NMS's cap of 30000 pairs
    per image the estimate said 23 GiB for a run that printed 2.8 G (issue #12)."""
    from yolomem.loops.val_pass import ROTATED_NMS_CANDIDATES_PER_IMAGE as n
    from yolomem.result.estimate import estimate

    # nc=80: at 96 px (the validation side) dota8's 15 classes give 189 anchors x 15 = 2835 pairs, under n
    result = estimate("yolov8n-obb.yaml", imgsz=64, batch=2, iterations=1, epochs=2, instances=3, nc=80)
    nms = [e.nbytes for e in result.trace.events if e.op == "alloc" and e.phase == "val_nms"]
    assert 4 * n * n in nms  # the IoU matrices
    # the largest, no bigger: fast_nms's ``(ious > iou_threshold).sum(0)`` copies the (n, n) mask to int64
    # first (yolomem.trace.kernel_temporaries)
    assert max(nms) == 8 * n * n
    assert any(f"rotated NMS (its n x n float32 matrices: {4 * n * n / 2**20:.0f} MiB each, 3.4 GiB at NMS's cap "
               f"of 30000; the int64 copy of their mask that its sum makes, twice that) = {n}" in line
               for line in result.unaccounted)  # fmt: skip


def test_epoch_figures_are_ordered(tiny_epochs):
    sim = tiny_epochs.epochs
    assert sim is not None
    assert tiny_epochs.steady_reserved_bytes == sim.steady_reserved.median
    assert tiny_epochs.epoch1_reserved_bytes == sim.epoch1_reserved.median
    # validation (2x batch, NMS) adds blocks the cache keeps: epoch 2+ is at least epoch 1, the peak at least both
    assert sim.steady_reserved.median >= sim.epoch1_reserved.median
    assert sim.peak_reserved.median >= sim.steady_reserved.median
    assert sim.steady_reserved.high >= sim.steady_reserved.median
    assert sim.peak_phase
    assert tiny_epochs.to_json()["epochs"]["val_shapes"] == [[4, 96, 96]]  # 64 -> ceil(2 + 0.5) * 32


def test_the_gpu_mem_column_is_the_highest_epoch_not_validations_peak():
    """With a card whose trainer empties the cache after validation (T4: yolov8s 640/32), the column prints
    epoch 1's and epoch 2+'s reserved memory, never validation's peak: the headline said 8.66G for a run
    whose every printed GPU_mem is about 6.9G (the peak stays in peak_reserved_bytes)."""
    from yolomem.result.estimate import estimate

    # a 1.5 GiB card: epoch 1 reserves 0.63 GiB, past the half at which the trainer empties the cache
    run = estimate("yolov8n.yaml", imgsz=320, batch=16, iterations=1, epochs=2, instances=3, gpu_mem=1.5)
    assert run.epochs.emptied_cache and run.peak_phase.startswith("val")
    column = max(run.epoch1_reserved_bytes, run.steady_reserved_bytes)
    assert run.gpu_mem_printed == f"{column / 2**30:.3g}G" != f"{run.peak_reserved_bytes / 2**30:.3g}G"
    assert run.to_json()["gpu_mem_printed"] == run.gpu_mem_printed


def test_validation_raises_reserved_and_clear_memory_drops_it(tiny_epochs):
    sim = tiny_epochs.epochs
    trace, plan = tiny_epochs.trace, sim.plan
    no_val = plan.__class__(**{**plan.__dict__, "val_sequence": ()})
    without = simulate_epochs(trace, 1, no_val)
    assert sim.steady_reserved.median > without.steady_reserved.median  # validation left bigger blocks cached
    # a card where reserved > 50 %: _clear_memory(0.5) empties the cache before and after validation
    small_card = simulate_epochs(trace, 1, plan, card_bytes=int(sim.epoch1_reserved.median * 1.5))
    assert small_card.emptied_cache and not sim.emptied_cache
    assert small_card.steady_reserved.median <= sim.steady_reserved.median


def test_replay_is_deterministic(tiny_epochs):
    sim = tiny_epochs.epochs
    again = simulate_epochs(tiny_epochs.trace, 1, sim.plan)
    assert again.to_json() == sim.to_json()


def test_cache_clears_follow_the_trainer(tiny_epochs):
    """Up to ultralytics 8.3.86 the cache is emptied after every epoch whatever the card; 8.3.87 on only
    above a share of the card, which an unknown card is assumed not to reach; the yolov5 repo never."""
    from yolomem.loops.base import CacheClears

    trace, plan = tiny_epochs.trace, tiny_epochs.epochs.plan
    never = simulate_epochs(trace, 1, plan, clears=CacheClears())
    always = simulate_epochs(trace, 1, plan, clears=CacheClears(after_epoch=0.0))
    above_90 = simulate_epochs(trace, 1, plan, clears=CacheClears(after_epoch=0.9))
    assert always.emptied_cache and not never.emptied_cache and not above_90.emptied_cache
    # what validation left in the cache is gone when epoch 2 starts
    assert always.steady_reserved.median < never.steady_reserved.median
    assert above_90.to_json() | {"assumptions": None} == never.to_json() | {"assumptions": None}
    assert any("after each epoch: always" in a for a in always.assumptions)
    assert any("card unknown" in a for a in above_90.assumptions)
    unknown = simulate_epochs(trace, 1, plan, clears=None)
    assert not unknown.emptied_cache and any("could not be read" in a for a in unknown.assumptions)


def test_cache_clear_thresholds():
    from yolomem.loops.base import CacheClears

    clears = CacheClears(before_val=0.5, after_epoch=0.0)
    assert clears.empties(0.0, 1, None) and clears.empties(0.0, 1, 100)
    assert not clears.empties(0.5, 60, None)  # the card is unknown: kept
    assert clears.empties(0.5, 60, 100) and not clears.empties(0.5, 50, 100)
    assert not clears.empties(None, 99, 100)


def _carry_trace():
    """setup: weights; iteration 0: activations, then predictions it keeps; iteration 1 (the level
    template): activations, new predictions, then the previous ones freed; iteration 2: validation."""
    from yolomem.trace.tracer import AllocationEvent, Trace

    mb = 1 << 20
    ops = [("alloc", 1, 2 * mb, "setup", 0),
           ("alloc", 2, 8 * mb, "forward", 0), ("free", 2, 8 * mb, "forward", 0), ("alloc", 3, 20 * mb, "forward", 0),
           ("alloc", 4, 8 * mb, "forward", 1), ("alloc", 5, 20 * mb, "forward", 1), ("free", 3, 20 * mb, "forward", 1),
           ("free", 4, 8 * mb, "forward", 1),
           ("alloc", 6, 4 * mb, "val_forward", 2), ("free", 6, 4 * mb, "val_forward", 2)]  # fmt: skip
    events = [AllocationEvent(op, sid, n, "float32", "activation", "", phase, it) for op, sid, n, phase, it in ops]
    return Trace(events=events, oracle_answers=[], iteration_bounds=[1, 4, 8])


def _carry_plan():
    from yolomem.loops.val_pass import ValBatchShape
    from yolomem.result.epochs import EpochPlan

    return EpochPlan(levels=(1,), level_counts=((1,),), sequences=(((0, 0, 0), (0, 0)),),
                     val_shapes=(ValBatchShape(2, 64, 64, (1, 1)),), val_sequence=(0,), batches_per_epoch=3,
                     seeds=(0,), whole_val_pass=True)  # fmt: skip


def test_carried_loop_variables_stay_alive_into_the_next_template():
    """yolov5's train.py: the previous ``pred`` is alive while the next forward runs (20 + 8 + 20 MiB
    with the 2 MiB of weights); without carrying, each template's leftovers die at its end."""
    from yolomem.loops.base import CacheClears

    mb = 1 << 20
    carried = simulate_epochs(_carry_trace(), 1, _carry_plan(), clears=CacheClears(), carry=True)
    dropped = simulate_epochs(_carry_trace(), 1, _carry_plan(), clears=CacheClears(), carry=False)
    assert carried.peak_allocated.median == 50 * mb
    assert dropped.peak_allocated.median == 30 * mb
    assert any("stay alive until the next iteration" in a for a in carried.assumptions)


def _classify_folder(root, classes: int = 3, train_per_class: int = 4, val_per_class: int = 2):
    """train/ and val/ with one folder of tiny PNGs per class, as Ultralytics' classification datasets are."""
    from PIL import Image

    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (40, 30)).save(folder / f"{i}.png")
    return root


def test_classification_validates_square_crops_at_twice_the_batch():
    """ClassificationValidator: classify_transforms center-crops every image to imgsz, and the loader
    takes 2x the training batch; no objects, so one training template and no NMS."""
    from yolomem.result.estimate import estimate

    result = estimate("yolov8n-cls.yaml", imgsz=64, batch=2, iterations=1, epochs=2)
    sim = result.epochs
    assert sim is not None and result.steady_reserved_bytes >= result.epoch1_reserved_bytes
    assert result.to_json()["epochs"]["val_shapes"] == [[4, 64, 64]]
    assert sim.plan.levels == (0,)
    val_pass = result.trace.events[result.trace.iteration_bounds[-1] :]
    first = next(e for e in val_pass if e.op == "alloc")
    assert first.phase == "val_preprocess" and first.nbytes == 4 * 3 * 64 * 64 * 4  # float32 (4, 3, 64, 64) images
    assert not any("NMS" in line for line in result.unaccounted)
    assert not any(line.startswith("validation pass and epochs 2+") for line in result.unaccounted)


def test_a_classification_folder_gives_the_classes_and_the_epoch(tmp_path):
    from yolomem.result.estimate import estimate

    data = _classify_folder(tmp_path / "flowers")
    result = estimate("yolov8n-cls.yaml", imgsz=64, batch=4, iterations=1, data=str(data))
    assert result.config.nc == 3  # the head is built for the folder's classes, not ImageNet's 1000
    assert result.epochs is not None and result.epochs.plan.batches_per_epoch == 3  # 12 train images / 4
    assert any("12 train and 6 val images in 3 classes" in note for note in result.notes)


def test_a_folder_given_to_a_detector_is_refused_in_one_line(tmp_path):
    from yolomem.errors import UserError
    from yolomem.result.estimate import estimate

    data = _classify_folder(tmp_path / "flowers")
    with pytest.raises(UserError, match="is a folder, the dataset of a classification model"):
        estimate("yolov8n.yaml", imgsz=64, batch=2, data=str(data))
    with pytest.raises(UserError, match="has no train/ folder"):
        estimate("yolov8n-cls.yaml", imgsz=64, batch=2, data=str(tmp_path))


def test_epochs_asked_where_they_are_not_simulated_says_so():
    """The yolov5 repo's classifiers have no simulated validation: the output must not tell the user to
    pass the epochs=2 they passed."""
    from yolomem.result.estimate import estimate

    result = estimate("yolov5n-cls.yaml", imgsz=64, batch=2, iterations=1, epochs=2)
    assert result.epochs is None
    line = next(line for line in result.unaccounted if line.startswith("validation pass and epochs 2+"))
    assert "pass data=" not in line and "not simulated for this model and loop" in line
    assert any("not simulated for the yolov5 repo's classifiers" in note for note in result.notes)
