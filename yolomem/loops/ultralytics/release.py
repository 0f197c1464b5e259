"""What the installed Ultralytics release does where releases differ in memory: read from its code.

yolomem traces the installed trainer, loss, assigner and validator, so most release differences
need nothing here. What the trace does not run, or runs through yolomem's own stand-ins, is probed
once per process from the installed code (behaviour where it can be called, its source otherwise),
never looked up by version number:

- ``gpu_mem_unit``: what the progress bar's ``GPU_mem`` divides by: ``BaseTrainer._get_memory`` is
  called with a stand-in reporting 2**30 bytes reserved (GB = 10^9 before 8.3.76, GiB since);
  before ``_get_memory`` existed (up to 8.2.93) the divisor is read in ``_do_train``;
- ``cache_clears``: where ``_do_train``'s epoch loop empties the CUDA cache around validation, and
  under which threshold (its syntax tree): after each epoch always (up to 8.3.86), when more than
  90 % / 50 % of the card is reserved (8.3.87 / 8.3.109), and also before validation (8.3.152);
- ``validation``: whether ``BaseValidator.__call__`` converts the EMA to fp16 in place
  (``model.half()``, up to 8.4.61) or runs it in fp32 under autocast (8.4.62), whether it does
  so without AMP too (up to 8.2.95), and whether the last loss item outlives the loss (8.4.104);
- ``nms``: ``non_max_suppression`` from ``ultralytics.utils.nms`` (8.3.190) or ``utils.ops``;
- ``warmup_runs_nms``: whether ``AutoBackend.warmup`` runs NMS after its forward (8.4; its source);
- ``optimizers`` / ``auto_optimizer``: ``BaseTrainer.build_optimizer`` called on a two-layer model:
  the names it accepts (``RMSProp`` or ``RMSprop``, ``MuSGD`` from 8.4.0) and what ``auto`` picks;
- ``fused_adam``: whether ``build_optimizer`` asks for fused Adam/AdamW on CUDA (8.4.154) or
  leaves torch's default, the foreach kernels;
- ``semantic_masks``: whether the data pipeline's ``Format`` adds ``sem_masks`` to segmentation batches
  (8.4.0), which the trainer and the validator move to the GPU and YOLO26-seg's loss reads;
- ``default_imgsz``: the imgsz each task's trainer trains at when none is given: its ``__init__`` called
  with ``BaseTrainer.__init__`` stubbed (``ClassificationTrainer`` sets 224 in every supported release);
- ``single_cls_one_class``: whether ``single_cls=True`` makes the dataset one class, so that the model is
  built with ``nc=1`` (``get_dataset``'s syntax tree, 8.3.79), or only relabels every object class 0;
- ``amp_refused_cards``: the pattern of CUDA device names on which ``check_amp`` turns AMP off before
  any check (GTX 16xx, T400-T2000, K40m; 8.3.47), read in its syntax tree; None before;
- ``classify_imgsz_rewrite``: ``ClassificationTrainer.get_model`` turning imgsz 640 into 224 (up to
  8.0.103), read in its syntax tree;
- ``amp_switch``: whether the trainer has an ``amp`` option (``default.yaml``, 8.0.57); before, it trains
  with AMP on every GPU;
- ``oom_retries``: how many times ``_do_train`` halves the batch after an out-of-memory error in the
  first epoch (3, from 8.4.13; one GPU only), read in its syntax tree; 0 before.

``check_release`` refuses releases known not to work (one line, exit 2) and warns about releases
newer than the newest one tested. README, "Ultralytics releases", lists what differs and where.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import inspect
import os
import re
import sys
import textwrap
from dataclasses import dataclass, field
from types import SimpleNamespace

from yolomem.errors import UserError
from yolomem.loops.base import CacheClears, larger_side
from yolomem.loops.ultralytics.trainer_source import ReleaseProbeError, function_tree

# 8.0.35: the oldest release on PyPI after 8.0.0-8.0.6 (which read their settings through hydra and train by
# another API; 8.0.7-8.0.34 are not on PyPI). Up to 8.0.135 the package had another layout, read through
# legacy_layout's aliases; up to 8.0.110 the loss lived in the trainer (UltralyticsRun follows it), up to
# 8.0.112 build_optimizer was a static method without optimizer=auto (probed here), and up to 8.0.95 the
# assigner used F.one_hot (loops.base.cuda_one_hot). Up to 8.0.56 the trainer has no amp option (``amp_switch``),
# up to 8.0.54 every scale has its own model YAML (models.yaml_model_load), and up to 8.0.43 the task map
# names its trainers in strings (task_map). 8.0.56-8.0.58 fail at import when YOLO_CONFIG_DIR is set (they
# join it to a file name as a str): ``installed_version`` says so in one line.
OLDEST_SUPPORTED = (8, 0, 35)
NEWEST_TESTED = (8, 4, 190)
TESTED_RANGE = "8.0.35 to 8.4.190"
# Releases inside the range that are known not to trace, with the reason (none found so far: the CI
# matrix, .ci/ultralytics_matrix.py, is where a new entry would come from).
KNOWN_BROKEN: dict[tuple[int, int, int], str] = {}
# optimizer=auto: Ultralytics switches by the run's iterations (epochs x batches): AdamW up to 10k
# (8.0.113: NAdam up to 6k), SGD or MuSGD beyond. Without the dataset size yolomem assumes a short run,
# and says what a long one would get.
SHORT_RUN_ITERATIONS = 6_000
LONG_RUN_ITERATIONS = 100_000


@dataclass(frozen=True)
class ValidationPrecision:
    """How ``BaseValidator.__call__`` runs the EMA during training."""

    ema_half_in_place: bool  # model.half() on trainer.ema.ema, model.float() at the end
    half_without_amp: bool  # fp16 whenever on a GPU, even when training in fp32
    autocast: bool  # forward and loss under autocast(amp), weights left fp32
    sets_end2end: bool = False  # model.end2end = self.args.nms is False (before, end2end is the head's own)
    # 8.4.104: ``for k, v in ...items(): self.loss[k] += v`` leaves the last item alive in ``v``; before,
    # ``self.loss += model.loss(batch, preds)[1]`` lets the items go at once
    keeps_last_loss_item: bool = True


@dataclass(frozen=True)
class Release:
    """The installed Ultralytics, as far as memory is concerned (see the module docstring)."""

    version: str
    gpu_mem_unit: str  # "GiB" or "GB"
    cache_clears: CacheClears | None  # None: the epoch loop could not be read
    validation: ValidationPrecision
    fused_adam: bool
    optimizers: tuple[str, ...]  # names build_optimizer accepts, as it spells them
    auto_short: str  # optimizer=auto for runs of at most SHORT_RUN_ITERATIONS
    auto_long: str  # ... and for longer runs
    default_imgsz: dict[str, int]  # per task: what the trainer trains at when imgsz is not given
    single_cls_one_class: bool  # single_cls=True builds the model with one class
    amp_refused_cards: str | None  # check_amp's regex of device names it trains in FP32 on (None: no such list)
    oom_retries: int = 0  # first-epoch out-of-memory errors the trainer answers by halving the batch
    trains_bf16: bool = True  # the trainer takes amp='bf16' (before: a boolean only)
    task_models: dict[str, str] = field(default_factory=dict)  # per task, what `yolo TASK train` takes without model=
    amp_switch: bool = True  # the trainer has an amp option (8.0.57; before, AMP on every GPU)
    classify_imgsz_rewrite: tuple[int, int] | None = None  # (asked, trained): get_model's rewrite, up to 8.0.103

    def turns_amp_off(self, gpu) -> bool:
        """Whether ``check_amp`` turns AMP off on ``gpu`` (a ``yolomem.config.gpus.Gpu``) by its name alone."""
        return bool(self.amp_refused_cards and re.search(self.amp_refused_cards, gpu.device_name, re.IGNORECASE))

    def no_amp_switch(self) -> str:
        return (f"ultralytics {self.version}'s trainer has no amp option (it arrived in 8.0.57): it trains with fp16 "
                "AMP on every GPU")  # fmt: skip

    def no_bf16(self) -> str | None:
        """Why ``amp=bf16`` is no setting of this trainer (before 8.4.129); None where it is."""
        if self.trains_bf16:
            return None
        return (f"ultralytics {self.version}'s trainer has no bf16 (it reads amp as True or False, and "
                "torch.tensor('bf16') stops yolo train; amp=bf16 arrived in 8.4.129)")

    def optimizer_name(self, requested: str) -> str:
        """The installed spelling of ``requested`` (``RMSprop`` vs ``RMSProp``), or a one-line error."""
        for name in self.optimizers:
            if name.lower() == requested.lower():
                return name
        raise UserError(f"optimizer={requested} is not in the installed ultralytics {self.version}; "
                        f"it accepts {', '.join(self.optimizers)}")  # fmt: skip

    @property
    def nms(self):
        return nms_function()

    def auto_note(self) -> str:
        if "auto" not in {name.lower() for name in self.optimizers}:
            return f"optimizer=auto: ultralytics {self.version} has none; its default optimizer is {self.auto_short}"
        if self.auto_short == self.auto_long:
            return f"optimizer=auto: ultralytics {self.version} picks {self.auto_short}"
        return (f"optimizer=auto: assumed a run of <= {SHORT_RUN_ITERATIONS // 1000}k iterations, for which ultralytics {self.version} picks "
                f"{self.auto_short}; pass optimizer={self.auto_long} for longer runs")  # fmt: skip


def version_tuple(version: str) -> tuple[int, ...]:
    """'8.3.74' -> (8, 3, 74); local or pre-release suffixes are dropped ('8.4.0rc1' -> (8, 4, 0))."""
    parts = [re.match(r"\d*", part).group() for part in version.split(".")[:3]]
    return tuple(int(part) if part else 0 for part in parts)


def installed_version() -> str:
    try:
        import_quietly()
    except Exception:
        # A release too old for this Python fails in its own import (8.0.x: pkg_resources): say so in
        # one line, from the version its package metadata records, rather than show its traceback.
        recorded = _recorded_version()
        if recorded:
            check_release(recorded)
            if (8, 0, 56) <= version_tuple(recorded) < (8, 0, 59) and os.environ.get("YOLO_CONFIG_DIR"):
                raise UserError(f"ultralytics {recorded} cannot be imported while YOLO_CONFIG_DIR is set (it joins the "
                                "variable, a str, to a file name; fixed in 8.0.59): unset YOLO_CONFIG_DIR, which its "
                                "own yolo command needs too") from None  # fmt: skip
        raise
    import ultralytics

    return ultralytics.__version__


def _recorded_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ultralytics")
    except PackageNotFoundError:
        return None


def import_quietly() -> None:
    """Import Ultralytics with its stdout sent to stderr. Its logger binds to the stream it sees at import,
    so its messages (e.g. "settings reset", printed when another release wrote the settings file) go to
    stderr for good and ``--json`` output stays clean."""
    if "ultralytics" in sys.modules:
        return
    with contextlib.redirect_stdout(sys.stderr):
        import ultralytics  # noqa: F401


def check_release(version: str | None = None) -> str | None:
    """Raise ``UserError`` for a release known not to work; return a warning for an untested newer one."""
    version = version or installed_version()
    parts = version_tuple(version)
    if parts < OLDEST_SUPPORTED:
        raise UserError(f"ultralytics {version} is older than 8.0.35, the oldest release yolomem traces "
                        f"(tested: {TESTED_RANGE}); pip install 'ultralytics>=8.0.35'")  # fmt: skip
    if parts in KNOWN_BROKEN:
        raise UserError(f"ultralytics {version} is known not to work with yolomem: {KNOWN_BROKEN[parts]}")
    if parts > NEWEST_TESTED:
        return (f"ultralytics {version} is newer than the releases yolomem is tested with ({TESTED_RANGE}); "
                "the figures trace its code, but a change in its trainer may not be followed")  # fmt: skip
    return None


@functools.cache
def warn_once(message: str) -> None:
    print(f"yolomem: warning: {message}", file=sys.stderr)


@functools.cache
def release() -> Release:
    """Probe the installed release (once per process; call it outside a tracer), or read back what a
    probe of the same release found: the probes build optimizers, which imports ``torch._dynamo``
    (over a second), and an estimate from the trace cache needs nothing else of it."""
    from yolomem.trace.store import active_store, code_key

    import_quietly()  # before code_key imports it
    return active_store().kept_probe(code_key() | {"probe": "ultralytics release"}, _probe_release, Release)


def _probe_release() -> Release:
    version = installed_version()
    short, long = auto_optimizer(SHORT_RUN_ITERATIONS), auto_optimizer(LONG_RUN_ITERATIONS)
    try:
        clears = cache_clears()
    except ReleaseProbeError:
        clears = None
    return Release(version, gpu_mem_unit(), clears, validation_precision(), fused_adam(), optimizers(), short, long,
                   default_imgsz(), single_cls_one_class(), amp_refused_cards(), oom_retries(), trains_bf16(),
                   task_models(), amp_switch=amp_switch(), classify_imgsz_rewrite=classify_imgsz_rewrite())  # fmt: skip


_TASK_MAP_FIELDS = ("model", "trainer", "validator", "predictor")


def task_map(wrapper_name: str = "YOLO") -> dict[str, dict]:
    """The task map of the installed Model class ``wrapper_name`` (``YOLO``, ``RTDETR``...): per task, the
    model, trainer, validator and predictor classes ``yolo train`` and ``yolo val`` use. A ``task_map``
    property since 8.0.143; before, ``engine.model.TASK_MAP``, of lists in that order, for YOLO only."""
    import ultralytics

    wrapper = getattr(ultralytics, wrapper_name, None)  # not in every release (RTDETR, YOLOWorld)
    if hasattr(wrapper, "task_map"):
        return wrapper.task_map.fget(wrapper.__new__(wrapper))  # a property on the instance
    from ultralytics.engine import model as engine_model

    legacy = getattr(engine_model, "TASK_MAP", None)
    if legacy is None and hasattr(engine_model, "MODEL_MAP"):
        legacy = _model_map(engine_model.MODEL_MAP)
    if wrapper_name != "YOLO" or legacy is None:
        raise UserError(f"{wrapper_name} on ultralytics {ultralytics.__version__}: its trainer is not reachable from a task "
                        "map before 8.0.143, so yolomem cannot trace it; pip install 'ultralytics>=8.0.143'")  # fmt: skip
    return {task: dict(zip(_TASK_MAP_FIELDS, classes)) for task, classes in legacy.items()}


def default_data() -> dict[str, str]:
    """Per task, the dataset ``yolo train`` trains on when ``data=`` is not given: ``cfg.TASK2DATA`` (8.0.45 on);
    before, the ``task2data = dict(...)`` that ``cfg.entrypoint`` builds, read from its syntax tree."""
    import ultralytics.cfg as cfg

    if hasattr(cfg, "TASK2DATA"):
        return dict(cfg.TASK2DATA)
    for node in ast.walk(function_tree(cfg.entrypoint)):
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "task2data" for t in node.targets)
                and isinstance(node.value, ast.Call) and ast.unparse(node.value.func) == "dict"):
            return {k.arg: ast.literal_eval(k.value) for k in node.value.keywords}  # fmt: skip
    raise ReleaseProbeError("no default dataset per task found in ultralytics.cfg")


def _model_map(model_map: dict) -> dict[str, list]:
    """Up to 8.0.43 ``engine.model.MODEL_MAP``: per task the model class, then the trainer, validator and
    predictor as dotted names under ``ultralytics`` with ``TYPE`` for the model type (``'yolo.TYPE.detect.
    DetectionTrainer'``), which ``YOLO._assign_ops_from_task`` evaluates with ``TYPE`` = ``v8``."""
    import importlib

    def resolve(name: str):
        module, _, attribute = f"ultralytics.{name.replace('TYPE', 'v8')}".rpartition(".")
        return getattr(importlib.import_module(module), attribute)

    return {task: [model, *map(resolve, names)] for task, (model, *names) in model_map.items()}


# -- probes -------------------------------------------------------------------------------------------
def gpu_mem_unit() -> str:
    """What ``GPU_mem`` is printed in: "GiB" (bytes / 2**30) or "GB" (bytes / 1e9)."""
    from unittest import mock

    import torch
    from ultralytics.engine.trainer import BaseTrainer

    get_memory = getattr(BaseTrainer, "_get_memory", None)
    if get_memory is None:  # up to 8.2.93 the progress bar divides inline in _do_train
        source = inspect.getsource(BaseTrainer._do_train)
        if "memory_reserved() / 1E9" in source or "memory_reserved() / 1e9" in source:
            return "GB"
        raise ReleaseProbeError("no _get_memory and no memory_reserved() / 1e9 in _do_train")
    reserved = float(2**30)
    stand_in = SimpleNamespace(
        device=SimpleNamespace(type="cuda"),
        accelerator=SimpleNamespace(memory_reserved=lambda *a, **k: reserved),  # 8.4.x: self.accelerator
    )  # fmt: skip
    with mock.patch.object(torch.cuda, "memory_reserved", lambda *a, **k: reserved):
        value = get_memory(stand_in)
    if abs(value - 1.0) < 1e-9:
        return "GiB"
    if abs(value - reserved / 1e9) < 1e-9:
        return "GB"
    raise ReleaseProbeError(f"_get_memory turned 2**30 bytes into {value}")


def cache_clears() -> CacheClears:
    """The ``_clear_memory`` / ``empty_cache`` calls of ``_do_train``'s epoch loop, before and after
    ``self.validate()``, with their thresholds. Calls inside the batch loop (8.4's OOM retry) or an
    ``except`` are not epoch-boundary clears."""
    from ultralytics.engine.trainer import BaseTrainer

    function = function_tree(BaseTrainer._do_train)
    epoch_loop = next((node for node in function.body if isinstance(node, (ast.For, ast.While)) and _calls(node, "validate")), None)
    if epoch_loop is None:
        raise ReleaseProbeError("no epoch loop calling self.validate() in BaseTrainer._do_train")
    validate_line = min(call.lineno for call in _calls(epoch_loop, "validate"))
    before = after = None
    for call, guards in _clear_calls(epoch_loop.body, ()):
        threshold = _threshold(call, guards)
        if call.lineno < validate_line:
            before = threshold if before is None else min(before, threshold)
        else:
            after = threshold if after is None else min(after, threshold)
    return CacheClears(before_val=before, after_epoch=after)


def _calls(node: ast.AST, attribute: str) -> list[ast.Call]:
    return [n for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == attribute]


def _clear_calls(statements, guards):
    """(call, enclosing if-tests) for each cache clear, not descending into loops or except handlers."""
    for statement in statements:
        if isinstance(statement, (ast.For, ast.While, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue  # the batch loop, helper closures
        if isinstance(statement, ast.If):
            yield from _clear_calls(statement.body, (*guards, statement.test))
            yield from _clear_calls(statement.orelse, guards)
            continue
        if isinstance(statement, ast.Try):
            yield from _clear_calls(statement.body + statement.orelse + statement.finalbody, guards)
            continue
        if isinstance(statement, ast.With):
            yield from _clear_calls(statement.body, guards)
            continue
        for call in _calls(statement, "_clear_memory") + _calls(statement, "empty_cache"):
            yield call, guards


def _threshold(call: ast.Call, guards) -> float:
    """0.0 for an unconditional clear, else the fraction of the card reserved above which it empties."""
    argument = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "threshold"), None)
    if isinstance(argument, ast.IfExp):  # 8.4: `None if self.device.type == "mps" else 0.5`; a GPU is not mps
        argument = argument.orelse if "mps" in ast.unparse(argument.test) else argument.body
    if argument is not None:
        if not isinstance(argument, ast.Constant):
            raise ReleaseProbeError(f"threshold {ast.unparse(argument)!r} is not a constant")
        return float(argument.value or 0.0)  # _clear_memory(None) / (0): unconditional
    for test in guards:  # 8.3.87: `if self._get_memory(fraction=True) > 0.9: self._clear_memory()`
        if isinstance(test, ast.Compare) and "_get_memory" in ast.unparse(test.left) and isinstance(test.comparators[0], ast.Constant):
            return float(test.comparators[0].value)
    return 0.0


def validation_precision() -> ValidationPrecision:
    from ultralytics.engine.validator import BaseValidator

    function = function_tree(BaseValidator.__call__)
    source = ast.unparse(function)
    halves = any(isinstance(call.func.value, ast.Name) and call.func.value.id == "model" for call in _calls(function, "half"))
    autocast = any(
        isinstance(item.context_expr, ast.Call) and "autocast" in ast.unparse(item.context_expr.func)
        for node in ast.walk(function) if isinstance(node, ast.With) for item in node.items
    )  # fmt: skip
    # 8.0.59 .. 8.2.95: `self.args.half = self.device.type != "cpu"`; later `... and trainer.amp`
    return ValidationPrecision(ema_half_in_place=halves, half_without_amp="trainer.amp" not in source, autocast=autocast,
                               sets_end2end="model.end2end = " in source,
                               keeps_last_loss_item="self.loss +=" not in source)  # fmt: skip


def nms_function():
    """Ultralytics' ``non_max_suppression`` (moved from ``utils.ops`` to ``utils.nms`` in 8.3.190)."""
    try:
        from ultralytics.utils.nms import non_max_suppression
    except ImportError:
        from ultralytics.utils.ops import non_max_suppression
    return non_max_suppression


@functools.cache
def warmup_runs_nms() -> bool:
    """Whether ``AutoBackend.warmup`` runs NMS on random boxes after its forward (8.4; 8.3 and earlier
    run the forward alone): deploy's CUDA warmup follows it."""
    from ultralytics.nn.autobackend import AutoBackend

    return "non_max_suppression" in inspect.getsource(AutoBackend.warmup)


def fused_adam() -> bool:
    """``build_optimizer`` passes ``fused=True`` to Adam/AdamW for CUDA parameters (8.4.154+)."""
    from ultralytics.engine.trainer import BaseTrainer

    return "fused" in inspect.getsource(BaseTrainer.build_optimizer)


@functools.cache
def semantic_masks() -> bool:
    """``Format`` makes a ``sem_masks`` map per segmentation image (8.4.0+): read in its source, since
    calling it needs an ``Instances`` whose signature changed across releases."""
    from ultralytics.data.augment import Format

    return "sem_masks" in inspect.getsource(Format)


def default_imgsz() -> dict[str, int]:
    """Per task, the imgsz its trainer trains at when the user gives none: each trainer's own ``__init__``
    runs with ``BaseTrainer.__init__`` replaced by a stand-in that keeps the overrides passed up to it
    (``ClassificationTrainer``: ``if overrides.get("imgsz") is None: overrides["imgsz"] = 224``); where a
    trainer sets none, default.yaml's (``larger_side`` of a list)."""
    from unittest import mock

    from ultralytics.cfg import get_cfg
    from ultralytics.engine.trainer import BaseTrainer

    found = {}
    for task, classes in task_map().items():
        passed: dict = {}

        def keep(self, cfg=None, overrides=None, _callbacks=None, passed=passed):
            passed.update(overrides or {})

        with mock.patch.object(BaseTrainer, "__init__", keep), contextlib.suppress(Exception):
            classes["trainer"](overrides={})  # lines after super().__init__() may read what the stand-in skipped
        found[task] = larger_side(passed.get("imgsz") if passed.get("imgsz") is not None else get_cfg().imgsz)
    return found


def task_models() -> dict[str, str]:
    """``TASK2MODEL``: per task, the weights ``yolo TASK train`` takes when no model is given (yolov8n.pt in
    8.0-8.2, yolo11n.pt in 8.3, yolo26n.pt in 8.4)."""
    import ultralytics.cfg

    return {str(task): str(model) for task, model in getattr(ultralytics.cfg, "TASK2MODEL", {}).items()}


def single_cls_one_class() -> bool:
    """``BaseTrainer.get_dataset`` sets ``nc`` to 1 under ``if self.args.single_cls`` (8.3.78 -> 8.3.79:
    "Overriding class names with single class."), and the trainer builds the model with the data's nc;
    before, single_cls only relabelled the objects class 0 in the dataset."""
    from ultralytics.engine.trainer import BaseTrainer

    for node in ast.walk(function_tree(BaseTrainer.get_dataset)):
        if isinstance(node, ast.If) and "single_cls" in ast.unparse(node.test):
            for statement in ast.walk(node):
                if (isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant)
                        and statement.value.value == 1 and any(isinstance(t, ast.Subscript)
                        and isinstance(t.slice, ast.Constant) and t.slice.value == "nc" for t in statement.targets)):
                    return True  # fmt: skip
    return False


def check_amp_function():
    """The installed ``check_amp``: in ``utils.checks``, or up to 8.0.112 in the trainer's module; None
    before 8.0.50, whose trainer trains AMP on every GPU without checking it."""
    from ultralytics.engine import trainer
    from ultralytics.utils import checks

    return getattr(checks, "check_amp", None) or getattr(trainer, "check_amp", None)


def amp_refused_cards() -> str | None:
    """The regex ``check_amp`` matches ``torch.cuda.get_device_name`` against to return False at once ("AMP
    training on {gpu} GPU may cause NaN losses or zero-mAP results, so AMP will be disabled"; 8.3.46 ->
    8.3.47): the string given to ``re.compile`` in its syntax tree; None where it compiles none."""
    check_amp = check_amp_function()
    if check_amp is None:
        return None
    for node in ast.walk(function_tree(check_amp)):
        if (isinstance(node, ast.Call) and ast.unparse(node.func) == "re.compile" and node.args
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            return node.args[0].value  # fmt: skip
    return None


def oom_retries() -> int:
    """How many times ``BaseTrainer._do_train`` halves the batch after an out-of-memory error before it
    lets the error stop the run: ``if epoch > self.start_epoch or self._oom_retries >= 3 or RANK != -1:
    raise`` (8.4.13), the constant of that comparison in its syntax tree; 0 where there is none."""
    from ultralytics.engine.trainer import BaseTrainer

    for node in ast.walk(function_tree(BaseTrainer._do_train)):
        if (isinstance(node, ast.Compare) and ast.unparse(node.left) == "self._oom_retries"
                and isinstance(node.comparators[0], ast.Constant)):
            return int(node.comparators[0].value)  # fmt: skip
    return 0


def known_arguments(arguments: dict) -> dict:
    """The entries of ``arguments`` whose key the installed ``default.yaml`` has: a key it lacks stops ``yolo``
    and ``Model.train`` (``check_dict_alignment``, ``check_cfg_mismatch`` before); ``amp`` before 8.0.57, for one."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return {key: value for key, value in arguments.items() if key in DEFAULT_CFG_DICT}


def amp_switch() -> bool:
    """Whether the trainer has an ``amp`` option, a key of its ``default.yaml`` (8.0.57). Before, ``_setup_train``
    sets ``self.amp = self.device.type != 'cpu'`` (then, from 8.0.50, asks ``check_amp``), and ``yolo train
    amp=False`` stops as an invalid argument."""
    from ultralytics.utils import DEFAULT_CFG_DICT

    return "amp" in DEFAULT_CFG_DICT


def classify_imgsz_rewrite() -> tuple[int, int] | None:
    """``ClassificationTrainer.get_model``'s ``if self.args.imgsz == 640: self.args.imgsz = 224`` (up to 8.0.103;
    it runs in ``_setup_train`` before the dataloaders are built, so a classifier asked for 640, or given no
    imgsz, trains and validates at 224): the two constants of that ``if`` in its syntax tree; None where
    there is none (from 8.0.104 ``__init__`` sets 224 only where no imgsz is given: ``default_imgsz``)."""
    trainer = task_map().get("classify", {}).get("trainer")
    if trainer is None:
        return None
    for node in ast.walk(function_tree(trainer.get_model)):
        if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                and ast.unparse(node.test.left) == "self.args.imgsz" and isinstance(node.test.comparators[0], ast.Constant)):
            for statement in node.body:
                if (isinstance(statement, ast.Assign) and ast.unparse(statement.targets[0]) == "self.args.imgsz"
                        and isinstance(statement.value, ast.Constant)):
                    return node.test.comparators[0].value, statement.value.value  # fmt: skip
    return None


def trains_bf16() -> bool:
    """Whether the trainer trains in bfloat16 for ``amp='bf16'``: ``autocast(torch.bfloat16 if
    self.args.amp == "bf16" else self.amp)`` (8.4.129), a comparison with "bf16" in its syntax tree. Before,
    ``_setup_train`` reads ``amp`` as a boolean, ``torch.tensor(self.args.amp)``, which a string stops."""
    from ultralytics.engine.trainer import BaseTrainer

    tree = ast.parse(textwrap.dedent(inspect.getsource(BaseTrainer)))
    return any(isinstance(node, ast.Compare) and ast.unparse(node.left) == "self.args.amp"
               and any(isinstance(c, ast.Constant) and c.value == "bf16" for c in node.comparators)
               for node in ast.walk(tree))  # fmt: skip


def _probe_build(name: str, iterations: int = SHORT_RUN_ITERATIONS):
    """``build_optimizer(name)`` on a two-layer model (a conv with bias, a batch norm): all three groups."""
    import torch
    from ultralytics.cfg import get_cfg
    from ultralytics.utils import LOGGER

    model = torch.nn.Module()  # shaped like a YOLO model: layers in .model, the head last (MuSGD looks at it)
    model.model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    stand_in = SimpleNamespace(args=get_cfg(), data={"nc": 80})
    level = LOGGER.level
    LOGGER.setLevel("ERROR")  # build_optimizer logs its choice
    try:
        return call_build_optimizer(stand_in, model=model, name=name, iterations=iterations)
    finally:
        LOGGER.setLevel(level)


def call_build_optimizer(trainer, **arguments):
    """``BaseTrainer.build_optimizer(**arguments)`` as the installed release defines it: a method that takes
    the run's ``iterations`` (8.0.113+), or before, a static method without them (and without ``auto``)."""
    from ultralytics.engine.trainer import BaseTrainer

    accepted = inspect.signature(BaseTrainer.build_optimizer).parameters
    arguments = {key: value for key, value in arguments.items() if key in accepted}
    if isinstance(inspect.getattr_static(BaseTrainer, "build_optimizer"), staticmethod):
        return BaseTrainer.build_optimizer(**arguments)
    return BaseTrainer.build_optimizer(trainer, **arguments)


def optimizers() -> tuple[str, ...]:
    """The optimizer names the installed ``build_optimizer`` accepts."""
    from yolomem.config.settings import OPTIMIZERS

    accepted: dict[str, str] = {}  # lower-case -> the first spelling it accepts (8.3.x+ ignores case)
    for name in (*OPTIMIZERS, "RMSProp"):
        if name.lower() in accepted:
            continue
        try:
            _probe_build(name)
        except NotImplementedError:
            continue
        accepted[name.lower()] = name
    return tuple(accepted.values())


def auto_optimizer_for(iterations: int) -> str:
    """What ``optimizer=auto`` builds for a run of ``iterations``: the probed short and long picks where the
    run is that short or long (every release switches between them), else a probe at that length."""
    installed = release()
    if iterations <= SHORT_RUN_ITERATIONS:
        return installed.auto_short
    if iterations >= LONG_RUN_ITERATIONS or installed.auto_short == installed.auto_long:
        return installed.auto_long
    return _auto_between(iterations)


@functools.cache
def _auto_between(iterations: int) -> str:
    return auto_optimizer(iterations)


def auto_optimizer(iterations: int) -> str:
    """What ``optimizer=auto`` builds for a run of ``iterations`` iterations; before 8.0.113, which has no
    ``auto``, the trainer's default (``optimizer: SGD`` in its default.yaml)."""
    try:
        return type(_probe_build("auto", iterations)).__name__
    except NotImplementedError:
        from ultralytics.cfg import get_cfg

        return type(_probe_build(get_cfg().optimizer, iterations)).__name__
