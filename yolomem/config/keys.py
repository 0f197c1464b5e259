"""The ``key=value`` words every command takes: typed keys, one table per command, and the one parser.

A ``Key`` says what a word means: its type, its default, its help and which values are valid.
``parse_words`` turns a command's words into typed values with the command's ``KeyTable``; the same
keys check ``EstimateConfig``'s fields (``yolomem.config.settings``), so the command line, the Python
API and a results file accept and refuse the same values, with the same one-line messages.

No torch or Ultralytics import here: ``yolomem --help`` and ``yolomem COMMAND --help`` build the tables.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from yolomem.errors import UserError, nearest

# the types a key can have, as --help shows them
INT, FLOAT, BOOL, TEXT, CHOICE, INTS, TEXTS, LAYERS = "int", "float", "bool", "text", "choice", "ints", "texts", "layers"
_NONE_WORDS = {"none", "null"}
_BOOL_WORDS = {"true": True, "false": False}


@dataclass(frozen=True)
class AutoBatchRequest:
    """``batch=-1`` (AutoBatch's default share of the card) or a fraction in (0, 1): Ultralytics' AutoBatch
    picks the batch for the card (``yolomem.loops.ultralytics.autobatch``)."""

    value: float

    def __str__(self) -> str:
        return f"{self.value:g}"


def asks_autobatch(number: float) -> bool:
    """Ultralytics' AutoBatch values: -1 or a fraction in (0, 1); any other value <= 0 is just wrong."""
    return number == -1 or 0 < number < 1


def refuse_autobatch(shown: str) -> UserError:
    """AutoBatch asked of what takes a fixed batch (a sweep, a measurement, a config built directly)."""
    return UserError(f"{shown} asks for AutoBatch, which only estimate and fit run: 'yolomem estimate MODEL {shown} "
                     "gpu=NAME' shows the batch it picks on that card and whether it fits")


@dataclass(frozen=True)
class Key:
    """One ``key=value`` setting."""

    name: str
    type: str  # INT | FLOAT | BOOL | TEXT | CHOICE | INTS (comma list) | TEXTS (comma list) | LAYERS (freeze)
    default: object
    help: str
    choices: tuple[str, ...] = ()  # CHOICE: the valid values, matched without case
    aliases: Mapping[str, object] = field(default_factory=dict)  # other spellings -> value (amp=true -> "fp16")
    low: float | None = None  # numbers (and each item of a list): the smallest valid value
    low_open: bool = False  # ``low`` itself is not valid (gpu_mem > 0)
    high: float | None = None  # the largest valid value
    high_open: bool = False  # ``high`` itself is not valid (multi_scale < 1)
    nullable: bool = False  # None (``key=none``) is a value: "not set"
    bound: str = ""  # why the range is what it is, added to the message for a value outside it
    max_items: int | None = None  # INTS/TEXTS: the longest list
    autobatch: bool = False  # Ultralytics' batch: -1 and fractions in (0, 1) ask for AutoBatch

    def but(self, **changes) -> Key:
        """This key with some of its fields changed (another command's default or help)."""
        return replace(self, **changes)

    def parse(self, text: str) -> object:
        """The value of ``key=text`` as typed on the command line."""
        text = text.strip()
        lowered = text.lower()
        if lowered in self.aliases:
            return self.aliases[lowered]
        if self.nullable and lowered in _NONE_WORDS:
            return None
        if self.type == INT:
            number = self._int(text)
            return number if isinstance(number, AutoBatchRequest) else self.check(number)
        if self.type == FLOAT:
            return self.check(self._float(text))
        if self.type == BOOL:
            if lowered not in _BOOL_WORDS:
                raise UserError(f"{self.name}={text!r} must be true or false")
            return _BOOL_WORDS[lowered]
        if self.type == CHOICE:
            return self._choice(text)
        if self.type in (INTS, TEXTS):
            items = [part.strip() for part in text.strip("[]() ").split(",") if part.strip()]
            if self.type == INTS:
                try:
                    numbers = {int(item) for item in items}
                except ValueError:
                    raise UserError(f"{self.name}={text!r} must be whole numbers separated by commas, "
                                    f"e.g. {self.name}=1,2,4,8") from None  # fmt: skip
                return self.check(tuple(sorted(numbers)))
            return self.check(tuple(dict.fromkeys(items)))
        if self.type == LAYERS:
            return self.check(_layers(self.name, text))
        return self.check(text)

    def parse_each(self, words: Iterable[str]) -> tuple:
        """Each word of a list parsed and checked as one value of this key (aliases, ranges, nearest-name
        hints), repeats dropped: ``amp=true,bf16`` for a command that takes several precisions."""
        return tuple(dict.fromkeys(self.parse(str(word)) for word in words))

    def convert(self, value: object) -> object:
        """A value from Python or JSON (``amp=True``, ``freeze=[0, 1]``): text is parsed, the rest checked."""
        if isinstance(value, str):
            return self.parse(value)
        if self.autobatch and isinstance(value, (int, float)) and not isinstance(value, bool) and asks_autobatch(value):
            return AutoBatchRequest(float(value))
        if value is not None and str(value).lower() in self.aliases:
            return self.aliases[str(value).lower()]
        if self.type == FLOAT and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.type in (INTS, TEXTS, LAYERS) and isinstance(value, (list, tuple)):
            value = tuple(value)
        elif self.type == LAYERS and isinstance(value, int) and not isinstance(value, bool):
            value = _layers(self.name, str(value))  # freeze=10, as Ultralytics' Python API takes it
        return self.check(value)

    def check(self, value: object) -> object:
        """``value`` if it is valid for this key, else a one-line ``UserError``."""
        if value is None:
            if self.nullable:
                return value
            raise UserError(f"{self.name} needs a value ({self.type_text()})")
        if self.type in (INTS, TEXTS, LAYERS):
            if not isinstance(value, tuple):
                raise UserError(f"{self.name}={value!r} must be a list ({self.type_text()})")
            if self.max_items is not None and len(value) > self.max_items:
                raise UserError(f"{self.name}= lists {len(value)} values; at most {self.max_items}")
            if self.type == INTS and not value:
                raise UserError(f"{self.name}= lists no values, e.g. {self.name}=1,2,4")
            for item in value:
                if self.type == TEXTS and not isinstance(item, str):
                    raise UserError(f"{self.name}= lists {item!r}, which is not text")
                if self.type != TEXTS:
                    self._check_number(item, whole=True)
            return value
        if self.type == INT:
            return self._check_number(value, whole=True)
        if self.type == FLOAT:
            return self._check_number(value, whole=False)
        if self.type == BOOL and not isinstance(value, bool):
            raise UserError(f"{self.name}={value!r} must be true or false")
        if self.type == CHOICE and value not in self.choices and value not in self.aliases.values():
            return self._choice(str(value))
        if self.type == TEXT and not isinstance(value, str):
            raise UserError(f"{self.name}={value!r} must be text")
        return value

    def type_text(self) -> str:
        """The type as --help shows it."""
        if self.type == CHOICE:
            return "|".join(self.choices)
        return {INTS: "int,int,...", TEXTS: "a,b,...", LAYERS: "N or [i,j]"}.get(self.type, self.type)

    def default_text(self) -> str:
        if self.default is None:
            return "-"
        if isinstance(self.default, bool):
            return str(self.default).lower()
        if isinstance(self.default, tuple):
            return ",".join(map(str, self.default)) or "-"
        return _as_typed(self.default) if isinstance(self.default, (int, float)) else str(self.default)

    def _int(self, text: str) -> int | AutoBatchRequest:
        try:
            whole = int(text)
        except ValueError:
            pass
        else:
            return AutoBatchRequest(float(whole)) if self.autobatch and asks_autobatch(whole) else whole
        try:
            number = float(text)
        except ValueError:
            parts = [part.strip() for part in text.strip("[]() ").split(",")]
            if len(parts) > 1 and all(part.lstrip("-").isdigit() for part in parts):
                largest = max(int(part) for part in parts)  # imgsz=640,480: Ultralytics trains at the larger side
                raise UserError(f"{self.name}={text!r} is a list; training takes one {self.name}, and Ultralytics "
                                f"trains at the larger: {self.name}={largest}") from None  # fmt: skip
            raise UserError(f"{self.name}={text!r} is not a number") from None
        if self.autobatch and asks_autobatch(number):
            return AutoBatchRequest(number)
        if math.isfinite(number) and number.is_integer():
            return int(number)
        raise UserError(f"{self.name}={text} must be a whole number")

    def _autobatch(self, shown: object) -> UserError:
        return refuse_autobatch(f"{self.name}={shown}")

    def _float(self, text: str) -> float:
        try:
            return float(text.rstrip("%")) / 100 if text.endswith("%") else float(text)
        except ValueError:
            raise UserError(f"{self.name}={text!r} is not a number") from None

    def _check_number(self, value: object, whole: bool) -> object:
        kind = int if whole else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind):
            raise UserError(f"{self.name}={value!r} must be a {'whole number' if whole else 'number'}")
        if not math.isfinite(value):
            raise UserError(f"{self.name}={value} must be a finite number")
        if self.autobatch and asks_autobatch(value):
            raise self._autobatch(_as_typed(value))
        below = self.low is not None and (value < self.low or (self.low_open and value == self.low))
        above = self.high is not None and (value > self.high or (self.high_open and value == self.high))
        if below or above:
            raise UserError(f"{self.name}={_as_typed(value)} must be {self._range_text()}" + (f" ({self.bound})" if self.bound else ""))
        return value

    def _range_text(self) -> str:
        whole = self.type in (INT, INTS)
        if whole and self.low == 1 and not self.low_open:
            return "a positive whole number" + (f" up to {_as_typed(self.high)}" if self.high is not None else "")
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {_as_typed(self.low)}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {_as_typed(self.high)}")
        return ("a whole number " if whole else "") + " and ".join(parts)

    def _choice(self, text: str) -> str:
        by_case = {choice.lower(): choice for choice in self.choices}
        if text.lower() in by_case:
            return by_case[text.lower()]
        valid = [*self.choices, *(a for a in self.aliases if a not in by_case)]
        close = nearest(text, valid) or [by_case[c] for c in nearest(text.lower(), by_case)]
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise UserError(f"{self.name}={text!r} is not valid; {hint}valid: {', '.join(valid)}")


@dataclass(frozen=True)
class KeyTable:
    """The keys one command takes, in --help order."""

    keys: tuple[Key, ...]

    def __post_init__(self) -> None:
        names = [key.name for key in self.keys]
        if len(names) != len(set(names)):
            raise ValueError(f"duplicate keys in {names}")

    def __contains__(self, name: object) -> bool:
        return any(key.name == name for key in self.keys)

    def __getitem__(self, name: str) -> Key:
        for key in self.keys:
            if key.name == name:
                return key
        raise KeyError(name)

    def __iter__(self) -> Iterator[Key]:
        return iter(self.keys)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(key.name for key in self.keys)

    def default(self, name: str) -> object:
        return self[name].default

    def plus(self, *keys: Key) -> KeyTable:
        """This table with ``keys`` added; a key of the same name is replaced in place."""
        new = {key.name: key for key in keys}
        kept = tuple(new.pop(key.name, key) for key in self.keys)
        return KeyTable(kept + tuple(new.values()))

    def without(self, *names: str) -> KeyTable:
        return KeyTable(tuple(key for key in self.keys if key.name not in names))

    def help_text(self, title: str = "keys") -> str:
        """The table as ``--help`` prints it: each key as ``name=TYPE``, its help and its default."""
        column = 26
        lines = [f"{title} (key=value):"]
        for key in self.keys:
            head = f"{key.name}={key.type_text()}"
            default = key.default_text()
            text = key.help + (f" [default: {default}]" if default != "-" else "")
            if len(head) > column:
                lines += [f"  {head}", f"  {'':<{column}}  {text}"]
            else:
                lines.append(f"  {head:<{column}}  {text}")
        return "\n".join(lines)


NO_KEYS = KeyTable(())


@dataclass(frozen=True)
class Words:
    """A command's words, parsed: bare words in order, and typed values of the keys given."""

    positionals: tuple[str, ...]
    values: dict[str, object]
    notes: tuple[str, ...] = ()
    given: tuple[str, ...] = ()  # the keys in the order they were given
    yolo_mode: str | None = None  # a pasted ``yolo`` line's mode ("train"); None for yolomem's own words


# words of a pasted ``yolo detect train ...`` line that name the command, not a model
TASK_WORDS = frozenset({"detect", "segment", "pose", "obb", "classify"})
YOLO_WORDS = frozenset({"yolo", "train", *TASK_WORDS})
INFERENCE_MODES = frozenset({"predict", "track", "val", "export"})  # yolo's modes that run a trained model (deploy)
# a shell's NAME=value in front of a pasted command (``CUDA_VISIBLE_DEVICES=0 yolo train ...``); the
# allocator's (PYTORCH_CUDA_ALLOC_CONF) is the ``alloc_conf`` key
ENVIRONMENT_WORD = re.compile(r"[A-Z_][A-Z0-9_]*=")
ALLOC_CONF_VARIABLE = "PYTORCH_CUDA_ALLOC_CONF"


def yolo_mode(words: Iterable[str]) -> str | None:
    """The mode of a pasted ``yolo [task] MODE key=value ...`` line (as Ultralytics' CLI reads it: the first
    bare word after ``yolo`` that is not a task), in lower case; None for words that are not such a line."""
    lowered = [word.lower() for word in words]
    if "yolo" not in lowered:
        return None
    return next((word for word in lowered[lowered.index("yolo") + 1:] if "=" not in word and word not in TASK_WORDS), None)


def parse_words(words: Iterable[str], table: KeyTable, *, ignored: Callable[[], Collection[str]] | None = None,
                yolo_line: bool = False) -> Words:
    """Split ``words`` into bare words and ``key=value`` pairs typed by ``table``.

    ``ignored``: gives the keys that are accepted and dropped with a note (Ultralytics' keys that do not
    change GPU memory); called only for a key not in ``table``, since it imports Ultralytics.
    ``yolo_line``: skip the ``yolo``/``train``/task words of a pasted Ultralytics line. A key given twice
    keeps the last value, as Ultralytics does, and says so when the two differ.
    """
    words = list(words)  # read twice: a yolo line's mode is judged by the whole line
    mode = yolo_mode(words) if yolo_line else None
    if mode in INFERENCE_MODES:
        raise UserError(f"a yolo {mode} line runs a trained model: 'yolomem deploy yolo {mode} ...' sizes it; this "
                        "command sizes training (yolo train)")  # fmt: skip
    positionals: list[str] = []
    values: dict[str, object] = {}
    notes: list[str] = []
    for word in words:
        key, eq, raw = word.partition("=")
        key = key.strip()
        if not eq:
            if yolo_line and word.lower() in YOLO_WORDS:
                continue
            if yolo_line and word.lower() == "resume" and "resume" in table:  # yolo train resume model=last.pt
                values["resume"] = table["resume"].parse("true")
                continue
            positionals.append(word)
            continue
        if not key or raw.strip() == "":
            example = f"{key}=..." if key in table else "batch=16"
            raise UserError(f"malformed argument {word!r}; expected key=value, e.g. {example}")
        if yolo_line and ENVIRONMENT_WORD.match(word):
            if key != ALLOC_CONF_VARIABLE or "alloc_conf" not in table:
                notes.append(f"{word}: the shell's environment, not a training setting; ignored")
                continue
            key = "alloc_conf"
        if key in table:
            earlier = values.pop(key, None)  # keep the given order of the last occurrence
            values[key] = table[key].parse(raw)
            if earlier is not None and earlier != values[key]:
                notes.append(f"{key}= given twice ({earlier}, then {values[key]}): the last counts, as in Ultralytics")
        elif ignored is not None and key in ignored():
            notes.append(ignored_note(key, raw))
        else:
            raise unknown_key(key, table)
    return Words(tuple(positionals), values, tuple(notes), tuple(values), mode)


# Ultralytics keys left out of the estimate though at some values they can lower memory: the figure is
# then an upper one. Per key: whether the value given is such a value, and what it does.
def _truthy(text: str) -> bool:
    return str(text).strip().lower() in {"true", "1", "yes"}


def _below_one(text: str) -> bool:
    try:
        return float(text) < 1
    except ValueError:
        return False


_LOWER_ONLY = {
    "rect": (_truthy, "rectangular batches of non-square images need at most the square batch's memory, which is "
                      "estimated"),
    "fraction": (_below_one, "part of the dataset: no denser batch than the whole set's, which is estimated"),
    # BaseTrainer._do_train: `if self.args.val or final_epoch: ... self.validate()`
    "val": (lambda text: not _truthy(text), "validation only after the final epoch: GPU_mem of the epochs before it "
                                            "can be lower; the run's peak, with that validation, is estimated"),
}


def ignored_note(key: str, value: object) -> str:
    """The note for an Ultralytics key the estimate does not take: no effect on GPU memory, or (``_LOWER_ONLY``)
    an effect that can only lower it."""
    lowers, what = _LOWER_ONLY.get(key, (None, ""))
    if lowers is not None and lowers(str(value)):
        return f"{key}={value}: {what}; not modelled"
    return f"{key}={value} does not change GPU memory; ignored"


# Keys users type for gradient accumulation, which the trainers set through nbs; the nearest spelling
# would mislead ('translate').
_ACCUMULATION_KEYS = frozenset({"accumulate", "accumulation", "grad_accum", "gradient_accumulation"})
_ACCUMULATION_HINT = ("gradient accumulation is nbs=: Ultralytics and the yolov5 repo accumulate "
                      "max(round(nbs / batch), 1) batches, so nbs=64 at batch=16 accumulates 4")


class UnknownKey(UserError):
    """A key the command does not take. The message lists the valid keys; the CLI, which has ``--help``
    for that, says ``short`` instead and adds which command takes the key."""

    def __init__(self, key: str, valid: Iterable[str]):
        valid = sorted(valid)
        close = nearest(key, valid)
        self.key = key
        if key in _ACCUMULATION_KEYS and "nbs" in valid:
            hint = _ACCUMULATION_HINT
        else:
            hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        self.short = f"unknown key {key!r}" + (f" ({hint})" if hint else "")
        super().__init__(f"{self.short}; valid: {', '.join(valid)}")


def unknown_key(key: str, table: KeyTable) -> UnknownKey:
    return UnknownKey(key, table.names)


def _as_typed(number: float) -> str:
    """A bound or value as users write it: whole numbers in full (batch=10000000, not 1e+07)."""
    return str(number) if isinstance(number, int) else f"{number:g}"


def _layers(name: str, text: str) -> tuple[int, ...]:
    """``freeze=10`` freezes layers 0-9 (Ultralytics); ``freeze=[0,1,2]`` lists them."""
    body = text.strip().strip("[]() ")
    try:
        if text.strip().startswith(("[", "(")):
            return tuple(int(x) for x in body.split(",") if x.strip())
        count = int(body or 0)
    except ValueError:
        raise UserError(f"{name}={text!r} must be a layer count like 10 or a list like [0,1,2]") from None
    if count < 0:
        raise UserError(f"{name}={count} must be >= 0")
    return tuple(range(count))


# --- what ``yolomem estimate`` (and every command that estimates) takes --------------------------------

OPTIMIZERS = ("auto", "SGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSprop", "MuSGD")
STEPS = ("train", "fwd_bwd")
FRAMEWORKS = ("ultralytics", "yolov5")  # yolov5: the yolov5 repo's loop (yolomem.loops.yolov5)
PRECISIONS = {"true": "fp16", "fp16": "fp16", "false": "fp32", "fp32": "fp32", "bf16": "bf16"}
DEFAULT_INSTANCES = 8.0
# the datasets whose published per-image tables give a tail shape (yolomem.loops.density.NAMED_SHAPES;
# a test keeps the two lists equal), from the lightest tail to the heaviest
TAILS = ("SKU-110K", "GWHD-2021", "KITTI", "Cityscapes", "VOC", "VisDrone", "COCO", "CrowdHuman", "xView",
         "WIDER-FACE", "DOTA-v2")
# Far above any real mean (SKU-110K, among the densest, averages ~147 objects per image). Without a bound,
# instances=1e9 drew 1.6e10 real boxes (23 GB of host memory) and 1e6-1e7 gave figures that fell as it grew.
MAX_INSTANCES = 1000.0
# A million images a step: far past any card (an issue's example, batch=100000 at imgsz 1280, needs
# terabytes), and below where the assigner's sizes overflow: batch=1e7 ended in a traceback (numel
# overflow), and batch=1e8 drew 8e8 real boxes until the host ran out of memory (24 GB).
MAX_BATCH_REQUEST = 1_000_000

# The one "fits" (yolomem.result.fits) holds back this share of a card's memory after the CUDA context.
DEFAULT_MARGIN = 0.10
MARGIN = Key("margin", FLOAT, DEFAULT_MARGIN, "share of the card after the CUDA context held back for what the "
             "trace does not see, in every fits verdict (0.1 or 10%)", low=0.0, high=0.9, high_open=True)

ESTIMATE_KEYS = KeyTable((
    Key("model", TEXT, "yolov8n.yaml", "a shipped YAML name (yolomem models lists them), a local .yaml or .pt, "
        "or a darknet .cfg"),
    Key("imgsz", INT, 640, "training image size (rounded up to the model's stride); not given: the trainer's "
        "(224 for a classifier, a .pt checkpoint's training size: 1024 for the published OBB weights)", low=1),
    Key("batch", INT, 16, "images per step, over all GPUs (DDP splits it); not given: the trainer's (the yolov5 "
        "repo's classifiers: 64); -1 or a fraction such as 0.7: what Ultralytics' AutoBatch picks on gpu=",
        low=1, high=MAX_BATCH_REQUEST,
        autobatch=True, bound="a million images a step; ten million overflow the assigner's tensor sizes"),
    Key("amp", CHOICE, "fp16", "mixed precision: true (fp16), false (fp32) or bf16", choices=("fp16", "fp32", "bf16"),
        aliases={"true": "fp16", "false": "fp32"}),
    Key("optimizer", CHOICE, "auto", "Ultralytics' optimizer (auto: its own choice)", choices=OPTIMIZERS),
    Key("nbs", INT, 64, "nominal batch size (gradient accumulation and weight decay)", low=1),
    Key("freeze", LAYERS, (), "layers to freeze: N (layers 0..N-1) or a list [0,1,2]", low=0),
    Key("multi_scale", FLOAT, 0.0, "Ultralytics' multi-scale range, a fraction in [0, 1)", low=0.0, high=1.0, high_open=True),
    Key("instances", FLOAT, DEFAULT_INSTANCES, "mean labelled objects per image", low=0.0, high=MAX_INSTANCES,
        bound="objects per image; the densest public detection sets average about 150"),
    Key("step", CHOICE, "train", "train: full training iterations; fwd_bwd: AutoBatch's probe", choices=STEPS),
    Key("iterations", INT, 2, "training iterations to trace", low=1),
    Key("alloc_conf", TEXT, None, "PYTORCH_CUDA_ALLOC_CONF to simulate, e.g. expandable_segments:True", nullable=True),
    Key("gpu", TEXT, None, "a GPU to fit on, e.g. T4, RTX-3090, A100-80GB", nullable=True),
    Key("gpu_mem", FLOAT, None, "the GPU's memory in GiB (a card not in the catalog, or a share of one)",
        nullable=True, low=0.0, low_open=True),
    MARGIN,
    Key("framework", CHOICE, "ultralytics", "training loop: ultralytics or yolov5 (the yolov5 repo's train.py)",
        choices=FRAMEWORKS),
    Key("seed", INT, 0, "seed of the synthetic batches", low=0),
    Key("nc", INT, None, "number of classes (default: data='s, else those of Ultralytics' default data for the "
        "task: 1 for pose, 15 for obb; classify: the model's)", nullable=True, low=1),
    Key("data", TEXT, None, "an Ultralytics dataset YAML: objects per image, image sizes, whole epochs", nullable=True),
    Key("world_size", INT, 1, "DDP ranks; the batch is split across them", low=1),
    Key("checkpoint", BOOL, False, "activation checkpointing"),
    Key("single_cls", BOOL, False, "every object one class: the model is built with nc=1 where the trainer does "
        "(Ultralytics 8.3.79+, the yolov5 repo)"),
    Key("epochs", INT, None, ">= 2 simulates epochs with the val pass", nullable=True, low=1),
    Key("cache", CHOICE, None, "Ultralytics' image cache: ram or disk (host memory)", choices=("ram", "disk"),
        aliases={"true": "ram", "false": None, "none": None}, nullable=True),
    Key("workers", INT, 8, "dataloader workers (host memory)", low=0),
    Key("max_instances", INT, None, "the most labelled objects in any one image, if you know it (sets the densest "
        "batch)", nullable=True, low=1, high=100_000, bound="objects in one image; xView's densest holds 7,618"),
    Key("images", INT, None, "training images per epoch, if you know it (batches per epoch; a longer epoch meets a "
        "denser batch) [without data=: 2000]", nullable=True, low=1, high=100_000_000,
        bound="images per epoch; Objects365 trains on 1.7 million"),
    Key("tail", CHOICE, None, "objects per image spread like a published dataset's, e.g. WIDER-FACE for faces, "
        "DOTA-v2 for aerial images [without data=: the median spread; the upper figure: CrowdHuman's]",
        choices=TAILS, nullable=True),
    Key("mosaic", FLOAT, 1.0, "Ultralytics' mosaic probability: 4 images per training sample", low=0.0, high=1.0),
    Key("close_mosaic", INT, 10, "Ultralytics: no mosaic in the last N epochs (epochs <= N: none of them from 8.4.157; before, all of them only when epochs == N)", low=0),
    Key("scale", FLOAT, 0.5, "Ultralytics' random zoom, U(1 - scale, 1 + scale): how many objects a sample shows",
        low=0.0, high=0.99),
    Key("translate", FLOAT, 0.1, "Ultralytics' random shift, a fraction of imgsz: how many objects a sample shows",
        low=0.0, high=1.0),
    # Ultralytics keys with a meaning here that is not a setting of its own (EstimateConfig.from_values)
    Key("device", TEXT, None, "device=0,1: DDP over 2 GPUs (sets world_size)", nullable=True),
    Key("resume", TEXT, None, "resume=true (or the bare word in a pasted yolo line): the run of model=last.pt, "
        "with its train_args as the installed release resumes it", nullable=True,
        aliases={"true": "true", "false": None}),
    Key("task", TEXT, None, "ignored: the task comes from the model", nullable=True),
    Key("overlap_mask", BOOL, True, "ignored: Ultralytics' default is used"),
    Key("mask_ratio", INT, 4, "ignored: Ultralytics' default is used", low=1),
))


# --- keys more than one command shares --------------------------------------------------------------

MAX_CURVE_POINTS = 12  # each point of a plotted curve is a full traced estimate
