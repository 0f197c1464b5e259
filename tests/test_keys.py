"""The one ``key=value`` parser: typed keys, a table per command, --help from the tables, flags per command,
and the one JSON form of ``EstimateConfig``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from yolomem.cli.main import main
from yolomem.config.keys import ESTIMATE_KEYS, parse_words
from yolomem.config.settings import EstimateConfig
from yolomem.errors import UserError


def test_each_key_parses_to_its_type():
    parsed = parse_words(
        ["yolov8n.yaml", "batch=8", "amp=true", "freeze=3", "multi_scale=0.5", "checkpoint=true", "optimizer=adamw",
         "cache=true", "nc=none", "freeze=[1,2]"], ESTIMATE_KEYS,
    )  # fmt: skip
    assert parsed.positionals == ("yolov8n.yaml",)
    assert parsed.values == {"batch": 8, "amp": "fp16", "multi_scale": 0.5, "checkpoint": True, "optimizer": "AdamW",
                             "cache": "ram", "nc": None, "freeze": (1, 2)}  # fmt: skip  (the last freeze wins)


@pytest.mark.parametrize(
    ("word", "message"),
    [
        ("batch=16.5", "batch=16.5 must be a whole number"),
        ("batch=-10", "batch=-10 must be a positive whole number"),
        ("batch=10000000", "batch=10000000 must be a positive whole number up to 1000000 (a million images"),  # not 1e+07
        ("nc=0", "nc=0 must be a positive whole number"),
        ("gpu_mem=nan", "finite"),
        ("gpu_mem=inf", "finite"),
        ("instances=1e9", "instances=1e+09 must be"),
        ("multi_scale=1", "< 1"),
        ("checkpoint=maybe", "true or false"),
        ("workers=-1", "workers=-1"),
    ],
)
def test_bad_values_are_refused_by_their_key(word, message):
    with pytest.raises(UserError, match=message.replace("+", r"\+").replace("(", r"\(")):
        EstimateConfig.from_words(["yolov8n.yaml", word])


def test_batch_minus_ten_is_not_called_autobatch():
    with pytest.raises(UserError) as error:
        EstimateConfig.from_words(["batch=-10"])
    assert "AutoBatch" not in str(error.value)


def test_the_python_api_and_the_cli_refuse_the_same_values():
    for bad in ({"nc": 0}, {"gpu_mem": float("nan")}, {"instances": 1e9}, {"batch": 16.5}, {"alloc_conf": "garbage"}):
        with pytest.raises(UserError):
            EstimateConfig.from_mapping({"model": "yolov8n.yaml", **bad})
        with pytest.raises(UserError):
            EstimateConfig(**bad)


def test_a_positional_model_and_model_key_must_agree():
    with pytest.raises(UserError, match="two models"):
        EstimateConfig.from_words(["yolov8n.yaml", "model=yolov8s.yaml"])
    assert EstimateConfig.from_words(["yolov8s.yaml", "model=yolov8s.yaml"]).model == "yolov8s.yaml"
    assert EstimateConfig.from_words(["model=yolov8s.yaml"]).model == "yolov8s.yaml"


def test_config_json_round_trip_and_extra_keys_become_a_note():
    config = EstimateConfig.from_words(["yolov8s.yaml", "batch=8", "freeze=3", "amp=false", "gpu=T4", "cache=ram"])
    data = config.to_json()
    assert data["freeze"] == [0, 1, 2] and data["amp"] == "fp32"
    assert EstimateConfig.from_json(data) == config
    assert EstimateConfig.from_json(data | {"task": "detect"}).notes == ()  # an estimate's config names its task
    odd = EstimateConfig.from_json(data | {"lr0": 0.01})
    assert odd == config and "lr0" in odd.notes[0] and "ignored" in odd.notes[0]


def test_every_field_has_a_key():
    # what the user left out, and batch=-1 (the batch key's AutoBatch request): not keys of their own
    fields = set(EstimateConfig.__dataclass_fields__) - {"notes", "left_to_trainer", "autobatch"}
    assert fields <= set(ESTIMATE_KEYS.names)
    assert all(ESTIMATE_KEYS.default(name) == getattr(EstimateConfig(), name) for name in fields)


@pytest.mark.parametrize(
    ("command", "keys"),
    [
        ("estimate", ["batch=int", "imgsz=int", "amp=fp16|fp32|bf16", "instances=float", "gpu_mem=float"]),
        ("fit", ["margin=float", "solve=batch|imgsz", "batch=int"]),
        ("pick", ["family=text", "models=a,b,...", "task=detect|"]),
        ("table", ["gpus=a,b,...", "method=breakdown|two-point", "jobs=int"]),
        ("plot", ["batches=int,int,...", "kind=curve|breakdown|timeline", "gpu=a,b,..."]),
        ("report", ["margin=float", "batches=int,int,..."]),
        ("measure", ["results=text", "augment=exact|ultralytics", "timeout=float"]),
    ],
)
def test_help_lists_each_key_with_type_default_and_help(command, keys, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    for key in keys:
        assert key in out, key
    if command == "estimate":
        assert "images per step" in out and "[default: 16]" in out  # batch's help and default


@pytest.mark.parametrize(
    "argv",
    [["estimate", "--csv"], ["estimate", "yolov8n.yaml", "--markdown"], ["plot", "--json"], ["validate", "-o", "x"],
     ["models", "--csv"], ["fit", "--output", "x.png"]],
)
def test_a_flag_exists_only_where_it_means_something(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no option" in err and "Traceback" not in err


def test_a_key_of_another_command_says_which(capsys):
    assert main(["estimate", "yolov8n.yaml", "batches=2,4"]) == 2
    err = capsys.readouterr().err
    assert "batches= is a key of yolomem plot" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "argv, hint",
    [(["table", "models=yolov8n,yolo11n"], "table takes its models as words: yolomem table yolov8n yolo11n"),
     (["estimate", "models=yolov8n,yolov8s"], "estimate takes its model as a word: yolomem estimate yolov8n")],
)
def test_models_as_a_key_where_the_command_takes_words_shows_the_line(argv, hint, capsys):
    """pick and site take ``models=``; the commands that take models as words say so, with the user's names."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert hint in err and err.count("\n") == 1


def test_help_imports_neither_torch_nor_ultralytics():
    code = ("import sys; from yolomem.cli.main import main\n"
            "for argv in (['--help'], ['estimate', '--help'], ['fit', '--help'], ['table', '--help'], ['measure', '--help'], ['site', '--help']):\n"
            "    assert main(argv) == 0\n"
            "assert 'torch' not in sys.modules and 'ultralytics' not in sys.modules, 'heavy import'")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_python_api_ignores_ultralytics_keys_as_the_cli_does():
    config = EstimateConfig.from_mapping({"model": "yolov8n.yaml", "freeze": 3, "lr0": 0.01, "amp": False})
    assert config.freeze == (0, 1, 2) and config.amp == "fp32"
    assert config.notes == ("lr0=0.01 does not change GPU memory; ignored",)
    with pytest.raises(UserError, match="did you mean 'batch'"):
        EstimateConfig.from_mapping({"bacth": 8})


def test_keys_that_can_only_lower_memory_are_not_called_without_effect():
    """rect=True trains smaller, rectangular batches: 'does not change GPU memory' was untrue; the figure
    is the square batch's, an upper one for it (the same from the CLI's words and the Python API)."""
    from yolomem.config.keys import ESTIMATE_KEYS, parse_words
    from yolomem.config.settings import _ultralytics_keys

    words = parse_words(["rect=True", "fraction=0.5", "lr0=0.01"], ESTIMATE_KEYS, ignored=_ultralytics_keys)
    api = EstimateConfig.from_mapping({"rect": True, "fraction": 0.5, "lr0": 0.01}).notes
    for notes in (words.notes, api):
        assert "at most the square batch's memory" in notes[0] and "no denser batch" in notes[1]
        assert notes[2] == "lr0=0.01 does not change GPU memory; ignored"
    # only the values that lower it: val=False validates after the final epoch alone (BaseTrainer._do_train)
    notes = EstimateConfig.from_mapping({"val": False, "rect": False, "fraction": 1.0}).notes
    assert "validation only after the final epoch" in notes[0]
    assert notes[1:] == ("rect=False does not change GPU memory; ignored", "fraction=1.0 does not change GPU memory; ignored")
    assert EstimateConfig.from_words(["val=True"]).notes == ("val=True does not change GPU memory; ignored",)


def test_a_key_given_twice_keeps_the_last_and_says_so():
    twice = EstimateConfig.from_words(["yolov8n.yaml", "batch=16", "batch=32"])
    assert twice.batch == 32 and "batch= given twice (16, then 32): the last counts, as in Ultralytics" in twice.notes
    same = EstimateConfig.from_words(["yolov8n.yaml", "batch=16", "batch=16"])
    assert same.batch == 16 and not any("twice" in note for note in same.notes)
