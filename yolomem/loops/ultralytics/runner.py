"""Set up a traced training run for a resolved config and record its iterations."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from yolomem.config.models import ResolvedModel
from yolomem.config.settings import EstimateConfig
from yolomem.loops.base import TracedRun, max_stride, rank_batch, round_imgsz, tracing
from yolomem.loops.batches import SyntheticBatch
from yolomem.loops.ultralytics.step import StepSettings, UltralyticsRun, build_model
from yolomem.trace.tracer import DataOracle, module_scopes


def resolve_optimizer(name: str) -> tuple[str, str | None]:
    """``auto`` -> AdamW, with a note: Ultralytics picks AdamW for runs of at most 10k iterations and
    MuSGD beyond (BaseTrainer.build_optimizer). Without the dataset size we assume the short run."""
    if name != "auto":
        return name, None
    return "AdamW", "optimizer=auto: assumed AdamW (Ultralytics' choice for <= 10k iterations); pass optimizer=MuSGD for long runs"


def trace_ultralytics_run(
    config: EstimateConfig, resolved: ResolvedModel, *, fake: bool = True, oracle: DataOracle | None = None,
    after_iterations: Callable[[UltralyticsRun], None] | None = None,
) -> TracedRun:
    """Build the model on fake tensors, then trace ``config.iterations`` training iterations.

    ``after_iterations(run)`` traces more with the same model and tracer (``yolomem.result.epochs``: more
    object-count levels and the validation pass)."""
    notes: list[str] = []
    optimizer, note = resolve_optimizer(config.optimizer)
    if note and config.step == "train":
        notes.append(note)
    per_rank = rank_batch(config)  # BaseTrainer: batch_size // world_size
    if config.world_size > 1:
        notes.append(f"world_size={config.world_size}: per-rank batch {per_rank}; includes DDP's gradient buckets (yolomem.loops.ddp)")
    if config.checkpoint:
        notes.append("checkpoint=true: layers wrapped with yolomem.loops.checkpointing (add checkpoint_callback to your run)")
    nc = config.nc or resolved.nc
    with tracing(config, fake=fake, oracle=oracle) as (tracer, policy):
        model = build_model(resolved.cfg, resolved.task, nc)
        stride = max_stride(model)
        imgsz = round_imgsz(config.imgsz, stride)
        if imgsz != config.imgsz:
            notes.append(f"imgsz={config.imgsz} is not a multiple of stride {stride}; rounded up to {imgsz} as Ultralytics does")
        settings = StepSettings(
            task=resolved.task, batch=per_rank, imgsz=imgsz, precision=config.amp, optimizer=optimizer,
            nbs=config.nbs, freeze=config.freeze, multi_scale=config.multi_scale,
            iterations=config.iterations, step=config.step,
        )  # fmt: skip
        run = UltralyticsRun(model, settings, tracer, policy)
        if config.checkpoint:  # where the user's on_pretrain_routine_end callback wraps: after the EMA copy
            from yolomem.loops.checkpointing import wrap_layers

            wrap_layers(model, context_fn=_recompute_context(policy, run.amp_dtype))
        params = sum(p.numel() for p in model.parameters())
        tracer.forget()  # building happened on the host; the GPU sees the finished tensors
        for category, tensors in run.persistent_tensors().items():
            tracer.track_existing(tensors, category)
        ddp_buckets = []
        if config.world_size > 1:
            from yolomem.loops.ddp import allocate_ddp_state

            ddp_buckets = allocate_ddp_state(model, tracer)  # alive for the whole run, like the Reducer's
        kpt_shape = tuple(resolved.cfg.get("kpt_shape", (17, 3)))
        channels = int(resolved.cfg.get("channels", 3))
        with module_scopes(model, tracer):
            for iteration in range(config.iterations):
                batch = SyntheticBatch.draw(
                    resolved.task, per_rank, imgsz, config.instances, seed=config.seed + iteration,
                    nc=int(getattr(model, "nc", 80)), kpt_shape=kpt_shape, channels=channels,
                )  # fmt: skip
                if config.step == "train":
                    run.train_iteration(iteration, batch)
                else:
                    run.fwd_bwd_iteration(iteration, batch)
            if after_iterations is not None:
                after_iterations(run)
        trace = tracer.result()
        tracer.detach_finalizers()
        del ddp_buckets
    failures = tuple(sorted(policy.probe_failures)) if policy else ()
    return TracedRun(trace, params, imgsz, optimizer if config.step == "train" else "none", tuple(notes), failures)


def _recompute_context(policy, amp_dtype):
    """``context_fn`` for checkpointing in the trace. On a GPU, checkpoint re-enters
    ``torch.autocast('cuda')`` for the recompute, and leaving it clears autocast's weight-cast cache;
    here the CPU emulation's region does both, so the recomputed fp16 weight copies die with it."""
    def context_fn():
        if policy is None or amp_dtype is None:
            return contextlib.nullcontext(), contextlib.nullcontext()
        return contextlib.nullcontext(), policy.region(amp_dtype)

    return context_fn
