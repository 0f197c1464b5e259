"""``yolomem fit`` / ``pick``: answers confirmed by the allocator simulation, and clear errors."""

from __future__ import annotations

import math

import pytest

from yolomem.cli.main import main
from yolomem.result.estimate import estimate
from yolomem.sweeps.fit import Probe, _LINEAR, _search, largest_batch
from yolomem.sweeps.pick import pick_models

GiB = 1 << 30
MiB = 1 << 20
# a custom card whose allocator gets ~84 MiB after the 500 MiB context: yolov8n at imgsz 160 (batch 2:
# 76 MiB reserved, batch 8: 92 MiB) fits a handful of images
TINY_GPU_GIB = 584 / 1024
TINY = {"imgsz": 160, "iterations": 1}


def test_largest_batch_fits_and_one_more_does_not():
    result = largest_batch("yolov8n.yaml", gpu_mem=TINY_GPU_GIB, margin=0, bracket=(2, 8), **TINY)
    n = result.max_batch
    assert 2 <= n < 8
    assert result.estimate_at_max.fits is True  # the one "fits", with the search's margin
    over = estimate("yolov8n.yaml", batch=n + 1, gpu_mem=TINY_GPU_GIB, margin=0, **TINY)  # traced afresh
    assert over.fits is False
    assert len(result.probes) <= 6  # the line brackets it; only the last steps are searched
    assert result.accumulate == max(round(64 / n), 1)
    assert f"batch={n} " in result.yolo_train_command and "imgsz=160" in result.yolo_train_command
    payload = result.to_json()
    assert {"gpu", "gpu_total_bytes", "max_batch", "estimate_at_max", "yolo_train_command"} <= payload.keys()
    assert payload["estimate_at_max"]["config"]["batch"] == n


def test_margin_shrinks_the_capacity_the_simulation_gets():
    from yolomem.config.gpus import find_gpu
    from yolomem.result.fits import Budget

    card = find_gpu("RTX-3090")
    assert Budget(card, 0.0).capacity_bytes == 24 * GiB - card.context_bytes
    assert Budget(card, 0.25).capacity_bytes == pytest.approx(0.75 * (24 * GiB - card.context_bytes), abs=1)


@pytest.mark.parametrize("capacity_mib", [130, 377, 1000, 5000])
def test_search_on_a_staircase_finds_the_exact_edge_with_few_probes(capacity_mib):
    """Memory rounded up to 20 MiB steps, as large-pool segments are: the answer must still be exact."""
    calls = []

    def reserved(batch: int) -> int:
        return math.ceil((70 + 7.3 * batch) / 20) * 20 * MiB

    def probe(batch: int) -> Probe:
        calls.append(batch)
        return Probe(batch, 640, reserved(batch), reserved(batch) <= capacity_mib * MiB, 0.0)

    answer, predicted, at_cap = _search(probe, _LINEAR, 2, 16, 1024, capacity_mib * MiB)
    truth = max(b for b in range(1, 1025) if reserved(b) <= capacity_mib * MiB)
    assert answer == truth and not at_cap
    assert len(set(calls)) <= 10  # two for the line, then stepping and bisecting near its answer


def test_search_reports_nothing_when_one_does_not_fit():
    probe = lambda batch: Probe(batch, 640, 10 * GiB, False, 0.0)  # noqa: E731
    assert _search(probe, _LINEAR, 2, 16, 1024, GiB)[0] is None


def test_cli_bad_gpu_name_is_one_line_with_suggestions(capsys):
    assert main(["fit", "yolov8n.yaml", "gpu=RTX-3091"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'RTX-3090'" in err


def test_a_card_no_bigger_than_the_cuda_context_is_refused(capsys):
    assert main(["fit", "yolov8n.yaml", "gpu_mem=0.3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "gpu_mem=0.3" in err and "CUDA context" in err


def test_cli_nothing_fits_is_one_line(capsys):
    assert main(["fit", "yolov8n.yaml", "gpu_mem=0.5", "imgsz=64", "iterations=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not fit" in err and "batch 1" in err


def test_pick_ranks_by_size_with_headroom():
    result = pick_models(gpu_mem=TINY_GPU_GIB, imgsz=64, batch=2, models=("yolov8s.yaml", "yolov8n.yaml"), margin=0, iterations=1)
    assert [row.model for row in result.rows] == ["yolov8n", "yolov8s"]
    small, large = result.rows
    assert small.params < large.params
    assert small.fits and not large.fits  # yolov8s: 11 M params x (weights, grads, 2 AdamW states, EMA) > 84 MiB
    assert small.headroom_bytes == result.capacity_bytes - small.peak_reserved_bytes > 0 > large.headroom_bytes
    assert result.best is small


def test_line_prediction_is_the_same_whichever_point_comes_first():
    from yolomem.sweeps.fit import line_prediction

    assert line_prediction(8, 110, 4, 78, 100) == line_prediction(4, 78, 8, 110, 100) == pytest.approx(6.75)
    assert line_prediction(4, 90, 8, 90, 100) is None  # flat memory: no line to solve
