"""Activation checkpointing for Ultralytics YOLO models, for real training runs and for the trace.

Each wrapped layer (``model.model[i]``, a YAML layer such as ``C2f`` or ``SPPF``) keeps only its
input during the forward pass; its inner activations are recomputed in the backward pass with
``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``. Memory falls; each training step
costs about one more forward pass.

Use it in a real run::

    from ultralytics import YOLO
    from yolomem.loops.checkpointing import checkpoint_callback

    model = YOLO("yolov8x.yaml")
    model.add_callback("on_pretrain_routine_end", checkpoint_callback)
    model.train(data="coco.yaml", batch=32, imgsz=640)

``yolomem estimate ... checkpoint=true`` traces the training step with exactly this wrapping.

How it wraps. The layer's *instance* ``forward`` is replaced; the layer object stays in
``model.model`` with its ``.f``/``.i``/``.type``/``.np`` attributes (``BaseModel._predict_once``
routes inputs with ``.f`` and ``.i``), and ``state_dict()`` keys do not change, which
``ModelEMA.update`` relies on (it indexes the model's state dict with the EMA's keys).
``on_pretrain_routine_end`` runs after ``_setup_train`` has made the EMA copy, so the EMA and the
checkpoints Ultralytics saves (made from the EMA) hold plain layers and load without yolomem.

Limits (what is not equal to an unwrapped run):
- BatchNorm layers inside a wrapped layer update their running statistics twice per step (forward
  and recompute), as with any ``torch.utils.checkpoint`` use; losses and gradients are unchanged.
- The head (the last layer, ``Detect``/``Segment``/...) is not wrapped: its training output feeds the
  loss directly and its inference-time caches (anchors, strides) are not meant to be recomputed.
- Layers without parameters (``Concat``, ``nn.Upsample``) are not wrapped: their backward needs no
  saved activations, so there is nothing to save.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

ContextFn = Callable[[], tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]]

__all__ = ["checkpoint_callback", "checkpointed_layers", "unwrap_layers", "wrap_layers"]


class _CheckpointedForward:
    """Stands in for ``layer.forward``: runs the original forward under non-reentrant checkpointing
    while training with grad enabled, and plainly otherwise (validation, inference)."""

    def __init__(self, layer: nn.Module, original: Callable, context_fn: ContextFn | None):
        self.layer = layer
        self.original = original
        self.context_fn = context_fn

    def __call__(self, *args, **kwargs):
        if not (self.layer.training and torch.is_grad_enabled()):
            return self.original(*args, **kwargs)
        extra = {"context_fn": self.context_fn} if self.context_fn is not None else {}
        return checkpoint(self.original, *args, use_reentrant=False, **extra, **kwargs)


def _layers(model: nn.Module) -> nn.Sequential:
    from ultralytics.utils import torch_utils

    # unwrap_model (compiled and DDP models) came in 8.3.x; de_parallel (DDP) is what older releases have
    unwrap = getattr(torch_utils, "unwrap_model", None) or torch_utils.de_parallel
    inner = unwrap(model)
    layers = getattr(inner, "model", None)
    if not isinstance(layers, nn.Sequential):
        raise TypeError(f"{type(inner).__name__} has no Ultralytics layer list (model.model)")
    return layers


def default_layer_indices(model: nn.Module) -> tuple[int, ...]:
    """Layers with parameters, head excluded (see the module docstring for why)."""
    layers = _layers(model)
    return tuple(i for i, layer in enumerate(layers) if i < len(layers) - 1 and any(True for _ in layer.parameters()))


def wrap_layers(model: nn.Module, indices: Iterable[int] | None = None, context_fn: ContextFn | None = None) -> tuple[int, ...]:
    """Checkpoint ``model.model[i]`` for each index (default: ``default_layer_indices``).

    ``model`` may be an Ultralytics ``DetectionModel`` (or other task model), or one wrapped in DDP.
    ``context_fn`` is passed to ``torch.utils.checkpoint.checkpoint`` (the trace uses it to re-enter
    its autocast emulation during recompute). Returns the wrapped indices; wrapping twice is a no-op.
    """
    layers = _layers(model)
    chosen = tuple(default_layer_indices(model) if indices is None else indices)
    for i in chosen:
        layer = layers[i]
        if isinstance(layer.__dict__.get("forward"), _CheckpointedForward):
            continue
        layer.forward = _CheckpointedForward(layer, layer.forward, context_fn)
    return chosen


def unwrap_layers(model: nn.Module) -> None:
    """Undo ``wrap_layers``: the layers get their class's forward back."""
    for layer in _layers(model):
        if isinstance(layer.__dict__.get("forward"), _CheckpointedForward):
            del layer.forward


def checkpointed_layers(model: nn.Module) -> tuple[int, ...]:
    return tuple(i for i, layer in enumerate(_layers(model)) if isinstance(layer.__dict__.get("forward"), _CheckpointedForward))


def checkpoint_callback(trainer) -> None:
    """Ultralytics callback for ``on_pretrain_routine_end``: checkpoint the training model's layers."""
    wrap_layers(trainer.model)
