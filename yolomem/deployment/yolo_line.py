"""A pasted ``yolo predict|track|val|export ...`` line, read as ``yolomem deploy``'s words.

``yolo [task] MODE key=value ...`` is how Ultralytics' CLI runs a model (``ultralytics.cfg.entrypoint``).
The mode decides what is sized: ``predict`` and ``track`` the predictor, ``val`` the validator, and
``export`` the exported model's predict in its runtime (``format=onnx`` ONNX Runtime, ``format=engine``
TensorRT; Ultralytics' default export format, TorchScript, is not sized). ``device=0`` is a GPU index there,
not a card: it is noted and left out (``device=`` names the card here, e.g. ``device=T4``). Ultralytics'
keys that do not change the memory deploy sizes (``source``, ``conf``, ``save`` ...) are noted and ignored;
``train`` is training, which ``yolomem estimate`` sizes.
"""

from __future__ import annotations

from pathlib import Path, PurePath

from yolomem.config.gpus import is_device_index
from yolomem.config.keys import ENVIRONMENT_WORD, TASK_WORDS, yolo_mode
from yolomem.errors import UserError

MODES = {"predict": "predict", "track": "predict", "val": "val", "export": "predict"}  # Ultralytics' mode -> deploy's
EXPORTED = {".onnx": "onnx", ".engine": "engine"}  # a model file of an exported format: its runtime
# Ultralytics' keys that change what deploy sizes but are not modelled: said with what is sized instead
NOT_MODELLED = {
    "augment": "test-time augmentation (three scaled and flipped passes) is not modelled; one plain pass is sized",
    "nms": "an export with NMS inside the model is not modelled; the model without it and Ultralytics' NMS are sized",
    "data": "the dataset is not read: validation is sized on square batches of synthetic labels (8 objects per "
            "image) and NMS's most candidates",
}


def _published(checkpoint: str) -> bool:
    """A published weights name (``yolo11n.pt``), which deploy sizes from its design without the file."""
    from yolomem.loops.ultralytics.models import published_design

    return published_design(PurePath(checkpoint).name) is not None


def is_yolo_line(words: list[str]) -> bool:
    return any(word.lower() == "yolo" for word in words)


def read_yolo_line(words: list[str]) -> tuple[list[str], list[str], set[str]]:
    """deploy's words for a pasted line, the notes on how it was read, and the Ultralytics keys it may
    ignore with a note (``ignorable``: passed to the shared parser)."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    mode = yolo_mode(words)
    if mode not in {*MODES, "train", "benchmark"}:
        raise UserError("a yolo line names its mode: yolo predict, yolo val or yolo export (e.g. 'yolo predict "
                        "model=yolo11n.pt imgsz=640')")  # fmt: skip
    if mode == "train":
        raise UserError("a yolo train line is training: 'yolomem estimate yolo train ...' sizes it; deploy sizes "
                        "predict, val and export")  # fmt: skip
    if mode == "benchmark":
        raise UserError("yolo benchmark runs every export format in turn; size one with 'yolo export model=... "
                        "format=onnx' or format=engine")  # fmt: skip
    kept, notes = [], []
    values = dict(word.split("=", 1) for word in words if "=" in word and not ENVIRONMENT_WORD.match(word))
    for word in words:
        key, eq, value = word.partition("=")
        if not eq and word.lower() in {"yolo", mode, *TASK_WORDS}:
            continue
        if eq and ENVIRONMENT_WORD.match(word):
            notes.append(f"{word}: the shell's environment, not a setting of the run; ignored")
        elif key == "device" and value and (is_device_index(value) or value.lower() in {"cpu", "mps"}):
            notes.append(f"device={value}: Ultralytics' GPU index, not a card; name the card with device= (e.g. "
                         "device=T4) or gpu_mem=")  # fmt: skip
        elif key in NOT_MODELLED and (key != "data" or mode == "val"):
            notes.append(f"{word}: {NOT_MODELLED[key]}")
        elif key == "model" and PurePath(value).suffix in EXPORTED:
            runtime = EXPORTED[PurePath(value).suffix]
            if values.get("format", runtime) != runtime:
                raise UserError(f"model={value} is a {runtime} file, but the line says format={values['format']}")
            checkpoint = str(PurePath(value).with_suffix(".pt"))  # the file it was exported from, beside it
            if not Path(checkpoint).expanduser().is_file() and _published(checkpoint):
                checkpoint = PurePath(checkpoint).name  # yolo11n.engine: exported from the published yolo11n.pt
            elif not Path(checkpoint).expanduser().is_file():
                raise UserError(f"model={value} is sized from the checkpoint it was exported from, {checkpoint}, which is "
                                f"not on disk (the {runtime} file itself is not read); put it there, or give the design: "
                                f"model=yolo11n.yaml format={runtime}")  # fmt: skip
            kept += [f"model={checkpoint}", f"format={runtime}"]
            notes.append(f"model={value}: sized as {checkpoint} exported to {runtime}, with this line's "
                         "precision, batch and imgsz (the file itself is not read)")  # fmt: skip
        else:
            kept.append(word)
    if mode == "val":
        kept.append("mode=val")
    exported = values.get("format")
    if exported is not None and exported.lower() not in {"onnx", "engine", "torch"}:  # torchscript, openvino, tflite...
        raise UserError(f"format={exported}: deploy sizes ONNX Runtime (format=onnx) and TensorRT (format=engine); "
                        f"the {exported} runtime is not modelled")  # fmt: skip
    if mode == "export" and "format" not in values:
        raise UserError("yolo export without format= exports TorchScript, which deploy does not size; give "
                        "format=onnx (ONNX Runtime) or format=engine (TensorRT)")  # fmt: skip
    notes.insert(0, f"yolo {mode}: " + {"predict": "the predictor is sized", "track": "the predictor is sized (the "
                                        "tracker's state is on the host)", "val": "the validator is sized",
                                        "export": "the exported model's predict in its runtime is sized"}[mode])  # fmt: skip
    ignorable = set(DEFAULT_CFG_DICT) - set(NOT_MODELLED)
    return kept, notes, ignorable
