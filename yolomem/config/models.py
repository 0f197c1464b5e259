"""A model the user named, resolved: which loop trains it, its task and its config.

Resolving a name is each training loop's job (``yolomem.loops.resolve_model``); this is the result.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # as the user will recognise it, e.g. "yolov8s"
    source: str  # "yaml" | "local-yaml" | "checkpoint" | "darknet" | "yolov5-yaml"
    task: str
    cfg: dict  # the model YAML as a dict
    nc: int | None  # classes, when a checkpoint says so
    note: str = ""  # e.g. "yolov8s.pt is not on disk; using yolov8s.yaml"
    framework: str = "ultralytics"  # the training loop (yolomem.loops) that trains it
    trained_imgsz: int | None = None  # a checkpoint's: the imgsz it was trained at, which its trainer reuses
    trained_imgsz_source: str = ""  # whose, and where that is read, e.g. "best.pt (its train_args)"

    @property
    def kpt_shape(self) -> tuple[int, int]:
        """Keypoints per object and values per keypoint: the YAML's, or COCO's 17 x (x, y, visible)."""
        return tuple(self.cfg.get("kpt_shape", (17, 3)))
