"""The yolov5 repo's validation (``val.py`` / ``segment/val.py`` v7.0) as ``train.py`` runs it after each
epoch, under a ``Tracer``: ``val.run(half=amp, model=ema.ema, batch_size=batch_size // WORLD_SIZE * 2,
dataloader=val_loader, compute_loss=compute_loss)``. The loader is rect with ``pad=0.5``: each batch has
its own shape (``yolomem.result.epochs.rect_val_shapes``).

``trace_val_pass`` writes out ``val.run``'s statements for a model passed in (``training=True``), so
the tensors, and the moments Python frees them, are the repo's; ``tests/test_yolov5_matches_repo.py``
checks it against the repo's own ``val.run``:
- ``model.half()`` on the EMA itself when ``half`` (AMP): every floating parameter and buffer, and
  Detect's stride and grids, get an fp16 copy and the fp32 storage is freed; ``model.float()`` at the
  end does the reverse "for training" (``convert_floats``);
- per batch: the copies to the GPU, ``im.half()`` then ``im /= 255`` in place; ``preds, train_out =
  model(im)`` in eval mode (the head decodes boxes, ``Detect._make_grid`` caches its grids);
  ``compute_loss(train_out, targets)`` (the training loss, its anchors fp32, on the fp16 outputs);
  ``non_max_suppression(preds, 0.001, 0.6, multi_label=True, max_det=300)``; then the per-image
  metrics (``process_batch``; for segmentation ``process_mask``: (n, H/4, W/4) masks per image);
- loop variables outlive their batch: the previous ``preds``/``train_out`` stay alive through the next
  forward, and ``stats`` keeps each image's detections until the end of the pass.

Data-dependent steps. NMS decides by value: its input is given real values (``_real_predictions``)
under which ``candidates`` (anchor, class) pairs per image pass ``conf=0.001`` (the cap yolov5's NMS
applies, by default): an early model scores most anchors above it. ``torchvision.ops.nms`` is replaced,
while tracing, by a stand-in with the allocations of its CUDA kernel (``yolomem.loops.val_pass``).

Not traced: NMS's time limit (``0.5 + 0.05 * batch`` seconds: early epochs often hit it and skip the
rest of the batch, which only lowers the figure), the matching inside ``process_batch`` (host numpy).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensor
from torch.utils._python_dispatch import _disable_current_modes

from yolomem.loops.val_pass import (
    VAL_MAX_DET, ValBatchShape, _cuda_nms_allocations, _head_makes_real_factories, val_batch_dict,
)  # fmt: skip
from yolomem.loops.yolov5.loss import crop_mask, xywh2xyxy
from yolomem.loops.yolov5.modules import convert_floats
from yolomem.loops.yolov5.step import Yolov5Run, to_device

VAL_CONF = 0.001  # val.run(conf_thres=0.001)
VAL_IOU = 0.6  # val.run(iou_thres=0.6)
MAX_WH = 7680  # utils/general.non_max_suppression: class offset (pixels) for batched NMS
MAX_NMS = 30000  # utils/general.non_max_suppression: boxes kept for torchvision.ops.nms
NMS_CANDIDATES_PER_IMAGE = MAX_NMS  # (anchor, class) pairs assumed to pass conf: NMS's own cap
IOU_LEVELS = 10  # iouv = torch.linspace(0.5, 0.95, 10)


def non_max_suppression(prediction: torch.Tensor, conf_thres: float = VAL_CONF, iou_thres: float = VAL_IOU,
                        multi_label: bool = True, max_det: int = VAL_MAX_DET, nm: int = 0) -> list[torch.Tensor]:
    """``utils/general.non_max_suppression`` (no class filter, no labels, no merge, no time limit):
    per image ``(n, 6 + nm)`` detections."""
    import torchvision

    if isinstance(prediction, (list, tuple)):
        prediction = prediction[0]
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
        box = xywh2xyxy(x[:, :4])  # (n, 4)
        mask = x[:, mi:]  # (n, nm): zero columns for detection
        if multi_label:
            i, j = (x[:, 5:mi] > conf_thres).nonzero(as_tuple=False).T  # (k,), (k,) per (box, class) pair
            # j.float() makes the cat fp32 whatever the prediction's dtype: (k, 6 + nm)
            x = torch.cat((box[i], x[i, 5 + j, None], j[:, None].float(), mask[i]), 1)
        else:
            conf, j = x[:, 5:mi].max(1, keepdim=True)
            x = torch.cat((box, conf, j.float(), mask), 1)[conf.view(-1) > conf_thres]
        n = x.shape[0]
        if not n:
            continue
        x = x[x[:, 4].argsort(descending=True)[:MAX_NMS]]  # (min(k, MAX_NMS), 6 + nm)
        c = x[:, 5:6] * MAX_WH  # per-class offsets: one NMS call for all classes
        boxes, scores = x[:, :4] + c, x[:, 4]
        i = torchvision.ops.nms(boxes, scores, iou_thres)
        i = i[:max_det]
        output[xi] = x[i]
    return output


# -- the per-image metrics of val.py / segment/val.py ------------------------------------------------
def box_iou(box1: torch.Tensor, box2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """``utils/metrics.box_iou``: (N, 4) x (M, 4) xyxy -> (N, M)."""
    (a1, a2), (b1, b2) = box1.unsqueeze(1).chunk(2, 2), box2.unsqueeze(0).chunk(2, 2)
    inter = (torch.min(a2, b2) - torch.max(a1, b1)).clamp(0).prod(2)
    return inter / ((a2 - a1).prod(2) + (b2 - b1).prod(2) - inter + eps)


def mask_iou(mask1: torch.Tensor, mask2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """``utils/segment/general.mask_iou``: (N, h*w) x (M, h*w) -> (N, M)."""
    intersection = torch.matmul(mask1, mask2.t()).clamp(0)
    union = (mask1.sum(1)[:, None] + mask2.sum(1)[None]) - intersection
    return intersection / (union + eps)


def clip_boxes(boxes: torch.Tensor, shape) -> None:
    boxes[..., 0].clamp_(0, shape[1])
    boxes[..., 1].clamp_(0, shape[0])
    boxes[..., 2].clamp_(0, shape[1])
    boxes[..., 3].clamp_(0, shape[0])


def scale_boxes(img1_shape, boxes: torch.Tensor, img0_shape, ratio_pad) -> torch.Tensor:
    """``utils/general.scale_boxes`` with the loader's ``ratio_pad``: in place."""
    gain, pad = ratio_pad[0][0], ratio_pad[1]
    boxes[..., [0, 2]] -= pad[0]
    boxes[..., [1, 3]] -= pad[1]
    boxes[..., :4] /= gain
    clip_boxes(boxes, img0_shape)
    return boxes


def process_mask(protos: torch.Tensor, masks_in: torch.Tensor, bboxes: torch.Tensor, shape) -> torch.Tensor:
    """``utils/segment/general.process_mask`` (upsample=False): (n, nm) coefficients -> (n, mh, mw) masks."""
    c, mh, mw = protos.shape
    ih, iw = shape
    masks = (masks_in @ protos.float().view(c, -1)).sigmoid().view(-1, mh, mw)
    downsampled_bboxes = bboxes.clone()
    downsampled_bboxes[:, 0] *= mw / iw
    downsampled_bboxes[:, 2] *= mw / iw
    downsampled_bboxes[:, 3] *= mh / ih
    downsampled_bboxes[:, 1] *= mh / ih
    masks = crop_mask(masks, downsampled_bboxes)
    return masks.gt_(0.5)


def process_batch(detections, labels, iouv, pred_masks=None, gt_masks=None, overlap=False, masks=False):
    """``val.py``/``segment/val.py`` ``process_batch``: the (n, 10) bool matrix of correct detections.
    The matching itself runs on the host (numpy); with fake IoUs (masks in a trace) it is skipped."""
    if masks:
        if overlap:
            nl = len(labels)
            index = torch.arange(nl, device=gt_masks.device).view(nl, 1, 1) + 1
            gt_masks = gt_masks.repeat(nl, 1, 1)  # (1, h, w) -> (nl, h, w)
            gt_masks = torch.where(gt_masks == index, 1.0, 0.0)
        if gt_masks.shape[1:] != pred_masks.shape[1:]:
            gt_masks = F.interpolate(gt_masks[None], pred_masks.shape[1:], mode="bilinear", align_corners=False)[0]
            gt_masks = gt_masks.gt_(0.5)
        iou = mask_iou(gt_masks.view(gt_masks.shape[0], -1), pred_masks.view(pred_masks.shape[0], -1))
    else:
        iou = box_iou(labels[:, 1:], detections[:, :4])
    correct = np.zeros((detections.shape[0], iouv.shape[0])).astype(bool)
    correct_class = labels[:, 0:1] == detections[:, 5]
    for i in range(len(iouv)):
        x = torch.where((iou >= iouv[i]) & correct_class)
        if x[0].shape[0]:
            matches = torch.cat((torch.stack(x, 1), iou[x[0], x[1]][:, None]), 1)  # (k, 3): label, detection, iou
            if isinstance(matches, FakeTensor):
                continue  # values unknown in a trace; the host-side matching allocates nothing on the GPU
            matches = matches.cpu().numpy()
            if x[0].shape[0] > 1:
                matches = matches[matches[:, 2].argsort()[::-1]]
                matches = matches[np.unique(matches[:, 1], return_index=True)[1]]
                matches = matches[np.unique(matches[:, 0], return_index=True)[1]]
            correct[matches[:, 1].astype(int), i] = True
    return torch.tensor(correct, dtype=torch.bool, device=iouv.device)


# -- model.half() / model.float() ----------------------------------------------------------------------
def _host_val_batch(shape: ValBatchShape, seed: int, nc: int, channels: int, segment: bool):
    """What the val loader yields on the host: uint8 images, (nt, 6) targets, shapes, [masks]."""
    with _disable_current_modes():
        data = val_batch_dict("segment" if segment else "detect", shape, seed, nc, channels=channels)
        targets = torch.cat((data["batch_idx"][:, None], data["cls"], data["bboxes"]), 1)
    shapes = [((shape.height, shape.width), ((1.0, 1.0), (0.0, 0.0)))] * shape.batch  # (h0, w0), (ratio, pad)
    return data["img"], targets, shapes, data.get("masks")


def _real_predictions(tracer, preds: torch.Tensor, nc: int, candidates: int | None) -> torch.Tensor:
    """NMS decides by value: real (B, anchors, 5 + nc + nm) predictions that take over the fake
    tensor's allocation (no event: on the GPU it is one tensor). Every anchor's objectness passes
    (0.5) and the first ``candidates`` (anchor, class) pairs of each image score 0.5 x 0.5 (all of
    them for None). Every image's values are the same, so one image's are made on the host and
    expanded over the batch (stride 0): the repo's NMS only reads its input."""
    with _disable_current_modes():
        one = torch.zeros((1, *preds.shape[1:]), dtype=preds.dtype)
        one[..., 0:2] = 100.0  # box centres (pixels)
        one[..., 2:4] = 20.0  # box sides
        one[..., 4] = 0.5  # objectness
        scores = one[0, :, 5 : 5 + nc]  # (anchors, nc)
        flat = scores.reshape(-1)  # anchor-major pairs, a copy (each row also holds box and objectness)
        flat[: flat.numel() if candidates is None else candidates] = 0.5
        scores.copy_(flat.view_as(scores))
        real = one.expand(preds.shape)
    tracer.substitute(preds, real)
    return real


def trace_val_pass(run: Yolov5Run, shapes: Sequence[ValBatchShape], seed: int, channels: int = 3,
                   candidates: int | None = NMS_CANDIDATES_PER_IMAGE) -> None:
    """``val.run`` (``segment/val.run``) with ``model=ema.ema``, over one batch of each of ``shapes`` in
    order. One function body, as in val.py, so that its locals outlive their batch as there (the last
    image's ``predn``, ``labels``... until the next batch reassigns them). The caller starts the
    tracer's iteration."""
    tracer, model, head = run.tracer, run.ema.ema, run.model.head
    half = run.settings.precision != "fp32"  # train.py: half=amp (fp16 for amp=bf16 too)
    nc, nm, segment = head.nc, head.nm, bool(head.nm)
    hosts = [_host_val_batch(shape, seed + k, nc, channels, segment) for k, shape in enumerate(shapes)]
    compute_loss = run.loss
    with torch.no_grad(), _cuda_nms_allocations(tracer):  # val.run is @smart_inference_mode()
        with tracer.phase("val_model_half"):
            if half:
                convert_floats(model, torch.float16)  # model.half() (model.float() on fp32: no change)
            tracer.label(list(model.parameters()) + list(model.buffers()), "ema")
        model.eval()
        with tracer.phase("val_setup"):
            iouv = torch.linspace(0.5, 0.95, IOU_LEVELS)
            niou = iouv.numel()
            loss = torch.zeros(4 if segment else 3)
        stats = []
        # val.run's per-image locals, bound here so that they can be freed in val.run's order at the end
        protos = pred = proto = labels = correct = correct_masks = correct_bboxes = None
        gt_masks = pred_masks = predn = tbox = labelsn = None
        for im, targets, shapes_, masks in hosts:  # host batches: the loop rebinding frees the last copies
            tracer.phase_name = "val_preprocess"
            im = to_device(im)
            targets = to_device(targets)
            if segment:
                masks = to_device(masks)
                masks = masks.float()
            im = im.half() if half else im.float()
            im /= 255
            nb, _, height, width = im.shape
            with tracer.phase("val_forward"), _head_makes_real_factories(model, tracer):
                if segment:
                    preds, protos, train_out = model(im)
                else:
                    preds, train_out = model(im)
            # "loss": the tracer keeps small target tensors real in this phase; the composer renames it
            with tracer.phase("loss"):
                if segment:
                    loss += compute_loss((train_out, protos), targets, masks)[1]
                else:
                    loss += compute_loss(train_out, targets)[1]
            tracer.phase_name = "val_nms"
            with tracer.real_factories():
                targets[:, 2:] *= torch.tensor((width, height, width, height))
                preds = _real_predictions(tracer, preds, nc, candidates)
                preds = non_max_suppression(preds, VAL_CONF, VAL_IOU, multi_label=True, max_det=VAL_MAX_DET, nm=nm)
            tracer.phase_name = "val_metrics"
            with tracer.real_factories():
                for si, pred in enumerate(preds):
                    labels = targets[targets[:, 0] == si, 1:]
                    nl, npr = labels.shape[0], pred.shape[0]
                    shape = shapes_[si][0]
                    if segment:
                        proto = protos[si]
                        correct_masks = torch.zeros(npr, niou, dtype=torch.bool)
                        correct_bboxes = torch.zeros(npr, niou, dtype=torch.bool)
                    else:
                        correct = torch.zeros(npr, niou, dtype=torch.bool)
                    if npr == 0:
                        if nl:
                            if segment:
                                stats.append((correct_masks, correct_bboxes, *torch.zeros((2, 0)), labels[:, 0]))
                            else:
                                stats.append((correct, *torch.zeros((2, 0)), labels[:, 0]))
                        continue
                    if segment:
                        midx = [si]  # overlap masks
                        gt_masks = masks[midx]
                        pred_masks = process_mask(proto, pred[:, 6:], pred[:, :4], shape=im[si].shape[1:])
                    predn = pred.clone()
                    scale_boxes(im[si].shape[1:], predn[:, :4], shape, shapes_[si][1])
                    if nl:
                        tbox = xywh2xyxy(labels[:, 1:5])
                        scale_boxes(im[si].shape[1:], tbox, shape, shapes_[si][1])
                        labelsn = torch.cat((labels[:, 0:1], tbox), 1)
                        if segment:
                            correct_bboxes = process_batch(predn, labelsn, iouv)
                            correct_masks = process_batch(predn, labelsn, iouv, pred_masks, gt_masks, overlap=True,
                                                          masks=True)  # fmt: skip
                        else:
                            correct = process_batch(predn, labelsn, iouv)
                    if segment:
                        stats.append((correct_masks, correct_bboxes, pred[:, 4], pred[:, 5], labels[:, 0]))
                        pred_masks = torch.as_tensor(pred_masks, dtype=torch.uint8)
                    else:
                        stats.append((correct, pred[:, 4], pred[:, 5], labels[:, 0]))
        # torch.cat(x, 0).cpu().numpy(): each concatenation is copied to the host and freed
        stats = [_to_host(torch.cat(x, 0)) for x in zip(*stats)]
        tracer.phase_name = "val_model_float"
        convert_floats(model, torch.float32)  # model.float() "for training"
        tracer.label(list(model.parameters()) + list(model.buffers()), "ema")
        # val.run returns: Python frees its locals in their order in its code object, then its cell
        # variables (targets)
        del iouv, loss, im, masks, preds, protos, train_out, pred, proto, labels, correct, correct_masks
        del correct_bboxes, gt_masks, pred_masks, predn, tbox, labelsn, targets
    tracer.phase_name = "setup"


def _to_host(tensor: torch.Tensor) -> None:
    """``.cpu().numpy()`` of a GPU tensor: a host copy; the GPU tensor is freed right after."""
    del tensor
