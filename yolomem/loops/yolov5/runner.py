"""Trace a training run of an original design with the yolov5 repo's loop (``framework=yolov5``)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from yolomem.loops.batches import SyntheticBatch
from yolomem.loops.ddp import wrap_in_ddp
from yolomem.config.settings import EstimateConfig
from yolomem.errors import UserError
from yolomem.config.models import ResolvedModel
from yolomem.loops.base import TracedRun, max_stride, rank_batch, round_imgsz, traced_batches, tracing
from yolomem.trace.tracer import module_scopes
from yolomem.loops.yolov5.modules import ClassifierModel, LayerModel, build_yolov5, initialize_weights
from yolomem.loops.yolov5.names import OriginalModel
from yolomem.loops.yolov5.classify import OPTIMIZER as CLASSIFY_OPTIMIZER
from yolomem.loops.yolov5.classify import PRECISION as CLASSIFY_PRECISION
from yolomem.loops.yolov5.classify import ClassifyRun, ClassifySettings
from yolomem.loops.yolov5.step import OPTIMIZERS, Yolov5Run, Yolov5Settings, multi_scale_size

IMAGENET_CLASSES = 1000  # the released yolov5?-cls.pt; classify/train.py reshapes the head to the dataset's
_OPTIMIZER_NAMES = {"auto": "SGD", "SGD": "SGD", "Adam": "Adam", "AdamW": "AdamW", "RMSprop": "RMSProp"}


def original_of(resolved: ResolvedModel) -> OriginalModel:
    return OriginalModel(**resolved.cfg["original"])


def build_original(original: OriginalModel, nc: int | None = None) -> LayerModel:
    """The PyTorch model of an original design (no weights)."""
    if original.kind == "darknet":
        from yolomem.loops.yolov5.darknet import build_darknet, load_cfg

        model = build_darknet(load_cfg(original.path), nc)
    else:
        cfg = _yaml_of(original)
        if original.task == "classify":  # classify/train.py: ClassificationModel(DetectionModel, nc, cutoff=10)
            model = ClassifierModel(build_yolov5(cfg, None, original.scale), nc or IMAGENET_CLASSES)
        else:
            model = build_yolov5(cfg, nc, original.scale)
        model.name = original.name
    initialize_weights(model)
    return model


def _yaml_of(original: OriginalModel) -> dict:
    if original.kind == "yolov5-checkpoint":
        from yolomem.config.checkpoint_file import read_checkpoint

        return read_checkpoint(original.path).yaml
    import yaml

    with open(original.path) as handle:
        return yaml.safe_load(handle)


def darknet_notes(original: OriginalModel, config: EstimateConfig) -> list[str]:
    """What the cfg's [net] asks for, next to what is estimated."""
    if original.kind != "darknet":
        return []
    from yolomem.loops.yolov5.darknet import load_cfg

    cfg = load_cfg(original.path)
    note = (f"{original.name}.cfg net section: {cfg.width}x{cfg.height}, batch={cfg.batch} subdivisions={cfg.subdivisions} "
            f"(darknet mini-batch {cfg.mini_batch}); estimated at batch={config.batch} imgsz={config.imgsz} "
            f"with the yolov5 loop")  # fmt: skip
    return [note] if (cfg.mini_batch, cfg.width) != (config.batch, config.imgsz) else []


def trace_yolov5_run(config: EstimateConfig, resolved: ResolvedModel, *, fake: bool = True, oracle=None,
                     after_iterations: Callable[[Yolov5Run], None] | None = None, density=None,
                     upper: bool = True):  # fmt: skip
    """Build the original design under the tracer and trace ``config.iterations`` iterations.

    ``after_iterations(run)`` gets the ``Yolov5Run`` (model, loss, EMA) to trace more with the same
    tracer, e.g. the validation pass."""
    original = original_of(resolved)
    classify = original.task == "classify"
    if config.optimizer not in _OPTIMIZER_NAMES:
        raise UserError(f"optimizer={config.optimizer} is not one of the yolov5 loop's {list(OPTIMIZERS)} "
                        f"(or auto = {'Adam' if classify else 'SGD'})")  # fmt: skip
    optimizer = _OPTIMIZER_NAMES[config.optimizer]
    notes = []
    if classify:
        notes += _classify_notes(config)
        optimizer = CLASSIFY_OPTIMIZER if config.optimizer == "auto" else optimizer
        config = config.with_changes(amp=CLASSIFY_PRECISION)  # autocast(enabled=cuda): Yolov5Loop.precision's note
    elif after_iterations is None:  # with it, yolomem.result.epochs traces val.py too
        notes.append("validation (val.py at 2x batch, half precision) runs after each epoch; not part of these training iterations")
    notes += darknet_notes(original, config)
    if config.optimizer == "auto" and not classify:
        notes.append("optimizer=auto: the yolov5 loop's default, SGD (momentum 0.937, nesterov)")
    # with epochs simulated, data= gives the objects per image (yolomem.result.epochs)
    data = config.data if after_iterations is None else None
    for key, value in (("data", data), ("checkpoint", config.checkpoint), ("multi_scale", classify and config.multi_scale)):
        if value:
            notes.append(f"{key}={value}: not modelled for framework=yolov5; ignored")
    per_rank = rank_batch(config)  # train.py: batch_size // WORLD_SIZE
    nc = config.nc or resolved.nc
    with tracing(config, fake=fake, oracle=oracle) as (tracer, policy):
        model = build_original(original, nc)
        stride = max_stride(model)
        imgsz = config.imgsz if classify else round_imgsz(config.imgsz, stride)  # classify/train.py: as given
        if imgsz != config.imgsz:
            notes.append(f"imgsz={config.imgsz} is not a multiple of stride {stride}; rounded up to {imgsz} as train.py does")
        if classify:
            run = ClassifyRun(model, ClassifySettings(per_rank, imgsz, optimizer, step=config.step), tracer, policy)
        else:
            settings = Yolov5Settings(per_rank, imgsz, config.amp, optimizer, config.nbs, config.freeze, config.step,
                                      original.task, multi_scale=bool(config.multi_scale))  # fmt: skip
            if config.multi_scale:
                largest = multi_scale_size(imgsz, max(stride, 32))
                notes.append(f"multi_scale: train.py resizes each batch to a side drawn from {int(imgsz * 0.5)}-{largest} "
                             f"(--multi-scale); traced at the largest, {largest}")  # fmt: skip
            run = Yolov5Run(model, settings, tracer, policy)
        params = sum(p.numel() for p in model.parameters())
        tracer.forget()  # built on the host; the GPU sees the finished tensors
        for category, tensors in run.persistent_tensors().items():
            tracer.track_existing(tensors, category)
        ddp_buckets = []
        if not classify:
            run.finish_setup(config.world_size)
        else:  # classify/train.py: smart_DDP(model) right after the EMA
            ddp_buckets = wrap_in_ddp(model, tracer, config.world_size)
        del tensors  # the loop variable would keep the EMA's fp32 tensors alive through val.py's model.half()
        plan, counts, upper_iteration = traced_batches(config, original.task, per_rank, density, upper)
        with module_scopes(model, tracer):
            for iteration, objects in enumerate(counts):
                batch = SyntheticBatch.draw(original.task, per_rank, imgsz, config.instances,
                                            seed=config.seed + iteration, nc=model.nc, counts=objects)  # fmt: skip
                run.train_iteration(iteration, batch)
            if after_iterations is not None:
                after_iterations(run)
        trace = tracer.result()
        tracer.detach_finalizers()
        del ddp_buckets
    failures = tuple(sorted(policy.probe_failures)) if policy else ()
    if config.world_size > 1:
        notes.append(ddp_note(config.world_size, per_rank))
    return TracedRun(trace, params, imgsz, optimizer if config.step == "train" else "none", tuple(notes), failures,
                     plan, upper_iteration)  # fmt: skip


def ddp_note(world_size: int, per_rank: int) -> str:
    """What a DDP rank's run says of DDP: the last of its notes (a rank's run made from the one-GPU run adds it)."""
    return (f"world_size={world_size}: per-rank batch {per_rank}; includes DDP's gradient buckets (yolomem.loops.ddp; "
            "smart_DDP's static_graph rebuilds them once after the first iteration, the same bytes in other groups: "
            "not modelled)")  # fmt: skip


def _classify_notes(config: EstimateConfig) -> list[str]:
    """What classify/train.py fixes, next to what was asked."""
    notes = ["validation (classify/val.py at 2x batch) runs inside the last iteration of each epoch; not part "
             "of these training iterations"]
    if (config.epochs or 0) >= 2 or config.data:
        notes[0] += "; it and epochs 2+ are not simulated for the yolov5 repo's classifiers"
    if config.optimizer == "auto":
        notes.append(f"optimizer=auto: classify/train.py's default, {CLASSIFY_OPTIMIZER} (lr0 0.001, decay 5e-5)")
    for key, value in (("nbs", config.nbs != 64 and config.nbs), ("freeze", config.freeze)):
        if value:
            notes.append(f"{key}={value}: classify/train.py has no such option; ignored")
    return notes


def count_params(original: OriginalModel, nc: int | None = None) -> int:
    """Parameters of the design, built on the meta device (no memory, no compute)."""
    with torch.device("meta"):
        model = build_original(original, nc)
    return sum(p.numel() for p in model.parameters())


def count_gflops(original: OriginalModel, imgsz: int) -> float:
    """GFLOPs of one ``imgsz`` image (2 x multiply-adds of every convolution), on the meta device."""
    total = 0

    def hook(module, _inputs, output):
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += 2 * k * output.numel()

    with torch.device("meta"):
        model = build_original(original)
        handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        model.train()
        model(torch.empty(1, 3, imgsz, imgsz))
    for handle in handles:
        handle.remove()
    return total / 1e9
