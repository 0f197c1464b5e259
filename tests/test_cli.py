"""The command line: bad input gets one line and exit code 2; JSON keys are stable."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from yolomem.cli.main import main
from yolomem.config.settings import EstimateConfig
from yolomem.errors import UserError

JSON_KEYS = {
    "yolomem_version", "torch_version", "ultralytics_version", "config", "params",
    "peak_allocated_bytes", "peak_reserved_bytes", "steady_reserved_bytes", "context_bytes",
    "device_total_bytes", "breakdown", "top_layers", "unaccounted", "seconds",
}  # fmt: skip


@pytest.mark.parametrize(
    ("words", "fragment"),
    [
        (["yolov8q.yaml"], "did you mean"),
        (["yolo99n.yaml"], "in the installed ultralytics"),  # names come with releases: say which one looked
        (["yolov8n.yaml", "batch16"], "missing '=' sign"),
        (["yolov8n.yaml", "batch="], "malformed argument"),
        (["yolov8n.yaml", "batch=0"], "batch=0"),
        (["yolov8n.yaml", "batch=-4"], "batch"),
        (["yolov8n.yaml", "batch=sixteen"], "batch='sixteen' is not a number"),
        (["yolov8n.yaml", "imgsz=640,480"], "Ultralytics trains at the larger: imgsz=640"),
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


def test_a_pasted_line_may_carry_the_shells_environment_in_front(capsys):
    """``CUDA_VISIBLE_DEVICES=0 PYTORCH_CUDA_ALLOC_CONF=... yolo train ...``: the allocator's setting is
    alloc_conf, the others are noted and ignored; a lower-case key=value stays a key."""
    words = ["CUDA_VISIBLE_DEVICES=0", "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True", "yolo", "train",
             "model=yolov8n.yaml", "imgsz=64", "batch=2", "iterations=1"]  # fmt: skip
    assert main([*words, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["config"]["alloc_conf"] == "expandable_segments:True"
    assert "CUDA_VISIBLE_DEVICES=0: the shell's environment, not a training setting; ignored" in payload["notes"]
    assert main(["yolov8n.yaml", "cuda_visible_devices=0"]) == 2
    assert "unknown key 'cuda_visible_devices'" in capsys.readouterr().err


def test_human_output_shows_gpu_mem_and_nvidia_smi(capsys):
    assert main(["estimate", "yolov8n.yaml", "imgsz=64", "batch=2", "iterations=1"]) == 0
    out = capsys.readouterr().out
    assert "GPU_mem" in out and "nvidia-smi" in out and "GiB" in out
    assert "PYTORCH_CUDA_ALLOC_CONF" not in out


def test_human_output_names_the_allocator_setting_it_replays(capsys):
    assert main(["estimate", "yolov8n.yaml", "imgsz=64", "batch=2", "iterations=1", "alloc_conf=expandable_segments:True"]) == 0
    assert "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True" in "".join(capsys.readouterr().out.split())


# --- issue 11: the rough edges ----------------------------------------------------------------------

TINY_RUN = ["imgsz=64", "batch=2", "iterations=1"]


def test_json_stdout_is_only_json_on_a_fresh_machine(tmp_path):
    """First run: Ultralytics creates its settings file and prints a banner; it must not reach stdout."""
    env = {**os.environ, "YOLO_CONFIG_DIR": str(tmp_path / "fresh"), "YOLO_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "yolomem", "estimate", "yolov8n.yaml", *TINY_RUN, "--json"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "fresh").exists()  # the banner's run did happen: Ultralytics wrote its settings here
    assert json.loads(result.stdout)["config"]["batch"] == 2  # the whole of stdout is one JSON document


def _yaml(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


BAD_YAMLS = {
    "malformed.yaml": ("nc: 80\nbackbone: [[-1, 1, Conv, [64, 3, 2]]\n  - bad: [\n", "cannot read model YAML"),
    "unknown_module.yaml": ("nc: 80\nbackbone:\n  - [-1, 1, Cnov, [64, 3, 2]]\nhead:\n  - [[-1], 1, Detect, [nc]]\n",
                            "did you mean 'Conv'"),
    "no_backbone.yaml": ("nc: 80\nhead:\n  - [-1, 1, Conv, [64, 3, 2]]\n", "no 'backbone'"),
}


@pytest.mark.parametrize(
    ("words", "fragment"),
    [
        (["gpu_mem=nan"], "gpu_mem=nan"),
        (["gpu_mem=inf"], "gpu_mem=inf"),
        (["alloc_conf=garbage"], "unknown key 'garbage'"),
        (["accumulate=4"], "gradient accumulation is nbs="),  # not "did you mean 'translate'?"
        (["freeze=1000"], "freezes every layer"),
        (["nc=-5"], "nc=-5"),
        (["nc=0"], "nc=0"),
        (["instances=1e9"], "instances="),
        (["batch=16.5"], "must be a whole number"),
        (["batch=-10"], "positive whole number"),
        *[([name], fragment) for name, (_, fragment) in BAD_YAMLS.items()],
    ],
)
def test_bad_input_is_one_line_not_a_traceback(words, fragment, tmp_path, capsys):
    words = [_yaml(tmp_path, w, BAD_YAMLS[w][0]) if w in BAD_YAMLS else w for w in words]
    if not words[0].endswith(".yaml"):
        words = ["yolov8n.yaml", *words]
    assert main(["estimate", *words, *TINY_RUN]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("yolomem: error:"), err
    assert fragment in err


def test_instances_is_bounded_and_memory_grows_with_it():
    """instances=1e9 drew 1.6e10 boxes (23 GB of RSS); now the bound refuses it before anything is drawn,
    and up to the bound more objects never mean less memory."""
    from yolomem.config.keys import MAX_INSTANCES
    from yolomem.result.estimate import estimate

    with pytest.raises(UserError, match="instances"):
        estimate("yolov8n.yaml", instances=1e9)
    with pytest.raises(UserError, match="instances"):
        estimate("yolov8n.yaml", instances=MAX_INSTANCES * 10)
    # imgsz 320: the assigner's (batch, objects, anchors) tensors are a visible share of the peak
    peaks = [estimate("yolov8n.yaml", imgsz=320, batch=2, iterations=1, instances=n).peak_allocated_bytes
             for n in (0, 100, MAX_INSTANCES)]  # fmt: skip
    assert peaks == sorted(peaks) and peaks[-1] > peaks[0]


def test_without_a_command_the_words_are_an_estimate(capsys):
    assert main(["yolov8n.yaml", *TINY_RUN, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["batch"] == 2


def test_options_may_stand_between_words(capsys):
    assert main(["estimate", "yolov8n.yaml", "--json", "batch=2", "imgsz=64", "iterations=1"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert (payload["config"]["batch"], payload["config"]["imgsz"]) == (2, 64)


def test_options_may_stand_before_the_command(capsys):
    assert main(["--json", "-v", "estimate", "yolov8n.yaml", "batch=2", "imgsz=64", "iterations=1"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["batch"] == 2


@pytest.mark.parametrize(
    ("words", "fragment"),
    [
        (["yolov8n.yaml", "model=yolov8s.yaml"], "two models"),
        (["batch=-1"], "AutoBatch"),
        (["batch=0.5"], "AutoBatch"),
    ],
)
def test_argument_edges(words, fragment, capsys):
    assert main(["estimate", *words]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1


def test_a_command_typo_is_named(capsys):
    assert main(["estimat", "yolov8n.yaml"]) == 2
    assert "did you mean 'estimate'" in capsys.readouterr().err


def test_the_estimate_carries_its_typed_config():
    from yolomem.result.estimate import estimate

    result = estimate("yolov8n.yaml", imgsz=70, batch=2, iterations=1)
    assert isinstance(result.config, EstimateConfig)
    assert (result.config.model, result.config.imgsz) == ("yolov8n", 96)  # resolved: name, imgsz on the stride
    payload = result.to_json()["config"]
    assert list(payload) == [*result.config.to_json(), "task"] and payload["task"] == "detect"
    assert EstimateConfig.from_json(payload) == result.config


def test_a_reader_that_leaves_early_gets_no_traceback():
    """``yolomem cache | head -0``: the pipe closes before yolomem writes. A shell's 141 (128 + SIGPIPE),
    nothing on stderr, instead of Python's BrokenPipeError traceback. (Every command's output goes through
    the one handler, ``cli.main``; ``cache`` is the quickest to start, where ``models`` builds ~40 models
    on a fresh machine.)"""
    process = subprocess.Popen([sys.executable, "-m", "yolomem", "cache"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # before the first line arrives
    err = process.stderr.read().decode()
    assert process.wait() == 141 and "Traceback" not in err, err


def test_a_run_torch_would_refuse_to_train_is_one_line_not_a_traceback(capsys):
    """yolov8n at imgsz 32, batch 1: the last stage is 1 x 1, so a BatchNorm layer gets one value per channel,
    which torch refuses in training (on the GPU as here). It was a ValueError traceback."""
    assert main(["estimate", "yolov8n.yaml", "imgsz=32", "batch=1", "iterations=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("yolomem: error: imgsz=32 with one image per GPU cannot train"), err
    assert "torch.Size([1, 256, 1, 1])" in err
