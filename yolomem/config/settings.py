"""What the user asked for: ``EstimateConfig``, checked and resolved, and its one JSON form.

Keys keep Ultralytics' names and defaults where they exist (``imgsz``, ``batch``, ``amp``,
``optimizer``, ``nbs``, ``freeze``, ``multi_scale``). yolomem adds its own (``instances``, ``step``,
``iterations``, ``alloc_conf``, ``gpu``, ``gpu_mem``, ``margin``, ``framework``, ``seed``). ``data``, ``epochs``,
``cache`` and ``workers`` keep Ultralytics' meaning: ``data=`` or ``epochs>=2`` simulates whole epochs
with the val pass (``yolomem.result.epochs``), ``cache``/``workers`` size host memory. A pasted
``yolo train model=... data=... epochs=...`` line works: the words ``yolo``/``train``/task names are
skipped and Ultralytics keys that do not change GPU memory are ignored with a note.

Every key's type, default, help and valid values are in ``yolomem.config.keys.ESTIMATE_KEYS``; the
fields below take their defaults from there and are checked with the same keys.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace

from yolomem.config.keys import (
    DEFAULT_INSTANCES, ESTIMATE_KEYS, FRAMEWORKS, OPTIMIZERS, PRECISIONS, STEPS, AutoBatchRequest, KeyTable, Words,
    asks_autobatch, parse_words, refuse_autobatch,
)  # fmt: skip
from yolomem.errors import UserError

__all__ = ["DEFAULT_INSTANCES", "EstimateConfig", "FRAMEWORKS", "OPTIMIZERS", "PRECISIONS", "STEPS", "parse_estimate_words"]

_default = ESTIMATE_KEYS.default
# Ultralytics keys with a meaning here that is not a field of their own (see ``from_values``)
_MAPPED_KEYS = ("device", "task", "overlap_mask", "mask_ratio")


@dataclass(frozen=True)
class EstimateConfig:
    """A fully resolved request. Build with ``from_words`` (CLI words), ``from_mapping`` (Python values),
    ``from_json`` (a result or results file), or directly."""

    model: str = _default("model")
    imgsz: int = _default("imgsz")
    batch: int = _default("batch")
    amp: str = _default("amp")  # "fp16" (amp=True) | "fp32" (amp=False) | "bf16"
    optimizer: str = _default("optimizer")
    nbs: int = _default("nbs")
    freeze: tuple[int, ...] = _default("freeze")
    multi_scale: float = _default("multi_scale")
    instances: float = _default("instances")
    step: str = _default("step")
    iterations: int = _default("iterations")
    alloc_conf: str | None = _default("alloc_conf")
    gpu: str | None = _default("gpu")
    gpu_mem: float | None = _default("gpu_mem")
    margin: float = _default("margin")  # the safety margin of every "fits" (yolomem.result.fits)
    framework: str = _default("framework")
    seed: int = _default("seed")
    nc: int | None = _default("nc")
    data: str | None = _default("data")  # an Ultralytics dataset YAML (objects per image, dataset size)
    world_size: int = _default("world_size")  # DDP ranks; batch is split across them as Ultralytics does
    checkpoint: bool = _default("checkpoint")  # activation checkpointing (yolomem.loops.checkpointing)
    single_cls: bool = _default("single_cls")  # one class (yolomem.result.prepare.class_count)
    epochs: int | None = _default("epochs")  # >= 2 (or data=) simulates epochs with the val pass
    cache: str | None = _default("cache")  # "ram" | "disk" | None (host memory, yolomem.result.host_memory)
    workers: int = _default("workers")  # dataloader workers (host memory)
    max_instances: int | None = _default("max_instances")  # the densest image's objects (yolomem.loops.density)
    images: int | None = _default("images")  # training images per epoch (yolomem.loops.density)
    tail: str | None = _default("tail")  # a named dataset's spread of objects per image (yolomem.loops.density)
    mosaic: float = _default("mosaic")  # mosaic probability: 4 images per training sample (yolomem.loops.density)
    close_mosaic: int = _default("close_mosaic")  # no mosaic in the last N epochs
    scale: float = _default("scale")  # random zoom U(1 - scale, 1 + scale) (yolomem.loops.density)
    translate: float = _default("translate")  # random shift, a fraction of imgsz (yolomem.loops.density)
    resume: str | None = _default("resume")  # the checkpoint a resumed run continues (yolomem.loops.ultralytics.resume)
    # keys the user left out whose default the trainer sets per model (a classifier's imgsz, a checkpoint's
    # training imgsz and single_cls): yolomem.result.prepare fills them in once the model is resolved
    left_to_trainer: tuple[str, ...] = ()
    # batch=-1 or a fraction: Ultralytics' AutoBatch picks the batch on gpu= (yolomem.result.prepare); until
    # then ``batch`` holds the default
    autobatch: float | None = None
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        for name in _FIELDS:
            ESTIMATE_KEYS[name].check(getattr(self, name))
        if self.alloc_conf is not None:
            _check_alloc_conf(self.alloc_conf)
        if self.autobatch is not None and not asks_autobatch(self.autobatch):
            raise UserError(f"autobatch={self.autobatch!r}: AutoBatch takes -1 or a fraction in (0, 1)")
        if self.gpu is not None or self.gpu_mem is not None:
            from yolomem.config.gpus import find_gpu

            find_gpu(self.gpu or "", self.gpu_mem)  # an unknown card, or one too small, is refused here

    # --- building -----------------------------------------------------------------------------

    @classmethod
    def from_words(cls, words: Iterable[str]) -> EstimateConfig:
        """Parse CLI words: an optional bare model name, then ``key=value`` pairs."""
        return cls.from_parsed(parse_estimate_words(words))

    @classmethod
    def from_parsed(cls, parsed: Words, *, skip: Iterable[str] = ()) -> EstimateConfig:
        """The config of words already parsed with a table that holds ``ESTIMATE_KEYS`` (a command's
        own keys are left out; ``skip`` leaves out estimate keys a command reads its own way)."""
        skip = set(skip)
        values = {k: v for k, v in parsed.values.items() if k in ESTIMATE_KEYS and k not in skip}
        model = model_of(parsed.positionals, values.get("model"))
        notes = parsed.notes
        if model is not None and parsed.yolo_mode == "train":  # `yolo train` builds the name as Ultralytics does
            from yolomem.config.models import yolo_train_builds

            model, note = yolo_train_builds(model)
            notes += (note,) if note else ()
        if model is not None:
            values["model"] = model
        return cls.from_values(values, notes)

    @classmethod
    def from_mapping(cls, values: dict, notes: Iterable[str] = ()) -> EstimateConfig:
        """From Python values (``estimate("yolov8n.yaml", amp=True, freeze=[0, 1])``): each is converted
        by its key; Ultralytics' other settings are ignored with a note, as on the command line; any other
        name is refused with the nearest key."""
        from yolomem.config.keys import ignored_note, unknown_key

        typed, notes = {}, list(notes)
        for name, value in values.items():
            if name in ESTIMATE_KEYS:
                typed[name] = ESTIMATE_KEYS[name].convert(value)
            elif name in _ultralytics_keys():
                notes.append(ignored_note(name, value))
            else:
                raise unknown_key(name, ESTIMATE_KEYS)
        return cls.from_values(typed, notes)

    @classmethod
    def from_values(cls, values: dict, notes: Iterable[str] = ()) -> EstimateConfig:
        """From typed values; Ultralytics' ``device``, ``task``, ``overlap_mask`` and ``mask_ratio`` become
        a world size or a note."""
        notes = list(notes)
        if values.get("resume") is not None:  # the checkpoint's run, as the installed release resumes it
            from yolomem.loops.ultralytics.resume import resume_values

            values, resumed = resume_values(values)
            notes += resumed
        kwargs = {}
        for name, value in values.items():
            if name == "device":
                ranks = [d for d in str(value or "").split(",") if d.strip() and d.strip().lower() not in {"cpu", "mps"}]
                if len(ranks) > 1:
                    kwargs["world_size"] = len(ranks)
                    notes.append(f"device={value}: {len(ranks)} GPUs, estimated per DDP rank")
            elif name == "task":
                notes.append(f"task={value}: the task is inferred from the model; ignored")
            elif name in {"overlap_mask", "mask_ratio"}:
                notes.append(f"{name}={str(value).lower()}: Ultralytics' default is used")
            elif isinstance(value, AutoBatchRequest):
                kwargs["autobatch"] = value.value
            else:
                kwargs[name] = value
        left = tuple(name for name in TRAINER_SET_KEYS if name not in values)
        return cls(**kwargs, left_to_trainer=left, notes=tuple(notes))

    def with_changes(self, **changes) -> EstimateConfig:
        """A copy with ``changes``; a key set here is no longer left to the trainer, and a batch set here
        is no longer AutoBatch's to pick."""
        if self.left_to_trainer and "left_to_trainer" not in changes:
            changes["left_to_trainer"] = tuple(name for name in self.left_to_trainer if name not in changes)
        if "batch" in changes and "autobatch" not in changes:
            changes["autobatch"] = None
        return replace(self, **changes)

    def fixed_batch(self) -> EstimateConfig:
        """This config, for a command that sweeps or measures a batch: refused if it asks for AutoBatch."""
        if self.autobatch is not None:
            raise refuse_autobatch(f"batch={self.autobatch:g}")
        return self

    # --- the one JSON form --------------------------------------------------------------------

    def to_json(self) -> dict:
        """Every setting, in field order; ``freeze`` as a list; ``left_to_trainer`` and ``autobatch`` where
        set. ``from_json`` reads it back."""
        settings = {name: list(value) if isinstance(value := getattr(self, name), tuple) else value for name in _FIELDS}
        if self.left_to_trainer:
            settings["left_to_trainer"] = list(self.left_to_trainer)
        return settings | ({"autobatch": self.autobatch} if self.autobatch is not None else {})

    @classmethod
    def from_json(cls, data: dict) -> EstimateConfig:
        """A config written by ``to_json`` (an estimate's or a results file's ``config``). ``task`` is the
        resolved model's; other keys that are not settings are ignored with a note; a null is "not set"."""
        if not isinstance(data, dict):
            raise UserError(f"a config must be a JSON object, not {type(data).__name__}")
        extra = sorted(set(data) - set(_FIELDS) - {"task", "left_to_trainer", "autobatch"})
        # a resumed config holds the resumed settings already: kept as they are, not resumed again
        values = {k: v for k, v in data.items() if k in _FIELDS and v is not None and k != "resume"}
        if data.get("autobatch") is not None:
            values["batch"] = data["autobatch"]
        notes = [f"config key{'s' if len(extra) > 1 else ''} {', '.join(extra)}: not estimator settings; ignored"] if extra else []
        left = data.get("left_to_trainer") or ()
        if not isinstance(left, (list, tuple)) or not set(left) <= set(TRAINER_SET_KEYS):
            raise UserError(f"left_to_trainer={left!r} in a config: a list of {', '.join(TRAINER_SET_KEYS)}")
        resumed = ESTIMATE_KEYS["resume"].convert(data.get("resume"))
        return cls.from_mapping(values, notes).with_changes(left_to_trainer=tuple(left), resume=resumed)


# keys whose default the trainer may set per model when the user leaves them out (TrainingLoop.trainer_defaults)
TRAINER_SET_KEYS = ("imgsz", "batch", "single_cls")
_FIELDS = tuple(f.name for f in fields(EstimateConfig) if f.name not in ("notes", "left_to_trainer", "autobatch"))


def parse_estimate_words(words: Iterable[str], table: KeyTable = ESTIMATE_KEYS) -> Words:
    """A command's words that describe a training run: ``table`` holds ``ESTIMATE_KEYS`` and the command's
    own keys; a pasted ``yolo train`` line's words are skipped and Ultralytics' other keys noted."""
    return parse_words(words, table, ignored=_ultralytics_keys, yolo_line=True)


def model_of(positionals: Iterable[str], given: object = None) -> str | None:
    """The model named by a bare word or ``model=``; both only when they agree."""
    positionals = list(positionals)
    if len(positionals) > 1:
        word = positionals[1]
        raise UserError(f"argument {word!r} is not key=value; missing '=' sign, try '{word}=<value>'")
    bare = positionals[0] if positionals else None
    if bare is not None and given is not None and bare != given:
        raise UserError(f"two models: {bare!r} and model={given}; give one")
    return bare if bare is not None else given


def _check_alloc_conf(text: str) -> None:
    from yolomem.allocator.caching import parse_alloc_conf

    try:
        parse_alloc_conf(text)
    except ValueError as error:
        raise UserError(f"alloc_conf: {error}") from None


@functools.cache
def _ultralytics_keys() -> tuple[str, ...]:
    """Ultralytics' settings that yolomem accepts and ignores (they do not change GPU memory)."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return tuple(k for k in DEFAULT_CFG_DICT if k not in ESTIMATE_KEYS)
