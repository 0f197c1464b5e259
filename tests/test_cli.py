"""The command line: bad input gets one line and exit code 2; JSON keys are stable."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from yolomem.cli.main import main

JSON_KEYS = {
    "yolomem_version", "torch_version", "ultralytics_version", "config", "params",
    "peak_allocated_bytes", "peak_reserved_bytes", "steady_reserved_bytes", "context_bytes",
    "device_total_bytes", "breakdown", "top_layers", "unaccounted", "seconds",
}  # fmt: skip


@pytest.mark.parametrize(
    ("words", "fragment"),
    [
        (["yolov8q.yaml"], "did you mean"),
        (["yolov8n.yaml", "batch16"], "missing '=' sign"),
        (["yolov8n.yaml", "batch="], "malformed argument"),
        (["yolov8n.yaml", "batch=0"], "batch=0"),
        (["yolov8n.yaml", "batch=-4"], "batch"),
        (["yolov8n.yaml", "batch=sixteen"], "batch='sixteen' is not a number"),
        (["yolov8n.yaml", "imgsz=-640"], "imgsz=-640"),
        (["yolov8n.yaml", "optimizer=adamm"], "did you mean 'Adam'"),
        (["/tmp/definitely-missing.pt"], "does not exist"),
        (["yolov8n.yaml", "amp=maybe"], "amp='maybe'"),
        (["yolov8n.yaml", "gpu=RTX-3091"], "did you mean"),
        (["yolov8n.yaml", "bacth=16"], "did you mean 'batch'"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(words, fragment, capsys):
    assert main(["estimate", *words]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    assert fragment in err


def test_bad_input_from_a_shell_has_no_traceback():
    """The installed console script, as a user runs it."""
    result = subprocess.run(
        [sys.executable, "-m", "yolomem", "estimate", "yolov8n.yaml", "batch=-1"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_json_output_has_the_stable_keys(capsys):
    assert main(["estimate", "yolov8n.yaml", "imgsz=64", "batch=2", "iterations=1", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert JSON_KEYS <= set(payload)
    assert payload["steady_reserved_bytes"] is None or payload["steady_reserved_bytes"] >= payload["peak_reserved_bytes"] * 0.5
    assert payload["device_total_bytes"] == payload["peak_reserved_bytes"] + payload["context_bytes"]
    assert payload["peak_reserved_bytes"] >= payload["peak_allocated_bytes"] > 0
    assert sum(payload["breakdown"].values()) == payload["device_total_bytes"]
    assert payload["config"]["model"] == "yolov8n"


def test_imgsz_is_rounded_up_to_the_stride_and_says_so(capsys):
    assert main(["estimate", "yolov8n.yaml", "imgsz=70", "batch=2", "iterations=1", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["config"]["imgsz"] == 96
    assert any("rounded up to 96" in note for note in payload["notes"])


def test_pasted_yolo_train_line_works(capsys):
    words = "yolo detect train model=yolov8n.pt data=coco8.yaml epochs=3 imgsz=64 batch=2 lr0=0.01 patience=5".split()
    assert main(["estimate", *words, "iterations=1", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    notes = " ".join(payload["notes"])
    assert "yolov8n.pt is not on disk" in notes
    assert "data=coco8.yaml is not a local file" in notes
    assert "lr0=0.01 does not change GPU memory" in notes
    assert payload["config"]["batch"] == 2
    # epochs=3 means validation runs between epochs: the epoch-2+ figure is simulated
    assert payload["steady_reserved_bytes"] is not None


def test_human_output_shows_gpu_mem_and_nvidia_smi(capsys):
    assert main(["estimate", "yolov8n.yaml", "imgsz=64", "batch=2", "iterations=1"]) == 0
    out = capsys.readouterr().out
    assert "GPU_mem" in out and "nvidia-smi" in out and "GiB" in out
