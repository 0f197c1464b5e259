"""The Ultralytics training iteration, run under a ``Tracer``.

It calls Ultralytics' own code wherever that code can run without a dataset or a GPU:
``build_optimizer`` (three parameter groups), the task trainer's ``preprocess_batch``,
``model(batch)`` (forward and the task's loss with its assigner), ``optimizer_step`` (unscale,
``clip_grad_norm_``, step, ``zero_grad``, ``ModelEMA.update``). These are called unbound with a small
stand-in for the trainer, which holds what ``BaseTrainer._setup_train`` would have set.

Where the installed Ultralytics would take a different path on a GPU than on this CPU trace, we take
the GPU's path, and say so next to the line:
- the scaler is enabled (``GradScaler('cuda')`` disables itself without CUDA);
- Adam/AdamW are built ``fused=True`` where the installed ``build_optimizer`` asks for it on CUDA
  (8.4.154+, ``release.fused_adam``); otherwise, and for other optimizers and ``clip_grad_norm_``,
  the foreach kernels torch picks for CUDA tensors.

A scalar read of a fake value (``if fg_mask.sum():``, ``if fg_mask.max() > 1:`` in the loss and the
assigner) is answered by ``UltralyticsOracle``: the branch a batch with objects takes.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from yolomem.loops.base import amp_dtype, check_trainable, max_stride
from yolomem.trace.autocast import CudaAutocastPolicy
from yolomem.loops.batches import SyntheticBatch
from yolomem.loops.ultralytics import families
from yolomem.loops.ultralytics.families import family_of, model_nc, task_classes
from yolomem.loops.ultralytics.release import semantic_masks
from yolomem.trace.tracer import DataOracle, Tracer

WARMUP_MIN_ITERATIONS = 100  # BaseTrainer._get_warmup_iterations: max(round(warmup_epochs * nb), 100)


@dataclass(frozen=True)
class StepSettings:
    """What the training step needs to know, resolved from the user's config."""

    task: str
    batch: int
    imgsz: int
    precision: str  # "fp32" | "fp16" | "bf16"
    optimizer: str  # resolved name, e.g. "AdamW"
    nbs: int
    freeze: tuple[int, ...]
    multi_scale: float  # the trainer's multi-scale range; traced at the largest size it draws
    step: str  # "train" | "fwd_bwd"


def accumulate_at(iteration: int, batch: int, nbs: int) -> int:
    """Ultralytics' warmup ramp of gradient accumulation (BaseTrainer._do_train)."""
    nominal = max(round(nbs / batch), 1)
    nw = WARMUP_MIN_ITERATIONS
    if iteration <= nw:
        return max(1, int(round(1 + (nominal - 1) * iteration / nw)))
    return nominal


def build_model(model_cfg: dict, task: str, nc: int | None, verbose: bool = False) -> torch.nn.Module:
    """Build the task's model class from a YAML dict, as Trainer.get_model does (no weights); the class is
    the one ``yolo train`` picks for the YAML's family (``yolomem.loops.ultralytics.families``)."""
    family = family_of(model_cfg)
    model_class, _ = task_classes(family, task)
    kwargs = {"verbose": verbose}
    nc = model_nc(family, nc if nc is not None else model_cfg.get("nc"))
    if nc is not None:
        kwargs["nc"] = nc
    # heads such as YOLOv10's one-to-one branch deep-copy layers; "Overriding nc" is logged, not needed
    with CloneOnDeepcopy(), quiet_ultralytics():
        return model_class(copy.deepcopy(model_cfg), **kwargs)


def ultralytics_args(settings: StepSettings, model_nc: int):
    """Ultralytics' default hyperparameters with the user's settings (``get_cfg``)."""
    from ultralytics.cfg import DEFAULT_CFG_DICT, get_cfg

    overrides = {"task": settings.task, "batch": settings.batch, "imgsz": settings.imgsz, "nbs": settings.nbs}
    if settings.multi_scale:
        # releases before the fraction took a bool (sizes 0.5x-1.5x imgsz): multi_scale > 0 turns it on
        flag = isinstance(DEFAULT_CFG_DICT.get("multi_scale"), bool)
        overrides["multi_scale"] = True if flag else settings.multi_scale
    return get_cfg(overrides=overrides)


@contextlib.contextmanager
def largest_draw() -> Iterator[list[int]]:
    """``random.randrange`` returns the largest value it could draw, for as long as this lasts; the
    values it returned are collected in the list yielded.

    The trainer's multi-scale resize draws the batch's size with ``random.randrange(low, high) // stride
    * stride``; the memory a run needs is set by the largest size it can draw, so that is the one traced.
    """
    import random

    original = random.randrange
    draws: list[int] = []

    def largest(start, stop=None, step=1):
        if stop is None:
            start, stop = 0, start
        draws.append(start + (stop - 1 - start) // step * step)
        return draws[-1]

    random.randrange = largest
    try:
        yield draws
    finally:
        random.randrange = original


def freeze_parameters(model: torch.nn.Module, freeze: tuple[int, ...]) -> None:
    """BaseTrainer._setup_train's freeze loop: listed layers, and always '.dfl'."""
    names = [f"model.{x}." for x in freeze] + [".dfl"]
    for key, value in model.named_parameters():
        if any(x in key for x in names):
            value.requires_grad = False
        elif not value.requires_grad and value.dtype.is_floating_point:
            value.requires_grad = True


def build_optimizer(model, settings: StepSettings, args, nc: int):
    """Ultralytics' build_optimizer, then the GPU's choice of fused/foreach kernels."""
    from yolomem.loops.ultralytics.release import call_build_optimizer, release

    shim = SimpleNamespace(args=args, data={"nc": nc})
    accumulate = max(round(settings.nbs / settings.batch), 1)
    decay = args.weight_decay * settings.batch * accumulate / settings.nbs
    with quiet_ultralytics():
        optimizer = call_build_optimizer(shim, model=model, name=settings.optimizer, lr=args.lr0,
                                         momentum=args.momentum, decay=decay)  # fmt: skip

    if type(optimizer).__name__ in {"Adam", "AdamW"} and release().fused_adam:
        # build_optimizer passes fused=True when next(model.parameters()).is_cuda
        for group in optimizer.param_groups:
            group["fused"], group["foreach"] = True, False
        optimizer._step_supports_amp_scaling = True
    else:
        for group in optimizer.param_groups:
            if "foreach" in group and group["foreach"] is None and not group.get("differentiable", False):
                group["foreach"] = True  # _default_to_fused_or_foreach picks foreach for CUDA params
    return optimizer


@contextlib.contextmanager
def quiet_ultralytics() -> Iterator[None]:
    """Ultralytics logs through its LOGGER (optimizer choice, NMS time limits): silence it for a while."""
    from ultralytics.utils import LOGGER

    level = LOGGER.level
    LOGGER.setLevel("ERROR")
    try:
        yield
    finally:
        LOGGER.setLevel(level)


class UltralyticsOracle(DataOracle):
    """Scalar reads as a batch with objects answers them. The loss and the assigner branch on fake
    values: ``if fg_mask.sum():`` (box, mask and keypoint losses), ``if fg_mask.max() > 1:`` (an
    anchor claimed by two objects), ``max(target_scores.sum(), 1)``; with objects in the batch
    the work is done. Integers: the foreground count assumed (``positives``); booleans: whether there
    is any; floats: 0.0 (the GradScaler's ``found_inf``: the optimizer steps)."""

    def scalar_for(self, tensor: torch.Tensor):
        if tensor.dtype == torch.bool:
            return self.positives > 0
        if not tensor.dtype.is_floating_point:
            return self.positives
        return 0.0


def trainer_shim(trainer_class, **attributes):
    """What the trainer's own methods run on: an instance of its class built without ``__init__`` (which
    makes datasets, callbacks and a save dir), holding only what those methods read. An instance, so
    that their ``super()`` calls work (``RTDETRTrainer.preprocess_batch`` up to 8.2)."""
    shim = trainer_class.__new__(trainer_class)
    vars(shim).update(attributes)
    return shim


class CloneOnDeepcopy(torch.overrides.TorchFunctionMode):
    """ModelEMA deep-copies the model. Tensor.__deepcopy__ on a fake tensor builds it in a fresh fake
    mode (with new storages for every view), and on a real tensor it cannot run under the fake mode at
    all; so a deep copy here is a clone through the tracer, as on a GPU (a new device tensor each)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.__deepcopy__:
            tensor, memo = args
            if id(tensor) not in memo:
                with torch.no_grad():
                    copied = tensor.clone()
                copied.requires_grad_(tensor.requires_grad)
                memo[id(tensor)] = copied
            return memo[id(tensor)]
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **(kwargs or {}))


class _PhasedEMA:
    """Wraps ModelEMA so the tracer knows when the EMA update runs."""

    def __init__(self, ema, tracer: Tracer):
        self._ema, self._tracer = ema, tracer

    def __bool__(self) -> bool:
        return True

    def update(self, model) -> None:
        with self._tracer.phase("ema"):
            self._ema.update(model)


@contextlib.contextmanager
def _head_switches_phase(model, tracer: Tracer) -> Iterator[None]:
    """Phase 'forward' from the first layer on, 'loss' once the head has returned."""
    layers = model.model
    first = layers[0].register_forward_pre_hook(lambda *_: setattr(tracer, "phase_name", "forward"))
    last = layers[-1].register_forward_hook(lambda *_: setattr(tracer, "phase_name", "loss"))
    try:
        yield
    finally:
        first.remove()
        last.remove()


def persistent_tensors(model: torch.nn.Module, ema, extra: tuple[torch.Tensor, ...] = ()) -> dict[str, list[torch.Tensor]]:
    """What lives on the GPU before the first iteration: weights, buffers, the EMA copy."""
    tensors = {"parameter": list(model.parameters()) + list(model.buffers()) + list(extra)}
    if ema is not None:
        tensors["ema"] = list(ema.ema.parameters()) + list(ema.ema.buffers())
    return tensors


def head_attributes(model: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    """The last layer's plain tensor attributes (not parameters or buffers): ``stride``, ``anchors``, ``strides``."""
    layers = getattr(model, "model", None)
    if not isinstance(layers, torch.nn.Sequential) or len(layers) == 0:
        return ()
    return tuple(v for v in vars(layers[-1]).values() if isinstance(v, torch.Tensor))


def autocast_region(policy: CudaAutocastPolicy | None, amp_dtype: torch.dtype | None):
    """The training autocast (CUDA's policy on the CPU trace), or nothing in FP32."""
    if amp_dtype is None or policy is None:
        return contextlib.nullcontext()
    return policy.region(amp_dtype)


class UltralyticsRun:
    """A model, its optimizer, scaler and EMA, set up as BaseTrainer._setup_train would."""

    def __init__(self, model: torch.nn.Module, settings: StepSettings, tracer: Tracer, policy: CudaAutocastPolicy | None):
        from ultralytics.utils.torch_utils import ModelEMA

        self.model, self.settings, self.tracer, self.policy = model, settings, tracer, policy
        # the trainer sets model.nc from the data; the model was built with the YAML's nc or the user's
        nc = int(getattr(model, "nc", None) or model.yaml.get("nc") or 80)
        self.args = ultralytics_args(settings, nc)
        model.args = self.args
        model.nc = nc
        model.names = getattr(model, "names", None) or {i: str(i) for i in range(nc)}
        freeze_parameters(model, settings.freeze)
        check_trainable(model, settings.freeze)
        self.family = family_of(model.yaml)
        _, self.trainer_class = task_classes(self.family, settings.task)
        if self.family.instance_masks:
            self.args.overlap_mask = False  # YOLOETrainer.__init__
        # WorldTrainer.set_text_embeddings: one embedding per class name, on the device for the whole run
        self.text_embeddings = families.text_embeddings(model, nc) if self.family.text_embeddings else {}
        self.stride = max_stride(model)
        self.amp_dtype = amp_dtype(settings.precision)
        self.scaler = torch.amp.GradScaler("cpu", enabled=settings.precision == "fp16")
        if settings.step == "train":
            self.optimizer = build_optimizer(model, settings, self.args, nc)
            with quiet_ultralytics(), CloneOnDeepcopy():
                self.ema = ModelEMA(model)
        else:
            self.optimizer = self.ema = None
        self._last_opt_step = -1
        self.held_batch: dict | None = None  # the previous iteration's batch, still referenced (train_iteration)
        self.held_preds = None  # up to 8.0.110: the last training outputs, a loop variable (_forward_and_loss)
        self.trained_size: int | None = None  # the side multi_scale resized the batch to (None: not resized)
        self.trainer = trainer_shim(
            self.trainer_class,
            args=self.args,
            device=torch.device("cpu"),
            stride=self.stride,
            model=model,
            optimizer=self.optimizer,
            scaler=self.scaler,
            ema=_PhasedEMA(self.ema, tracer) if self.ema is not None else None,
            data={"nc": nc},
            text_embeddings=self.text_embeddings,
        )

    def persistent_tensors(self) -> dict[str, list[torch.Tensor]]:
        """Also the head's tensor attributes (``Detect.stride``), which ``BaseModel._apply`` moves to the
        device with the weights: otherwise the tracer would first see them, as new, wherever an op
        returns them (the eval head's ``make_anchors``, the validator's ``model.float()``)."""
        tensors = persistent_tensors(self.model, self.ema, extra=head_attributes(self.model))
        if self.ema is not None:
            tensors["ema"] += head_attributes(self.ema.ema)
        if self.text_embeddings:
            tensors["input"] = list(self.text_embeddings.values())
        return tensors

    def _family_step(self):
        """What the family's loss needs around forward and loss (RT-DETR: matching on the host)."""
        return families.host_matching(self.tracer) if self.family.host_matching else contextlib.nullcontext()

    def _autocast(self):
        return autocast_region(self.policy, self.amp_dtype)

    def train_iteration(self, iteration: int, batch: SyntheticBatch) -> None:
        """One iteration of BaseTrainer._do_train's inner loop."""
        from ultralytics.engine.trainer import BaseTrainer

        tracer = self.tracer
        tracer.start_iteration(iteration)
        self.model.train()
        with self._autocast():
            with tracer.phase("preprocess"), (largest_draw() if self.settings.multi_scale else contextlib.nullcontext([])) as draws:
                collated = batch.as_dict(self.args.overlap_mask, semantic_masks=semantic_masks())
                data = families.complete_batch(self.family, collated, self.model.nc, batch.batch)
                data.setdefault("resized_shape", [(batch.imgsz, batch.imgsz)] * batch.batch)  # the collate's; 8.4.0-8.4.6 obb loss reads it
                tracer.track_existing(data.values(), "input")
                data = self.trainer_class.preprocess_batch(self.trainer, data)
                if draws:  # the trainer rescaled the batch (multi_scale)
                    self.trained_size = int(data["img"].shape[-1])
            tracer.oracle.expect_foreground(batch.expected_positives_per_image(self.assigner_topk()))
            with _head_switches_phase(self.model, tracer), tracer.phase("forward"), self._family_step():
                loss, _items = self._forward_and_loss(data)
                loss = loss.sum()
        with tracer.phase("backward"):
            self.scaler.scale(loss).backward()
        del loss
        tracer.label([p.grad for p in self.model.parameters() if p.grad is not None], "gradient")
        if iteration - self._last_opt_step >= accumulate_at(iteration, self.settings.batch, self.settings.nbs):
            with tracer.phase("optimizer"):
                BaseTrainer.optimizer_step(self.trainer)
            self._last_opt_step = iteration
            self._label_state()
        # The trainer's ``batch`` (preprocess_batch fills the loader's dict in place with device tensors)
        # stays bound through backward and the optimizer step, into the next iteration. And the one before
        # it lives through this whole iteration: ``enumerate`` keeps its last result tuple to reuse it, and
        # the progress bar's generator still holds that tuple when it asks for the next, so every other
        # batch outlives its successor's iteration (the H200 allocation history of 2026-12-04,
        # validation/results/; the previous image batch is live at the loss's peak). The last one stays
        # bound through the epoch's validation.
        self.held_batch = data

    def _forward_and_loss(self, data: dict):
        """``self.model(batch)``: the forward, then the model's own loss (8.0.111+). Up to 8.0.110 the
        trainer's loop did it: ``preds = self.model(batch['img'])``, then ``self.criterion(preds, batch)``,
        whose loss class is built on the first call. ``preds`` is a loop variable there: it lives until the
        next forward returns, and through the epoch's validation."""
        if hasattr(self.model, "loss"):
            return self.model(data)
        self.held_preds = self.model(data["img"])
        return self.trainer.criterion(self.held_preds, data)

    def validation_loss(self, model: torch.nn.Module, data: dict, preds):
        """The loss the validator adds up in training: ``model.loss(batch, preds)``, or up to 8.0.110
        ``trainer.criterion(preds, batch)`` (the training model's loss class)."""
        if hasattr(model, "loss"):
            return model.loss(data, preds)
        return self.trainer.criterion(preds, data)

    def fwd_bwd_iteration(self, iteration: int, batch: SyntheticBatch) -> None:
        """Ultralytics' AutoBatch probe (torch_utils.profile_ops): a float32 ``torch.empty`` batch
        with ``requires_grad=True``, forward, then ``sum(y.sum() for y in tree_flatten(out))``
        backward, under the training autocast."""
        from torch.utils._pytree import tree_flatten

        tracer = self.tracer
        tracer.start_iteration(iteration)
        with self._autocast():
            with tracer.phase("preprocess"):
                images = batch.float_images()
                images.requires_grad = True
            with tracer.phase("forward"):
                outputs = self.model(images)
            with tracer.phase("backward"):
                sum(y.sum() for y in tree_flatten(outputs)[0] if isinstance(y, torch.Tensor)).backward()
        tracer.label([p.grad for p in self.model.parameters() if p.grad is not None], "gradient")
        del outputs, images

    def assigner_topk(self) -> int:
        criterion = getattr(self.model, "criterion", None)
        assigner = getattr(criterion, "assigner", None)
        if assigner is None and criterion is not None:
            assigner = getattr(getattr(criterion, "one2many", None), "assigner", None)
        return int(getattr(assigner, "topk", 10))

    def _label_state(self) -> None:
        """Optimizer state and gradients made during the step get their categories."""
        states = [t for state in self.optimizer.state.values() for t in state.values() if isinstance(t, torch.Tensor)]
        self.tracer.label(states, "optimizer_state")
