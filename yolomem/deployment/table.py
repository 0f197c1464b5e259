"""The deployment view of ``yolomem table``: one ``deploy()`` per model, in rows.

``yolomem table deploy=engine precision=fp16 device=Jetson-Orin-Nano-8GB``: the table's models (the blog's
rows that are Ultralytics models, or those named) at batch 1 and imgsz 640 unless given.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from yolomem.deployment.config import DeployConfig
from yolomem.deployment.estimate import Deployment, deploy_config, other_loop_message
from yolomem.errors import UserError


@dataclass(frozen=True)
class DeployRow:
    model: str
    params: int
    weights_bytes: int
    activations_low_bytes: int
    activations_bytes: int
    runtime_bytes: int
    calibration_bytes: int | None
    host_bytes: int
    ram_left_bytes: int | None
    fits: bool | None

    @staticmethod
    def of(deployment: Deployment) -> DeployRow:
        activations = deployment.term("activations")
        return DeployRow(deployment.config["model"], deployment.params, deployment.term("weights").bytes,
                         activations.low, activations.bytes, deployment.runtime_bytes, deployment.calibration_bytes,
                         deployment.host_bytes, deployment.ram_left_bytes, deployment.fits)  # fmt: skip

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class DeployTable:
    config: dict  # format, precision, batch, imgsz, device, os_reserve_bytes (None: not unified memory)
    rows: tuple[DeployRow, ...]
    skipped: tuple[str, ...]  # models deploy does not size (other training loops), with why

    def to_json(self) -> dict:
        return {"config": self.config, "rows": [r.to_json() for r in self.rows], "skipped": list(self.skipped)}


def deploy_table(models: tuple[str, ...], base: DeployConfig, progress: Callable[[str], None] | None = None,
                 originals: Collection[str] = ()) -> DeployTable:  # fmt: skip
    """One row per model; ``originals``: names that stand for the yolov5 loop's design here (the blog
    table's YOLOv3 rows are the darknet models), skipped as another loop's models are, though Ultralytics
    builds a model of the same name."""
    rows: list[DeployRow] = []
    skipped: list[str] = []
    os_reserve = None
    for model in models:
        if progress:
            progress(model)
        if model in originals:
            skipped.append(f"{model}: {other_loop_message(model, 'yolov5')}")
            continue
        try:
            deployment = deploy_config(base.with_changes(model=model))
            rows.append(DeployRow.of(deployment))
            os_reserve = deployment.os_reserve_bytes if deployment.unified_memory else None
        except UserError as error:
            if "trained by the" not in str(error):
                raise
            skipped.append(f"{model}: {error}")
    config = {"format": base.format, "precision": base.precision, "batch": base.resolved_batch, "imgsz": base.imgsz,
              "device": base.device, "os_reserve_bytes": os_reserve}  # fmt: skip
    return DeployTable(config, tuple(rows), tuple(skipped))
