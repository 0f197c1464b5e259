"""One validation batch as the installed Ultralytics runs it inside training, under a ``Tracer``.

``BaseValidator.__call__`` (ultralytics 8.4.x, ``engine/validator.py``) with ``trainer`` given:
- the model is ``trainer.ema.ema`` itself (no copy), ``.float()`` and ``.eval()``, with
  ``model.end2end = args.nms is False`` (False by default: NMS-free heads validate with NMS); the whole
  call is ``smart_inference_mode()`` (``torch.inference_mode``);
- ``args.quantize = 16`` when the trainer uses AMP: the image batch is ``.half() / 255`` and the
  forward and the loss run under ``autocast(True)`` (fp16, also for ``amp=bf16``); the weights stay
  fp32. Up to 8.4.61 the EMA itself was converted with ``.half()`` and run without autocast
  (``UltralyticsLoop.trace_val_pass`` follows the installed release);
- the task validator's ``preprocess`` (segmentation: masks ``.float()``; pose: keypoints ``.float()``);
- ``model.loss(batch, preds)``: the training loss, with its assigner, on the validation batch; the
  loop variable keeps the last loss item (a view of the loss vector) alive (before 8.4.104,
  ``self.loss += ...[1]`` lets the items go at once);
- the task validator's ``postprocess``, outside autocast, while the raw outputs stay alive
  (``preds = self.postprocess(preds)``): ``non_max_suppression`` (from ``ultralytics.utils.nms``,
  ``utils.ops`` before 8.3.190) with the validator's arguments (conf 0.001, 0.01 for obb; iou 0.7;
  max_det 300; multi_label; ``nc``; ``rotated`` for obb), then per task: segmentation assembles each
  image's masks from the prototypes (``process_mask``: (n, H/4, W/4) float32, binarized to uint8),
  obb joins the angles to the boxes. ``UltralyticsLoop.trace_val_pass`` calls the validator's own
  ``preprocess`` and ``postprocess`` (``training_validator``); ``tests/test_val_pass_matches_real.py``
  checks the pass against the validator's ``__call__``, event for event.
The validation batch is 2x the training batch (not for obb), and each batch has its own rect shape
(``BaseDataset.set_rectangle``), so each distinct shape is traced once and reused.

``trace_validation_batch(model, tracer, ...)`` takes the model, the validator's steps and the loss
function; the yolov5 repo's val.py differs in most steps and has its own pass
(``yolomem.loops.yolov5.val_pass``), which shares the batch shapes, ``val_batch_dict``, the NMS
stand-in and the head's real factories from here.

Data-dependent steps of NMS (how many boxes pass ``conf``) are answered by giving NMS real predictions
(``synthetic_predictions``, taking over the fake output's allocation): ``NMS_CANDIDATES_PER_IMAGE``
(box, class) pairs per image, the cap NMS applies (for rotated NMS, whose memory is quadratic in them,
``ROTATED_NMS_CANDIDATES_PER_IMAGE``); they are listed in the trace's oracle answers.
``torchvision.ops.nms`` is replaced, while tracing only, by a stand-in that makes the allocations of its
CUDA kernel (see ``_cuda_nms_allocations``). ``update_metrics`` (per-image IoU of at most 300
predictions against the targets: kilobytes) is not traced. Not modelled: the postprocessed predictions
(segmentation: each image's masks, (300, H/4, W/4) uint8) stay alive in the validator's loop until the
next batch's forward has returned; each traced batch frees them at its end.
"""
from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from yolomem.loops.batches import SyntheticBatch
from yolomem.trace.lazy_zeros import lazy_zeros
from yolomem.trace.tracer import Tracer
from yolomem.loops.ultralytics.step import quiet_ultralytics

VAL_CONF = 0.001  # ultralytics/cfg/default.yaml: conf is None -> validators use 0.001
VAL_IOU = 0.7  # default.yaml iou
VAL_MAX_DET = 300  # default.yaml max_det
# An early-training model scores most anchors above conf=0.001 in some class; NMS caps at max_nms.
# We assume the cap for each image: the largest candidate set NMS will ever hold (utils/nms.py).
NMS_CANDIDATES_PER_IMAGE = 30000
# Rotated NMS (obb: ``TorchNMS.fast_nms`` with ``batch_probiou``) builds several (n, n) float32 matrices,
# so its memory grows with the square of the candidates: 3.4 GiB per matrix at the 30000 cap, which no
# card that trains obb at 1024 could hold. Fitted to the one public obb run we have (issue #12):
# yolov8n-obb, imgsz 1024, batch 8 printed 2.8 G GPU_mem through its validations. The simulated epochs
# give 2.80 GiB for epoch 1 and, after validation, 2.92 GiB at 3000 candidates per image, 3.73 at 6000
# and 23.0 at 30000; so 3000 is assumed, and the estimate lists it with what the cap would cost. (That fit
# built the model with the YAML's 80 classes; with dota8's 15, the default since, it gives 2.55 and 2.79.)
# The H200 measured the same config (80 classes, 8 objects an image; validation/results/h200-2026-12-04.jsonl
# line 26): 3,091,202,048 bytes reserved after validation, where 3000 candidates (with the int64 copy of
# NMS's mask) give 2,963,275,776 (-4 %).
ROTATED_NMS_CANDIDATES_PER_IMAGE = 3000
NMS_TIME_PER_IMAGE = 1e9  # seconds: NMS's time limit, lifted (see trace_validation_batch)
NMS_BLOCK = 64  # threadsPerBlock in torchvision's nms_kernel.cu: one int64 of mask bits per 64 boxes
VAL_PHASES = ("val_preprocess", "val_forward", "val_loss", "val_nms")


@dataclass(frozen=True)
class ValBatchShape:
    """One validation batch: images, height and width after letterboxing, objects per image."""

    batch: int
    height: int
    width: int
    counts: tuple[int, ...]


def val_batch_size(task: str, train_batch: int) -> int:
    """BaseTrainer._build_train_pipeline: ``batch_size if task in {obb, semantic, depth} else batch_size * 2``."""
    return train_batch if task in {"obb", "semantic", "depth"} else train_batch * 2


def val_batch_dict(task: str, shape: ValBatchShape, seed: int, nc: int, kpt_shape=(17, 3), channels: int = 3,
                   semantic_masks: bool = False) -> dict:
    """A collated validation batch of (B, C, H, W) uint8 images and real targets (``semantic_masks``: see
    ``SyntheticBatch.as_dict``)."""
    side = max(shape.height, shape.width)
    synthetic = SyntheticBatch(task, shape.batch, side, shape.counts, seed, nc, tuple(kpt_shape), channels)
    data = synthetic.as_dict(semantic_masks=semantic_masks)
    if task == "classify":  # ClassificationDataset's normalised float32 images, center-cropped square
        return data
    data["img"] = torch.zeros((shape.batch, channels, shape.height, shape.width), dtype=torch.uint8)
    for key in ("masks", "sem_masks"):  # overlap and semantic masks are (B, H/4, W/4) for a rect batch
        if key in data:
            data[key] = data[key][:, : shape.height // 4, : shape.width // 4].contiguous()
    return data


def trace_validation_batch(
    model: torch.nn.Module,
    tracer: Tracer,
    data: dict,
    *,
    autocast: Callable[[], contextlib.AbstractContextManager],
    preprocess: Callable[[dict], dict],
    loss_fn: Callable[[dict, object], object] | None,
    postprocess: Callable[[object], object],
    nc: int,
    foreground: tuple[int, ...] = (),
    rotated: bool = False,
    nms: bool = True,
    keeps_last_loss_item: bool = True,
) -> None:
    """Trace one validation batch as the loop body of ``BaseValidator.__call__`` runs it.

    ``data``: the collated batch (``img`` uint8 (B, C, H, W) plus targets), made inside the tracer.
    ``preprocess(data)`` and ``postprocess(preds)``: the validator's own (``postprocess`` is NMS and what the
    task does after it: segmentation assembles each image's masks from the prototypes there).
    ``autocast()``: the validator's autocast region around forward and loss (a null context for fp32);
    ``postprocess`` runs outside it, as in the validator. ``loss_fn(data, preds)``: the validation loss, or
    None to skip it. ``foreground``: each image's assumed foreground anchors, for the loss's assigner
    (``yolomem.loops.batches.foreground_per_image``). ``rotated``: the task's NMS is rotated (obb), for
    the candidates assumed. ``nms``: ``postprocess`` runs NMS (not for classification, whose ``postprocess``
    takes the softmax output of ``(softmax, logits)``). ``keeps_last_loss_item``: the loss items stay
    alive through ``postprocess`` (8.4.104), or die with the loss (``self.loss += ...[1]``, before).
    """
    model.eval()
    # Ultralytics runs this under torch.inference_mode(); no_grad() keeps the same allocations (no
    # saved activations, no grads) and lets the tracer keep target-derived tensors real: under
    # inference_mode, conversions of real tensors dispatch as fake ones.
    with torch.no_grad():
        with tracer.phase("val_preprocess"):
            tracer.track_existing(data.values(), "input")
            data = preprocess(data)
        with autocast():
            with tracer.phase("val_forward"), _head_makes_real_factories(model, tracer):
                preds = model(data["img"])
            losses = None
            if loss_fn is not None:
                tracer.oracle.expect_foreground(foreground)
                # "loss": the tracer keeps small target tensors real in this phase only; the epoch
                # composer renames the validation pass's phases to val_* (VAL_PHASES)
                with tracer.phase("loss"):
                    # the loss items are kept, the rest dies at once: the validator's loop variable ``v``
                    # holds the last item, a view of the criterion's loss vector (``self.loss[k] += v``)
                    losses = loss_fn(data, preds)[1]
                    if not keeps_last_loss_item:
                        losses = None
        with tracer.phase("val_nms"):
            if nms:
                preds = _with_synthetic_scores(preds, tracer, nc, _assume_candidates(tracer, rotated=rotated))
            with nms_stand_ins(tracer) if nms else contextlib.nullcontext(), quiet_ultralytics():
                # the raw outputs stay alive through postprocess: ``preds = self.postprocess(preds)``
                outputs = postprocess(preds)
            del preds, outputs
    del data, losses


@contextlib.contextmanager
def nms_stand_ins(tracer: Tracer) -> Iterator[None]:
    """What NMS needs to run under a tracer as on the GPU: ``torchvision.ops.nms`` makes the CUDA kernel's
    allocations (``_cuda_nms_allocations``), and Ultralytics' ``non_max_suppression`` has no time limit.
    It quits after 2 s + 0.05 s per image, which a GPU never takes but a CPU trace may, and the trace would
    then depend on how busy the machine is. The validators call it through its module
    (``nms.non_max_suppression``; ``ops.`` before 8.3.190), where it is replaced for the duration."""
    import sys

    from yolomem.loops.ultralytics.release import nms_function

    function = nms_function()
    module, name = sys.modules[function.__module__], function.__name__
    unlimited = "max_time_img" in inspect.signature(function).parameters

    def non_max_suppression(*args, **kwargs):
        if unlimited:
            kwargs["max_time_img"] = NMS_TIME_PER_IMAGE
        return function(*args, **kwargs)

    setattr(module, name, non_max_suppression)
    try:
        with _cuda_nms_allocations(tracer):
            yield
    finally:
        setattr(module, name, function)


def _assume_candidates(tracer: Tracer, *, rotated: bool) -> int:
    """How many (box, class) pairs per image pass ``conf``: NMS's cap, or for rotated NMS the fitted count
    (``ROTATED_NMS_CANDIDATES_PER_IMAGE``); listed with the trace's other assumed sizes."""
    if not rotated:
        return NMS_CANDIDATES_PER_IMAGE
    n, cap = ROTATED_NMS_CANDIDATES_PER_IMAGE, NMS_CANDIDATES_PER_IMAGE
    question = (f"(box, class) pairs per image above conf={VAL_CONF} in rotated NMS (its n x n float32 matrices: "
                f"{rotated_nms_matrix_bytes(n) / 2**20:.0f} MiB each, {rotated_nms_matrix_bytes(cap) / 2**30:.1f} GiB "
                f"at NMS's cap of {cap}; "
                f"the int64 copy of their mask that its sum makes, twice that)")
    tracer.assume(question, str(n))
    return n


def rotated_nms_matrix_bytes(candidates: int) -> int:
    """Bytes of one (n, n) float32 matrix of rotated NMS (``TorchNMS.fast_nms`` with ``batch_probiou``)."""
    return 4 * candidates * candidates


def synthetic_predictions(shape: tuple[int, ...], dtype: torch.dtype, nc: int, candidates: int) -> torch.Tensor:
    """Real predictions (B, 4 + nc + extra, anchors) with which ``candidates`` (box, class) pairs pass
    ``conf`` in every image (all of them, where there are fewer): NMS's work depends on these values only.
    Call it outside the tracer's modes (``_disable_current_modes``): the values are made on the host, and
    hold host memory only where written (``lazy_zeros``): the box channels and the passing scores."""
    real = lazy_zeros(shape, dtype)
    real[:, 0:2] = 100.0  # box centres (pixels)
    real[:, 2:4] = 20.0  # box sides
    # (B, nc, anchors) as (B, nc * anchors), a view: the first `candidates` pairs of each image pass
    real[:, 4 : 4 + nc].view(shape[0], -1)[:, :candidates] = 0.5
    return real


def _with_synthetic_scores(preds, tracer: Tracer, nc: int, candidates: int):
    """``preds`` with the tensor NMS reads (the first leaf: ``y`` of ``(y, raw)``, ``((y, proto), raw)`` for
    segmentation) given real synthetic values; the real tensor takes over the fake one's allocation
    (``Tracer.substitute``: no event), as on the GPU they are one tensor."""
    from torch.utils._python_dispatch import _disable_current_modes
    from torch.utils._pytree import tree_flatten, tree_unflatten

    leaves, spec = tree_flatten(preds)
    fake = leaves[0]
    with _disable_current_modes():
        real = synthetic_predictions(tuple(fake.shape), fake.dtype, nc, candidates)
    tracer.substitute(fake, real)
    leaves[0] = real
    return tree_unflatten(leaves, spec)


def _real_predictions(preds, tracer: Tracer, nc: int, candidates: int) -> torch.Tensor:
    """NMS decides by value (which scores pass ``conf``): give it real predictions that make
    ``candidates`` (box, class) pairs pass in every image, in place of the fake ones (same shape,
    same dtype, so the same allocation: the fake output is released first)."""
    from torch.utils._python_dispatch import _disable_current_modes

    fake = preds
    while isinstance(fake, (list, tuple)):  # segment (8.4): ((y, proto), raw); detect/pose: (y, raw)
        fake = fake[0]  # y: (B, 4 + nc + extra, anchors), what the validator hands to NMS
    shape, dtype = tuple(fake.shape), fake.dtype
    del fake, preds  # the raw head outputs die here on the GPU too unless the caller keeps them
    with _disable_current_modes():
        real = synthetic_predictions(shape, dtype, nc, candidates)
    tracer.track_existing([real], "activation")
    return real


@contextlib.contextmanager
def _head_makes_real_factories(model: torch.nn.Module, tracer: Tracer) -> Iterator[None]:
    """In eval mode the head builds the anchor grid (``make_anchors``: ``arange`` and friends) that the
    loss and the assigner then use; it must be real, as it is when the loss builds it in training."""
    layers = getattr(model, "model", None)
    if not isinstance(layers, torch.nn.Sequential) or len(layers) == 0:
        yield
        return
    stack = contextlib.ExitStack()

    def enter_hook(*_args) -> None:  # a pre-hook that returns a value would replace the inputs
        stack.enter_context(tracer.real_factories())

    def leave_hook(*_args) -> None:
        stack.close()

    enter = layers[-1].register_forward_pre_hook(enter_hook)
    leave = layers[-1].register_forward_hook(leave_hook, always_call=True)
    try:
        yield
    finally:
        enter.remove()
        leave.remove()
        stack.close()




@contextlib.contextmanager
def _cuda_nms_allocations(tracer: Tracer) -> Iterator[None]:
    """Stand in for ``torchvision.ops.nms`` while tracing, with the allocations its CUDA kernel makes.

    The kernel (torchvision ``csrc/ops/cuda/nms_kernel.cu``) sorts the scores, gathers the sorted
    boxes, and fills an (n, ceil(n / 64)) int64 suppression mask: for n = 30000 candidates that is
    112 MB, per image, freed before the next one. It has no fake implementation for its
    data-dependent output, so this stand-in allocates the same tensors and keeps ``max_det`` indices.
    The attribute is replaced for the duration only and restored on exit.
    """
    import torchvision

    original = torchvision.ops.nms

    def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
        n = int(boxes.shape[0])
        _values, order = scores.sort(0, descending=True)  # (n,), (n,) int64
        boxes_sorted = boxes.index_select(0, order)  # (n, 4)
        mask = torch.empty((n, -(-n // NMS_BLOCK)), dtype=torch.int64, device=boxes.device)  # (n, n/64)
        removed = torch.zeros((n,), dtype=torch.bool, device=boxes.device)
        kept = order[: min(n, VAL_MAX_DET)].clone()
        del _values, boxes_sorted, mask, removed
        return kept

    torchvision.ops.nms = nms
    try:
        yield
    finally:
        torchvision.ops.nms = original
