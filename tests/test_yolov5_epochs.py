"""Epochs for the yolov5 repo's loop: training levels, val.py after each epoch, training again."""

from __future__ import annotations

import warnings

import pytest
import torch

from yolomem.result.estimate import estimate

TINY = dict(model="yolov5n", framework="yolov5", imgsz=64, batch=2, iterations=1, epochs=2, instances=3, seed=3)


@pytest.fixture(scope="module")
def tiny():
    warnings.filterwarnings("ignore")
    return estimate(**TINY)


def test_epochs_are_simulated(tiny):
    sim = tiny.epochs
    assert sim is not None and tiny.steady_reserved_bytes is not None
    assert tiny.steady_reserved_bytes == sim.steady_reserved.median
    assert tiny.epoch1_reserved_bytes == sim.epoch1_reserved.median
    # val.py at 2x batch (fp16, NMS) leaves blocks the cache keeps: epoch 2+ is at least epoch 1
    assert tiny.steady_reserved_bytes >= tiny.epoch1_reserved_bytes
    assert sim.peak_reserved.median >= sim.steady_reserved.median
    assert sim.peak_phase
    assert tiny.to_json()["epochs"]["val_shapes"] == [[4, 96, 96]]  # 2 x batch; 64 -> ceil(2 + 0.5) * 32
    assert not sim.emptied_cache  # train.py never empties the cache
    assert not any("not part of these training iterations" in note for note in tiny.notes)
    phases = {e.phase for e in tiny.trace.events}
    assert {"val_model_half", "val_forward", "val_nms", "val_metrics", "val_model_float", "checkpoint"} <= phases
    # val.py is one template over the pass's batches (its locals carry from batch to batch), and
    # train.py's loop variables are carried from iteration to iteration and through validation
    assert sim.plan.whole_val_pass
    assert any("stay alive until the next iteration" in a for a in sim.assumptions)


def test_model_half_frees_the_fp32_ema_and_float_restores_it(tiny):
    """val.run: model.half() replaces the EMA's fp32 tensors (freed), model.float() makes fp32 ones again."""
    events = tiny.trace.events
    start = next(i for i, e in enumerate(events) if e.phase == "val_model_half")
    forward = next(i for i, e in enumerate(events) if e.phase == "val_forward")
    fp32_ema = {e.storage_id for e in events[:start] if e.op == "alloc" and e.category == "ema" and e.dtype == "float32"}
    freed = {e.storage_id for e in events[start:forward] if e.op == "free"}  # a free carries its alloc's phase
    half_allocs = [e for e in events if e.phase == "val_model_half" and e.op == "alloc"]
    assert half_allocs and {e.dtype for e in half_allocs} == {"float16"}
    assert fp32_ema and fp32_ema <= freed
    float_allocs = [e for e in events if e.phase == "val_model_float" and e.op == "alloc"]
    # model.float() also converts Detect's grids, which the first val forward made in fp16 (BaseModel._apply):
    # grid and anchor_grid, (1, 3 anchors, ny, nx, 2) fp32 each, for the 96 x 96 val batch's three levels
    grids = 2 * sum(3 * (96 // stride) ** 2 * 2 * 4 for stride in (8, 16, 32))
    assert sum(e.nbytes for e in float_allocs) == 2 * sum(e.nbytes for e in half_allocs) + grids


def test_same_seed_same_figures(tiny):
    warnings.filterwarnings("ignore")
    again = estimate(**TINY)
    assert again.epochs.to_json() == tiny.epochs.to_json()


def test_nms_keeps_one_box_per_class_and_cluster():
    """yolov5 v7.0 steps: obj x cls scores, multi-label pairs above conf, class-offset NMS."""
    from yolomem.loops.yolov5.val_pass import non_max_suppression

    pred = torch.zeros(1, 3, 5 + 2)  # (B, anchors, xywh + obj + 2 classes)
    pred[0, :, :4] = torch.tensor([[50.0, 50, 20, 20], [51, 50, 20, 20], [200, 200, 10, 10]])
    pred[0, :, 4] = torch.tensor([0.9, 0.8, 0.0005])  # the third box fails conf=0.001 on objectness
    pred[0, :, 5:] = torch.tensor([[0.9, 0.5], [0.8, 0.0], [1.0, 1.0]])
    (out,) = non_max_suppression(pred, conf_thres=0.001, iou_thres=0.6)
    # box 0 in both classes (0.81, 0.45); box 1's class 0 pair is suppressed by box 0's
    assert out.shape == (2, 6) and out.dtype == torch.float32
    assert sorted(out[:, 5].tolist()) == [0.0, 1.0]
    assert out[:, 4].tolist() == pytest.approx([0.81, 0.45])


def test_segmentation_epochs_have_a_steady_figure():
    """yolov5s-seg with epochs=2 gave no steady figure: epochs were simulated for detection only."""
    warnings.filterwarnings("ignore")
    seg = estimate(**{**TINY, "model": "yolov5n-seg"})
    assert seg.epochs is not None and seg.steady_reserved_bytes is not None
    assert seg.steady_reserved_bytes >= seg.epoch1_reserved_bytes
    metrics = [e for e in seg.trace.events if e.phase == "val_metrics" and e.op == "alloc"]
    # segment/val.py's process_mask: (300 detections, 24, 24) fp32 masks per image of the 96 x 96 batch
    assert max(e.nbytes for e in metrics) >= 300 * 24 * 24 * 4
