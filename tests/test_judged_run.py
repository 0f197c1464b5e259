"""Which run a verdict judges (``yolomem.result.fits.judged_run``): epoch 1 where the trainer empties its
cache after an epoch of a run that fills the card, the trainer's whole default run where it keeps it."""

from __future__ import annotations

import pytest

from yolomem.config.gpus import find_gpu
from yolomem.config.settings import EstimateConfig
from yolomem.loops.base import CacheClears
from yolomem.result.fits import Budget, cache_kept_between_epochs, judged_run

T4 = Budget(find_gpu("T4"))
TINY = {"imgsz": 64, "batch": 2, "iterations": 1}


@pytest.mark.parametrize(("model", "script"), [("yolov5n", "train.py"), ("yolov5n-seg", "segment/train.py"),
                                               ("yolov5n-cls", "classify/train.py")])  # fmt: skip
def test_the_yolov5_repos_default_run_is_its_scripts_own(model, script, monkeypatch):
    """Outside truth: each script's own argument parser, given no --epochs."""
    from yolov5_reference import repo_parse_opt

    from yolomem.loops import get_loop, resolve_model

    resolved = resolve_model(model, "yolov5")
    epochs, source = get_loop("yolov5").default_epochs(resolved)
    assert epochs == repo_parse_opt(script, [], monkeypatch).epochs and script in source


def test_the_yolov5_repo_is_judged_over_its_default_run_on_every_card():
    """train.py never empties the cache: epoch 2+ starts on what validation reserved, on any card."""
    config = EstimateConfig(model="yolov5n", **TINY)
    for card in ("T4", "A100-80GB", "RTX-3060-12GB"):
        judged = judged_run(config, Budget(find_gpu(card)))
        assert judged.epochs == 100 and "epochs not given" in judged.notes[-1] and card in judged.notes[-1]
    assert judged_run(config.with_changes(epochs=1), T4).epochs == 1  # asked: epoch 1 alone
    assert judged_run(config.with_changes(epochs=30), T4).epochs == 30
    # DDP runs of the repo simulate no epochs (TrainingLoop.epochs_supported): nothing to judge them over
    assert judged_run(config.with_changes(world_size=2), T4).epochs is None


@pytest.mark.parametrize(("clears", "margin", "whole"), [
    (CacheClears(after_epoch=0.0), 0.10, False),  # 8.0.59 - 8.3.86: emptied after every epoch
    (CacheClears(after_epoch=0.5), 0.10, False),  # 8.3.109 -: a run near the card's edge is above half of it
    (CacheClears(after_epoch=0.9), 0.10, True),  # 8.3.87 - 8.3.108: a run that fits with the margin stays below 90 %
    (CacheClears(after_epoch=0.9), 0.0, False),  # without a margin, the card's edge is above 90 %
    (CacheClears(), 0.10, True),  # 8.0.35 - 8.0.58: never emptied between epochs
    (None, 0.10, True),  # unknown: assumed kept, the higher figure
])  # fmt: skip
def test_an_ultralytics_run_is_judged_whole_where_its_release_keeps_the_cache(clears, margin, whole, monkeypatch):
    from ultralytics.cfg import DEFAULT_CFG_DICT

    from yolomem.loops.ultralytics.loop import UltralyticsLoop

    monkeypatch.setattr(UltralyticsLoop, "cache_clears", lambda self: clears)
    config = EstimateConfig(model="yolov8n.yaml", **TINY)
    judged = judged_run(config, Budget(find_gpu("T4"), margin))
    assert judged.epochs == (DEFAULT_CFG_DICT["epochs"] if whole else None)
    assert judged_run(config.with_changes(data="some.yaml"), T4).epochs is None  # data= simulates epochs itself


def test_the_installed_ultralytics_empties_its_cache_at_a_fitting_runs_size():
    """The installed release (8.4) empties the cache after an epoch above half the card: epoch 1 is judged."""
    assert cache_kept_between_epochs(EstimateConfig(model="yolov8n.yaml", **TINY), T4) is None


def test_fit_judges_the_yolov5_repos_whole_run_and_estimate_says_its_verdict_is_epoch_1s():
    """The verdict fit and pick give a yolov5 repo run is the upper figure of its whole default run, which
    validation's leftover cache puts above epoch 1's; estimate's own verdict says it judges epoch 1."""
    from yolomem.result.estimate import estimate_config
    from yolomem.sweeps.fit import Prober, verdict_figures

    config = EstimateConfig(model="yolov5n", imgsz=128, batch=4, iterations=1, gpu="T4")
    prober = Prober(T4)
    estimate, probe = prober.run(config)
    assert estimate.epochs is not None and any(n.startswith("epochs not given") for n in estimate.notes)
    whole = verdict_figures(config.with_changes(epochs=100))[1]
    assert probe.peak_reserved_bytes == whole == estimate.peak_reserved_upper_bytes
    assert whole > verdict_figures(config)[1]  # epoch 1's
    alone = estimate_config(config)
    assert alone.fits_scope == "epoch 1" and alone.epochs is None
    assert any("the verdict judges epoch 1 alone" in note for note in alone.notes)
