"""Which model names mean an original anchor-based design, and where its config lives.

Original designs (trained by the yolov5 repo's loop, ``framework=yolov5``):
``yolov3-tiny``, ``yolov3``, ``yolov4-tiny``, ``yolov4`` (darknet cfgs), ``yolov5n/s/m/l/x``,
``yolov5n/s/m/l/x6`` (P6, four levels) and ``yolov5n/s/m/l/x-seg`` (v7.0 YAMLs), the classifiers
``yolov5n/s/m/l/x-cls`` (classify/train.py; cut from the detection YAML, ``ClassifierModel``), and any
darknet ``.cfg`` file.

Ultralytics' names stay Ultralytics': ``yolov5su.yaml`` is the anchor-free YOLOv5u, and
``yolov3.yaml``/``yolov3-tiny.yaml`` are YOLOv3u unless ``framework=yolov5`` is asked for. Names that
only exist as original designs (``yolov4``, ``yolov4-tiny``, ``yolov5s``, a ``.cfg``) select
``framework=yolov5`` by themselves, with a note.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from yolomem.config.checkpoint_file import Checkpoint, read_checkpoint, written_by
from yolomem.errors import UserError, unknown

CONFIGS = Path(__file__).resolve().parent / "configs"
_DARKNET = ("yolov3-tiny", "yolov3", "yolov4-tiny", "yolov4")
_V5 = re.compile(r"^yolov5([nsmlx])(6|-seg|-cls)?$")
_V5_TASKS = {None: "detect", "6": "detect", "-seg": "segment", "-cls": "classify"}
_V5_FILES = {"6": "yolov5-p6.yaml", "-seg": "yolov5-seg.yaml"}  # the others: yolov5.yaml
FAMILY = {"yolov3-tiny": "YOLOv3", "yolov3": "YOLOv3", "yolov4-tiny": "YOLOv4", "yolov4": "YOLOv4"}


@dataclass(frozen=True)
class OriginalModel:
    """An original design: a darknet cfg, or a yolov5 YAML with a scale."""

    name: str  # e.g. "yolov5s", "yolov4", "my-net" (a user's cfg)
    kind: str  # "darknet" | "yolov5-yaml" | "yolov5-checkpoint" (a yolov5 repo .pt: its model.yaml)
    path: str  # the cfg/YAML file
    scale: str | None = None
    task: str = "detect"

    @property
    def family(self) -> str:
        return FAMILY.get(self.name, "YOLOv5" if self.name.startswith("yolov5") else "darknet cfg")


def original_names() -> tuple[str, ...]:
    v5 = [f"yolov5{s}{t}" for t in ("", "6", "-seg", "-cls") for s in "nsmlx"]
    return (*_DARKNET, *v5)


def _strip(spec: str) -> str:
    name = Path(spec).name
    for suffix in (".yaml", ".yml", ".cfg", ".pt"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_original_only(spec: str) -> bool:
    """True for names Ultralytics does not build as such: yolov4*, yolov5n..x(6, -seg), .cfg files."""
    spec = str(spec).strip()
    if spec.endswith(".cfg"):
        return True
    if Path(spec).suffix == ".pt" and Path(spec).is_file():
        return written_by(spec) == "yolov5"  # a checkpoint of the repo's train.py
    if Path(spec).parent != Path(".") or Path(spec).is_file():
        return False  # a user's own file: its suffix decides
    name = _strip(spec)
    return name.startswith("yolov4") and name in _DARKNET or bool(_V5.match(name))


def find_original(spec: str) -> OriginalModel:
    """Resolve a name or a local file to an original design, or raise ``UserError``."""
    spec = str(spec).strip()
    path = Path(spec).expanduser()
    if path.suffix == ".cfg":
        if path.is_file():
            return OriginalModel(path.stem, "darknet", str(path))
        if _strip(spec) in _DARKNET and len(path.parts) == 1:
            return OriginalModel(_strip(spec), "darknet", str(CONFIGS / "darknet" / path.name))
        raise UserError(f"darknet cfg {spec!r} does not exist")
    if path.suffix in {".yaml", ".yml"} and path.is_file():
        return OriginalModel(path.stem, "yolov5-yaml", str(path), task=_yaml_task(path))
    if path.suffix == ".pt" and path.is_file():
        return _from_checkpoint(path)
    name = _strip(spec)
    if name in _DARKNET:
        return OriginalModel(name, "darknet", str(CONFIGS / "darknet" / f"{name}.cfg"))
    match = _V5.match(name)
    if match:
        task = _V5_TASKS[match.group(2)]
        # the classifiers are cut from the detection YAML (ClassifierModel)
        file = CONFIGS / "yolov5" / _V5_FILES.get(match.group(2), "yolov5.yaml")
        return OriginalModel(name, "yolov5-yaml", str(file), match.group(1), task)
    raise unknown("model for framework=yolov5", spec, original_names())


def _yaml_task(path: Path) -> str:
    return "segment" if "Segment" in path.read_text() else "detect"


def _from_checkpoint(path: Path) -> OriginalModel:
    """A checkpoint of the repo's train.py or segment/train.py (its ``model.yaml``), or of classify/train.py
    (a ``ClassificationModel`` keeps no YAML: the released classifier its layers' shapes match)."""
    checkpoint = read_checkpoint(path)
    if checkpoint.written_by != "yolov5":
        raise UserError(f"checkpoint {str(path)!r} was not written by the yolov5 repo (it holds {checkpoint.model_class})")
    if checkpoint.model_class.endswith(".ClassificationModel"):
        return _classifier_of(checkpoint)
    cfg = checkpoint.yaml
    if cfg is None:
        raise UserError(f"checkpoint {str(path)!r} holds a {checkpoint.model_class} without its 'yaml' config")
    heads = {row[2] for row in cfg.get("head", []) if isinstance(row, (list, tuple)) and len(row) > 2}
    return OriginalModel(path.stem, "yolov5-checkpoint", str(path), task="segment" if "Segment" in heads else "detect")


def checkpoint_classes(path: str) -> int | None:
    """The classes a yolov5 repo checkpoint's head was trained for: its YAML's, or its classifier's Linear
    (None: a classifier whose head is not one Linear)."""
    checkpoint = read_checkpoint(path)
    if checkpoint.yaml is not None:
        return int(checkpoint.yaml.get("nc", 80))
    head = [shape for shape in checkpoint.parameter_shapes() if len(shape) == 2]  # Classify's Linear weight
    return head[0][0] if len(head) == 1 else None


def _classifier_of(checkpoint: Checkpoint) -> OriginalModel:
    import torch
    import yaml

    from yolomem.loops.yolov5.modules import ClassifierModel, build_yolov5

    shapes, nc = checkpoint.parameter_shapes(), checkpoint_classes(str(checkpoint.path))
    detection = CONFIGS / "yolov5" / "yolov5.yaml"  # the released classifiers' (runner.build_original)
    cfg = yaml.safe_load(detection.read_text())
    for scale in "nsmlx" if nc is not None else "":
        with torch.device("meta"):
            built = ClassifierModel(build_yolov5(cfg, None, scale), nc)
        if sorted(tuple(p.shape) for p in built.parameters()) == shapes:
            return OriginalModel(checkpoint.path.stem, "yolov5-yaml", str(detection), scale, "classify")
    raise UserError(f"checkpoint {str(checkpoint.path)!r}: its classifier's layers match none of yolov5n-cls ... "
                    "yolov5x-cls (classify/train.py's --model cut at layer 10); name the model instead")


def resolve_original(spec: str, framework: str = "ultralytics"):
    """``ResolvedModel`` for an original design (``yolomem.config.models.resolve_model`` calls this for
    ``framework=yolov5`` and for original-only names)."""
    from dataclasses import asdict

    from yolomem.config.models import ResolvedModel

    original = find_original(spec)
    note, nc = "", None
    if Path(spec).suffix == ".pt" and Path(spec).is_file():  # a checkpoint: its head's classes (train.py: --data's)
        nc = checkpoint_classes(spec)
        built = "its model.yaml" if original.kind == "yolov5-checkpoint" else f"the layers of yolov5{original.scale}-cls"
        note = f"{Path(spec).name}: a yolov5 repo checkpoint, estimated as {built} with nc={nc} (data= or nc= sets the classes)"
    elif framework != "yolov5":
        note = f"{spec} is an original anchor-based design, trained with the yolov5 repo's loop (framework=yolov5)"
        if original.task == "classify":
            note = (f"{spec} is the yolov5 repo's classifier (classify/train.py), trained with the yolov5 repo's "
                    "loop (framework=yolov5)")
        elif original.name.startswith("yolov5"):
            twin = "-p6" if original.name.endswith("6") else {"detect": "u", "segment": "u-seg"}[original.task]
            from yolomem.loops.ultralytics.models import shipped_model_names

            if f"yolov5{original.scale}{twin}.yaml" in shipped_model_names():  # no YOLOv5u-seg ships
                note += f"; Ultralytics' anchor-free YOLOv5u is yolov5{original.scale}{twin}.yaml"
    return ResolvedModel(original.name, original.kind, original.task, {"original": asdict(original)}, nc, note,
                         framework="yolov5")  # fmt: skip
