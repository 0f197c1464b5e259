"""Where estimates get their traced runs (yolomem.result.runs): the cache, derived streams, new traces."""

from __future__ import annotations

import logging

import pytest

import yolomem.loops
from yolomem.config.settings import EstimateConfig
from yolomem.result import runs
from yolomem.sweeps import prefetch
from yolomem.result.estimate import estimate
from yolomem.trace.store import TraceStore

SMALL = {"imgsz": 64, "iterations": 1}


@pytest.fixture
def source(tmp_path, monkeypatch):
    """A run source on a temporary cache folder, and a count of the traces it makes."""
    previous = runs._SOURCE
    runs._SOURCE = runs.RunSource(TraceStore(tmp_path))
    traced = []
    real_trace_run = yolomem.loops.trace_run

    def counting(config, resolved, **kwargs):
        traced.append(config.batch)
        return real_trace_run(config, resolved, **kwargs)

    monkeypatch.setattr(yolomem.loops, "trace_run", counting)
    yield runs._SOURCE, traced
    runs._SOURCE = previous


def _same(a, b) -> bool:
    left, right = a.to_json(), b.to_json()
    left.pop("seconds"), right.pop("seconds")
    return left == right


def test_a_repeated_estimate_is_read_from_the_cache(source, tmp_path):
    _, traced = source
    first = estimate("yolov8n.yaml", batch=2, **SMALL)
    again = estimate("yolov8n.yaml", batch=2, **SMALL)
    runs._SOURCE = runs.RunSource(TraceStore(tmp_path))  # a new process: only the disk is left
    third = estimate("yolov8n.yaml", batch=2, **SMALL)
    assert traced == [2]
    assert _same(first, again) and _same(first, third)


def test_a_run_is_derived_once_two_batches_are_traced_and_equals_its_trace(source, caplog):
    _, traced = source
    for batch in (2, 3):
        estimate("yolov8n.yaml", batch=batch, **SMALL)
    with caplog.at_level(logging.INFO, logger="yolomem.runs"):
        derived = estimate("yolov8n.yaml", batch=7, **SMALL)
    assert traced == [2, 3]
    assert "derived from traced batches 2, 3" in caplog.text
    runs._SOURCE = runs.RunSource(TraceStore(None, enabled=False), derive=False)
    assert _same(derived, estimate("yolov8n.yaml", batch=7, **SMALL))
    assert traced == [2, 3, 7]


def test_a_ddp_ranks_run_is_the_one_gpu_family_at_its_share_and_equals_its_trace(source, caplog):
    """world_size=2 at batch 14: the one-GPU run at batch 7, derived from batches 2 and 3, with DDP's blocks
    where the trainer wraps the model. The same estimate, figures and notes, as tracing the rank itself."""
    _, traced = source
    for batch in (2, 3):
        estimate("yolov8n.yaml", batch=batch, **SMALL)
    with caplog.at_level(logging.INFO, logger="yolomem.runs"):
        rank = estimate("yolov8n.yaml", batch=14, world_size=2, **SMALL)
    assert traced == [2, 3]
    assert "batch=7 imgsz=64: derived from traced batches 2, 3" in caplog.text
    assert "batch=14 imgsz=64: the one-GPU run at batch 7, plus DDP's state" in caplog.text
    runs._SOURCE = runs.RunSource(TraceStore(None, enabled=False), derive=False)
    assert _same(rank, estimate("yolov8n.yaml", batch=14, world_size=2, **SMALL))
    assert traced == [2, 3, 14]
    assert rank.notes[-1].startswith("world_size=2: per-rank batch 7")


def test_settings_that_change_the_trace_are_other_families(source):
    _, traced = source
    for batch in (2, 3):
        estimate("yolov8n.yaml", batch=batch, **SMALL)
    estimate("yolov8n.yaml", batch=4, amp=False, **SMALL)
    estimate("yolov8n.yaml", batch=4, imgsz=96, iterations=1)
    estimate("yolov8n.yaml", batch=4, gpu="T4", alloc_conf="expandable_segments:True", **SMALL)  # replay only
    assert traced == [2, 3, 4, 4]


def test_a_family_that_does_not_derive_is_traced_and_says_why(source, caplog, monkeypatch):
    _, traced = source

    def refuse(found):
        raise runs.NotDerivable("event 7 differs")

    monkeypatch.setattr(runs, "derive_family", refuse)
    for batch in (2, 3, 5):
        estimate("yolov8n.yaml", batch=batch, **SMALL)
    with caplog.at_level(logging.INFO, logger="yolomem.runs"):
        estimate("yolov8n.yaml", batch=7, **SMALL)
    assert traced == [2, 3, 5, 7]
    assert "batch=7 imgsz=64: not from batches 2, 3, 5 (event 7 differs); not from batches 3, 5 (event 7 differs); tracing it" in caplog.text


def test_runs_that_step_the_optimizer_differently_stay_apart(source):
    """At batch 1 Ultralytics' warmup accumulates two iterations: the second does not step."""
    _, traced = source
    for batch in (2, 3, 5):
        estimate("yolov8n.yaml", batch=batch, imgsz=64)
    estimate("yolov8n.yaml", batch=1, imgsz=64)
    assert traced == [2, 3, 5, 1]


def test_no_cache_writes_nothing(tmp_path, source):
    runs._SOURCE = runs.RunSource(TraceStore(tmp_path / "off", enabled=False))
    estimate("yolov8n.yaml", batch=2, **SMALL)
    assert not (tmp_path / "off").exists()


def test_watchers_hear_what_is_traced(source):
    heard = []
    with runs.watching(heard.append):
        estimate("yolov8n.yaml", batch=2, **SMALL)
    assert heard == ["tracing yolov8n.yaml batch=2 imgsz=64"]


def test_prefetch_traces_side_by_side_and_hands_the_runs_back(source, monkeypatch):
    from yolomem import workers

    _, traced = source
    # the worker's answer is what is checked: this process, done with a long before the worker has
    # imported, would otherwise take b back (yolomem.workers.side_by_side)
    monkeypatch.setattr(workers._Claims, "take_back", lambda self, slot: False)
    a, b = (EstimateConfig(model="yolov8n.yaml", batch=n, **SMALL) for n in (2, 3))
    prefetch.prefetch([a, b, a], jobs=2)  # this process takes a, a worker process b (a twice is once)
    assert traced == [2]
    estimate("yolov8n.yaml", batch=3, **SMALL)
    assert traced == [2]  # b came back from the worker
    prefetch.prefetch([a, b], jobs=2)  # both known now: no worker is started, nothing traced
    assert traced == [2]


def test_a_workers_verdict_comes_back_with_its_runs_and_is_not_replayed_here(monkeypatch):
    """``fit``'s prefetch (``Prober.prefetch``): a worker's estimate for whole epochs replays its
    epochs four times (seconds); its verdict figures come back with its runs, with the cache off too."""
    from yolomem import workers
    from yolomem.result import estimate as estimate_module
    from yolomem.sweeps import fit
    from yolomem.trace import store

    monkeypatch.setattr(runs, "_SOURCE", runs._SOURCE)  # both put back after the test
    monkeypatch.setattr(store, "_ACTIVE", store._ACTIVE)
    runs.configure(cache=False)
    monkeypatch.setattr(workers._Claims, "take_back", lambda self, slot: False)  # b stays the worker's
    a, b = (EstimateConfig(model="yolov8n.yaml", batch=n, **SMALL) for n in (2, 3))
    a = a.with_changes(notes=("epochs not given: judged over the run the trainer trains by default",))
    prefetch.prefetch([a, b], jobs=2, judge=fit.verdict_figures, remember=fit.remember_verdict)
    # a's figures, found here, are what its estimate is made from: with the notes it was asked with (fit's
    # answer, prefetched as the line's prediction, printed without judged_run's note)
    assert estimate_module.estimate_figures(a).config.notes == a.notes
    estimate_module.forget_recent_figures()

    def not_again(_config):
        raise AssertionError("estimated again")

    with monkeypatch.context() as patched:
        patched.setattr(fit, "estimate_figures", not_again)
        handed_back = fit.verdict_figures(b)
        with pytest.raises(AssertionError, match="estimated again"):
            fit.verdict_figures(a)  # this process's own: found here, not handed over (and forgotten above)
    whole = estimate(b)
    assert handed_back == (whole.config.imgsz, whole.peak_reserved_upper_bytes)


def test_the_runs_handed_to_another_process_derive_there_without_a_trace(source):
    """``RunSource.stored_runs``: what a worker adopts (``fit --explain``'s shared searches, no cache)."""
    first, traced = source
    for batch in (2, 3):
        estimate("yolov8n.yaml", batch=batch, **SMALL)
    elsewhere = runs.RunSource(TraceStore(None, enabled=False))
    elsewhere.adopt(first.stored_runs())
    assert elsewhere.known(EstimateConfig(model="yolov8n.yaml", batch=7, **SMALL))  # derives: nothing to trace
    assert traced == [2, 3]


def test_figures_asked_for_again_are_kept(source):
    """A sweep asks again for a config it probed before: its figures are kept (the last
    ``RECENT_FIGURES``) and replayed no more; an estimate from them equals a fresh one."""
    from yolomem.allocator import replay as replay_module
    from yolomem.result.estimate import estimate_config, estimate_figures, forget_recent_figures

    config = EstimateConfig.from_mapping({"model": "yolov8n.yaml", "batch": 2, "cache": "ram", **SMALL})  # cache: a note
    first = estimate_figures(config)
    passes = []
    original = replay_module.replay
    replay_module.replay = lambda *a, **k: passes.append(1) or original(*a, **k)
    try:
        again = estimate_figures(config)
    finally:
        replay_module.replay = original
    assert passes == [] and again.upper == first.upper and again.seconds == 0.0
    estimate_config(config)
    kept = estimate_config(config)  # finished twice from the same figures: no note twice
    forget_recent_figures()
    assert _same(kept, estimate_config(config))


def test_the_nearest_three_traced_batches_are_tried_before_two():
    """A block repeated per image needs three traced batches; the nearest three may make a family where
    all five (a far one on the other side of a real-tensor cap) do not."""
    assert runs._candidates([4, 16, 46, 47], 49) == [(4, 16, 46, 47), (16, 46, 47), (46, 47)]
    assert runs._candidates([8, 16], 30) == [(8, 16)]
    assert runs._candidates([8], 30) == []


def test_traced_batches_across_the_fixed_real_cap_are_not_tried_together():
    """Above batch 256 the tracer's real-tensor cap stops growing (256 MiB), so runs on either side lie on
    no one line of caps and never make a family. ``fit yolov8n-seg.yaml gpu=H200`` traced batches 4 and 16,
    then 725, 703, 659 and 571; batch 648 was tried from sets that held 16 and failed, then traced."""
    assert runs._candidates([4, 16, 571, 659, 703, 725], 648) == [(571, 659, 703, 725), (659, 703, 725), (659, 703)]
    assert runs._candidates([4, 16, 725], 703) == []  # one run on its side: trace
    assert runs._candidates([4, 16, 256, 725], 100) == [(4, 16, 256), (4, 16)]  # 256 MiB at 256: still a share
