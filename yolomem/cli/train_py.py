"""A pasted yolov5 repo command line, read as the estimate's words.

``yolomem python train.py --img 640 --batch 16 --data coco128.yaml --weights yolov5s.pt`` is
``yolomem estimate yolov5s framework=yolov5 imgsz=640 batch=16 data=coco128.yaml``. The repo's scripts
(``train.py``, ``segment/train.py``, ``classify/train.py``, v7.0) read argparse options, so this reads
them with a parser of the same options: argparse's prefix matching then takes ``--batch`` for
``--batch-size`` and ``--img`` for ``--imgsz`` exactly where the script does, and an option the script
lacks is refused as it would be. A DDP launcher in front (``python -m torch.distributed.run
--nproc_per_node 2`` or ``torchrun``) sets ``world_size``; a ``PYTORCH_CUDA_ALLOC_CONF=...`` prefix,
``alloc_conf`` (other environment settings there, such as ``CUDA_VISIBLE_DEVICES=0``, are listed as
ignored). What the line names is read as the script reads it: the model is ``--cfg`` when given, else
``--weights`` (``--model`` for classify/train.py); the frozen layers are ``--freeze N`` (layers 0..N-1)
or a list. Options that do not change GPU memory are listed as ignored, and those that could,
which yolomem does not model, are named with what is estimated instead.
``tests/test_train_py_line.py`` checks the reading against the repo's own ``parse_opt``.
"""

from __future__ import annotations

import argparse
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from yolomem.config.keys import ALLOC_CONF_VARIABLE, ENVIRONMENT_WORD
from yolomem.errors import UserError, nearest

SCRIPTS = ("train.py", "segment/train.py", "classify/train.py")  # the model names its task
DDP_LAUNCHERS = ("torch.distributed.run", "torch.distributed.launch", "torchrun")
ALLOC_ENV = f"{ALLOC_CONF_VARIABLE}="
DEFAULT_HYP = "hyp.scratch-low.yaml"  # train.py's --hyp default, whose augmentation the estimate takes
MULTI_SCALE = 0.5  # train.py --multi-scale: sizes imgsz x [0.5, 1.5], as multi_scale=0.5

# what each option, given, does to GPU memory where yolomem does not model it
NOT_MODELLED = {
    "hyp": "its hyperparameters file is not read: the estimate takes hyp.scratch-low's augmentation (mosaic 1.0, "
           "scale 0.5, translate 0.1), which sets how many objects a training sample shows",
    "quad": "the quad dataloader (4 images as one of twice the side) is not modelled; estimated with plain batches",
    "evolve": "each generation of the evolution trains as this run does; one run is estimated",
    "mask_ratio": "masks downsampled by another ratio than 4 are not modelled; estimated at 4",
    "no_overlap": "per-object masks (no overlap) are not modelled; estimated with the overlapping masks of the default",
    "cutoff": "a classifier cut at another layer is not modelled; estimated with the script's default head",
}
DDP_NOT_MODELLED = {  # what an option does under a DDP launcher only
    "sync_bn": "under DDP the model's BatchNorm layers become SyncBatchNorm (train.py), which is not modelled; "
               "estimated with plain BatchNorm",
}
LOWER_ONLY = {  # the estimate's own keys that note what these options do (yolomem.config.keys)
    "rect": "rect=True", "noval": "val=False",
}


@dataclass(frozen=True)
class TrainPyLine:
    """A pasted line, read: the estimate's words, and what was left out (for the user to see)."""

    words: list[str]  # the command's words (the model, then key=value)
    ignored: list[str]  # options without an effect on GPU memory
    not_modelled: list[tuple[str, str]]  # (option, what is estimated instead)
    readings: list[str] = field(default_factory=list)  # how an option was read, where the words alone do not say

    def echo(self, command: str) -> list[str]:
        """What to tell the user: the words the line was read as, and what of it the estimate leaves out."""
        lines = [f"the yolov5 repo's line read as: yolomem {command} {' '.join(self.words)}", *self.readings]
        lines += [f"--{option.replace('_', '-')}: {why}" for option, why in self.not_modelled]
        if self.ignored:
            lines.append(f"ignored (no effect on GPU memory): {' '.join(self.ignored)}")
        return lines


# the repo's scripts that run a trained model: not sized (deploy sizes what Ultralytics runs)
INFERENCE_SCRIPTS = ("detect.py", "val.py", "export.py", "segment/predict.py", "segment/val.py",
                     "classify/predict.py", "classify/val.py", "benchmarks.py")  # fmt: skip


def check_not_inference(words: list[str]) -> None:
    """A pasted ``python detect.py ...`` (val.py, export.py ...) of the repo: one line saying what is sized."""
    for word in words:
        if "=" not in word and _script(word, INFERENCE_SCRIPTS) is not None:
            raise UserError(f"{word}: the yolov5 repo's inference scripts are not sized; 'yolomem deploy' sizes the "
                            "models Ultralytics runs (yolov5su.yaml is its anchor-free YOLOv5), and the repo's "
                            "training lines (python train.py ...) are read by estimate, fit and the others")  # fmt: skip


def script_index(words: list[str]) -> int | None:
    """Where the repo's training script stands in ``words`` (None: not a pasted train.py line)."""
    for index, word in enumerate(words):
        if _script(word) is not None:
            return index
    return None


def _script(word: str, scripts: tuple[str, ...] = SCRIPTS) -> str | None:
    parts = PurePath(word).parts
    for name in sorted(scripts, key=lambda script: -script.count("/")):  # segment/train.py before train.py
        if tuple(parts[-len(PurePath(name).parts):]) == PurePath(name).parts:
            return name
    return None


def read_train_py_line(words: list[str]) -> TrainPyLine:
    """``words`` from a pasted line (``python train.py ...``, with a DDP launcher or an allocator setting
    in front) as the estimate's words."""
    index = script_index(words)
    if index is None:
        raise ValueError("not a train.py line")
    script = _script(words[index])
    # yolomem's own key=value words may stand among the line's (``yolomem fit gpu=T4 python train.py ...``)
    own = [word for word in words if _is_key_value(word)]
    launcher = [word for word in words[:index] if not _is_key_value(word)]
    options = [word for word in words[index + 1:] if not _is_key_value(word)]
    estimate: list[str] = []
    environment = [word for word in launcher if ENVIRONMENT_WORD.match(word) and not word.startswith(ALLOC_ENV)]
    world_size = _launcher_ranks(launcher, estimate)
    opt, unknown = _parser(script).parse_known_args(options)
    if unknown:
        what = f"has no option {unknown[0]!r}" if unknown[0].startswith("-") else f"takes no argument {unknown[0]!r} there"
        raise UserError(f"{script} {what}" + _nearest_option(unknown[0], script) +
                        f" (the repo's {script} stops on it: 'unrecognized arguments')")  # fmt: skip
    readings: list[str] = []
    line_opt = opt
    if getattr(opt, "resume", False):
        opt = _resumed(opt, script, readings)
    model = _model(opt, script, readings)
    estimate += [model, "framework=yolov5"]
    data = opt.data
    if opt is not line_opt and data is not None:  # the resumed run's dataset, as far as this machine has it
        from yolomem.config.dataset import dataset_here

        data, note = dataset_here(str(data))
        readings += [note] if note else []
    for key, value in (("imgsz", opt.imgsz), ("batch", opt.batch_size), ("epochs", opt.epochs), ("data", data),
                       ("optimizer", opt.optimizer), ("workers", opt.workers), ("seed", opt.seed)):  # fmt: skip
        if value is not None:
            estimate.append(f"{key}={value}")
    if opt.cache is not None:
        estimate.append(f"cache={opt.cache}")
    given = vars(opt)
    if given.get("freeze") is not None:
        frozen = given["freeze"]
        estimate.append(f"freeze={frozen[0]}" if len(frozen) == 1 else f"freeze=[{','.join(map(str, frozen))}]")
    if given.get("single_cls"):
        estimate.append("single_cls=true")
    if given.get("multi_scale"):
        estimate.append(f"multi_scale={MULTI_SCALE}")
    estimate += [word for option, word in LOWER_ONLY.items() if given.get(option)]
    devices = [d for d in str(opt.device or "").split(",") if d.strip()]
    if world_size > 1:
        for option in ("image_weights", "evolve"):  # train.py's main() asserts these away under DDP
            if given.get(option):
                flag = f"--{option.replace('_', '-')}"
                raise UserError(f"{flag} with a DDP launcher: {script} stops on it ('{flag} is not compatible with "
                                "YOLOv5 Multi-GPU DDP training')")  # fmt: skip
        estimate.append(f"world_size={world_size}")
    elif len(devices) > 1 and "cpu" not in devices:
        raise UserError(f"--device {opt.device} without a DDP launcher: {script} trains with DataParallel, which yolomem "
                        f"does not model; run it as 'python -m torch.distributed.run --nproc_per_node {len(devices)} "
                        f"{script} ...' (DDP, world_size={len(devices)}), as the repo recommends")  # fmt: skip
    not_modelled = [(option, why) for option, why in NOT_MODELLED.items() if _given(given, option, script)
                    and not (option == "hyp" and PurePath(str(opt.hyp)).name == DEFAULT_HYP)]  # fmt: skip
    if world_size > 1:
        not_modelled += [(option, why) for option, why in DDP_NOT_MODELLED.items() if given.get(option)]
    read = {"weights", "cfg", "model", "imgsz", "batch_size", "epochs", "data", "optimizer", "workers", "seed", "cache",
            "freeze", "single_cls", "multi_scale", "device", "resume", *LOWER_ONLY, *NOT_MODELLED,
            *(DDP_NOT_MODELLED if world_size > 1 else ())}  # fmt: skip
    ignored = [f"--{name.replace('_', '-')}" for name, value in given.items()
               if name not in read and value != _parser(script).get_default(name)]  # fmt: skip
    if opt is not line_opt:  # a resume reads none of the line's other options: said beside the resume
        ignored = []
        unread = [f"--{name.replace('_', '-')}" for name, value in vars(line_opt).items()
                  if name != "resume" and value != _parser(script).get_default(name)]  # fmt: skip
        readings += [f"the line's other options are not read by a resume: {' '.join(unread)}"] if unread else []
    return TrainPyLine([*estimate, *own], [*environment, *ignored], not_modelled, readings)


def _is_key_value(word: str) -> bool:
    """A yolomem ``key=value`` word (not ``--option=value``, nor a shell's environment setting such as
    ``CUDA_VISIBLE_DEVICES=0,1``: the allocator's is read, the others ignored)."""
    return "=" in word and not word.startswith("-") and not ENVIRONMENT_WORD.match(word)


def _launcher_ranks(launcher: list[str], estimate: list[str]) -> int:
    """The DDP ranks a launcher in front of the script starts (1: none); an allocator setting there
    becomes ``alloc_conf``."""
    ranks, ddp = 1, False
    for position, word in enumerate(launcher):
        if word.startswith(ALLOC_ENV):
            estimate.append(f"alloc_conf={word[len(ALLOC_ENV):]}")
        elif word in DDP_LAUNCHERS or PurePath(word).name == "torchrun":
            ddp = True
        elif word.startswith(("--nproc_per_node", "--nproc-per-node")):
            value = word.partition("=")[2] or (launcher[position + 1] if position + 1 < len(launcher) else "")
            if not value.isdigit():
                raise UserError(f"{word} {value}: give the number of GPUs, e.g. --nproc_per_node 2")
            ranks = int(value)
    return ranks if ddp else 1


def _model(opt: argparse.Namespace, script: str, readings: list[str]) -> str:
    """The model the script builds: classify/train.py's ``--model``; else ``--cfg`` when given (the
    weights then only initialise it), else ``--weights``."""
    model = opt.model if script == "classify/train.py" else (opt.cfg or opt.weights)
    if not model:
        raise UserError(f"{script} --cfg '' --weights '': the script builds no model; give --cfg yolov5s.yaml or --weights yolov5s.pt")
    return _classifier(str(model), readings) if script == "classify/train.py" else str(model)


def _resumed(opt: argparse.Namespace, script: str, readings: list[str]) -> argparse.Namespace:
    """train.py's resume branch (v7.0 ``main``): the run's options from ``opt.yaml`` two folders above the
    checkpoint (else the checkpoint's own ``opt``), the model from the checkpoint (``--cfg ''``), and nothing
    else of the line."""
    if opt.resume is True:
        raise UserError(f"{script} --resume without a checkpoint resumes the newest run under runs/ "
                        "(get_latest_run); name it: --resume runs/train/exp/weights/last.pt")  # fmt: skip
    last = Path(str(opt.resume))
    if not last.is_file():
        raise UserError(f"{script} --resume {last}: no such checkpoint")
    options_file = last.parent.parent / "opt.yaml"
    if options_file.is_file():
        import yaml

        saved, source = yaml.safe_load(options_file.read_text(errors="ignore")), str(options_file)
    else:
        from yolomem.config.checkpoint_file import read_checkpoint

        saved, source = read_checkpoint(last).contents.get("opt"), f"{last.name}'s 'opt'"
    if not isinstance(saved, dict):
        raise UserError(f"{script} --resume {last}: neither {options_file} nor the checkpoint holds the run's options")
    defaults = vars(_parser(script).parse_args([]))
    resumed = argparse.Namespace(**{**defaults, **{key: saved[key] for key in defaults if key in saved}})
    resumed.cfg, resumed.weights, resumed.resume = "", str(last), True
    readings.append(f"--resume {last}: the run's own options, from {source}; {script} reads nothing else of the line")
    return resumed


def _classifier(model: str, readings: list[str]) -> str:
    """classify/train.py's model: a detection model it is given (``attempt_load``) it cuts into a classifier
    (``ClassificationModel(model=..., cutoff=10)``, after warning "pass YOLOv5 classifier model with '-cls'
    suffix"): the released yolov5?-cls is that cut."""
    from yolomem.config.checkpoint_file import read_checkpoint, written_by

    path = Path(model)
    if path.suffix == ".pt" and path.is_file():
        if written_by(path) == "yolov5" and read_checkpoint(path).yaml is not None:
            raise UserError(f"classify/train.py --model {model}: a detection checkpoint, which the script cuts into a "
                            "classifier at layer 10; yolomem estimates that cut for the released names (--model "
                            "yolov5s.pt reads as yolov5s-cls), not for a checkpoint")  # fmt: skip
        return model
    detection = re.fullmatch(r"(yolov5[nsmlx])(\.pt)?", path.name) if len(path.parts) == 1 else None
    if detection is None:
        return model
    readings.append(f"--model {model}: a detection model, which classify/train.py cuts into a classifier at "
                    f"layer 10: {detection.group(1)}-cls")  # fmt: skip
    return f"{detection.group(1)}-cls"


def _given(given: dict, option: str, script: str) -> bool:
    return option in given and given[option] != _parser(script).get_default(option)


def _nearest_option(option: str, script: str) -> str:
    names = [name for action in _parser(script)._actions for name in action.option_strings]
    close = nearest(option.partition("=")[0], names)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


class _ScriptParser(argparse.ArgumentParser):
    """A script's options; what it would stop on is a one-line ``UserError``."""

    def error(self, message: str):
        raise UserError(f"{self.prog}: {message} (as the repo's {self.prog} reads its options)")


@functools.cache
def _parser(script: str) -> argparse.ArgumentParser:
    """The options of the repo's ``script`` (v7.0), with its defaults where yolomem reads them, None where
    the estimate's own default stands (every size and count the line does not give)."""
    parser = _ScriptParser(prog=script, add_help=False)
    add = parser.add_argument
    if script == "classify/train.py":
        add("--model", type=str, default="yolov5s-cls.pt")
        add("--data", type=str, default=None)
        add("--epochs", type=int, default=None)
        add("--batch-size", type=int, default=None)
        add("--imgsz", "--img", "--img-size", type=int, default=None)
        add("--nosave", action="store_true")
        add("--cache", type=str, nargs="?", const="ram")
        add("--device", default="")
        add("--workers", type=int, default=None)
        add("--project", default="runs/train-cls")
        add("--name", default="exp")
        add("--exist-ok", action="store_true")
        add("--pretrained", nargs="?", const=True, default=True)
        add("--optimizer", choices=["SGD", "Adam", "AdamW", "RMSProp"], default=None)
        add("--lr0", type=float, default=0.001)
        add("--decay", type=float, default=5e-5)
        add("--label-smoothing", type=float, default=0.1)
        add("--cutoff", type=int, default=None)
        add("--dropout", type=float, default=None)
        add("--verbose", action="store_true")
        add("--seed", type=int, default=None)
        add("--local_rank", type=int, default=-1)
    else:
        add("--weights", type=str, default="yolov5s-seg.pt" if script == "segment/train.py" else "yolov5s.pt")
        add("--cfg", type=str, default="")
        add("--data", type=str, default=None)
        add("--hyp", type=str, default=None)
        add("--epochs", type=int, default=None)
        add("--batch-size", type=int, default=None)
        add("--imgsz", "--img", "--img-size", type=int, default=None)
        add("--rect", action="store_true")
        add("--resume", nargs="?", const=True, default=False)
        add("--nosave", action="store_true")
        add("--noval", action="store_true")
        add("--noautoanchor", action="store_true")
        add("--noplots", action="store_true")
        add("--evolve", type=int, nargs="?", const=300)
        add("--bucket", type=str, default="")
        add("--cache", type=str, nargs="?", const="ram")
        add("--image-weights", action="store_true")
        add("--device", default="")
        add("--multi-scale", action="store_true")
        add("--single-cls", action="store_true")
        add("--optimizer", type=str, choices=["SGD", "Adam", "AdamW"], default=None)
        add("--sync-bn", action="store_true")
        add("--workers", type=int, default=None)
        add("--project", default="runs/train-seg" if script == "segment/train.py" else "runs/train")
        add("--name", default="exp")
        add("--exist-ok", action="store_true")
        add("--quad", action="store_true")
        add("--cos-lr", action="store_true")
        add("--label-smoothing", type=float, default=0.0)
        add("--patience", type=int, default=100)
        add("--freeze", nargs="+", type=int, default=None)
        add("--save-period", type=int, default=-1)
        add("--seed", type=int, default=None)
        add("--local_rank", type=int, default=-1)
        if script == "segment/train.py":
            add("--mask-ratio", type=int, default=4)
            add("--no-overlap", action="store_true")
        else:  # train.py's Weights & Biases arguments
            add("--entity", default=None)
            add("--upload_dataset", nargs="?", const=True, default=False)
            add("--bbox_interval", type=int, default=-1)
            add("--artifact_alias", type=str, default="latest")
    return parser
