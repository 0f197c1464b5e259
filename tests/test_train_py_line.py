"""A pasted yolov5 repo line (``python train.py --img 640 --batch 16 ...``) is read as the script reads it.

Outside truth: the repo's own ``parse_opt`` (the ``yolov5`` package, train.py, segment/train.py and
classify/train.py) on the same words. Beside it: ``fit``'s train.py lines read back into the config they
came from, and the CLI's answer to a pasted line is the estimate of the words it was read as.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from yolov5_reference import repo_parse_opt

from yolomem.cli.main import main
from yolomem.cli.train_py import check_not_inference, read_train_py_line
from yolomem.config.settings import EstimateConfig, parse_estimate_words

LINES = [
    "python train.py --img 640 --batch 16 --epochs 3 --data coco128.yaml --weights yolov5s.pt",  # the repo's README
    "python train.py --data coco.yaml --epochs 300 --weights '' --cfg yolov5n.yaml --batch-size 128",
    "python train.py --weights yolov5m.pt --imgsz 1280 --batch 4 --freeze 10 --optimizer AdamW --cache --single-cls",
    "python train.py --cfg models/yolov5l.yaml --weights '' --img-size 512 --freeze 0 1 2 --multi-scale --workers 4 "
    "--seed 3 --cache disk --rect --noval --project runs/x --name y --cos-lr",
    "python -m torch.distributed.run --nproc_per_node 2 train.py --batch 64 --data coco.yaml --weights yolov5s.pt "
    "--device 0,1",
    "python segment/train.py --data coco128-seg.yaml --weights yolov5s-seg.pt --img 640 --batch 8",
    "python classify/train.py --model yolov5s-cls.pt --data cifar100 --epochs 5 --img 224 --batch 128 --optimizer SGD",
    "CUDA_VISIBLE_DEVICES=2,3 OMP_NUM_THREADS=4 torchrun --nproc_per_node=2 train.py --weights yolov5s.pt --device 0,1",
]


def _config(words: list[str]) -> EstimateConfig:
    return EstimateConfig.from_parsed(parse_estimate_words(words))


@pytest.mark.parametrize("line", LINES)
def test_a_pasted_line_is_read_as_the_repos_own_parser_reads_it(line, monkeypatch):
    words = shlex.split(line)
    script_at = next(i for i, word in enumerate(words) if word.endswith("train.py"))
    opt = repo_parse_opt(words[script_at], words[script_at + 1:], monkeypatch)
    config = _config(read_train_py_line(words).words)
    classify = words[script_at] == "classify/train.py"
    model = opt.model if classify else (opt.cfg or opt.weights)
    assert config.model == model and config.framework == "yolov5"
    assert (config.imgsz, config.batch) == (opt.imgsz, opt.batch_size)
    given = set(words)
    if "--epochs" in given:
        assert config.epochs == opt.epochs
    if "--data" in given:
        assert config.data == str(opt.data)
    if "--optimizer" in given:
        assert config.optimizer == opt.optimizer
    if not classify:
        frozen = opt.freeze if len(opt.freeze) > 1 else list(range(opt.freeze[0]))  # train.py's own rule
        assert config.freeze == tuple(frozen)
        assert config.single_cls == opt.single_cls and (config.multi_scale > 0) == opt.multi_scale
    assert config.cache == {True: "ram"}.get(opt.cache, opt.cache)  # --cache alone: its const, ram
    if "--workers" in given:
        assert (config.workers, config.seed) == (opt.workers, opt.seed)
    launched = "torch.distributed.run" in given or "torchrun" in given
    assert config.world_size == (len(opt.device.split(",")) if launched else 1)


@pytest.mark.parametrize("changes", [
    {},
    {"optimizer": "AdamW", "freeze": tuple(range(10))},
    {"world_size": 2, "batch": 32, "freeze": (0, 2, 5), "alloc_conf": "expandable_segments:True"},
    {"model": "yolov5s-seg", "single_cls": True},
    {"model": "yolov5s-cls", "optimizer": "RMSProp"},
    {"model": "yolov5s.pt", "epochs": 3},
], ids=["default", "adamw-freeze10", "ddp-freeze-list-allocator", "segment", "classify", "checkpoint-epochs"])  # fmt: skip
def test_fits_train_py_lines_read_back_into_their_config(changes):
    """``fit`` prints the repo's line for the answer (``yolomem.sweeps.fit.train_command``); pasted back, it
    is the config it was written for."""
    from yolomem.sweeps.fit import train_command

    config = EstimateConfig.from_mapping({"model": "yolov5s", "batch": 16, "imgsz": 512, **changes})
    words = shlex.split(train_command(config).partition("  #")[0])
    read = _config(read_train_py_line(words).words)
    for key in ("imgsz", "batch", "optimizer", "freeze", "single_cls", "world_size", "alloc_conf", "epochs"):
        assert getattr(read, key) == getattr(config, key), key
    assert read.model.removesuffix(".yaml").removesuffix(".pt") == config.model.removesuffix(".pt")
    if config.model.endswith(".pt"):  # a checkpoint is fine-tuned from --weights, not rebuilt from --cfg
        assert words[words.index("--weights") + 1] == config.model and "--cfg" not in words


def test_the_cli_estimates_a_pasted_line_as_the_words_it_says(capsys):
    line = ("CUDA_VISIBLE_DEVICES=0 python train.py --img 128 --batch 4 --weights yolov5n.pt --project runs/x "
            "--hyp data/hyps/hyp.scratch-high.yaml")
    assert main(["margin=0.2", *shlex.split(line), "--json"]) == 0  # yolomem's own words may stand beside it
    captured = capsys.readouterr()
    pasted = json.loads(captured.out)
    said = [text for text in captured.err.splitlines() if "read as: yolomem estimate " in text]
    assert len(said) == 1 and "ignored (no effect on GPU memory): CUDA_VISIBLE_DEVICES=0 --project" in captured.err
    assert "--hyp: its hyperparameters file is not read" in captured.err
    words = said[0].split("read as: yolomem estimate ")[1].split()
    assert main([*words, "--json"]) == 0
    native = json.loads(capsys.readouterr().out)
    assert pasted["config"] == native["config"] and pasted["config"]["framework"] == "yolov5"
    assert pasted["config"]["margin"] == 0.2 and pasted["config"]["imgsz"] == 128
    assert pasted["peak_reserved_bytes"] == native["peak_reserved_bytes"] > 0


@pytest.mark.parametrize(("line", "fragment"), [
    ("python train.py --batch 16 --device 0,1", "DataParallel, which yolomem does not model"),
    ("python train.py --batchsize 16", "did you mean '--batch-size'"),
    ("python train.py --weights '' --cfg ''", "builds no model"),
    ("python train.py --optimizer Adamw", "invalid choice: 'Adamw'"),
    ("torchrun --nproc_per_node two train.py", "give the number of GPUs"),
    # train.py's main(): `assert not opt.image_weights` and `assert not opt.evolve` when LOCAL_RANK != -1
    ("torchrun --nproc_per_node 2 train.py --batch 16 --image-weights", "'--image-weights is not compatible with YOLOv5"),
    ("torchrun --nproc_per_node 2 train.py --batch 16 --evolve", "'--evolve is not compatible with YOLOv5"),
])  # fmt: skip
def test_a_line_the_script_would_stop_on_is_one_line(line, fragment, capsys):
    assert main(shlex.split(line)) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1


def test_classify_train_py_cuts_a_detection_model_into_its_classifier(capsys):
    """classify/train.py given a detection model (``--model yolov5s.pt``) builds
    ``ClassificationModel(model=DetectionModel, nc, cutoff=10)``: its parameters, counted by the repo's classes."""
    from yolov5_reference import yolov5_or_reason

    line = "python classify/train.py --model yolov5s.pt --img 64 --batch 4 --json"
    assert main(shlex.split(line)) == 0
    captured = capsys.readouterr()
    assert "read as: yolomem estimate yolov5s-cls framework=yolov5" in captured.err
    assert "--model yolov5s.pt: a detection model, which classify/train.py cuts into a classifier" in captured.err
    params = json.loads(captured.out)["params"]
    package, reason = yolov5_or_reason()
    if package is None:
        pytest.skip(reason)
    from yolov5.models.yolo import ClassificationModel, DetectionModel

    detection = DetectionModel(str(Path(package.__file__).parent / "models" / "yolov5s.yaml"))
    assert params == sum(p.numel() for p in ClassificationModel(model=detection, nc=1000, cutoff=10).parameters())


def _resumable_run(tmp_path, line: str, monkeypatch, with_options_file: bool):
    """A run folder as train.py leaves one: weights/last.pt (the repo's model, its 'opt') and, beside
    weights/, opt.yaml written by the repo's yaml_save; the options are its parse_opt of ``line``, with the
    hyperparameters dict train() puts in place before saving them."""
    import torch
    from yolov5_reference import hyp_scratch_low

    opt = repo_parse_opt("train.py", shlex.split(line), monkeypatch)
    from yolov5.models.yolo import DetectionModel
    from yolov5.utils.general import yaml_save

    import yolov5

    opt.hyp, opt.data = hyp_scratch_low(), str(tmp_path / "gone" / "coco128.yaml")  # a dataset no longer here
    run = tmp_path / "runs" / "train" / "exp"
    (run / "weights").mkdir(parents=True)
    if with_options_file:
        yaml_save(run / "opt.yaml", vars(opt))
    model = DetectionModel(str(Path(yolov5.__file__).parent / "models" / "yolov5n.yaml"), nc=80)
    torch.save({"epoch": 3, "model": model.half(), "ema": None, "optimizer": None, "opt": vars(opt)}, run / "weights" / "last.pt")
    return opt, run / "weights" / "last.pt"


@pytest.mark.parametrize("with_options_file", [True, False], ids=["opt.yaml", "checkpoint-opt"])
def test_a_resume_line_trains_the_runs_own_options(with_options_file, tmp_path, monkeypatch):
    original = "--img 320 --batch 8 --epochs 5 --weights yolov5n.pt --optimizer AdamW --freeze 3 --single-cls"
    opt, last = _resumable_run(tmp_path, original, monkeypatch, with_options_file)
    read = read_train_py_line(shlex.split(f"python train.py --resume {last} --batch 64 --img 640"))
    config = _config(read.words)
    assert (config.model, config.framework) == (str(last), "yolov5")
    assert (config.imgsz, config.batch, config.epochs, config.optimizer) == (opt.imgsz, opt.batch_size, opt.epochs, opt.optimizer)
    assert config.freeze == tuple(range(opt.freeze[0])) and config.single_cls is opt.single_cls is True
    assert config.data == "coco128.yaml"  # the run's dataset is gone here: Ultralytics' copy of that name stands in
    source = str(last.parent.parent / "opt.yaml") if with_options_file else "last.pt's 'opt'"
    assert f"--resume {last}: the run's own options, from {source}; train.py reads nothing else of the line" in read.readings
    assert "the line's other options are not read by a resume: --batch-size --imgsz" in read.readings
    assert read.ignored == []


def test_a_resume_without_its_checkpoint_is_one_line(capsys):
    assert main(["python", "train.py", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "resumes the newest run under runs/ (get_latest_run); name it" in err and err.count("\n") == 1


@pytest.mark.parametrize("line", ["python detect.py --weights yolov5s.pt --source img.jpg",
                                  "deploy python segment/val.py --weights yolov5s-seg.pt"])  # fmt: skip
def test_the_repos_inference_scripts_are_refused_in_one_line(line, capsys):
    assert main(shlex.split(line)) == 2
    err = capsys.readouterr().err
    assert "the yolov5 repo's inference scripts are not sized" in err and err.count("\n") == 1
    check_not_inference(["yolov8n.yaml", "data=my/val.py"])  # a key's value is not a script: no error


def test_sync_bn_is_not_modelled_under_ddp_and_changes_nothing_on_one_gpu():
    """train.py converts BatchNorm to SyncBatchNorm only with a DDP launcher (``opt.sync_bn and cuda and RANK != -1``)."""
    from yolomem.cli.train_py import read_train_py_line

    ddp = read_train_py_line(shlex.split("torchrun --nproc_per_node 2 train.py --batch 16 --sync-bn"))
    assert [option for option, _ in ddp.not_modelled] == ["sync_bn"] and "--sync-bn" not in ddp.ignored
    one = read_train_py_line(shlex.split("python train.py --batch 16 --sync-bn"))
    assert not one.not_modelled and "--sync-bn" in one.ignored
