"""The training step that runs: one folder per training loop behind the ``TrainingLoop`` protocol.

``get_loop(name)`` is the registry: ``ultralytics`` (Ultralytics' trainer) and ``yolov5`` (the yolov5
repo's train.py, for the original anchor-based designs). A new loop is one folder and one line in
``_LOOPS``. Shared pieces: ``base`` (protocol, tracing setup), ``batches``, ``checkpointing``, ``ddp``,
``val_pass``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from pathlib import Path

from yolomem.errors import UserError, unknown

# torch.nn.functional._verify_batch_size's message: a BatchNorm in training with one value per channel
_ONE_VALUE_PER_CHANNEL = "Expected more than 1 value per channel when training"

# name -> "module:class"; imported on first use so that choosing a loop does not import every loop
_LOOPS = {
    "ultralytics": "yolomem.loops.ultralytics.loop:UltralyticsLoop",
    "yolov5": "yolomem.loops.yolov5.loop:Yolov5Loop",
}
LOOP_NAMES = tuple(_LOOPS)


@functools.cache
def get_loop(name: str):
    """The ``TrainingLoop`` called ``name`` (``framework=`` values)."""
    if name not in _LOOPS:
        raise unknown("framework", name, LOOP_NAMES)
    module, _, cls = _LOOPS[name].partition(":")
    return getattr(importlib.import_module(module), cls)()


def resolve_model(spec: str, framework: str = "ultralytics"):
    """The model ``spec`` names, and the loop that trains it: a name only one loop builds (``yolov4``,
    ``yolov5s``, a darknet ``.cfg``) selects that loop, with a note; otherwise ``framework`` decides.
    A name written as papers and blogs write it (``YOLOv8n``, ``YOLO11n-pose``) is read in lower case,
    the only way the model names are spelled, with a note; a file is taken as it is named."""
    try:
        return _resolve(spec, framework)
    except UserError:
        lowered = str(spec).lower()
        if lowered == spec or Path(spec).name != spec or Path(spec).exists():
            raise
        try:
            resolved = _resolve(lowered, framework)
        except UserError:
            pass  # the error names the value as the user wrote it
        else:
            note = f"model {spec!r} read as {lowered!r}"
            return dataclasses.replace(resolved, note="; ".join(n for n in (note, resolved.note) if n))
        raise


def _resolve(spec: str, framework: str):
    try:
        for name in LOOP_NAMES:
            loop = get_loop(name)
            if name != framework and loop.owns(spec):
                return loop.resolve(spec, framework)
        return get_loop(framework).resolve(spec, framework)
    except OSError as error:  # a name the file system refuses to look up (ENAMETOOLONG): no file, and no model
        shown = spec if len(str(spec)) <= 60 else f"{str(spec)[:57]}..."
        raise unknown("model", shown, get_loop(framework).model_names(), where=f"({error.strerror.lower()})") from None


def ultralytics_twin(model: str) -> str | None:
    """Ultralytics' own build of a yolov5-repo name (yolov5s -> yolov5su.yaml), where it has one."""
    twin = f"{Path(model).stem}u.yaml"
    return twin if twin in get_loop("ultralytics").model_names() else None


def trace_run(config, resolved, *, fake: bool = True, oracle=None, after_iterations=None, density=None,
              upper: bool = True):  # fmt: skip
    """Trace ``config.iterations`` training iterations with the loop that trains ``resolved`` (and, with
    ``upper``, one more at the upper figure's density: ``yolomem.loops.base.traced_batches``)."""
    try:
        return get_loop(resolved.framework).trace(config, resolved, fake=fake, oracle=oracle,
                                                  after_iterations=after_iterations, density=density, upper=upper)  # fmt: skip
    except ValueError as error:
        if _ONE_VALUE_PER_CHANNEL not in str(error):
            raise
        # torch's own check, on shapes alone (batch x height x width == 1): the GPU run stops there too
        shape = str(error).split("input size ")[-1]
        raise UserError(f"imgsz={config.imgsz} with one image per GPU cannot train: a BatchNorm layer gets one value "
                        f"per channel (input {shape}), which torch refuses in training; use a larger batch or "
                        "imgsz") from None
