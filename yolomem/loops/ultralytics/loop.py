"""The Ultralytics trainer (``yolo train``) as a ``TrainingLoop``."""

from __future__ import annotations

import contextlib
import re

from yolomem.config.models import ResolvedModel
from yolomem.loops.base import TracedRun, max_stride

# Ultralytics switched GPU_mem from bytes/1e9 to bytes/2**30 in 8.3.76 (reference notes).
GPU_MEM_GIB_SINCE = (8, 3, 76)


class UltralyticsLoop:
    name = "ultralytics"
    clears_cache_between_epochs = True  # BaseTrainer._clear_memory after each epoch
    carries_loop_variables = False  # not modelled yet for this loop (its batch dict and losses do carry)
    traces_whole_val_pass = False  # one template per validation batch shape

    def owns(self, spec: str) -> bool:
        return False  # the default loop: it claims no name away from another

    def resolve(self, spec: str, requested: str) -> ResolvedModel:
        from yolomem.loops.ultralytics.models import resolve_ultralytics

        return resolve_ultralytics(spec)

    def model_names(self) -> tuple[str, ...]:
        from yolomem.loops.ultralytics.models import shipped_model_names

        return shipped_model_names()

    def model_entries(self):
        """(name, family, params or None, task) for every shipped YAML name; params from the YAML's summary line."""
        from yolomem.loops.ultralytics.models import yaml_summary
        from yolomem.loops.yolov5.names import is_original_only

        for yaml_name in self.model_names():
            stem = yaml_name[:-5]
            task = next((t for t in ("seg", "pose", "obb", "cls") if f"-{t}" in stem), "detect")
            task = {"seg": "segment", "cls": "classify"}.get(task, task)
            match = re.match(r"^(yolo(?:v)?\d+|yoloe)", stem)
            family = match.group(1).upper().replace("YOLOV", "YOLOv") if match else "YOLO"
            summary = yaml_summary(stem)
            if is_original_only(yaml_name):  # yolov5s.yaml means the original; Ultralytics' is yolov5su.yaml
                yaml_name = re.sub(r"^yolov5([nsmlx])", r"yolov5\1u", yaml_name)
            yield yaml_name, family, summary[0] if summary else None, task

    def _build(self, resolved: ResolvedModel, nc: int | None):
        from yolomem.loops.ultralytics.step import build_model

        return build_model(resolved.cfg, resolved.task, nc or resolved.nc)

    def stride(self, resolved: ResolvedModel, nc: int | None) -> int:
        return max_stride(self._build(resolved, nc))

    def count_params(self, resolved: ResolvedModel, nc: int | None = None) -> int:
        return sum(p.numel() for p in self._build(resolved, nc).parameters())

    def gflops(self, model: str, imgsz: int) -> tuple[float | None, str]:
        from yolomem.loops.ultralytics.models import ultralytics_gflops

        return ultralytics_gflops(model, imgsz)

    def trace(self, config, resolved, *, fake: bool = True, oracle=None, after_iterations=None) -> TracedRun:
        from yolomem.loops.ultralytics.runner import trace_ultralytics_run

        return trace_ultralytics_run(config, resolved, fake=fake, oracle=oracle, after_iterations=after_iterations)

    def optimizer_steps(self, iterations: int, batch: int, nbs: int) -> tuple[bool, ...]:
        from yolomem.loops.base import optimizer_steps
        from yolomem.loops.ultralytics.step import accumulate_at

        return optimizer_steps(accumulate_at, iterations, batch, nbs)

    def gpu_mem_unit(self) -> str:
        import ultralytics

        parts = tuple(int(p) for p in ultralytics.__version__.split(".")[:3] if p.isdigit())
        return "GiB" if parts >= GPU_MEM_GIB_SINCE else "GB"

    def epochs_supported(self, task: str, world_size: int) -> bool:
        return task != "classify"

    def val_batch_size(self, task: str, train_batch: int) -> int:
        from yolomem.loops.val_pass import val_batch_size

        return val_batch_size(task, train_batch)

    def trace_val_pass(self, run, shapes, seed: int, nc: int, kpt_shape, channels: int) -> None:
        import torch

        from yolomem.loops.val_pass import trace_validation_batch, val_batch_dict

        settings, tracer = run.settings, run.tracer
        ema = run.ema.ema  # BaseValidator.get_model: trainer.ema.ema

        def autocast():  # validator: autocast(trainer.amp) is fp16 whatever the training dtype
            return run.policy.region(torch.float16) if run.policy is not None else contextlib.nullcontext()

        nms = {"nc": 0 if settings.task == "detect" else nc, "rotated": settings.task == "obb"}
        (shape,) = shapes  # one batch per template
        with tracer.phase("val_preprocess"):
            data = val_batch_dict(settings.task, shape, seed, nc, kpt_shape, channels)
        trace_validation_batch(
            ema, tracer, data, autocast=autocast, half_inputs=settings.precision != "fp32",
            loss_fn=lambda d, p: ema.loss(d, p), nc=nc, nms_kwargs=nms,
        )  # fmt: skip
