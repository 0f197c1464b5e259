"""The Ultralytics trainer (``yolo train``) as a ``TrainingLoop``."""

from __future__ import annotations

import contextlib
import re

from yolomem.config.models import ResolvedModel
from yolomem.loops.base import CacheClears, TracedRun, max_stride_of_fake_build

# YAMLs whose summary line counts another model than the one training builds (checked on 8.4.190, all
# 160 lines against a build: these 30 differ, the rest agree). A classifier's line is of a build with
# 80 classes, not the YAML's nc: 1000 (yolo11n-cls: 1,633,584 listed; ClassificationModel with nc=80
# gives exactly that, with 1000 it gives 2,812,104). YOLOE's lines are below even the fused model's
# count (yoloe-11n: 2,624,080 listed, 5,005,286 built, 4,996,718 fused); training keeps the prompt
# branches unfused.
SUMMARY_COUNTS_ANOTHER_BUILD = re.compile(r"^yoloe-|-cls$")


class UltralyticsLoop:
    """Release differences are read from the installed code in one place: ``release.py``."""

    name = "ultralytics"
    carries_loop_variables = False  # not modelled yet for this loop (its batch dict and losses do carry)
    traces_whole_val_pass = False  # one template per validation batch shape
    needs_whole_split = False  # BaseTrainer floors batch / world_size

    def owns(self, spec: str) -> bool:
        return False  # the default loop: it claims no name away from another

    def resolve(self, spec: str, requested: str) -> ResolvedModel:
        from yolomem.loops.ultralytics.models import resolve_ultralytics
        from yolomem.loops.ultralytics.release import check_release, warn_once

        warning = check_release()  # a release known not to work stops here, in one line
        if warning:
            warn_once(warning)
        return resolve_ultralytics(spec)

    def cache_clears(self) -> CacheClears | None:
        from yolomem.loops.ultralytics.release import release

        return release().cache_clears

    def model_names(self) -> tuple[str, ...]:
        from yolomem.loops.ultralytics.models import shipped_model_names

        return shipped_model_names()

    def model_entries(self):
        """(name, family, params, task) for every shipped YAML name: params of the model a trace builds,
        as the estimate's header shows them. From the YAML's summary line (the count Ultralytics publishes)
        where it counts that model, else counted on a fake build (``counted_params``): where the YAML
        has no line, and for the two kinds whose line counts another build (``SUMMARY_COUNTS_ANOTHER_BUILD``)."""
        from yolomem.loops.ultralytics.families import family_of, reachable
        from yolomem.loops.ultralytics.models import counted_params, unsupported_task, yaml_summary
        from yolomem.loops.yolov5.names import is_original_only

        rows = []
        for yaml_name in self.model_names():
            if unsupported_task(yaml_name) or not reachable(family_of({"yaml_file": yaml_name})):
                continue  # refused with a reason when named; not offered in the list
            if is_original_only(yaml_name):  # yolov5s.yaml: the yolov5 repo's original, which its loop lists;
                continue  # Ultralytics' build of it is yolov5su.yaml, a name of its own in the list
            stem = yaml_name[:-5]
            task = next((t for t in ("seg", "pose", "obb", "cls") if f"-{t}" in stem), "detect")
            task = {"seg": "segment", "cls": "classify"}.get(task, task)
            match = re.match(r"^(yolo(?:v)?\d+|yoloe|rtdetr)", stem)
            family = match.group(1).upper().replace("YOLOV", "YOLOv").replace("RTDETR", "RT-DETR") if match else "YOLO"
            summary = None if SUMMARY_COUNTS_ANOTHER_BUILD.search(stem) else yaml_summary(stem)
            rows.append((yaml_name, family, summary[0] if summary else None, task))
        counted = counted_params(tuple(name for name, _, params, _ in rows if params is None))
        for name, family, params, task in rows:
            yield name, family, params if params is not None else counted[name], task

    def _build(self, resolved: ResolvedModel, nc: int | None):
        from yolomem.loops.ultralytics.step import build_model

        return build_model(resolved.cfg, resolved.task, nc or resolved.nc)

    def stride(self, resolved: ResolvedModel, nc: int | None) -> int:
        return max_stride_of_fake_build(lambda: self._build(resolved, nc))

    def count_params(self, resolved: ResolvedModel, nc: int | None = None) -> int:
        return sum(p.numel() for p in self._build(resolved, nc).parameters())

    def gflops(self, model: str, imgsz: int) -> tuple[float | None, str]:
        from yolomem.loops.ultralytics.models import ultralytics_gflops

        return ultralytics_gflops(model, imgsz)

    def trace(self, config, resolved, *, fake: bool = True, oracle=None, after_iterations=None, density=None,
              upper: bool = True) -> TracedRun:
        from yolomem.loops.ultralytics.runner import trace_ultralytics_run

        return trace_ultralytics_run(config, resolved, fake=fake, oracle=oracle, after_iterations=after_iterations,
                                     density=density, upper=upper)  # fmt: skip

    def optimizer_steps(self, iterations: int, batch: int, nbs: int) -> tuple[bool, ...]:
        from yolomem.loops.base import optimizer_steps
        from yolomem.loops.ultralytics.step import accumulate_at

        return optimizer_steps(accumulate_at, iterations, batch, nbs)

    def ddp_note(self, world_size: int, per_rank: int) -> str:
        from yolomem.loops.ultralytics.runner import ddp_note

        return ddp_note(world_size, per_rank)

    def gpu_mem_unit(self) -> str:
        from yolomem.loops.ultralytics.release import release

        return release().gpu_mem_unit

    def oom_retries(self, config) -> tuple[str, int]:
        """From 8.4.13, on one GPU only (``RANK != -1`` raises)."""
        from yolomem.loops.ultralytics.release import release

        installed = release()
        return f"ultralytics {installed.version}", installed.oom_retries if config.world_size == 1 else 0

    def precision(self, config, resolved: ResolvedModel) -> tuple[str, str | None]:
        """What ``amp=`` asks, as the installed trainer takes it. Before 8.0.57 the trainer has no amp option and
        trains with fp16 AMP on every GPU (``release.amp_switch``). bf16 is a trainer setting from 8.4.129
        (``release.trains_bf16``); before, the trace is the same step under bf16 autocast, which only a loop
        of the user's own runs, and the note says so. AMP on ``gpu=``: from 8.3.47 ``check_amp`` turns it
        off before any check on cards whose name matches its list (GTX 16xx, T400-T2000, K40m: "may cause
        NaN losses or zero-mAP results"; ``release.amp_refused_cards``), and the run trains in FP32."""
        from yolomem.loops.ultralytics.release import release

        installed = release()
        if config.amp != "fp16" and not installed.amp_switch:
            return "fp16", f"amp={config.amp}: {installed.no_amp_switch()}, which is estimated"
        if config.amp == "bf16" and not installed.trains_bf16:
            return "bf16", (f"amp=bf16: {installed.no_bf16()}: these figures are for its step under "
                            "torch.autocast(dtype=torch.bfloat16) in a loop of your own")  # fmt: skip
        if config.amp != "fp16" or not config.gpu:
            return config.amp, None
        from yolomem.config.gpus import find_gpu

        gpu = find_gpu(config.gpu, config.gpu_mem)
        if not installed.turns_amp_off(gpu):
            return config.amp, None
        return "fp32", (f"amp=True: ultralytics {installed.version}'s check_amp turns AMP off on {gpu.name} (\"may "
                        "cause NaN losses or zero-mAP results\"): it trains in FP32, which is estimated")  # fmt: skip

    def trainer_defaults(self, resolved: ResolvedModel) -> dict[str, tuple[int, str]]:
        """A checkpoint's training imgsz and single_cls (``Model.train`` keeps them; a published one's imgsz
        too, ``models.published_training_imgsz``), else the task's trainer's imgsz (``release.default_imgsz``:
        224 for classify)."""
        if resolved.train_args:
            why = f"{resolved.train_args_source}, which Ultralytics' Model.train keeps"
            return {key: (value, why) for key, value in resolved.train_args.items()}
        from yolomem.loops.ultralytics.release import release

        imgsz = release().default_imgsz.get(resolved.task)
        return {} if imgsz is None else {"imgsz": (imgsz, f"what Ultralytics' {resolved.task} trainer trains at")}

    def trained_imgsz(self, config, resolved: ResolvedModel) -> tuple[int, str | None]:
        """Up to 8.0.103 ``ClassificationTrainer.get_model`` trains a classifier asked for imgsz 640 at 224
        (``release.classify_imgsz_rewrite``)."""
        from yolomem.loops.ultralytics.release import release

        installed = release()
        rewrite = installed.classify_imgsz_rewrite
        if resolved.task != "classify" or rewrite is None or config.imgsz != rewrite[0]:
            return config.imgsz, None
        return rewrite[1], (f"imgsz={rewrite[0]}: ultralytics {installed.version}'s ClassificationTrainer.get_model "
                            f"sets imgsz={rewrite[1]} before the dataloaders are built; estimated at {rewrite[1]}")  # fmt: skip

    def default_epochs(self, resolved: ResolvedModel) -> tuple[int, str]:
        from ultralytics.cfg import DEFAULT_CFG_DICT

        return int(DEFAULT_CFG_DICT["epochs"]), "the installed Ultralytics' default.yaml"

    def epochs_supported(self, resolved: ResolvedModel, world_size: int) -> bool:
        from yolomem.loops.ultralytics.families import family_of

        return family_of(resolved.cfg).simulates_epochs

    def kept_images(self, dataset, resolved: ResolvedModel):
        """``YOLODataset`` keeps the images ``verify_image_label`` passes: one labelled with a class the YAML
        does not name is "corrupt" and left out of both splits. The installed release's bound is asked of
        it (``keeps_class_equal_to_count``: class ``nc`` itself passed up to 8.3.40 at least). So are the
        rows the model's task cannot read (``labels.judge_labels``: box rows for a pose model...)."""
        from yolomem.config.dataset import dataset_kpt_shape, keeps_class_equal_to_count
        from yolomem.loops.ultralytics.labels import judge_labels

        if dataset.classes is None:  # check_det_dataset refuses such a YAML before any label is read
            return dataset
        dataset = dataset.dropping_classes_from(dataset.classes + (1 if keeps_class_equal_to_count() else 0))
        return judge_labels(dataset, resolved.task, dataset_kpt_shape(dataset.yaml_path))

    def val_batch_size(self, task: str, train_batch: int) -> int:
        from yolomem.loops.val_pass import val_batch_size

        return val_batch_size(task, train_batch)

    def refuse_autobatch(self, config, resolved: ResolvedModel) -> None:
        """None here: which requests the trainer takes (-1; a fraction from 8.2) its own
        ``check_train_batch_size`` says, when ``pick_autobatch`` runs it."""

    def pick_autobatch(self, config, resolved: ResolvedModel, gpu, densest_image: int,
                       dataset_size: int | None):  # fmt: skip
        from yolomem.loops.ultralytics.autobatch import pick_batch

        return pick_batch(config, resolved, gpu, config.autobatch, densest_image, dataset_size)

    def trace_val_pass(self, run, shapes, seed: int, nc: int, kpt_shape, channels: int) -> None:
        """``BaseValidator.__call__`` with a trainer, as the installed release runs it (``release.validation``):
        up to 8.4.61 the EMA itself is converted to fp16 (``model.half()``, and ``model.float()`` after),
        with no autocast; from 8.4.62 it stays fp32 and the forward and loss run under autocast. The task's
        validator does its own ``preprocess`` and ``postprocess`` (``training_validator``)."""
        import torch

        from yolomem.loops.ultralytics.release import release, semantic_masks
        from yolomem.loops.batches import foreground_per_image
        from yolomem.loops.val_pass import trace_validation_batch, val_batch_dict

        settings, tracer = run.settings, run.tracer
        ema = run.ema.ema  # BaseValidator.get_model: trainer.ema.ema
        style = release().validation
        half = settings.precision != "fp32" or style.half_without_amp  # fp16 also for amp=bf16
        validator = training_validator(run, ema, half, nc, kpt_shape, channels)

        def autocast():  # validator: autocast(trainer.amp) is fp16 whatever the training dtype
            if style.autocast and run.policy is not None:
                return run.policy.region(torch.float16)
            return contextlib.nullcontext()

        (shape,) = shapes  # one batch per template
        converts = style.ema_half_in_place and half
        with tracer.phase("val_model_half"):
            if converts:
                _convert_floats(ema, torch.float16)  # model = trainer.ema.ema.half()
            tracer.label(list(ema.parameters()) + list(ema.buffers()), "ema")
        with tracer.phase("val_preprocess"):
            data = val_batch_dict(settings.task, shape, seed, nc, kpt_shape, channels, semantic_masks())
            data["resized_shape"] = [(shape.height, shape.width)] * shape.batch  # the collate's per-image shapes
        trace_validation_batch(ema, tracer, data, autocast=autocast, preprocess=validator.preprocess,
                               loss_fn=lambda d, p: run.validation_loss(ema, d, p), postprocess=validator.postprocess, nc=nc,
                               foreground=foreground_per_image(shape.counts, run.assigner_topk()),
                               rotated=settings.task == "obb", nms=settings.task != "classify",
                               keeps_last_loss_item=style.keeps_last_loss_item)  # fmt: skip
        with tracer.phase("val_model_float"):
            if converts:
                _convert_floats(ema, torch.float32)  # model.float() at the end of the validator's call
            tracer.label(list(ema.parameters()) + list(ema.buffers()), "ema")


def training_validator(run, ema, half: bool, nc: int, kpt_shape, channels: int):
    """The task's validator as ``BaseTrainer.get_validator`` makes it (the training args) and
    ``BaseValidator.__call__(trainer=...)`` sets it up before its loop: trainer's data and device, the
    precision of its inputs, ``init_metrics`` (class count, ``end2end``, the mask function, the keypoint
    shape), and ``model.end2end = args.nms is False`` where the installed release does it (False by default:
    training validates with NMS; ``release.validation.sets_end2end``).
    Made on the host, outside the tracer: its few tensors (IoU thresholds) are not on the device.
    ``save_dir`` is the temporary folder, which exists: nothing is written."""
    import copy
    import tempfile
    from pathlib import Path

    import torch
    from torch.utils._python_dispatch import _disable_current_modes

    from yolomem.loops.ultralytics.families import task_validator
    from yolomem.loops.ultralytics.release import release
    from yolomem.loops.ultralytics.step import quiet_ultralytics

    cls = task_validator(run.family, run.settings.task)
    with _disable_current_modes(), quiet_ultralytics():
        validator = cls(None, save_dir=Path(tempfile.gettempdir()), args=copy.copy(run.args))
        validator.training = True
        validator.device = torch.device("cpu")
        validator.data = {"names": ema.names, "nc": nc, "kpt_shape": list(kpt_shape), "channels": channels}
        validator.args.quantize = 16 if half else None  # 8.4.62+: the inputs' precision
        validator.args.half = half  # before 8.4.62
        if hasattr(ema, "end2end") and release().validation.sets_end2end:
            ema.end2end = validator.args.nms is False
        validator.init_metrics(ema)
    return validator


def _convert_floats(model, dtype) -> None:
    """``model.half()`` / ``model.float()`` as ``nn.Module._apply`` does them: children first, each
    floating parameter's ``.data`` replaced, then each floating buffer; the old storage is freed as it
    is replaced. (``BaseModel._apply`` also converts the head's anchors and strides: a few kB, and the
    eval-mode head remakes them in the input's dtype.) Written out: ``_apply`` swaps in tensor
    subclasses, which the tracer's fake tensors refuse."""
    import torch

    def convert(tensor):
        return tensor.to(dtype) if tensor.is_floating_point() else tensor

    for module in model.modules():
        for param in module._parameters.values():
            if param is not None:
                with torch.no_grad():
                    param.data = convert(param)
        for key, buffer in module._buffers.items():
            if buffer is not None:
                module._buffers[key] = convert(buffer)
