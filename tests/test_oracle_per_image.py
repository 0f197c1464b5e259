"""Questions about one image's row of a batch tensor get that image's answer, not the whole batch's.

The segmentation loss loops over the images (``for fg_mask_i, ... in zip(fg_mask, ...)``) and asks how
many foreground anchors each has. Answering each with the batch's positives made every image as dense
as the whole batch: yolov8s-seg at 640, batch 16 came out at 16.2 GiB, of which 6.3 GiB were the mask
loss's (n_fg, 160, 160) tensors of 16 images, each sized for the batch's 1640 foreground anchors.
"""

from __future__ import annotations

import torch

from test_trace_matches_real import _Recorder
from yolomem.config.settings import EstimateConfig
from yolomem.loops import resolve_model, trace_run
from yolomem.trace.tracer import DataOracle, Tracer


def test_a_row_of_a_batch_mask_gets_its_images_count():
    oracle = DataOracle()
    oracle.positives, oracle.per_image = 12, (5, 7)
    with Tracer(fake=True, oracle=oracle) as tracer:
        with tracer.fake_mode:  # a fake mask: its values unknown, as the assigner's are
            mask = torch.empty((2, 100), dtype=torch.bool)
        whole = mask.nonzero()
        rows = [row.nonzero() for row in mask]
        column = mask[:, 0].nonzero()  # not a row: the batch's answer, at most its elements
    assert whole.shape == (12, 2)
    assert [tuple(r.shape) for r in rows] == [(5, 1), (7, 1)]
    assert tuple(column.shape) == (2, 1)


def test_each_images_foreground_bounds_what_the_real_assigner_picks():
    """Truth: a real CPU run of the same step, whose assigner picks each image's foreground for real."""
    config = EstimateConfig.from_mapping({"model": "yolov8n-seg.yaml", "imgsz": 128, "batch": 3, "iterations": 1,
                                          "instances": 4})  # fmt: skip
    resolved = resolve_model(config.model)
    torch.manual_seed(0)
    recorder = _Recorder()
    with recorder:
        trace_run(config, resolved, fake=False)
    fake = trace_run(config, resolved, fake=True).trace
    anchors = (128 // 8) ** 2 + (128 // 16) ** 2 + (128 // 32) ** 2
    real = [count for shape, count in recorder.counts if shape == (anchors,)]
    assumed = [int(a.answer) for a in fake.oracle_answers if a.question == f"nonzero(bool[{anchors}])"]
    assert len(real) == len(assumed) > 0
    assert all(r <= a for r, a in zip(real, assumed)), list(zip(real, assumed))
    batch_answers = {int(a.answer) for a in fake.oracle_answers if a.question == f"nonzero(bool[3, {anchors}])"}
    assert max(assumed) < min(batch_answers)  # one image never as dense as the batch
