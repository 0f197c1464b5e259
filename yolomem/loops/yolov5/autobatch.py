"""The yolov5 repo's AutoBatch (``--batch-size -1``), run on a simulated card.

train.py (and segment/train.py), v7.0: after ``Model(...).to(device)``, ``check_amp`` and the freeze
loop, ``if RANK == -1 and batch_size == -1: batch_size = check_train_batch_size(model, imgsz, amp)``,
before the optimizer and the EMA exist. ``utils/autobatch.py``: ``check_train_batch_size`` runs
``autobatch(deepcopy(model).train(), imgsz)`` inside ``torch.cuda.amp.autocast(amp)``; ``autobatch``
reads the card (total, reserved, allocated), builds host batches of 1, 2, 4, 8 and 16 images and
hands them to ``utils/torch_utils.profile(img, model, n=3)``, which per batch copies it to the card
(``requires_grad``), runs thop's forward (eval mode, no grad) where thop is installed, then three times
forward and ``(sum(yi.sum() for yi in y) if isinstance(y, list) else y).sum().backward()``, reads
``memory_reserved() / 1E9`` and empties the cache. A line through the readings, solved for 80 % of the
free memory, is the batch; a probe that failed caps it at the batch before; outside 1..1024 it is 16.

The repo is not a package a user installs, so its code is written out below, statement by statement,
as the training loop is (``yolomem.loops.yolov5.step``); it runs on fake tensors under the tracer,
and what it asks CUDA, ``SimulatedCard`` answers. ``tests/test_yolov5_autobatch.py`` checks the
readings and the pick against the repo's own ``check_train_batch_size`` (the ``yolov5`` package).

As the repo's code does: the model copy's gradients accumulate over all probes (nothing zeroes them),
a batch's outputs live until the next batch's forward returns, and segmentation's probe runs no
backward (the head returns a tuple, whose ``.sum`` fails inside the profiler's ``try``).
Not modelled: ``check_amp``'s inferences just before (its model copies and cache; train.py never
empties the cache), and what AutoBatch leaves cached for the training run (its last batch, the
input's gradient and outputs: the run at the picked batch is estimated from an empty card).
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch

from yolomem.config.gpus import Gpu
from yolomem.config.models import ResolvedModel
from yolomem.config.settings import EstimateConfig
from yolomem.errors import UserError
from yolomem.loops.autobatch_card import AutoBatchPick, AutoBatchProbe, HostBatch, SimulatedCard

RELEASE = "yolov5 v7.0"
FRACTION = 0.8  # autobatch(fraction=0.8): the share of the free memory it aims for
DEFAULT_BATCH = 16  # autobatch(batch_size=16): its answer when the line gives no batch in 1..1024
BATCH_SIZES = (1, 2, 4, 8, 16)
PASSES = 3  # profile(..., n=3)
GB = 1 << 30  # autobatch's "gb" (bytes to GiB); the profiler's column divides by 1E9


def check_request(config: EstimateConfig, resolved: ResolvedModel) -> None:
    """What train.py does not run AutoBatch for (``config.autobatch``), refused in one line as it would stop."""
    from yolomem.loops.yolov5.runner import original_of

    requested = config.autobatch
    shown = f"batch={requested:g}"
    if original_of(resolved).task == "classify":
        raise UserError(f"{shown}: classify/train.py has no AutoBatch (it takes --batch-size as given); give a fixed "
                        "batch ('yolomem fit MODEL gpu=NAME' finds the largest that fits)")  # fmt: skip
    if requested != -1:
        raise UserError(f"{shown}: the yolov5 repo's train.py starts AutoBatch only for --batch-size -1 "
                        "(a fraction of the card is Ultralytics' batch=0.7)")  # fmt: skip
    if config.world_size > 1:
        raise UserError(f"{shown} with world_size={config.world_size}: train.py stops (\"AutoBatch with --batch-size -1 "
                        "is not compatible with YOLOv5 Multi-GPU DDP training\"); give a fixed batch")  # fmt: skip


def pick_batch(config: EstimateConfig, resolved: ResolvedModel, gpu: Gpu, requested: float = -1) -> AutoBatchPick:
    """The batch train.py's AutoBatch picks for ``config`` on ``gpu`` (see the module docstring), for a
    request ``check_request`` lets through."""
    from yolomem.loops.base import amp_dtype, max_stride, round_imgsz, tracing
    from yolomem.loops.ultralytics.step import CloneOnDeepcopy, autocast_region, persistent_tensors
    from yolomem.loops.yolov5.runner import build_original, original_of
    from yolomem.loops.yolov5.step import freeze_layers

    with tracing(config, fake=True, oracle=None) as (tracer, policy):
        model = build_original(original_of(resolved), config.nc or resolved.nc)
        imgsz = round_imgsz(config.imgsz, max_stride(model))  # check_img_size(opt.imgsz, gs)
        freeze_layers(model, config.freeze)  # train.py freezes before it asks AutoBatch
        tracer.forget()  # built on the host; Model(...).to(device) puts the finished tensors on the card
        for category, tensors in persistent_tensors(model, None, extra=tuple(model.device_tensors())).items():
            tracer.track_existing(tensors, category)
        card = SimulatedCard(tracer, gpu, config.alloc_conf)
        log: list[str] = []
        with autocast_region(policy, amp_dtype(config.amp)), CloneOnDeepcopy():  # check_train_batch_size
            batch, readings = autobatch(copy.deepcopy(model).train(), imgsz, card, log)
        tracer.detach_finalizers()
    probes = tuple(AutoBatchProbe(b, reading) for b, reading in zip(BATCH_SIZES, readings))
    return AutoBatchPick(requested=requested, batch=batch, release=RELEASE, gpu=gpu.name, gpu_total_bytes=gpu.total_bytes,
                         max_num_obj=0, probes=probes, log=tuple(log), framework="yolov5")  # fmt: skip


def autobatch(model: torch.nn.Module, imgsz: int, card: SimulatedCard, log: list[str]) -> tuple[int, list[float | None]]:
    """utils/autobatch.autobatch on the card: the batch it returns, and the profiler's readings; its log
    lines are appended to ``log``."""
    prefix = "AutoBatch: "
    log.append(f"{prefix}Computing optimal batch size for --imgsz {imgsz}")
    properties = card.properties()
    t = properties.total_memory / GB  # GiB total
    r = card.memory_reserved() / GB  # GiB reserved
    a = card.memory_allocated() / GB  # GiB allocated
    f = t - (r + a)  # GiB free
    log.append(f"{prefix}CUDA:0 ({properties.name}) {t:.2f}G total, {r:.2f}G reserved, {a:.2f}G allocated, {f:.2f}G free")

    img = [HostBatch(card.tracer, b, 3, imgsz, imgsz) for b in BATCH_SIZES]
    results = profile(img, model, card, log, n=PASSES)

    y = [x for x in results if x is not None]  # memory [2]
    if not y:  # np.polyfit of no points raises, and train.py stops with it
        raise UserError(f"batch=-1 on {card.gpu.name}: the yolov5 repo's AutoBatch stops the run: even batch 1 runs out "
                        "of memory and its line fit has no points; lower imgsz or name a larger card")  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", np.exceptions.RankWarning)  # one reading: numpy warns, the repo goes on
        p = np.polyfit(BATCH_SIZES[: len(y)], y, deg=1)  # first degree polynomial fit
    b = int((f * FRACTION - p[1]) / p[0])  # y intercept (optimal batch size)
    if None in results:  # some sizes failed
        i = results.index(None)  # first fail index
        if b >= BATCH_SIZES[i]:  # y intercept above failure point
            b = BATCH_SIZES[max(i - 1, 0)]  # select prior safe point
    if b < 1 or b > 1024:  # b outside of safe range
        b = DEFAULT_BATCH
        log.append(f"{prefix}WARNING ⚠️ CUDA anomaly detected, recommend restart environment and retry command.")
    fraction = (np.polyval(p, b) + r + a) / t  # actual fraction predicted
    log.append(f"{prefix}Using batch-size {b} for CUDA:0 {t * fraction:.2f}G/{t:.2f}G ({fraction * 100:.0f}%) ✅")
    return b, results


def profile(inputs: list[HostBatch], m: torch.nn.Module, card: SimulatedCard, log: list[str], n: int) -> list[float | None]:
    """utils/torch_utils.profile for one model: per batch, the GPU_mem reading (GB), None where it failed."""
    try:
        import thop
    except ImportError:  # torch_utils: thop = None, and its profile call fails inside the try
        thop = None
    results: list[float | None] = []
    for x in inputs:
        x = x.to("cuda")
        x.requires_grad = True
        try:
            thop.profile(m, inputs=(x,), verbose=False)  # GFLOPs (the figure is not used)
        except Exception:  # noqa: BLE001 - the repo's own: no thop, or a model thop cannot count
            pass
        try:
            for _ in range(n):
                y = m(x)
                try:
                    _ = (sum(yi.sum() for yi in y) if isinstance(y, list) else y).sum().backward()
                except (AttributeError, TypeError):  # "no backward method": a tuple output (Segment)
                    pass
            results.append(card.memory_reserved() / 1e9)  # (GB)
        except torch.OutOfMemoryError as error:  # the repo catches any error; on a card that is this one
            log.append(str(error))
            results.append(None)
        card.empty_cache()
    return results
