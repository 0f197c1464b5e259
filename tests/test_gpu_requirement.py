"""Issue 11, item 1: ``gpu=`` never changes the requirement shown.

The headline, the breakdown and ``peak_reserved_bytes`` are the full requirement, replayed without a
capacity; where a run on the card would run out of memory is extra information, under ``oom``."""

from __future__ import annotations

import json

from yolomem.cli.main import main
from yolomem.config.gpus import CUDA_CONTEXT_BYTES
from yolomem.result.estimate import estimate

GiB = 1 << 30
MiB = 1 << 20
SMALL = {"imgsz": 64, "batch": 2, "iterations": 1}
# a card that gives the allocator 20 MiB after the CUDA context: yolov8n at 64 x 2 needs ~80 MiB
TOO_SMALL_GIB = (CUDA_CONTEXT_BYTES + 20 * MiB) / GiB


def test_a_card_too_small_keeps_the_full_requirement_and_says_where_it_runs_out():
    free = estimate("yolov8n.yaml", **SMALL)
    carded = estimate("yolov8n.yaml", gpu_mem=TOO_SMALL_GIB, **SMALL)
    assert carded.fits is False
    for key in ("peak_reserved_bytes", "peak_allocated_bytes", "device_total_bytes", "breakdown", "top_layers",
                "reserved_per_iteration", "peak_phase", "gpu_mem_printed"):  # fmt: skip
        assert getattr(carded, key) == getattr(free, key), key
    assert carded.peak_reserved_bytes > 60 * MiB  # not the 20 MiB at which the card gives out
    oom = carded.oom
    assert oom is not None and oom.phase and oom.iteration == 0
    assert abs(oom.capacity_bytes - 20 * MiB) < MiB and oom.reserved_bytes <= oom.capacity_bytes
    assert free.oom is None and free.fits is None


def test_whole_epochs_on_a_card_too_small_are_not_cut_at_the_oom():
    carded = estimate("yolov8n.yaml", gpu_mem=TOO_SMALL_GIB, epochs=2, instances=3, **SMALL)
    assert carded.fits is False and carded.oom is not None
    assert carded.peak_reserved_bytes > 60 * MiB and carded.steady_reserved_bytes > 60 * MiB


def test_json_has_the_oom_under_its_own_key(capsys):
    assert main(["estimate", "yolov8n.yaml", "imgsz=64", "batch=2", "iterations=1", f"gpu_mem={TOO_SMALL_GIB}", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["fits"] is False and payload["peak_reserved_bytes"] > 60 * MiB
    assert {"phase", "iteration", "requested_bytes", "reserved_bytes", "capacity_bytes", "message"} <= payload["oom"].keys()
    assert payload["margin"] == 0.1 and payload["capacity_bytes"] < 20 * MiB


def test_a_huge_request_on_a_real_card_is_the_full_requirement():
    """The issue's example: batch=100000 imgsz=1280 gpu=H100 showed 0.562G, the point of the OOM."""
    huge = estimate("yolov8n.yaml", batch=100000, imgsz=1280, iterations=1, gpu="H100")
    assert huge.fits is False and huge.oom is not None
    assert huge.peak_reserved_bytes > 1000 * GiB


def test_the_text_output_names_where_the_run_runs_out_as_the_json_does(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one line per row
    assert main(["estimate", "yolov8n.yaml", "imgsz=64", "batch=2", "iterations=1", f"gpu_mem={TOO_SMALL_GIB}", "--json"]) == 0
    oom = json.loads(capsys.readouterr().out)["oom"]
    assert main(["estimate", "yolov8n.yaml", "imgsz=64", "batch=2", "iterations=1", f"gpu_mem={TOO_SMALL_GIB}"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "runs out of memory in" in line)
    assert row.split("│")[2].strip() == f"{oom['phase']} of iteration {oom['iteration']}"
