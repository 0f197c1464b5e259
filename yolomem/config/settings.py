"""What the user asked for: ``key=value`` words in Ultralytics' names, checked and resolved.

Keys keep Ultralytics' names and defaults where they exist (``imgsz``, ``batch``, ``amp``,
``optimizer``, ``nbs``, ``freeze``, ``multi_scale``). yolomem adds its own (``instances``, ``step``,
``iterations``, ``alloc_conf``, ``gpu``, ``gpu_mem``, ``margin``, ``framework``, ``seed``). ``data``, ``epochs``,
``cache`` and ``workers`` keep Ultralytics' meaning: ``data=`` or ``epochs>=2`` simulates whole epochs
with validation (``yolomem.result.epochs``), ``cache``/``workers`` size host memory. A pasted
``yolo train model=... data=... epochs=...`` line works: the words ``yolo``/``train``/task names are
skipped and Ultralytics keys that do not change GPU memory are ignored with a note.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace

from yolomem.loops.batches import DEFAULT_INSTANCES
from yolomem.errors import UserError, unknown

OPTIMIZERS = ("auto", "SGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSprop", "MuSGD")
STEPS = ("train", "fwd_bwd")
FRAMEWORKS = ("ultralytics", "yolov5")  # yolov5: the yolov5 repo's loop (yolomem.loops.yolov5)
PRECISIONS = {"true": "fp16", "fp16": "fp16", "false": "fp32", "fp32": "fp32", "bf16": "bf16"}
_YOLO_WORDS = {"yolo", "train", "detect", "segment", "pose", "obb", "classify"}
_OWN_KEYS = {"instances", "step", "iterations", "alloc_conf", "gpu", "gpu_mem", "margin", "framework", "seed", "nc",
             "world_size", "checkpoint"}
# The share of a card's usable memory (after the CUDA context) that "fits" holds back for what the trace
# does not see (yolomem.result.fits).
DEFAULT_MARGIN = 0.10
MAX_MARGIN = 0.9
_MEMORY_KEYS = {"model", "imgsz", "batch", "amp", "optimizer", "nbs", "freeze", "multi_scale", "task",
                "overlap_mask", "mask_ratio", "data", "device", "epochs", "cache", "workers"}  # fmt: skip


@dataclass(frozen=True)
class EstimateConfig:
    """A fully resolved request. Build with ``EstimateConfig.from_words`` or directly."""

    model: str = "yolov8n.yaml"
    imgsz: int = 640
    batch: int = 16
    amp: str = "fp16"  # "fp16" (amp=True) | "fp32" (amp=False) | "bf16"
    optimizer: str = "auto"
    nbs: int = 64
    freeze: tuple[int, ...] = ()
    multi_scale: float = 0.0
    instances: float = DEFAULT_INSTANCES
    step: str = "train"
    iterations: int = 2
    alloc_conf: str | None = None
    gpu: str | None = None
    gpu_mem: float | None = None
    margin: float = DEFAULT_MARGIN  # safety margin of "fits" (yolomem.result.fits)
    framework: str = "ultralytics"
    seed: int = 0
    nc: int | None = None
    data: str | None = None  # an Ultralytics dataset YAML (objects per image, dataset size)
    world_size: int = 1  # DDP ranks; batch is split across them as Ultralytics does
    checkpoint: bool = False  # activation checkpointing (yolomem.loops.checkpointing)
    epochs: int | None = None  # >= 2 (or data=) simulates epochs with validation (yolomem.result.epochs)
    cache: str | None = None  # Ultralytics' cache: "ram" | "disk" | None (host memory, yolomem.result.host_memory)
    workers: int = 8  # Ultralytics' dataloader workers (host memory)
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        _check_positive_int("batch", self.batch)
        _check_positive_int("imgsz", self.imgsz, allow_zero=False)
        _check_positive_int("nbs", self.nbs)
        _check_positive_int("iterations", self.iterations)
        _check_positive_int("world_size", self.world_size)
        _check_positive_int("workers", self.workers, allow_zero=True)
        if self.epochs is not None:
            _check_positive_int("epochs", self.epochs)
        if self.cache not in (None, "ram", "disk"):
            raise unknown("cache", self.cache, ("ram", "disk", "false"))
        if self.amp not in set(PRECISIONS.values()):
            raise UserError(f"amp={self.amp!r} is not valid; use true, false, fp32 or bf16")
        if self.optimizer not in OPTIMIZERS:
            raise unknown("optimizer", self.optimizer, OPTIMIZERS)
        if self.step not in STEPS:
            raise unknown("step", self.step, STEPS)
        if self.framework not in FRAMEWORKS:
            raise unknown("framework", self.framework, FRAMEWORKS)
        if not (isinstance(self.instances, (int, float)) and self.instances >= 0 and math.isfinite(self.instances)):
            raise UserError(f"instances={self.instances!r} must be a number of objects per image >= 0")
        if not 0.0 <= self.multi_scale < 1.0:
            raise UserError(f"multi_scale={self.multi_scale!r} must be in [0, 1)")
        check_margin(self.margin)

    @classmethod
    def from_words(cls, words: list[str]) -> EstimateConfig:
        """Parse CLI words: an optional bare model name, then ``key=value`` pairs."""
        values: dict[str, object] = {}
        notes: list[str] = []
        for word in words:
            if "=" not in word:
                if word.lower() in _YOLO_WORDS:
                    continue
                if "model" in values or word.startswith("-"):
                    raise UserError(f"argument {word!r} is not key=value; missing '=' sign, try '{word}=<value>'")
                values["model"] = word
                continue
            key, _, raw = word.partition("=")
            key = key.strip()
            if not key or raw == "":
                raise UserError(f"malformed argument {word!r}; expected key=value, e.g. batch=16")
            if key in _MEMORY_KEYS or key in _OWN_KEYS:
                values[key] = raw
            elif key in _ultralytics_keys():
                notes.append(f"{key}={raw} does not change GPU memory; ignored")
            else:
                raise unknown("key", key, sorted(_MEMORY_KEYS | _OWN_KEYS | set(_ultralytics_keys())))
        return cls.from_mapping(values, notes)

    @classmethod
    def from_mapping(cls, values: dict, notes: list[str] | None = None) -> EstimateConfig:
        notes = list(notes or [])
        kwargs: dict[str, object] = {}
        for key, raw in values.items():
            if key == "task":
                notes.append(f"task={raw}: the task is inferred from the model; ignored")
                continue
            if key == "device":
                ranks = [d for d in str(raw).split(",") if d.strip() and d.strip().lower() not in {"cpu", "mps"}]
                if len(ranks) > 1:
                    kwargs["world_size"] = len(ranks)
                    notes.append(f"device={raw}: {len(ranks)} GPUs, estimated per DDP rank")
                continue
            if key in {"overlap_mask", "mask_ratio"}:
                notes.append(f"{key}={raw}: Ultralytics' default is used")
                continue
            kwargs[key] = _convert(key, raw)
        return cls(**kwargs, notes=tuple(notes))

    def with_changes(self, **changes) -> EstimateConfig:
        return replace(self, **changes)

    def as_dict(self) -> dict:
        return {
            "model": self.model, "imgsz": self.imgsz, "batch": self.batch, "amp": self.amp,
            "optimizer": self.optimizer, "nbs": self.nbs, "freeze": list(self.freeze),
            "multi_scale": self.multi_scale, "instances": self.instances, "step": self.step,
            "iterations": self.iterations, "alloc_conf": self.alloc_conf, "gpu": self.gpu,
            "gpu_mem": self.gpu_mem, "margin": self.margin, "framework": self.framework, "seed": self.seed, "nc": self.nc,
            "data": self.data, "world_size": self.world_size, "checkpoint": self.checkpoint,
            "epochs": self.epochs, "cache": self.cache, "workers": self.workers,
        }  # fmt: skip


@functools.cache
def _ultralytics_keys() -> tuple[str, ...]:
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return tuple(DEFAULT_CFG_DICT)


def check_margin(margin: object) -> None:
    """A margin is a fraction of the usable memory: 0 (none) up to, not including, MAX_MARGIN."""
    ok = isinstance(margin, (int, float)) and not isinstance(margin, bool) and math.isfinite(margin)
    if not (ok and 0.0 <= margin < MAX_MARGIN):
        raise UserError(f"margin={margin!r} must be a fraction in [0, {MAX_MARGIN:g}), e.g. margin=0.1 for 10%")


def _check_positive_int(name: str, value: object, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{name}={value!r} must be a whole number")
    if value < 0 or (value == 0 and not allow_zero):
        raise UserError(f"{name}={value} must be a positive whole number")


def _convert(key: str, raw: object) -> object:
    if key == "amp" and isinstance(raw, bool):  # the Python API takes amp=True/False like Ultralytics
        return "fp16" if raw else "fp32"
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    if key == "batch" and (text.startswith("-1") or text.startswith("0.")):
        raise UserError(f"batch={text} asks for AutoBatch; yolomem needs a fixed batch (yolomem fit finds the largest)")
    try:
        if key in {"batch", "imgsz", "nbs", "iterations", "seed", "nc", "world_size", "epochs", "workers"}:
            return int(text)
        if key in {"instances", "multi_scale", "gpu_mem"}:
            return float(text)
        if key == "margin":  # a fraction, or a percentage: margin=0.1 or margin=10%
            return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise UserError(f"{key}={text!r} is not a number") from None
    if key == "amp":
        if text.lower() not in PRECISIONS:
            raise UserError(f"amp={text!r} is not valid; use true, false, fp32 or bf16")
        return PRECISIONS[text.lower()]
    if key == "optimizer":
        canonical = {o.lower(): o for o in OPTIMIZERS}.get(text.lower())
        if canonical is None:
            raise unknown("optimizer", text, OPTIMIZERS)
        return canonical
    if key == "freeze":
        return _parse_freeze(text)
    if key == "checkpoint":
        if text.lower() not in {"true", "false"}:
            raise UserError(f"checkpoint={text!r} must be true or false")
        return text.lower() == "true"
    if key == "cache":  # Ultralytics: True -> "ram", False/None -> no cache
        return {"true": "ram", "false": None, "none": None}.get(text.lower(), text.lower())
    if key == "alloc_conf":
        return text or None
    return text


def _parse_freeze(text: str) -> tuple[int, ...]:
    """``freeze=10`` freezes layers 0-9 (Ultralytics); ``freeze=[0,1,2]`` lists them."""
    body = text.strip("[]() ")
    try:
        if text.strip().startswith("["):
            return tuple(int(x) for x in body.split(",") if x.strip())
        count = int(body or 0)
    except ValueError:
        raise UserError(f"freeze={text!r} must be a layer count like 10 or a list like [0,1,2]") from None
    if count < 0:
        raise UserError(f"freeze={count} must be >= 0")
    return tuple(range(count))
