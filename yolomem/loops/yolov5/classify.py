"""One training iteration of the yolov5 repo's ``classify/train.py`` (v7.0), for its classifiers
(``yolov5n/s/m/l/x-cls``), run under a ``Tracer``.

Per iteration, as classify/train.py's statements: ``images, labels = images.to(device), labels.to(device)``
(float32 images, normalised by the loader's transforms; int64 labels); ``loss = criterion(model(images),
labels)`` inside ``amp.autocast(enabled=cuda)``; ``scaler.scale(loss).backward()``; then on every
iteration (no accumulation) ``scaler.unscale_``, ``clip_grad_norm_(max_norm=10)``, ``scaler.step``,
``scaler.update``, ``optimizer.zero_grad()`` and the EMA update. ``images``, ``labels`` and ``loss`` are
loop variables: alive until the next batch replaces them (``held``).

What the repo fixes: AMP is on whenever CUDA is (``autocast(enabled=cuda)``, ``GradScaler(enabled=cuda)``):
fp16, whatever ``amp=`` says. The defaults of ``parse_opt``: Adam, ``lr0=0.001``, ``decay=5e-5``,
``label_smoothing=0.1``, imgsz 224, batch 64; ``smart_optimizer(..., momentum=0.9, ...)``; imgsz is used
as given (no rounding to the stride). ``tests/test_yolov5_matches_repo.py`` checks the iteration against
the repo's own ``ClassificationModel``, ``smart_optimizer`` and ``ModelEMA`` (fp32: CUDA autocast cannot
run on a CPU).

Not here: validation (``classify/val.py`` at twice the batch), which train.py runs inside the last
iteration of each epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from yolomem.loops.base import amp_dtype, max_stride
from yolomem.loops.batches import SyntheticBatch
from yolomem.loops.ultralytics.step import CloneOnDeepcopy, autocast_region, persistent_tensors
from yolomem.loops.yolov5.modules import ClassifierModel
from yolomem.loops.yolov5.step import CLIP_MAX_NORM, ModelEMA, smart_optimizer, to_device
from yolomem.trace.tracer import Tracer

LR0, MOMENTUM, DECAY = 0.001, 0.9, 5e-5  # classify/train.py: --lr0, smart_optimizer(momentum=0.9), --decay
LABEL_SMOOTHING = 0.1  # --label-smoothing
OPTIMIZER = "Adam"  # --optimizer
IMGSZ, BATCH = 224, 64  # --imgsz, --batch-size: what a run that gives neither trains at
PRECISION = "fp16"  # amp.autocast(enabled=cuda)


@dataclass(frozen=True)
class ClassifySettings:
    batch: int
    imgsz: int
    optimizer: str = OPTIMIZER  # "SGD" | "Adam" | "AdamW" | "RMSProp"
    precision: str = PRECISION
    step: str = "train"  # "train" | "fwd_bwd"
    task: str = "classify"


def host_batch(batch: SyntheticBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """What the classification loader yields, on the host (not traced): float32 (B, 3, H, W), int64 (B,)."""
    from torch.utils._python_dispatch import _disable_current_modes

    with _disable_current_modes():
        data = batch.as_dict()
    return data["img"], data["cls"]


class ClassifyRun:
    """A classifier with its optimizer, scaler, EMA and criterion, set up as classify/train.py does."""

    def __init__(self, model: ClassifierModel, settings: ClassifySettings, tracer: Tracer, policy):
        self.model, self.settings, self.tracer, self.policy = model, settings, tracer, policy
        self.stride = max_stride(model)
        for p in model.parameters():
            p.requires_grad = True  # for training
        self.amp_dtype = amp_dtype(settings.precision)
        self.scaler = torch.amp.GradScaler("cpu", enabled=settings.precision == "fp16")  # GPU: enabled=cuda
        self.criterion = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)  # smartCrossEntropyLoss
        if settings.step == "train":
            self.optimizer = smart_optimizer(model, settings.optimizer, LR0, MOMENTUM, DECAY)
            with CloneOnDeepcopy():  # the deep copy is a clone through the tracer, as on a GPU
                self.ema = ModelEMA(model)
        else:
            self.optimizer = self.ema = None
        self.held: dict[str, torch.Tensor] = {}  # classify/train.py's loop variables: images, labels, loss

    def persistent_tensors(self) -> dict[str, list[torch.Tensor]]:
        """What classify/train.py has on the GPU before the first batch: the model, the EMA's copy."""
        return persistent_tensors(self.model, self.ema)

    def train_iteration(self, iteration: int, batch: SyntheticBatch, index: int | None = None) -> None:
        """One pass of classify/train.py's batch loop; ``index``: the batch's index in its epoch."""
        tracer, held = self.tracer, self.held
        if (iteration if index is None else index) == 0:
            self.model.train()
        tracer.start_iteration(iteration)
        host_images, host_labels = host_batch(batch)
        held.pop("images", None)  # ``for i, (images, labels) in pbar`` rebinds both to the host batch
        held.pop("labels", None)
        with tracer.phase("preprocess"):
            held["images"], held["labels"] = to_device(host_images), to_device(host_labels)
        with autocast_region(self.policy, self.amp_dtype):
            with tracer.phase("forward"):
                logits = [self.model(held["images"])]  # (B, nc); a temporary of the loss expression
            with tracer.phase("loss"):
                held["loss"] = self.criterion(logits.pop(), held["labels"])
        with tracer.phase("backward"):
            self.scaler.scale(held["loss"]).backward()
        tracer.label([p.grad for p in self.model.parameters() if p.grad is not None], "gradient")
        if self.optimizer is None:
            return
        with tracer.phase("optimizer"):
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=CLIP_MAX_NORM)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad()
        with tracer.phase("ema"):
            self.ema.update(self.model)
        states = [t for s in self.optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
        tracer.label(states, "optimizer_state")
        # tloss = (tloss * i + loss.item()) / (i + 1): a host float; the .item() sync allocates nothing
