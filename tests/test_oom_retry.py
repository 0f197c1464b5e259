"""After an out-of-memory error in a first-epoch step, Ultralytics from 8.4.13 halves the batch and goes on
(``BaseTrainer._do_train``: up to 3 times, one GPU only). The estimate of a run that does not fit follows
it: each halved batch is judged on the card exactly as its own estimate judges it."""

from __future__ import annotations

import pytest

from yolomem.allocator.replay import OomPoint
from yolomem.result.estimate import estimate
from yolomem.result.oom_retry import RETRIED_PHASES, RetriedBatch, follow_retries

SMALL = {"imgsz": 160, "gpu_mem": 1.2}  # yolov8n: batch 32 runs on this card, 65 runs out in its step


def _retries() -> int:
    from yolomem.loops.ultralytics.release import release

    return release().oom_retries


def test_a_run_that_runs_out_in_its_step_goes_on_at_the_halved_batch():
    if not _retries():
        pytest.skip("this release has no out-of-memory retry (before 8.4.13)")
    over = estimate("yolov8n.yaml", batch=65, **SMALL)
    assert over.oom is not None and over.oom.phase in RETRIED_PHASES
    at = estimate("yolov8n.yaml", batch=32, **SMALL)  # max(65 // 2, 1), as the trainer halves
    assert at.oom is None
    retry = over.oom_retry
    assert [tried.batch for tried in retry.batches] == [32] and retry.trains_at == 32
    assert retry.batches[0].peak_reserved_upper_bytes == at.peak_reserved_upper_bytes
    assert retry.batches[0].fits == at.fits
    assert any("so the run trains at batch 32, not 65" in note for note in over.notes)
    assert over.to_json()["oom_retry"]["trains_at"] == 32


def test_no_retry_where_the_trainer_has_none():
    over_ddp = estimate("yolov8n.yaml", batch=130, world_size=2, **SMALL)  # 65 per rank: RANK != -1 raises
    assert over_ddp.oom is not None and over_ddp.oom_retry is None
    if not _retries():
        assert estimate("yolov8n.yaml", batch=65, **SMALL).oom_retry is None


def _judge_up_to(largest_that_runs: int, phase: str = "backward"):
    def judge(batch: int) -> tuple[RetriedBatch, bool]:
        oom = None if batch <= largest_that_runs else OomPoint(0, phase, 0, 1, 1, 1, 1, 1, "simulated CUDA OOM")
        return RetriedBatch(batch, batch, batch, True, oom), oom is not None and phase in RETRIED_PHASES
    return judge


def test_the_batch_is_halved_as_the_trainer_halves_it():
    assert follow_retries(40, 3, "t", _judge_up_to(10)).trains_at == 10  # 20 runs out, 10 goes on
    gives_up = follow_retries(100, 3, "t", _judge_up_to(10))  # 50, 25, 12: three retries, all out
    assert [tried.batch for tried in gives_up.batches] == [50, 25, 12] and gives_up.trains_at is None
    assert gives_up.summary().endswith("the error then stops the run")
    assert follow_retries(1, 3, "t", _judge_up_to(0)).batches == ()  # nothing to halve
    in_validation = follow_retries(40, 3, "t", _judge_up_to(10, phase="val_forward"))
    assert [tried.batch for tried in in_validation.batches] == [20] and in_validation.trains_at is None


def test_the_note_names_the_accumulation_only_where_it_changes():
    """BaseTrainer: ``accumulate = max(round(nbs / batch), 1)``: 128 and 64 both step every batch; 40 and 20
    step every 2 and 3 batches."""
    same = follow_retries(128, 3, "t", _judge_up_to(64)).note(128, 64)
    assert same.endswith("so the run trains at batch 64, not 128") and "optimizer" not in same
    changed = follow_retries(40, 3, "t", _judge_up_to(20)).note(40, 64)
    assert changed.endswith("steps the optimizer every 3 batches instead of 2 (nbs=64)")
