"""Model families that ``yolo train`` trains with their own trainer: RT-DETR, YOLO-World and YOLOE.

``yolo train model=X.yaml`` picks the model class and the trainer from the file name, and so does
yolomem (``family_of``, after ``ultralytics.cfg.entrypoint`` and ``YOLO.__init__``): "rtdetr" in the
name gives ``RTDETR`` (``RTDETRTrainer``), "-world" gives ``YOLOWorld`` (``WorldTrainer``), "yoloe"
gives ``YOLOE`` (``YOLOETrainer``), anything else ``YOLO``. Each trainer's step is the detection
trainer's step with a few differences, which are all this module holds:

- RT-DETR: the loss matches predictions to boxes with the Hungarian algorithm on the host
  (``linear_sum_assignment`` on a cost matrix copied to the CPU). The cost values are fake here; which
  query matches which box does not change memory, only how many matches there are (one per box), so
  the matching pairs the first queries with the boxes in order, and the estimate lists that assumption.
- YOLO-World: ``WorldTrainer.preprocess_batch`` looks up a text embedding (CLIP ViT-B/32, 512 values)
  for each of the ``min(nc, 80)`` class names every image carries. Ultralytics computes them once per
  dataset with CLIP (a download) and caches them; here they are tensors of the model's embedding size,
  on the device as the cache is, so no CLIP model is needed. The CLIP model that a first run on a new
  dataset loads to make the cache is not modelled.
- YOLOE: ``YOLOETrainer`` trains on detection batches without text (its head gets the model's prompt
  embeddings) and builds its segmentation batches with one mask per object (``overlap_mask=False``).
- World and YOLOE cap the class count at 80 (their trainers' ``get_model``).

Their validators differ from the detection validator that ``yolomem.loops.val_pass`` traces, so
whole epochs (``data=``, ``epochs>=2``) are simulated for the ``YOLO`` family only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from yolomem.errors import UserError

MAX_TEXT_CLASSES = 80  # WorldTrainer/YOLOETrainer.get_model: nc=min(nc, 80); RandomLoadText(max_samples=min(nc, 80))


@dataclass(frozen=True)
class Family:
    name: str  # as the output names it
    wrapper: str  # the ultralytics Model class ``yolo train`` builds, whose task_map gives model and trainer
    text_classes: bool = False  # nc capped at 80; World: each image carries that many class names
    text_embeddings: bool = False  # the trainer looks up a text embedding per class name (World)
    instance_masks: bool = False  # segmentation masks one per object (overlap_mask=False)
    host_matching: bool = False  # Hungarian matching on the host (RT-DETR)
    simulates_epochs: bool = True  # validation pass and epochs 2+ (yolomem.result.epochs)


YOLO = Family("YOLO", "YOLO")
RTDETR = Family("RT-DETR", "RTDETR", host_matching=True, simulates_epochs=False)
WORLD = Family("YOLO-World", "YOLOWorld", text_classes=True, text_embeddings=True, simulates_epochs=False)
YOLOE = Family("YOLOE", "YOLOE", text_classes=True, instance_masks=True, simulates_epochs=False)


def family_of(cfg: dict) -> Family:
    """The family ``yolo train`` would pick for this model YAML (by its file name, as Ultralytics does)."""
    stem = Path(str(cfg.get("yaml_file", ""))).stem.lower()
    if "rtdetr" in stem:
        return RTDETR
    if "-world" in stem:
        return WORLD
    if "yoloe" in stem:
        return YOLOE
    return YOLO


def _task_entry(family: Family, task: str) -> dict:
    """The family's Ultralytics wrapper's ``task_map`` entry for ``task`` (model, trainer, validator...)."""
    from yolomem.loops.ultralytics.release import task_map

    return task_map(family.wrapper)[task]


def reachable(family: Family) -> bool:
    """Whether the installed release's task map reaches the family's trainer (RT-DETR: from 8.0.143)."""
    from yolomem.loops.ultralytics.release import task_map

    try:
        task_map(family.wrapper)
    except UserError:
        return False
    return True


def task_classes(family: Family, task: str):
    """(model class, trainer class) for ``task``, from the family's Ultralytics wrapper."""
    entry = _task_entry(family, task)
    return entry["model"], entry["trainer"]


def check_modelled(family: Family, task: str) -> None:
    """Refuse, in one line, a family whose installed trainer takes a path yolomem does not trace:
    WorldTrainer before ``set_text_embeddings`` (8.2 to at least 8.3.74) runs the CLIP text model on
    the device for every batch (its weights and activations are not modelled)."""
    if family.text_embeddings and not hasattr(task_classes(family, task)[1], "set_text_embeddings"):
        import ultralytics

        raise UserError(f"{family.name} on ultralytics {ultralytics.__version__}: its WorldTrainer runs the CLIP text "
                        "model on the GPU for every batch, which yolomem does not model; releases with "
                        "WorldTrainer.set_text_embeddings (cached embeddings, e.g. 8.3.253) are modelled")  # fmt: skip


def task_validator(family: Family, task: str):
    """The validator class the family's trainer validates ``task`` with."""
    return _task_entry(family, task)["validator"]


def model_nc(family: Family, nc: int | None) -> int | None:
    """The class count the family's trainer builds the model with."""
    if family.text_classes and nc is not None:
        return min(nc, MAX_TEXT_CLASSES)
    return nc


def class_names(nc: int) -> list[str]:
    return [f"class{i}" for i in range(nc)]


def text_embeddings(model: torch.nn.Module, nc: int) -> dict[str, torch.Tensor]:
    """What ``WorldTrainer.set_text_embeddings`` leaves on the device: one embedding per class name."""
    width = int(model.txt_feats.shape[-1])  # WorldModel's placeholder has the embedding size its layers expect
    return {name: torch.zeros(width) for name in class_names(nc)}


def complete_batch(family: Family, data: dict, nc: int, images: int) -> dict:
    """What the family's dataset adds to a detection batch (before ``preprocess_batch``)."""
    if family.text_embeddings:  # RandomLoadText(max_samples=min(nc, 80), padding=True): that many per image
        names = class_names(nc)[:MAX_TEXT_CLASSES]
        data["texts"] = [list(names) for _ in range(images)]
    return data


@contextlib.contextmanager
def host_matching(tracer) -> Iterator[None]:
    """RT-DETR's Hungarian matching on fake costs: the first ``n`` queries take the ``n`` boxes, in order."""
    import numpy as np
    from ultralytics.models.utils import ops

    original = ops.linear_sum_assignment

    def in_order(cost):
        rows, cols = cost.shape[0], cost.shape[1]
        count = min(rows, cols)
        tracer.assume(f"linear_sum_assignment(cost[{rows}, {cols}])", "the first queries take the boxes in order")
        return np.arange(count), np.arange(count)

    ops.linear_sum_assignment = in_order
    try:
        yield
    finally:
        ops.linear_sum_assignment = original
