"""The traced validation pass allocates what Ultralytics' own validator allocates for the same batch.

Ground truth: ``BaseValidator.__call__(trainer=...)`` itself, with the task's validator class (detect,
segment, pose, obb, classify) on the training run's EMA model, on real CPU tensors, recorded by the same ``Tracer``
with ``fake=False`` after one real training iteration. Its loader yields one collated batch made by
``val_batch_dict``, as the traced pass makes it. The traced pass is ``UltralyticsLoop.trace_val_pass`` on
fake tensors after one fake training iteration, as the epoch simulation runs it. Both are compared event
for event (allocation or free, and its size) from the start of the pass to the end of the validator's
``postprocess``: NMS and what each task does after it (segmentation assembles each image's masks from
the prototypes, obb joins the angles to the boxes, pose reshapes the keypoints); the traced pass may
only free after that.

What both runs share, so that a difference left is a tracing error:
- NMS decides by value, and a fake forward has none: the predictions NMS reads get the same synthetic
  scores on both sides (``synthetic_predictions``); the real run's are written into the model's output
  in place, at no allocation, as ``Tracer.substitute`` makes them cost none in the trace;
- ``torchvision.ops.nms`` is the stand-in with the CUDA kernel's allocations and NMS has no time limit
  (``nms_stand_ins``); max-pooling keeps its indices as on CUDA (``pooling_keeps_indices``);
- the assigner's data-dependent counts and scalar reads in the loss are the real run's, replayed into
  the fake one (``recording`` from ``test_trace_matches_real``);
- ``no_grad`` in place of the validator's ``inference_mode`` (``_without_inference_mode`` says why).
Left out: kernel workspaces (CUDA kernels' scratch, which a CPU run cannot have); the validator's setup
before its loop (``iouv``, ``self.loss = zeros_like(...)``: bytes) and ``update_metrics`` after
``postprocess`` (per-image IoU of at most 300 boxes: kilobytes), which the pass does not trace.

FP32 (``amp=fp32``): a CPU run takes no CUDA autocast, so both sides take the validator's fp32 path.
Up to 8.2.95 the validator halves the EMA whenever its device is not the CPU, AMP or not
(``release.validation.half_without_amp``): the real run, on the CPU, keeps it fp32, so the traced side
is asked for that CPU choice (``_on_the_cpu``); ``tests/test_release_probes.py`` checks that the probe
reads the choice each release makes.

Classification (``ClassificationValidator``) has no NMS: its ``postprocess`` takes the softmax of the
head's ``(softmax, logits)``, and its batches are ``imgsz`` square float32 images (``classify_transforms``).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import inspect
import tempfile
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
import torch
from torch.utils._python_dispatch import _disable_current_modes
from torch.utils._pytree import tree_flatten

from test_trace_matches_real import recording
from yolomem.config.settings import EstimateConfig
from yolomem.deployment.torch_trace import pooling_keeps_indices
from yolomem.loops import get_loop, resolve_model, trace_run
from yolomem.loops.ultralytics import release as release_module
from yolomem.loops.ultralytics.models import shipped_model_names
from yolomem.loops.ultralytics.release import semantic_masks
from yolomem.loops.ultralytics.step import quiet_ultralytics
from yolomem.loops.val_pass import (
    ValBatchShape,
    _assume_candidates,
    nms_stand_ins,
    synthetic_predictions,
    val_batch_dict,
    val_batch_size,
)

MODELS = {"detect": "yolov8n.yaml", "segment": "yolov8n-seg.yaml", "pose": "yolov8n-pose.yaml", "obb": "yolov8n-obb.yaml",
          "classify": "yolov8n-cls.yaml"}  # fmt: skip
# YOLO26-seg (8.4.0+): semantic masks in the batch and a mask-IoU assigner in the validation loss
NEWER = {"segment": "yolo26n-seg.yaml"}
CASES = list(MODELS.items()) + list(NEWER.items())
TRAIN_BATCH = 2
IMGSZ = 64
HEIGHT, WIDTH = 64, 32  # a rect validation batch (BaseDataset.set_rectangle), smaller than imgsz one way
COUNTS = (2, 0, 3, 1)  # objects per image; one image without any
SEED = 7
VAL_ITERATION = 100  # the iteration number the pass is traced as (after the training iterations)


def _config(model: str) -> EstimateConfig:
    return EstimateConfig(model=model, batch=TRAIN_BATCH, imgsz=IMGSZ, amp="fp32", iterations=1, instances=3)


def _shape(task: str) -> ValBatchShape:
    batch = val_batch_size(task, TRAIN_BATCH)
    if task == "classify":  # center-cropped squares
        return ValBatchShape(batch, IMGSZ, IMGSZ, (0,) * batch)
    return ValBatchShape(batch, HEIGHT, WIDTH, COUNTS[:batch])


def _kpt_shape(resolved) -> tuple[int, ...]:
    return tuple(resolved.cfg.get("kpt_shape", (17, 3)))


# -- the real run: Ultralytics' validator, called as the trainer calls it ---------------------------
class _Loader(list):
    """What the validator reads of its DataLoader: iteration, ``len`` and ``dataset`` (for its speeds)."""

    @property
    def dataset(self):
        return self


def _collated(task: str, run, resolved) -> dict:
    """The batch the validation loader collates, with the per-image keys ``update_metrics`` reads."""
    shape = _shape(task)
    nc = int(run.model.nc)
    data = val_batch_dict(task, shape, SEED, nc, _kpt_shape(resolved), 3, semantic_masks())
    data["resized_shape"] = [(shape.height, shape.width)] * shape.batch
    data["ori_shape"] = [(shape.height, shape.width)] * shape.batch
    data["ratio_pad"] = [((1.0, 1.0), (0.0, 0.0))] * shape.batch
    data["im_file"] = [f"{i}.jpg" for i in range(shape.batch)]
    return data


def _trainer(run, resolved, items_shape: tuple[int, ...] | None):
    """The attributes of ``BaseTrainer`` that ``BaseValidator.__call__(trainer=...)`` reads.
    ``items_shape``: that of the loss items the training iteration returned (``trainer.loss_items``)."""
    model = run.model
    data = {"names": model.names, "nc": int(model.nc), "channels": 3, "kpt_shape": list(_kpt_shape(resolved)), "val": ""}
    return SimpleNamespace(
        ema=SimpleNamespace(ema=run.ema.ema), device=torch.device("cpu"), amp=False, data=data, args=copy.copy(run.args),
        loss_items=_loss_items(run, items_shape), stopper=SimpleNamespace(possible_stop=False),
        epoch=0, epochs=2, world_size=1,
        label_loss_items=lambda items=None, prefix="train": {f"{prefix}/{k}": v for k, v in dict(items or {}).items()}
        if isinstance(items, dict) or items is None else {},
        criterion=getattr(run.trainer, "criterion", None),  # up to 8.0.110 the validator's loss is the trainer's method
    )  # fmt: skip


def _loss_items(run, items_shape: tuple[int, ...] | None):
    """``BaseTrainer.loss_items`` as the installed validator reads it: a dict by the loss's names
    (8.4.104), or the loss's tensor of items."""
    from ultralytics.engine.validator import BaseValidator

    if "loss_items.items()" not in inspect.getsource(BaseValidator.__call__):
        return torch.zeros(items_shape)
    with run.tracer.paused():  # only for the names: the trainer has them from training
        criterion = run.model.init_criterion()
    if run.settings.task == "classify":  # ClassificationTrainer.loss_names
        return {"loss": torch.zeros(())}
    names = getattr(criterion, "loss_names", None) or criterion.one2many.loss_names  # E2ELoss (YOLO26) wraps two
    return {name: torch.zeros(()) for name in names}


@contextlib.contextmanager
def _loss_items_shape(shape: list):
    """Append the shape of each training loss's items (``BaseModel.loss(...)[1]``, up to 8.0.110 the
    trainer's ``criterion(...)[1]``) to ``shape``; their number differs by release and model (8.4.0's pose
    trainer names six, yolov8n-pose's loss returns five)."""
    from yolomem.loops.ultralytics.step import UltralyticsRun

    original = UltralyticsRun._forward_and_loss

    def forward_and_loss(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        shape.append(tuple(out[1].shape) if isinstance(out[1], torch.Tensor) else None)  # 8.4.104: a dict
        return out

    with mock.patch.object(UltralyticsRun, "_forward_and_loss", forward_and_loss):
        yield


def _validator(task: str, run, loader):
    validator_class = release_module.task_map("YOLO")[task]["validator"]  # the one the trainer would take
    return validator_class(loader, save_dir=Path(tempfile.gettempdir()), args=copy.copy(run.args))


def _instrument(validator, tracer, bounds: dict) -> None:
    """Note where ``preprocess`` starts and ``postprocess`` ends in the event log; before NMS reads the
    predictions, write the synthetic scores into them in place (no allocation: on the GPU they are the
    model's own output)."""
    preprocess, postprocess = validator.preprocess, validator.postprocess

    def marked_preprocess(batch):
        bounds["preprocess"] = _mark(tracer)
        return preprocess(batch)

    def marked_postprocess(preds):
        if validator.args.task != "classify":  # classification has no NMS
            candidates = _assume_candidates(tracer, rotated=validator.args.task == "obb")
            prediction = tree_flatten(preds)[0][0]  # (B, 4 + nc + extra, anchors)
            with _disable_current_modes():
                prediction.copy_(synthetic_predictions(tuple(prediction.shape), prediction.dtype, validator.nc, candidates))
        out = postprocess(preds)
        bounds["postprocess"] = _mark(tracer)
        return out

    validator.preprocess, validator.postprocess = marked_preprocess, marked_postprocess


def _mark(tracer) -> int:
    """The position in the event log now (an iteration bound: the only index the trace exposes)."""
    tracer.start_iteration(tracer.iteration)
    return len(tracer.result().iteration_bounds) - 1


def _without_inference_mode(validator):
    """``BaseValidator.__call__`` itself, without its ``smart_inference_mode`` decorator (called under
    ``no_grad``, as the traced pass runs). Under ``inference_mode`` composite ops reach the dispatcher whole
    (``argsort``, ``torch.where``, ``bool()``), and what they allocate inside (``argsort``'s sorted values)
    is made below the dispatch mode that records storages: the GPU allocates it, the recording would not
    show it. The kernels are the same either way."""
    return type(validator).__call__.__wrapped__


def _real_validation(task: str, resolved, bounds: dict, items_shape: list):
    def after_iterations(run):
        tracer = run.tracer
        trainer = _trainer(run, resolved, items_shape[-1])
        tracer.start_iteration(VAL_ITERATION)
        bounds["start"] = len(tracer.result().iteration_bounds) - 1
        loader = _Loader([_collated(task, run, resolved)])
        bounds["collated"] = _mark(tracer)  # what follows until preprocess is the validator's own setup
        validator = _validator(task, run, loader)
        _instrument(validator, tracer, bounds)
        with quiet_ultralytics(), pooling_keeps_indices(), nms_stand_ins(tracer), torch.no_grad():
            _without_inference_mode(validator)(validator, trainer=trainer)

    return after_iterations


def _traced_validation(task: str, resolved):
    def after_iterations(run):
        run.tracer.start_iteration(VAL_ITERATION)
        get_loop(resolved.framework).trace_val_pass(run, (_shape(task),), SEED, int(run.model.nc), _kpt_shape(resolved), 3)

    return after_iterations


@functools.cache
def _streams(task: str, model: str):
    """(real events, traced events): the real ones from the start of the pass to the end of ``postprocess``
    (less the validator's setup), the traced ones from the start of the pass to its end."""
    config, resolved = _config(model), resolve_model(model)
    bounds: dict[str, int] = {}
    torch.manual_seed(0)
    items_shape: list = []
    with recording() as recorder, _loss_items_shape(items_shape):
        real = trace_run(config, resolved, fake=False, after_iterations=_real_validation(task, resolved, bounds, items_shape)).trace
    torch.manual_seed(0)
    with _on_the_cpu():
        fake = trace_run(config, resolved, fake=True, oracle=recorder.oracle(),
                         after_iterations=_traced_validation(task, resolved)).trace  # fmt: skip
    at = real.iteration_bounds
    real_events = real.events[at[bounds["start"]] : at[bounds["collated"]]]
    real_events += real.events[at[bounds["preprocess"]] : at[bounds["postprocess"]]]
    return _storages(real_events), _storages(fake.events[fake.iteration_bounds[-1] :])


@contextlib.contextmanager
def _on_the_cpu():
    """The installed release as its validator decides on the CPU: no fp16 EMA without AMP (up to 8.2.95
    it halves the EMA on any other device)."""
    installed = release_module.release()
    on_cpu = dataclasses.replace(installed, validation=dataclasses.replace(installed.validation, half_without_amp=False))
    with mock.patch.object(release_module, "release", lambda: on_cpu):
        yield


def _storages(events):
    """Events of tensor storages: kernel workspaces (yolomem.trace.workspaces) belong to CUDA kernels, which
    a CPU run cannot have."""
    return [e for e in events if not e.category.endswith("_workspace")]


def _sizes(events):
    return [(e.op, e.nbytes) for e in events]


@pytest.mark.parametrize(("task", "model"), CASES)
def test_val_pass_allocates_like_ultralytics_validator(task, model):
    if model not in shipped_model_names():
        pytest.skip(f"{model} is newer than the installed ultralytics")
    if model == "yolov8n-seg.yaml" and release_module.installed_version() == "8.4.0":
        # its own segmentation loss fails on this batch (unpacking the assigner's targets), in training too
        pytest.skip("8.4.0's own YOLOv8-seg loss fails at batch 2")
    real, fake = (_sizes(events) for events in _streams(task, model))
    assert len(real) > 200  # a whole forward, loss and NMS, not a stub
    assert fake[: len(real)] == real
    assert all(op == "free" for op, _ in fake[len(real) :])  # after postprocess the pass only lets go
