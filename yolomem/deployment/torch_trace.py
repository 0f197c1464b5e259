"""Ultralytics predict and val in PyTorch, traced the way training is.

The installed Ultralytics runs under a ``Tracer`` (``yolomem.trace.tracer``) on fake tensors:
- **Model**: the task's model from its YAML, through Ultralytics' own ``setup_model`` (predict) or the
  same ``AutoBackend(fuse=True)`` the validator builds: Conv2d+BatchNorm folded on the host. The
  fused weights are then on the device (``model.to(device)``), and ``model.half()`` runs there when
  half precision is asked (``quantize=16``, the old ``half=True``), as ``PyTorchBackend.load_model``
  does on a GPU.
- **Predict**: ``BasePredictor.stream_inference`` itself, on a list of ``batch`` images (one batch):
  ``preprocess`` (letterbox on the host, ``.to(device)``, BGR->RGB flip, ``.half()``/``.float()``,
  ``/255``), warmup, ``inference`` and ``postprocess`` (Ultralytics' NMS, ``Results``).
- **Val**: the body of ``BaseValidator.__call__`` for a standalone run (no trainer): warmup, then per
  batch ``preprocess``, ``model(img)``, ``postprocess`` (NMS, conf 0.001, multi-label) and
  ``update_metrics``. Batches are synthetic: square images (the largest batch Ultralytics makes), with
  real targets, letterboxed as the installed release does (``val_side``).

Where a GPU takes a different path than this CPU trace, the GPU's path is taken (``gpu_path=True``):
``AutoBackend.warmup`` runs its CUDA branch (one forward on the batch, one NMS on 16 random boxes);
``channels_last`` is off (Ultralytics turns it on only for CPU); fp16 is honoured (refused on CPU).
Tests run with ``gpu_path=False`` against a real CPU run of the same Ultralytics code.

Data-dependent values: NMS decides by scores, which a fake forward lacks. The model's prediction
tensor is replaced (same shape and dtype: the same allocation) by real synthetic scores that make
``candidates`` (box, class) pairs per image pass ``conf``; for segmentation the mask prototypes are
real zeros too. ``torchvision.ops.nms`` makes the allocations of its CUDA kernel
(``yolomem.loops.val_pass``). Defaults (``nms_candidates``): predict, every anchor passes (one class
each, at most ``max_nms`` = 30000); val, 30000 pairs, NMS's cap. Both are the most NMS can hold: never
optimistic. Rotated NMS (obb), whose memory is quadratic in them, takes training's fitted count.

Not traced: cuDNN/cuBLAS workspaces, the CUDA context, ``torch.inference_mode`` itself (replaced by
``no_grad``, which allocates the same here), plots and ``save_json``, and the metric summary after
the last batch (host-side numpy).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from types import MethodType, SimpleNamespace

import numpy as np
import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

from yolomem.config.models import ResolvedModel
from yolomem.recent import Recent
from yolomem.trace.tracer import DataOracle, Trace, Tracer, module_scopes

MAX_NMS = 30000  # ultralytics/utils/nms.py non_max_suppression(max_nms=30000)
MODES = ("predict", "val")
OUTPUT_PHASE = "output"  # the model's outputs as the predictor receives them
# What runs in torch around an exported model, whatever runs the model itself: the predictor's (or the
# validator's) preprocess, the outputs AutoBackend turns into device tensors, and postprocess.
PIPELINE_PHASES = frozenset({"preprocess", OUTPUT_PHASE, "nms"})


@dataclass(frozen=True)
class InferenceSettings:
    mode: str  # "predict" | "val"
    batch: int
    imgsz: int
    half: bool
    candidates: int | None = None  # (box, class) pairs per image passing conf; None: the most NMS holds
    batches: int = 2  # batches traced: the second shows what the allocator's cache keeps
    gpu_path: bool = True
    instances: float = 8.0  # val: objects per image
    seed: int = 0


@dataclass(frozen=True)
class TracedInference:
    trace: Trace
    params: int
    imgsz: int
    candidates: int
    candidates_basis: str  # why that many (nms_candidates)
    notes: tuple[str, ...]
    runs_nms: bool = True  # False: the postprocess ran no NMS (classification, RT-DETR, end-to-end heads)


def trace_inference(resolved: ResolvedModel, settings: InferenceSettings, *, fake: bool = True,
                    oracle: DataOracle | None = None, val_batches=None, nc: int | None = None) -> TracedInference:
    """Trace predict or val of ``resolved`` (a fresh model from its YAML) with the installed Ultralytics.

    ``val_batches``: an iterable of collated val batches to use instead of synthetic ones (tests pass
    Ultralytics' own dataloader over a dataset on disk)."""
    from yolomem.loops.ultralytics.step import CloneOnDeepcopy, build_model, quiet_ultralytics

    if settings.mode not in MODES:
        raise ValueError(f"mode {settings.mode!r} is not one of {MODES}")
    tracer = Tracer(fake=fake, oracle=oracle)
    notes: list[str] = []
    with tracer, CloneOnDeepcopy(), quiet_ultralytics(), _no_inference_mode(), apply_replaces_parameters(), \
            pooling_keeps_indices():  # fmt: skip
        model = build_model(resolved.cfg, resolved.task, nc or resolved.nc)
        if not hasattr(model, "stride"):  # a classifier up to 8.0.43: attempt_load_one_weight gives it one
            model.stride = torch.tensor([32.0])
        stride = max(int(model.stride.max()), 32)
        imgsz = -(-settings.imgsz // stride) * stride
        if imgsz != settings.imgsz:
            notes.append(f"imgsz={settings.imgsz} rounded up to {imgsz}, a multiple of stride {stride}, as check_imgsz does")
        _as_trained(model, resolved.task, resolved.kpt_shape, imgsz)
        params = sum(p.numel() for p in model.parameters())
        anchors = sum((imgsz // s) ** 2 for s in (8, 16, 32) if s <= stride)
        nc_model = int(getattr(model, "nc", 80))
        candidates, candidates_basis = nms_candidates(settings, resolved.task, anchors, nc_model)
        overrides = _known_args(dict(task=resolved.task, imgsz=imgsz, batch=settings.batch, verbose=False, save=False,
                                     plots=False, device="cpu", channels_last=False, half=settings.half,
                                     quantize=16 if settings.half else None, project=tempfile.gettempdir(),
                                     name="yolomem-deploy", exist_ok=True))  # fmt: skip
        if settings.mode == "predict":
            runner = _predictor(resolved.task, overrides)
            runner.setup_model(model)  # verbose, as Ultralytics calls it: fuse() runs get_flops
            backend = runner.model
        else:
            with tracer.real_factories():  # its IoU thresholds (torch.linspace): metrics decide by value
                runner = _validator(resolved.task, overrides)
            backend = _autobackend(model)
        del model
        _on_device(backend, tracer, settings.half and settings.gpu_path)
        nms_calls: list[int] = []
        with module_scopes(backend.model, tracer), synthetic_scores(tracer, resolved.task, nc_model, candidates), \
                _counting_nms(tracer, nms_calls):  # fmt: skip
            if settings.mode == "predict":
                _run_predict(runner, backend, tracer, settings, imgsz)
            else:
                batches = val_batches if val_batches is not None else _synthetic_val_batches(resolved, settings, imgsz, stride, nc_model)
                _run_val(runner, backend, tracer, settings, batches, imgsz, resolved)
        trace = tracer.result()
        tracer.detach_finalizers()
    runs_nms = _ran_nms(resolved.task, nms_calls, runner, backend)
    return TracedInference(trace, params, imgsz, candidates, candidates_basis, tuple(notes), runs_nms)


@contextlib.contextmanager
def _counting_nms(tracer: Tracer, calls: list[int]) -> Iterator[None]:
    """Counts the postprocess's calls of ``torchvision.ops.nms`` (not the warmup's)."""
    import torchvision

    stand_in = torchvision.ops.nms

    def nms(*args, **kwargs):
        if tracer.phase_name == "nms":
            calls.append(1)
        return stand_in(*args, **kwargs)

    torchvision.ops.nms = nms
    try:
        yield
    finally:
        torchvision.ops.nms = stand_in


def _ran_nms(task: str, calls: list[int], runner, backend) -> bool:
    """Whether the postprocess ran NMS: none for classification, RT-DETR or a head the run made end-to-end
    (YOLOv10, YOLO26); rotated NMS (obb) is Ultralytics' own, so there the run's ``end2end`` decides."""
    if task == "classify":
        return False
    if task == "obb":
        return not getattr(runner, "end2end", getattr(backend, "end2end", False))
    return bool(calls)


@dataclass(frozen=True)
class PipelineMemory:
    """What torch's caching allocator holds for the pipeline around an exported model (``pipeline_memory``)."""

    peak_allocated_bytes: int
    peak_reserved_bytes: int
    candidates: int
    candidates_basis: str
    runs_nms: bool = True


def pipeline_memory(resolved: ResolvedModel, settings: InferenceSettings, nc: int | None = None, *,
                    outputs: bool = True) -> PipelineMemory:  # fmt: skip
    """Ultralytics' predictor (or validator) around an ONNX or TensorRT model: AutoBackend hands the
    runtime's outputs to torch on the device, and preprocess and postprocess (NMS; the masks of
    segmentation) are the same torch code as for a .pt model. So it is the .pt model's trace replayed
    without the model's own tensors: its weights, activations and warmup. ``outputs=False``: the
    outputs are buffers counted elsewhere (a TensorRT engine's output bindings, allocated at load and
    handed back as they are); ONNX Runtime's are new device tensors (``from_numpy(...).to(device)``)."""
    from dataclasses import asdict

    from yolomem.allocator.caching import CachingAllocator, parse_alloc_conf
    from yolomem.allocator.replay import replay
    from yolomem.trace.store import canonical

    key = (canonical(asdict(resolved)), settings, nc, outputs)
    known = _PIPELINES.get(key)
    if known is None:
        traced = trace_inference(resolved, settings, nc=nc)
        phases = PIPELINE_PHASES if outputs else PIPELINE_PHASES - {OUTPUT_PHASE}
        events = [e for e in traced.trace.events if e.op == "free" or e.phase in phases]
        run = replay([events], CachingAllocator(parse_alloc_conf(None)))
        known = _PIPELINES[key] = PipelineMemory(run.stats.peak_allocated_bytes, run.stats.peak_reserved_bytes,
                                                 traced.candidates, traced.candidates_basis, traced.runs_nms)  # fmt: skip
    return known


# An INT8 engine runs an FP32 engine's pipeline: a sweep (the calculator page's deployment series) asks
# for each again at the same batch
_PIPELINES: Recent = Recent(16)


def nms_candidates(settings: InferenceSettings, task: str, anchors: int, nc: int) -> tuple[int, str]:
    """(box, class) pairs per image that pass ``conf``, and why. The user's count; else the most NMS holds
    (predict: one class per anchor, ``multi_label=False``; val: every pair), up to ``max_nms``. Rotated NMS
    (obb) keeps several (n, n) float32 matrices, so at the cap it would need gigabytes an image that no
    measured obb run used: it takes the count fitted to a measured obb validation, as training's does."""
    from yolomem.loops.val_pass import ROTATED_NMS_CANDIDATES_PER_IMAGE, rotated_nms_matrix_bytes

    if settings.candidates is not None:
        return settings.candidates, "given"
    most = min(anchors if settings.mode == "predict" else anchors * nc, MAX_NMS)
    if task != "obb":
        return most, "the most NMS holds"
    fitted = min(most, ROTATED_NMS_CANDIDATES_PER_IMAGE)
    at_most = f"rotated NMS's (n, n) matrices at {most}: {rotated_nms_matrix_bytes(most) / 2**30:.1f} GiB each"
    return fitted, f"fitted to a measured obb validation; {at_most}"


# -- model -------------------------------------------------------------------------------------------
def _as_trained(model: torch.nn.Module, task: str, kpt_shape: tuple, imgsz: int) -> None:
    """What a trained checkpoint carries besides its weights and a model built from its YAML lacks: the
    trainer sets ``kpt_shape`` (pose: ``set_model_attributes``) and ``transforms`` (classify: the val
    transforms at the training imgsz, ``ClassificationTrainer.get_dataloader``). The predictors of 8.3 and
    earlier read both from the model; 8.4's read them elsewhere."""
    if task == "pose" and not hasattr(model, "kpt_shape"):
        model.kpt_shape = list(kpt_shape)
    if task == "classify" and not hasattr(model, "transforms"):
        from ultralytics.data.augment import classify_transforms

        model.transforms = classify_transforms(imgsz)


def _known_args(overrides: dict) -> dict:
    """The overrides the installed release knows (``release.known_arguments``): ``quantize`` replaced ``half``
    in 8.4; ``channels_last`` is 8.4 too."""
    from yolomem.loops.ultralytics.release import known_arguments

    known = known_arguments(overrides)
    if "quantize" in known:
        known.pop("half", None)
    return known


def _task_entry(task: str, key: str):
    from yolomem.loops.ultralytics.release import task_map

    return task_map("YOLO")[task][key]


def _predictor(task: str, overrides: dict):
    """The task's predictor, made without the logger integrations (TensorBoard, W&B, ClearML...) its
    ``__init__`` registers: they act on training events only, and up to 8.0.47 TensorBoard's imports
    ``torch.utils.tensorboard`` unguarded, which needs the ``tensorboard`` package."""
    from unittest import mock

    from ultralytics.utils import callbacks

    with mock.patch.object(callbacks, "add_integration_callbacks", lambda instance: None):
        return _task_entry(task, "predictor")(overrides=overrides)


def _validator(task: str, overrides: dict):
    from ultralytics.cfg import get_cfg

    overrides = {k: v for k, v in overrides.items() if k not in {"save"}}
    # a namespace: later validators run their args through get_cfg, 8.0's take them as they come
    return _task_entry(task, "validator")(args=get_cfg(overrides=overrides))


def _autobackend(model: torch.nn.Module):
    """``BaseValidator.__call__``'s model for a standalone run (fuse=True is AutoBackend's default)."""
    from ultralytics.nn.autobackend import AutoBackend

    # verbose=True (the default): fuse() then runs get_flops, whose forward caches the head's anchors.
    # The model goes first: 8.4 calls it ``model``, earlier releases ``weights``; ``channels_last`` is 8.4's.
    known = inspect.signature(AutoBackend.__init__).parameters
    options = {"channels_last": False} if "channels_last" in known else {}
    return AutoBackend(model, device=torch.device("cpu"), fp16=False, **options)


def _on_device(backend, tracer: Tracer, half: bool) -> None:
    """What the GPU holds once the model is loaded: the fused fp32 weights (``model.to(device)``), then,
    for fp16, ``model.half()`` on the device (each fp16 copy made, the fp32 one freed)."""
    tracer.forget()  # building and fusing happened on the host
    model = backend.model
    tracer.track_existing([*model.parameters(), *model.buffers()], "parameter")
    # tensors kept as plain attributes (Detect.stride, anchors) move with the model (DetectionModel._apply)
    tracer.track_existing([v for m in model.modules() for v in vars(m).values() if isinstance(v, torch.Tensor)],
                          "parameter")  # fmt: skip
    if half:
        with tracer.phase("setup"):
            model.half()
        # AutoBackend refuses fp16 on CPU; on CUDA it is set so (on its format backend from 8.4, on itself before)
        (backend.backend if hasattr(backend, "backend") else backend).fp16 = True


# -- predict -----------------------------------------------------------------------------------------
def _run_predict(predictor, backend, tracer: Tracer, settings: InferenceSettings, imgsz: int) -> None:
    if settings.gpu_path:
        backend.warmup = MethodType(_cuda_warmup(tracer), backend)
    steps = [("preprocess", "preprocess"), ("inference", "forward"), ("postprocess", "nms")]
    if not hasattr(predictor, "inference"):  # up to 8.0.133 stream_inference calls the model itself
        steps.remove(("inference", "forward"))
        backend.forward = _in_phase(backend.forward, tracer, "forward")  # the warmup calls the class's own
    for name, phase in steps:
        setattr(predictor, name, _in_phase(getattr(predictor, name), tracer, phase))
    images = [np.zeros((imgsz, imgsz, 3), dtype=np.uint8) for _ in range(settings.batch)]  # (H, W, 3) BGR
    stream = type(predictor).stream_inference
    stream = getattr(stream, "__wrapped__", stream)  # without inference_mode (see _no_inference_mode)
    for iteration in range(settings.batches):
        tracer.start_iteration(iteration)
        results = list(stream(predictor, images))
        del results


def _in_phase(method, tracer: Tracer, phase: str):
    def call(*args, **kwargs):
        with tracer.phase(phase):
            return method(*args, **kwargs)

    return call


def _cuda_warmup(tracer: Tracer):
    """``AutoBackend.warmup`` as it runs on CUDA: one forward of the batch, then (8.4) one NMS on random boxes."""
    from yolomem.loops.ultralytics.release import nms_function, warmup_runs_nms

    runs_nms = warmup_runs_nms()

    def warmup(self, imgsz=(1, 3, 640, 640), im=None) -> None:
        im = im if im is not None else torch.empty(*imgsz, dtype=torch.half if self.fp16 else torch.float)
        with tracer.phase("warmup"):
            type(self).forward(self, im)  # not a forward the predict trace labels as its own
            if runs_nms:
                with tracer.real_factories():  # NMS decides by value: the 16 random boxes are real
                    boxes = torch.rand(1, 84, 16)  # (1, 4 + 80, 16)
                    boxes[:, :4] *= im.shape[-1]
                    nms_function()(boxes)

    return warmup


# -- val ---------------------------------------------------------------------------------------------
def _run_val(validator, backend, tracer: Tracer, settings: InferenceSettings, batches, imgsz: int,
             resolved: ResolvedModel) -> None:
    """The standalone branch of ``BaseValidator.__call__`` (ultralytics 8.4.x, engine/validator.py)."""
    try:
        from ultralytics.utils.torch_utils import unwrap_model
    except ImportError:  # its name before 8.4
        from ultralytics.utils.torch_utils import de_parallel as unwrap_model

    validator.training = False
    validator.device = backend.device
    validator.args.quantize = 16 if backend.fp16 else None  # older releases read args.half
    validator.args.half = backend.fp16
    validator.stride = backend.stride
    validator.names = backend.names
    # what check_det_dataset gives the validator; pose reads its keypoint layout from here
    validator.data = {"names": backend.names, "nc": len(backend.names), "channels": 3,
                      "kpt_shape": list(resolved.kpt_shape)}
    # init_metrics reads the dataset's labels (the largest object count, against max_det)
    validator.dataloader = batches if hasattr(batches, "dataset") else SimpleNamespace(dataset=SimpleNamespace(labels=[]))
    backend.eval()
    if settings.gpu_path:  # model.warmup(imgsz=(1 if pt else batch, channels, *imgsz)) on CUDA
        with tracer.phase("warmup"):
            _cuda_warmup(tracer)(backend, imgsz=(1, 3, imgsz, imgsz))
    validator.init_metrics(unwrap_model(backend))
    validator.jdict = []
    iterator = iter(batches)
    for batch_i in range(settings.batches):
        with tracer.real_factories():  # collated on the host: targets decide metrics by value
            batch = next(iterator, None)
        if batch is None:
            break
        tracer.start_iteration(batch_i)
        validator.batch_i = batch_i
        with tracer.phase("preprocess"):
            batch = validator.preprocess(batch)
        with torch.autocast("cpu", enabled=False):  # the validator's autocast(half): off, as for a .pt model in fp32
            with tracer.phase("forward"):
                preds = backend(batch["img"], augment=False)
        with tracer.phase("nms"), tracer.real_factories():
            # real factories in postprocess too: segmentation's crop_mask builds its grid with arange, and
            # update_metrics reads the predicted masks' values (mask IoU) as it does the per-image targets
            preds = validator.postprocess(preds)
            validator.update_metrics(preds, batch)
        # batch and preds live on until rebound in the next iteration, as in BaseValidator.__call__


def val_side(imgsz: int, stride: int) -> int:
    """The side of a standalone val batch of square images. With rect batches (``build_yolo_dataset``'s
    ``rect = cfg.rect or mode == "val"``, 8.0.9x to 8.3.x) ``BaseDataset.set_rectangle`` gives
    ``ceil(imgsz / stride + 0.5) * stride``; 8.4.x, and 8.0.8x and before, letterbox val to ``imgsz`` unless
    ``rect=True``."""
    return int(np.ceil(imgsz / stride + 0.5) * stride) if standalone_val_is_rect() else imgsz


@functools.cache
def standalone_val_is_rect() -> bool:
    import inspect

    from ultralytics.data import build

    builder = getattr(build, "build_yolo_dataset", None)
    if builder is None:  # up to 8.0.8x the validator's build_dataloader(..., mode="val") takes rect from cfg.rect alone
        return False
    return bool(re.search(r"rect\s*=\s*cfg\.rect or mode == .val.", inspect.getsource(builder)))


def _synthetic_val_batches(resolved: ResolvedModel, settings: InferenceSettings, imgsz: int, stride: int,
                           nc: int) -> Iterator[dict]:
    """Collated val batches as ``YOLODataset`` + ``collate_fn`` give them for square images."""
    from yolomem.loops.batches import SyntheticBatch
    from yolomem.loops.ultralytics.release import semantic_masks

    side = val_side(imgsz, stride)
    pad = (side - imgsz) / 2
    for index in range(settings.batches):
        synthetic = SyntheticBatch.draw(resolved.task, settings.batch, side, settings.instances,
                                        seed=settings.seed + index, nc=nc, kpt_shape=resolved.kpt_shape)  # fmt: skip
        data = synthetic.as_dict(semantic_masks=semantic_masks())
        data["im_file"] = tuple(f"synthetic_{index}_{i}.jpg" for i in range(settings.batch))
        data["ori_shape"] = tuple((imgsz, imgsz) for _ in range(settings.batch))
        data["resized_shape"] = tuple((side, side) for _ in range(settings.batch))
        data["ratio_pad"] = tuple(((1.0, 1.0), (pad, pad)) for _ in range(settings.batch))
        yield data


# -- data-dependent parts ----------------------------------------------------------------------------
@contextlib.contextmanager
def synthetic_scores(tracer: Tracer, task: str, nc: int, candidates: int) -> Iterator[None]:
    """Each model output's prediction tensor (and, for segmentation, its mask prototypes) becomes real,
    with scores that let ``candidates`` pairs per image pass; NMS runs the CUDA kernel's allocations.
    ``AutoBackend.forward`` and ``torchvision.ops.nms`` are restored on exit."""
    from ultralytics.nn.autobackend import AutoBackend

    from yolomem.loops.val_pass import _cuda_nms_allocations, _real_predictions

    original = AutoBackend.forward

    def forward(self, im, *args, **kwargs):
        leaves, spec = tree_flatten(original(self, im, *args, **kwargs))
        for i in _exported_outputs(leaves, task):
            shape, dtype = tuple(leaves[i].shape), leaves[i].dtype
            leaves[i] = None  # the fake output dies first: the real one takes its allocation
            stand_in = torch.empty(shape, dtype=dtype, device="meta")
            with tracer.phase(OUTPUT_PHASE):  # what an exported model hands back to torch (pipeline_memory)
                if i == 0:
                    leaves[i] = _real_predictions(stand_in, tracer, nc, candidates)
                else:
                    leaves[i] = _real_zeros(shape, dtype, tracer)
        return tree_unflatten(leaves, spec)

    AutoBackend.forward = forward
    try:
        with _cuda_nms_allocations(tracer):
            yield
    finally:
        AutoBackend.forward = original


def _exported_outputs(leaves: list, task: str) -> list[int]:
    """Which of a model's output leaves an exported model returns, and postprocess reads by value: the
    predictions (the first leaf) and, for segmentation, the mask prototypes: the 4-D leaf at stride 4,
    the finest map (8.4's head returns it second; 8.3 and earlier last, after the feature maps)."""
    outputs = [0] if leaves else []
    if task == "segment":
        maps = [i for i, leaf in enumerate(leaves) if i and isinstance(leaf, torch.Tensor) and leaf.dim() == 4]
        if maps:
            outputs.append(max(maps, key=lambda i: leaves[i].shape[-2] * leaves[i].shape[-1]))
    return outputs


def _real_zeros(shape, dtype, tracer: Tracer) -> torch.Tensor:
    from torch.utils._python_dispatch import _disable_current_modes

    from yolomem.trace.lazy_zeros import lazy_zeros

    with _disable_current_modes():
        real = lazy_zeros(shape, dtype)  # host pages only where something writes
    tracer.track_existing([real], "activation")
    return real


@contextlib.contextmanager
def apply_replaces_parameters() -> Iterator[None]:
    """``Module._apply`` (``.to()``, ``.half()``) swaps fake parameters in place with
    ``torch.utils.swap_tensors``, which refuses tensors the fake mode holds weak references to. Here
    each converted parameter or buffer is replaced by the converted tensor instead: the same storages
    are made and freed as by the default ``param.data = ...`` path. Restored on exit."""
    original = torch.nn.Module._apply

    def _apply(self, fn, recurse=True):
        if recurse:
            for child in self.children():
                child._apply(fn)
        for key, param in self._parameters.items():
            if param is not None:
                with torch.no_grad():
                    applied = fn(param)
                if applied is not param:
                    self._parameters[key] = torch.nn.Parameter(applied, requires_grad=param.requires_grad)
        for key, buffer in self._buffers.items():
            if buffer is not None:
                self._buffers[key] = fn(buffer)
        return self

    torch.nn.Module._apply = _apply
    try:
        yield
    finally:
        torch.nn.Module._apply = original


@contextlib.contextmanager
def pooling_keeps_indices() -> Iterator[None]:
    """``max_pool2d`` on a CUDA tensor (and on a fake one) runs ``max_pool2d_with_indices`` and drops the
    int64 indices; only the CPU has a kernel without them. Make real CPU runs take the CUDA path, so a
    real run allocates what the GPU does. Restored on exit."""
    import torch.nn.functional as F

    original = F.max_pool2d

    def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
        out, indices = F.max_pool2d_with_indices(input, kernel_size, stride, padding, dilation, ceil_mode, True)
        return (out, indices) if return_indices else out

    F.max_pool2d = max_pool2d
    try:
        yield
    finally:
        F.max_pool2d = original


@contextlib.contextmanager
def _no_inference_mode() -> Iterator[None]:
    """``smart_inference_mode`` enters ``torch.inference_mode``, under which real tensors converted by the
    tracer dispatch as fake ones. ``no_grad`` keeps the same allocations at inference: no saved
    activations, no gradients. Restored on exit."""
    with torch.no_grad():
        yield


def exporter_reserved_bytes(resolved: ResolvedModel, batch: int, imgsz: int, nc: int | None = None) -> int:
    """What the caching allocator holds while ``onnx2engine`` builds: ``Exporter.__call__`` moved the model
    to the GPU, fused it there (new weights made, the old ones freed to the cache) and ran one dry-run
    forward at the export shape; 8.4.x does not empty the cache before the TensorRT build."""
    from yolomem.allocator.replay import replay_trace
    from yolomem.loops.ultralytics.step import build_model, quiet_ultralytics

    tracer = Tracer(fake=True)
    with tracer, quiet_ultralytics(), _no_inference_mode(), apply_replaces_parameters(), pooling_keeps_indices():
        model = build_model(resolved.cfg, resolved.task, nc or resolved.nc)
        tracer.forget()  # built on the host; the GPU sees the copy ``.to(device)`` makes
        tracer.track_existing([*model.parameters(), *model.buffers()], "parameter")
        model.eval()
        with tracer.phase("setup"):
            model = model.fuse(verbose=False)
        with tracer.phase("forward"):
            out = model(torch.zeros(batch, 3, imgsz, imgsz))  # (B, C, H, W) dry run
        del out
        trace = tracer.result()
        tracer.detach_finalizers()
    return replay_trace(trace).peak_reserved_bytes
