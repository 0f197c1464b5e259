"""One training iteration of the yolov5 repo's ``train.py`` (v7.0; ``segment/train.py`` for
segmentation; ultralytics/yolov3 v9.x is the same loop), run under a ``Tracer``.

Per iteration, as train.py's statements: ``imgs = imgs.to(device).float() / 255`` (the uint8 copy dies
at ``.float()``); forward, then ``compute_loss(pred, targets.to(device)[, masks=masks.to(device).float()])``
inside ``torch.cuda.amp.autocast(amp)``; ``scaler.scale(loss).backward()``; every ``accumulate``
iterations ``scaler.unscale_``, ``clip_grad_norm_(max_norm=10)``, ``scaler.step``, ``scaler.update``,
``optimizer.zero_grad()`` and the EMA update; ``mloss = (mloss * i + loss_items) / (i + 1)``.
``accumulate`` ramps from 1 to ``nbs / batch`` over the warm-up (at least 100 iterations), as train.py
does with ``np.interp``.

Loop variables outlive their iteration, as in train.py: the GPU ``imgs`` until the next batch is
fetched (through backward, optimizer and EMA), ``pred`` until the next forward returns, ``loss`` and
``loss_items`` until the next loss returns, and all of them through validation (``Yolov5Run.held``).
``tests/test_yolov5_matches_repo.py`` checks all of this against the repo's own code, event by event.

The optimizer is ``smart_optimizer``'s: three parameter groups (biases; weights with decay; BN weights
without), SGD with ``momentum=0.937, nesterov=True`` by default, Adam/AdamW (betas from the momentum)
when asked. On a GPU torch picks the foreach kernels for them; we pick the same on the trace's fake
CPU tensors. The grad scaler is enabled for fp16 as on a GPU (``GradScaler('cuda')`` would disable
itself here).

Not here: the validation pass at twice the batch (val.py), which runs at the end of each epoch:
``yolomem.loops.yolov5.val_pass``, driven by ``yolomem.result.epochs``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from yolomem.loops.base import amp_dtype, check_trainable, max_stride
from yolomem.trace.autocast import CudaAutocastPolicy
from yolomem.loops.batches import SyntheticBatch
from yolomem.loops.ddp import wrap_in_ddp
from yolomem.trace.tracer import Tracer
from yolomem.loops.ultralytics.step import CloneOnDeepcopy, autocast_region, persistent_tensors
from yolomem.loops.yolov5.loss import AnchorLoss, LossHyp
from yolomem.loops.yolov5.modules import LayerModel, convert_floats

LR0, MOMENTUM, WEIGHT_DECAY = 0.01, 0.937, 0.0005  # hyp.scratch-low.yaml
WARMUP_EPOCHS, WARMUP_MIN_ITERATIONS = 3.0, 100  # train.py: nw = max(round(warmup_epochs * nb), 100)
CLIP_MAX_NORM = 10.0
EMA_DECAY, EMA_TAU = 0.9999, 2000  # utils/torch_utils.ModelEMA
OPTIMIZERS = ("SGD", "Adam", "AdamW", "RMSProp")


@dataclass(frozen=True)
class Yolov5Settings:
    batch: int
    imgsz: int
    precision: str  # "fp32" | "fp16" | "bf16"
    optimizer: str  # "SGD" | "Adam" | "AdamW" | "RMSProp"
    nbs: int = 64
    freeze: tuple[int, ...] = ()
    step: str = "train"  # "train" | "fwd_bwd"
    task: str = "detect"  # "detect" | "segment"
    multi_scale: bool = False  # train.py --multi-scale: each batch resized, traced at the largest size it draws


def multi_scale_size(imgsz: int, gs: int) -> int:
    """The largest side train.py's ``--multi-scale`` draws: ``random.randrange(int(imgsz * 0.5),
    int(imgsz * 1.5) + gs) // gs * gs`` at its top, ``int(imgsz * 1.5) + gs - 1``."""
    return (int(imgsz * 1.5) + gs - 1) // gs * gs


def accumulate_at(iteration: int, batch: int, nbs: int) -> int:
    """train.py's warm-up: ``max(1, np.interp(ni, [0, nw], [1, nbs / batch]).round())``."""
    nw = WARMUP_MIN_ITERATIONS
    if iteration <= nw:
        return int(max(1, np.interp(iteration, [0, nw], [1, nbs / batch]).round()))
    return max(round(nbs / batch), 1)


def smart_optimizer(model: nn.Module, name: str, lr: float, momentum: float, decay: float):
    """Three groups: g[2] biases (no decay), g[0] weights (decay), g[1] BN weights (no decay)."""
    g = [], [], []
    bn = tuple(v for k, v in nn.__dict__.items() if "Norm" in k)
    for module in model.modules():
        for p_name, p in module.named_parameters(recurse=False):
            if p_name == "bias":
                g[2].append(p)
            elif p_name == "weight" and isinstance(module, bn):
                g[1].append(p)
            else:
                g[0].append(p)
    if name == "Adam":
        optimizer = torch.optim.Adam(g[2], lr=lr, betas=(momentum, 0.999), foreach=True)
    elif name == "AdamW":
        optimizer = torch.optim.AdamW(g[2], lr=lr, betas=(momentum, 0.999), weight_decay=0.0, foreach=True)
    elif name == "RMSProp":
        optimizer = torch.optim.RMSprop(g[2], lr=lr, momentum=momentum, foreach=True)
    else:
        optimizer = torch.optim.SGD(g[2], lr=lr, momentum=momentum, nesterov=True, foreach=True)
    optimizer.add_param_group({"params": g[0], "weight_decay": decay})
    optimizer.add_param_group({"params": g[1], "weight_decay": 0.0})
    return optimizer


class ModelEMA:
    """yolov5's EMA: a deep copy in eval mode; each update ``v *= d; v += (1 - d) * msd[k].detach()``
    over the floating-point state dict entries (one temporary per tensor, freed right away)."""

    def __init__(self, model: nn.Module):
        self.ema = copy.deepcopy(model).eval()
        self.updates = 0
        for p in self.ema.parameters():
            p.requires_grad_(False)

    def decay(self) -> float:
        return EMA_DECAY * (1 - np.exp(-self.updates / EMA_TAU))

    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay()
        msd = model.state_dict()
        with torch.no_grad():
            for k, v in self.ema.state_dict().items():
                if v.dtype.is_floating_point:
                    v *= d
                    v += (1 - d) * msd[k].detach()


def freeze_layers(model: LayerModel, freeze: tuple[int, ...]) -> None:
    """train.py: ``freeze = [f'model.{x}.' for x in freeze]``; matching parameters get no gradient."""
    names = [f"model.{x}." for x in freeze]
    for key, value in model.named_parameters():
        value.requires_grad = not any(x in key for x in names)


class Yolov5Run:
    """A model with its optimizer, scaler, EMA and loss, set up as train.py does before epoch 0."""

    def __init__(self, model: LayerModel, settings: Yolov5Settings, tracer: Tracer, policy: CudaAutocastPolicy | None):
        self.model, self.settings, self.tracer, self.policy = model, settings, tracer, policy
        self.stride = max_stride(model)  # train.py: gs = max(int(model.stride.max()), 32)
        freeze_layers(model, settings.freeze)
        check_trainable(model, settings.freeze)
        self.amp_dtype = amp_dtype(settings.precision)
        self.scaler = torch.amp.GradScaler("cpu", enabled=settings.precision == "fp16")  # GPU: enabled=amp
        head = model.head
        self.loss = AnchorLoss(head, LossHyp().scaled(head.nl, head.nc, settings.imgsz), model.loss_anchors())
        if settings.step == "train":
            accumulate = max(round(settings.nbs / settings.batch), 1)
            decay = WEIGHT_DECAY * settings.batch * accumulate / settings.nbs
            self.optimizer = smart_optimizer(model, settings.optimizer, LR0, MOMENTUM, decay)
            with CloneOnDeepcopy():  # the deep copy is a clone through the tracer, as on a GPU
                self.ema = ModelEMA(model)
        else:
            self.optimizer = self.ema = None
        self._last_opt_step = -1
        # train.py's loop variables that outlive their iteration: the GPU images (until the next
        # batch is fetched), ``pred`` (until the next forward returns), ``loss`` and ``loss_items``
        # (until the next loss returns); all of them stay alive through validation
        self.held: dict[str, object] = {}
        self.mloss: torch.Tensor | None = None

    def persistent_tensors(self) -> dict[str, list[torch.Tensor]]:
        """What train.py has on the GPU once the model is there and the EMA made (Model(...).to(device),
        ModelEMA's deep copy); ``finish_setup`` traces the rest."""
        extra = self.model.device_tensors()
        if self.loss.anchors is not self.model.head_anchors():
            extra.append(self.loss.anchors)
        tensors = persistent_tensors(self.model, self.ema, extra=tuple(extra))
        if self.ema is not None:
            tensors["ema"] += self.ema.ema.device_tensors()
        return tensors

    def finish_setup(self, world_size: int = 1) -> None:
        """train.py after the EMA, before the first batch: ``model.half().float()`` ("pre-reduce anchor
        precision": every tensor copied to fp16 and back, each old storage freed), with several GPUs
        ``smart_DDP(model)`` (DDP's buckets, ``yolomem.loops.ddp``), ``model.class_weights =
        labels_to_class_weights(...).to(device) * nc``, then ``ComputeLoss(model)`` puts its two BCE
        ``pos_weight`` tensors on the GPU."""
        with self.tracer.phase("setup"):
            convert_floats(self.model, torch.float16)
            convert_floats(self.model, torch.float32)
            # the new storages are the model's parameters and buffers, as the ones they replaced were
            self.tracer.label([*self.model.parameters(), *self.model.buffers()], "parameter")
            self.ddp_buckets = wrap_in_ddp(self.model, self.tracer, world_size)  # the Reducer's, for the whole run
            self.class_weights = to_device(torch.ones(self.model.nc)) * self.model.nc  # (nc,)
            self.tracer.track_existing([self.class_weights], "parameter")
            self.tracer.track_existing(self.loss.device_tensors(), "parameter")

    def _autocast(self):
        return autocast_region(self.policy, self.amp_dtype)

    def start_epoch(self) -> None:
        """train.py before an epoch's batch loop: ``model.train()``, ``mloss = torch.zeros(3)``,
        ``optimizer.zero_grad()``."""
        self.model.train()
        with self.tracer.phase("log"):
            self.mloss = torch.zeros(4 if self.model.head.nm else 3)  # segment/train.py: box, seg, obj, cls
        if self.optimizer is not None:
            self.optimizer.zero_grad()

    def train_iteration(self, iteration: int, batch: SyntheticBatch, index: int | None = None) -> None:
        """One pass of train.py's batch loop; ``index``: the batch's index in its epoch (``i``)."""
        tracer, held = self.tracer, self.held
        index = iteration if index is None else index
        if index == 0:
            self.start_epoch()
        tracer.start_iteration(iteration)
        host_imgs, host_targets, host_masks = host_batch(batch)
        held.pop("imgs", None)  # ``for i, (imgs, targets, ...) in pbar`` rebinds imgs to the host batch
        with tracer.phase("preprocess"):
            held["imgs"] = to_device(host_imgs).float() / 255  # (B, 3, H, W) uint8 -> float32
            if self.settings.multi_scale:  # train.py: imgs = interpolate(imgs, size=ns, mode='bilinear')
                gs = max(int(max_stride(self.model)), 32)
                scale = multi_scale_size(self.settings.imgsz, gs) / max(held["imgs"].shape[2:])
                size = [math.ceil(side * scale / gs) * gs for side in held["imgs"].shape[2:]]
                held["imgs"] = nn.functional.interpolate(held["imgs"], size=size, mode="bilinear", align_corners=False)
        with self._autocast():
            with tracer.phase("forward"):
                held["pred"] = self.model(held["imgs"])
            with tracer.phase("loss"):
                if host_masks is None:
                    held["loss"], held["loss_items"] = self.loss(held["pred"], to_device(host_targets))
                else:
                    held["loss"], held["loss_items"] = self.loss(held["pred"], to_device(host_targets),
                                                                 masks=to_device(host_masks).float())  # fmt: skip
        with tracer.phase("backward"):
            self.scaler.scale(held["loss"]).backward()
        tracer.label([p.grad for p in self.model.parameters() if p.grad is not None], "gradient")
        if self.optimizer is not None and \
                iteration - self._last_opt_step >= accumulate_at(iteration, self.settings.batch, self.settings.nbs):
            with tracer.phase("optimizer"):
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=CLIP_MAX_NORM)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad()
            with tracer.phase("ema"):
                self.ema.update(self.model)
            self._last_opt_step = iteration
            states = [t for s in self.optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
            tracer.label(states, "optimizer_state")
        with tracer.phase("log"):
            self.mloss = (self.mloss * index + held["loss_items"]) / (index + 1)  # (3,) or (4,) running means


    def save_checkpoint(self) -> None:
        """train.py after validation: ``ckpt = {'model': deepcopy(de_parallel(model)).half(), 'ema':
        deepcopy(ema.ema).half(), ...}``, saved, then ``del ckpt``. Each deep copy is an fp32 device
        copy that ``.half()`` replaces tensor by tensor."""
        if self.ema is None:
            return
        with self.tracer.phase("checkpoint"):
            ckpt = {}
            for key, module in (("model", self.model), ("ema", self.ema.ema)):
                with CloneOnDeepcopy():
                    copied = copy.deepcopy(module)
                convert_floats(copied, torch.float16)
                ckpt[key] = copied
                del copied
            del ckpt


def host_batch(batch: SyntheticBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """What yolov5's dataloader yields, on the host (not traced): uint8 images (B, 3, H, W), targets
    (nt, 6) = image, class, x, y, w, h, and for segmentation the overlap masks (B, H/4, W/4)."""
    from torch.utils._python_dispatch import _disable_current_modes

    with _disable_current_modes():
        data = batch.as_dict()
        targets = torch.cat((data["batch_idx"][:, None], data["cls"], data["bboxes"]), 1)
    return data["img"], targets, data.get("masks")


def to_device(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor.to(device)`` of a host tensor: a new GPU tensor (here, a traced copy)."""
    return tensor.clone()
