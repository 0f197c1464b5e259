"""A model the user named, resolved: which loop trains it, its task and its config.

Resolving a name is each training loop's job (``yolomem.loops.resolve_model``); this is the result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

# the yolov5 repo's model names, which Ultralytics' `yolo train` builds as its anchor-free twins
_REPO_YOLOV5 = re.compile(r"^(yolov5[nsmlx]6?)\.(yaml|pt)$")


def yolo_train_builds(model: str) -> tuple[str, str | None]:
    """The model a ``yolo train model=...`` line builds: Ultralytics renames the yolov5 repo's names to its
    anchor-free twins (``yolov5s.yaml`` and ``yolov5s.pt`` train as ``yolov5su``: its ``check_yolov5u_filename``
    and ``yaml_model_load``'s unified ``yolov5.yaml``), with a note; any other name (or a file here) as given."""
    match = _REPO_YOLOV5.match(model)
    if match is None or Path(model).exists():
        return model, None
    twin = f"{match.group(1)}u.yaml"
    return twin, f"yolo train model={model} builds Ultralytics' anchor-free {twin}, not the yolov5 repo's model"


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # as the user will recognise it, e.g. "yolov8s"
    source: str  # "yaml" | "local-yaml" | "checkpoint" | "darknet" | "yolov5-yaml"
    task: str
    cfg: dict  # the model YAML as a dict
    nc: int | None  # classes, when a checkpoint says so
    note: str = ""  # e.g. "yolov8s.pt is not on disk; using yolov8s.yaml"
    framework: str = "ultralytics"  # the training loop (yolomem.loops) that trains it
    # a checkpoint's: the arguments it was trained with that Ultralytics' Model.train keeps when they are not
    # given (imgsz, single_cls), and whose they are, e.g. "as best.pt was trained (its train_args)"
    train_args: dict = field(default_factory=dict)
    train_args_source: str = ""

    @property
    def kpt_shape(self) -> tuple[int, int]:
        """Keypoints per object and values per keypoint: the YAML's, or COCO's 17 x (x, y, visible)."""
        return tuple(self.cfg.get("kpt_shape", (17, 3)))
