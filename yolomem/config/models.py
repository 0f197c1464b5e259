"""A model the user named, resolved: which loop trains it, its task and its config.

Resolving a name is each training loop's job (``yolomem.loops.resolve_model``); this is the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
