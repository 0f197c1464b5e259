"""One batch of the yolov5 repo's validation (``val.py`` v7.0) as ``train.py`` runs it after each epoch,
under a ``Tracer``.

``train.py`` calls ``val.run(half=amp, model=ema.ema, batch_size=batch_size // WORLD_SIZE * 2,
dataloader=val_loader, compute_loss=compute_loss)``; the loader is rect with ``pad=0.5`` (the same
batch shapes as Ultralytics' ``set_rectangle``, ``yolomem.result.epochs.rect_val_shapes``). With a model
passed in, ``val.run``:
- ``model.half()`` on the EMA itself (no autocast: the forward runs in fp16). Each fp32 parameter and
  buffer gets an fp16 copy and its fp32 storage is freed; ``model.float()`` at the end of ``val.run``
  does the reverse ("for training"), so the next EMA update in train.py sees fp32 tensors again and
  the EMA's storages have moved. Both conversions are traced; see ``yolomem.result.epochs`` for how the
  composer replays them;
- per batch: ``im.half()`` then ``im /= 255`` in place; ``preds, train_out = model(im)`` in eval mode
  (the head decodes boxes, ``yolomem.loops.yolov5.modules.decode_level``); ``compute_loss(train_out,
  targets)`` (the training model's loss, its anchors fp32, on the fp16 outputs);
  ``non_max_suppression(preds, 0.001, 0.6, multi_label=True, max_det=300)``;
- ``train_out`` is a loop variable: the previous batch's outputs stay alive through the next
  batch's forward (stand-ins are allocated for them before the forward).

Not traced: ``process_batch`` / ``ap_per_class`` (IoU of at most 300 predictions per image against the
labels: kilobytes), NMS's time limit (``0.5 + 0.05 * batch`` seconds: early epochs often hit it and
skip the remaining images, which lowers nothing but the number of images), and train.py's checkpoint
(``deepcopy(model).half()``, ``deepcopy(ema.ema).half()`` after validation).
"""

from __future__ import annotations

import contextlib

import torch

from yolomem.loops.val_pass import VAL_MAX_DET, ValBatchShape, ValLoop, trace_validation_batch, val_batch_dict
from yolomem.loops.yolov5.loss import _xywh2xyxy
from yolomem.loops.yolov5.step import Yolov5Run

VAL_CONF = 0.001  # val.run(conf_thres=0.001)
VAL_IOU = 0.6  # val.run(iou_thres=0.6)
MAX_WH = 7680  # utils/general.non_max_suppression: class offset (pixels) for batched NMS
MAX_NMS = 30000  # utils/general.non_max_suppression: boxes kept for torchvision.ops.nms


def non_max_suppression(prediction: torch.Tensor, conf_thres: float = VAL_CONF, iou_thres: float = VAL_IOU,
                        multi_label: bool = True, max_det: int = VAL_MAX_DET, nm: int = 0) -> list[torch.Tensor]:
    """The steps of yolov5 v7.0's ``utils/general.non_max_suppression`` (no class filter, no labels,
    no merge, no time limit), for their allocations: per image ``(n, 6 + nm)`` detections."""
    import torchvision

    bs = prediction.shape[0]
    nc = prediction.shape[2] - nm - 5
    xc = prediction[..., 4] > conf_thres  # (B, anchors) bool: objectness candidates
    multi_label &= nc > 1
    mi = 5 + nc  # mask coefficients start here
    output = [torch.zeros((0, 6 + nm), device=prediction.device)] * bs
    for xi, x in enumerate(prediction):  # x: (anchors, 5 + nc + nm)
        x = x[xc[xi]]  # (n, no): a copy
        if not x.shape[0]:
            continue
        x[:, 5:] *= x[:, 4:5]  # conf = obj_conf * cls_conf
        box = _xywh2xyxy(x[:, :4])  # (n, 4)
        mask = x[:, mi:]  # (n, nm): zero columns for detection
        if multi_label:
            i, j = (x[:, 5:mi] > conf_thres).nonzero(as_tuple=False).T  # (k,), (k,) per (box, class) pair
            # j.float() makes the cat fp32 whatever the prediction's dtype: (k, 6 + nm)
            x = torch.cat((box[i], x[i, 5 + j, None], j[:, None].float(), mask[i]), 1)
        else:
            conf, j = x[:, 5:mi].max(1, keepdim=True)
            x = torch.cat((box, conf, j.float(), mask), 1)[conf.view(-1) > conf_thres]
        if not x.shape[0]:
            continue
        x = x[x[:, 4].argsort(descending=True)[:MAX_NMS]]  # (min(k, MAX_NMS), 6 + nm)
        c = x[:, 5:6] * MAX_WH  # per-class offsets: one NMS call for all classes
        boxes, scores = x[:, :4] + c, x[:, 4]
        i = torchvision.ops.nms(boxes, scores, iou_thres)[:max_det]
        output[xi] = x[i]
    return output


def convert_floats(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """``model.half()`` / ``model.float()`` as ``nn.Module._apply`` does them: module by module, each
    floating parameter and buffer gets a converted copy, and its old storage is freed as it is replaced.
    Written out because ``_apply`` swaps tensors for tensor subclasses, which the tracer's fake
    tensors (weak-referenced) refuse."""
    with torch.no_grad():
        for module in model.modules():
            for name, param in module._parameters.items():
                if param is not None and param.is_floating_point():
                    module._parameters[name] = torch.nn.Parameter(param.to(dtype), param.requires_grad)
            for name, buffer in module._buffers.items():
                if buffer is not None and buffer.is_floating_point():
                    module._buffers[name] = buffer.to(dtype)


YOLOV5_LOOP = ValLoop(scale_in_place=True, anchor_rows=True, keeps_raw_outputs=True, nms=non_max_suppression)


def trace_validation(run: Yolov5Run, shape: ValBatchShape, seed: int, channels: int = 3) -> None:
    """Trace one validation batch of ``shape`` with ``run``'s EMA, bracketed by val.run's
    ``model.half()`` and ``model.float()`` (the caller starts the tracer's iteration)."""
    tracer, head = run.tracer, run.model.head
    ema = run.ema.ema
    half = run.settings.precision != "fp32"  # train.py: half=amp (fp16 for amp=bf16 too)
    with tracer.phase("val_model_half"):
        if half:
            convert_floats(ema, torch.float16)  # val.run: model.half()
        tracer.label(list(ema.parameters()) + list(ema.buffers()), "ema")
    with tracer.phase("val_preprocess"):
        data = val_batch_dict("detect", shape, seed, head.nc, channels=channels)
        dtype = torch.float16 if half else torch.float32
        # the previous batch's train_out: (B, na, H / s, W / s, 5 + nc) per level, alive until this forward returns
        previous = [torch.empty((shape.batch, head.na, shape.height // s, shape.width // s, head.no), dtype=dtype)
                    for s in head.strides]  # fmt: skip

    def loss_fn(d: dict, preds) -> None:
        targets = torch.cat((d["batch_idx"][:, None], d["cls"], d["bboxes"]), 1)  # (nt, 6), as val.py gets them
        run.loss(preds[1], targets)

    trace_validation_batch(ema, tracer, data, autocast=contextlib.nullcontext, half_inputs=half, loss_fn=loss_fn,
                           nc=head.nc, loop=YOLOV5_LOOP, previous_outputs=previous)  # fmt: skip
    with tracer.phase("val_model_float"):
        convert_floats(ema, torch.float32)  # val.run: model.float() "for training"
        tracer.label(list(ema.parameters()) + list(ema.buffers()), "ema")
