"""Set up a traced training run for a resolved config and record its iterations."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from yolomem.config.models import ResolvedModel
from yolomem.config.settings import EstimateConfig
from yolomem.loops.base import TracedRun, max_stride, rank_batch, round_imgsz, traced_batches, tracing
from yolomem.loops.batches import SyntheticBatch
from yolomem.loops.ddp import wrap_in_ddp
from yolomem.loops.ultralytics import families
from yolomem.loops.ultralytics.families import Family, family_of
from yolomem.loops.ultralytics.gpu_branches import gpu_branches
from yolomem.loops.ultralytics.step import StepSettings, UltralyticsOracle, UltralyticsRun, build_model
from yolomem.trace.tracer import DataOracle, module_scopes


def resolve_optimizer(name: str) -> tuple[str, str | None]:
    """The optimizer the installed ``build_optimizer`` builds for ``name``, in its spelling, with a note
    for ``auto``: it picks by the run's iterations (AdamW or, in 8.4.0-8.4.7, MuSGD for short runs);
    without the dataset size we assume a short run (``release.SHORT_RUN_ITERATIONS``)."""
    from yolomem.loops.ultralytics.release import release

    installed = release()
    if name != "auto":
        return installed.optimizer_name(name), None
    return installed.auto_short, installed.auto_note()


def trace_ultralytics_run(
    config: EstimateConfig, resolved: ResolvedModel, *, fake: bool = True, oracle: DataOracle | None = None,
    after_iterations: Callable[[UltralyticsRun], None] | None = None, density=None, upper: bool = True,
) -> TracedRun:
    """Build the model on fake tensors, then trace ``config.iterations`` training iterations.

    ``after_iterations(run)`` traces more with the same model and tracer (``yolomem.result.epochs``: more
    object-count levels and the validation pass)."""
    from yolomem.loops.ultralytics.release import check_release, release

    notes: list[str] = []
    release()  # probe the installed release here, outside the tracer
    warning = check_release()
    if warning:
        notes.append(warning)
    if oracle is None:
        oracle = UltralyticsOracle()
    optimizer, note = resolve_optimizer(config.optimizer) if config.step == "train" else ("none", None)  # fwd_bwd: no optimizer
    if note:
        notes.append(note)
    per_rank = rank_batch(config)  # BaseTrainer: batch_size // world_size
    if config.checkpoint:
        notes.append("checkpoint=true: layers wrapped with yolomem.loops.checkpointing (add checkpoint_callback to your run)")
    families.check_modelled(family_of(resolved.cfg), resolved.task)
    notes += family_notes(family_of(resolved.cfg), config)
    nc = config.nc or resolved.nc
    with tracing(config, fake=fake, oracle=oracle) as (tracer, policy), gpu_branches():
        model = build_model(resolved.cfg, resolved.task, nc)
        stride = max_stride(model)
        imgsz = round_imgsz(config.imgsz, stride)
        if imgsz != config.imgsz:
            notes.append(f"imgsz={config.imgsz} is not a multiple of stride {stride}; rounded up to {imgsz} as Ultralytics does")
        settings = StepSettings(
            task=resolved.task, batch=per_rank, imgsz=imgsz, precision=config.amp, optimizer=optimizer,
            nbs=config.nbs, freeze=config.freeze, multi_scale=config.multi_scale, step=config.step,
        )  # fmt: skip
        run = UltralyticsRun(model, settings, tracer, policy)
        if config.checkpoint:  # where the user's on_pretrain_routine_end callback wraps: after the EMA copy
            from yolomem.loops.checkpointing import wrap_layers

            wrap_layers(model, context_fn=_recompute_context(policy, run.amp_dtype))
        params = sum(p.numel() for p in model.parameters())
        tracer.forget()  # building happened on the host; the GPU sees the finished tensors
        for category, tensors in run.persistent_tensors().items():
            tracer.track_existing(tensors, category)
        ddp_buckets = wrap_in_ddp(model, tracer, config.world_size)  # BaseTrainer._setup_train, after the EMA
        kpt_shape = resolved.kpt_shape
        channels = int(resolved.cfg.get("channels", 3))
        plan, counts, upper_iteration = traced_batches(config, resolved.task, per_rank, density, upper)
        with module_scopes(model, tracer):
            for iteration, objects in enumerate(counts):
                batch = SyntheticBatch.draw(
                    resolved.task, per_rank, imgsz, config.instances, seed=config.seed + iteration,
                    nc=int(getattr(model, "nc", 80)), kpt_shape=kpt_shape, channels=channels, counts=objects,
                )  # fmt: skip
                if config.step == "train":
                    run.train_iteration(iteration, batch)
                else:
                    run.fwd_bwd_iteration(iteration, batch)
            if after_iterations is not None:
                after_iterations(run)
        if config.multi_scale and config.step == "train":
            notes.append(_multi_scale_note(config.multi_scale, imgsz, stride, run.trained_size))
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
    return f"world_size={world_size}: per-rank batch {per_rank}; includes DDP's gradient buckets (yolomem.loops.ddp)"


def family_notes(family: Family, config: EstimateConfig) -> list[str]:
    """What differs for RT-DETR, YOLO-World and YOLOE (``yolomem.loops.ultralytics.families``)."""
    if family is families.YOLO:
        return []
    notes = []
    if family.text_embeddings:
        notes.append(f"{family.name}: class-name text embeddings as WorldTrainer caches them, on the device; the CLIP model a "
                     "first run on a new dataset loads to make that cache is not modelled")  # fmt: skip
    if family.text_classes and config.nc and config.nc > families.MAX_TEXT_CLASSES:
        notes.append(f"nc={config.nc}: {family.name}'s trainer builds the model with nc={families.MAX_TEXT_CLASSES}")
    if not family.simulates_epochs and (config.data or (config.epochs or 0) >= 2):
        notes.append(f"{family.name}: its validator is not modelled; the validation pass and epochs 2+ are not simulated")
    return notes


def _multi_scale_note(multi_scale: float, imgsz: int, stride: int, trained: int | None) -> str:
    if trained is None:
        return f"multi_scale={multi_scale:g}: this trainer does not rescale its batches; traced at imgsz={imgsz}"
    return (f"multi_scale={multi_scale:g}: the trainer draws each batch's size up to {trained} (imgsz {imgsz} x "
            f"{1 + multi_scale:g}, rounded to stride {stride}); traced at that largest size")


def _recompute_context(policy, amp_dtype):
    """``context_fn`` for checkpointing in the trace. On a GPU, checkpoint re-enters
    ``torch.autocast('cuda')`` for the recompute, and leaving it clears autocast's weight-cast cache;
    here the CPU emulation's region does both, so the recomputed fp16 weight copies die with it."""
    def context_fn():
        if policy is None or amp_dtype is None:
            return contextlib.nullcontext(), contextlib.nullcontext()
        return contextlib.nullcontext(), policy.region(amp_dtype)

    return context_fn
