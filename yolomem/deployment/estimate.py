"""``deploy()``: the memory of running a trained YOLO model, in PyTorch, ONNX Runtime or a TensorRT engine.

- ``format=torch``: Ultralytics' own predictor or validator traced on fake tensors
  (``yolomem.deployment.torch_trace``) and replayed through the caching-allocator model
  (``yolomem.allocator.replay``): peak reserved, plus the CUDA context.
- ``format=engine``: ``yolomem.deployment.tensorrt``: weights, activations (= the execution context's
  memory), I/O bindings, libraries; the build's workspace and tactic limits; INT8 calibration.
- ``format=onnx``: ``yolomem.deployment.onnxruntime``: weights, activations, cuDNN workspace, arena growth.
- Exported formats also run Ultralytics' preprocessing and postprocess in torch on the device: traced, as
  the .pt model's predictor without the model's own tensors (``torch_trace.pipeline_memory``: the uint8
  and float batch, the outputs, NMS, segmentation's masks), and every format adds the process's host RAM
  (``yolomem.deployment.host``). On a Jetson (unified memory) ``ram_left_bytes`` is what the module keeps
  for the OS and the application once the deployment and its host RAM are counted.

Each figure is a ``Term`` with a low-high range; totals use the high end (never optimistic).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from yolomem.config.gpus import CUDA_CONTEXT_BYTES, GiB, Gpu, find_gpu
from yolomem.config.versions import traced_versions
from yolomem.deployment.config import DeployConfig
from yolomem.deployment.host import check_traced_images
from yolomem.deployment.terms import Term, total


@dataclass(frozen=True)
class Deployment:
    """The result of ``deploy()``. All sizes in bytes; each term carries its range and basis."""

    yolomem_version: str
    torch_version: str
    ultralytics_version: str
    config: dict
    task: str
    params: int
    device: str | None
    device_total_bytes: int | None
    unified_memory: bool
    runtime: tuple[Term, ...]  # what inference holds on the device
    build: tuple[Term, ...]  # TensorRT export (engine only)
    calibration: tuple[Term, ...]  # TensorRT INT8 calibration (int8 engines only)
    host: tuple[Term, ...]
    workspace_limit_bytes: int | None  # TensorRT builder workspace cap; None: all device memory
    remaining_tensors: tuple[tuple[str, int], ...]  # (module, bytes) alive at the activation peak
    assumptions: tuple[str, ...]
    notes: tuple[str, ...]
    seconds: float
    details: dict = field(default_factory=dict)
    os_reserve_bytes: int = 0  # unified memory: what the verdict keeps for the OS (``os_reserve=``)

    @property
    def runtime_bytes(self) -> int:
        return total(self.runtime)[0]

    @property
    def build_bytes(self) -> int | None:
        return total(self.build)[0] if self.build else None

    @property
    def calibration_bytes(self) -> int | None:
        return total(self.calibration)[0] if self.calibration else None

    @property
    def host_bytes(self) -> int:
        return total(self.host)[0]

    @property
    def ram_left_bytes(self) -> int | None:
        """Unified memory (Jetson): what is left for the OS and the application while it runs."""
        if not self.unified_memory or self.device_total_bytes is None:
            return None
        return self.device_total_bytes - self.runtime_bytes - self.host_bytes

    @property
    def fits(self) -> bool | None:
        """Whether it runs on the device; on unified memory with its host RAM and the OS's share beside it."""
        if self.device_total_bytes is None:
            return None
        if self.unified_memory:
            return self.ram_left_bytes >= self.os_reserve_bytes
        return self.runtime_bytes <= self.device_total_bytes

    def term(self, key: str, group: str = "runtime") -> Term | None:
        return next((t for t in getattr(self, group) if t.key == key), None)

    def to_json(self) -> dict:
        def group(terms):
            return [t.to_json() for t in terms]

        runtime = total(self.runtime)
        return {
            "yolomem_version": self.yolomem_version,
            "torch_version": self.torch_version,
            "ultralytics_version": self.ultralytics_version,
            "config": self.config,
            "task": self.task,
            "params": self.params,
            "device": self.device,
            "device_total_bytes": self.device_total_bytes,
            "unified_memory": self.unified_memory,
            "runtime_bytes": runtime[0],
            "runtime_low_bytes": runtime[1],
            "runtime_high_bytes": runtime[2],
            "weights_bytes": _bytes(self.term("weights")),
            "activations_bytes": _bytes(self.term("activations")),
            "context_bytes": _bytes(self.term("cuda_context")),  # the CUDA context, as in estimate --json
            # a TensorRT execution context's own block (kSTATIC: its activations); none for the other runtimes
            "execution_context_bytes": _bytes(self.term("activations")) if self.config.get("format") == "engine" else None,
            "calibration_peak_bytes": self.calibration_bytes,
            "build_peak_bytes": self.build_bytes,
            "workspace_limit_bytes": self.workspace_limit_bytes,
            "host_bytes": self.host_bytes,
            "ram_left_bytes": self.ram_left_bytes,
            "os_reserve_bytes": self.os_reserve_bytes if self.unified_memory else None,
            "fits": self.fits,
            "runtime": group(self.runtime),
            "build": group(self.build),
            "calibration": group(self.calibration),
            "host": group(self.host),
            "remaining_tensors": [{"module": m, "bytes": b} for m, b in self.remaining_tensors],
            "assumptions": list(self.assumptions),
            "notes": list(self.notes),
            "seconds": round(self.seconds, 3),
        }


def _bytes(term: Term | None) -> int | None:
    return term.bytes if term else None


def deploy(model: str | DeployConfig = "yolov8n.yaml", **settings) -> Deployment:
    """The memory of deploying ``model``; ``settings`` take the CLI's keys (``format='engine',
    precision='int8', batch=8, imgsz=640, device='Jetson-AGX-Orin-32GB'``). Raises ``UserError``."""
    if isinstance(model, DeployConfig):
        config = model.with_changes(**settings) if settings else model
    else:
        config = DeployConfig.from_mapping({"model": model, **settings})
    return deploy_config(config)


def deploy_config(config: DeployConfig) -> Deployment:
    from yolomem.loops import resolve_model

    started = time.perf_counter()
    gpu = find_gpu(config.device or "", config.gpu_mem) if (config.device or config.gpu_mem) else None
    resolved = resolve_model(config.model, "ultralytics")
    if resolved.framework != "ultralytics":
        from yolomem.errors import UserError

        raise UserError(other_loop_message(config.model, resolved.framework))
    notes = [*config.notes, *([resolved.note] if resolved.note else [])]
    trained = resolved.train_args.get("imgsz")
    if not config.imgsz_given and trained and trained != config.imgsz:
        # Model.predict / val / export: {**self.overrides, ...}, and a checkpoint's overrides hold its train imgsz
        config = config.with_changes(imgsz=trained)
        notes.append(f"imgsz={trained} (not given): {resolved.train_args_source}, which Ultralytics' predict, val "
                     "and export take")  # fmt: skip
    assumptions: list[str] = []
    context = gpu.context_bytes if gpu else CUDA_CONTEXT_BYTES
    batch = config.resolved_batch
    build: tuple[Term, ...] = ()
    calibration: tuple[Term, ...] = ()
    remaining: tuple[tuple[str, int], ...] = ()
    workspace_limit = None
    details: dict = {}
    stride = 32
    imgsz = -(-config.imgsz // stride) * stride
    if imgsz != config.imgsz:
        notes.append(f"imgsz={config.imgsz} rounded up to {imgsz}, a multiple of stride {stride}")
    if config.mode == "predict":  # every format traces the .pt predictor (its pipeline around an export)
        check_traced_images(batch, imgsz)
    if config.format == "torch":
        runtime, params, torch_notes, torch_assumptions = _torch_terms(resolved, config, batch, imgsz, context, gpu)
        notes += torch_notes
        assumptions += torch_assumptions
    elif config.format == "engine":
        from yolomem.deployment.export_rules import installed_rules
        from yolomem.deployment.tensorrt import EngineSettings, engine_memory

        from yolomem.deployment.torch_trace import exporter_reserved_bytes

        rules = installed_rules()
        exporter = exporter_reserved_bytes(resolved, batch, imgsz, config.nc)
        memory = engine_memory(resolved, EngineSettings(batch, imgsz, config.precision, config.dynamic, config.workspace),
                               rules, gpu, nc=config.nc, exporter_torch_bytes=exporter)  # fmt: skip
        runtime = (*memory.runtime, _pipeline_term(resolved, config, batch, imgsz, outputs=False))  # in the bindings
        build, calibration, remaining = memory.build, memory.calibration, memory.remaining
        workspace_limit = memory.workspace_limit_bytes
        params = _params(resolved, config.nc)
        notes += memory.notes
        details = {"profile_max_shape": list(memory.profile_max_shape), "calibration_batch": memory.calibration_batch,
                   "fused_pointwise": memory.fused_pointwise, "elided_concats": memory.elided_concats,
                   "conv_layers": memory.conv_layers}  # fmt: skip
        assumptions += [
            "TensorRT: conv+BN (folded by fuse()) +SiLU (+residual add) run as one layer; concatenations write in place",
            "activations: high end = every layer may reformat its input; low end = every fusion happens",
            "TensorRT cannot run here: no tactic timing; the builder's use of its workspace is bounded, not known",
        ]
    else:
        from yolomem.deployment.onnxruntime import session_memory

        memory = session_memory(resolved, batch, imgsz, config.precision, context, config.arena_extend_strategy, nc=config.nc)
        runtime = (*memory.runtime, _pipeline_term(resolved, config, batch, imgsz))
        params = _params(resolved, config.nc)
        notes += memory.notes
        details = {"arena_bytes": dict(memory.arena_bytes)}
        assumptions += [
            "ONNX Runtime CUDA EP with Ultralytics' session (no provider options): every default applies",
            "ONNX graph from the traced export forward: SiLU as Sigmoid+Mul, Split/Concat/Transpose as copies",
        ]
    from yolomem.deployment.host import host_terms

    host = host_terms(config.format, params, batch, imgsz, engine_file_bytes=_bytes(next(
        (t for t in runtime if t.key == "weights"), None)) or 0)  # fmt: skip
    os_reserve = 0
    if gpu is not None and gpu.shared_memory:
        os_reserve, os_note = _os_reserve(config.os_reserve)
        notes.append(f"{gpu.name}: unified memory ({gpu.source}); {os_note}")
    yolomem_version, torch_version, ultralytics_version = traced_versions()
    return Deployment(
        yolomem_version=yolomem_version,
        torch_version=torch_version,
        ultralytics_version=ultralytics_version,
        config={**config_dict(config), "batch": batch, "imgsz": imgsz, "model": resolved.name},
        task=resolved.task,
        params=params,
        device=gpu.name if gpu else None,
        device_total_bytes=gpu.total_bytes if gpu else None,
        unified_memory=bool(gpu and gpu.shared_memory),
        runtime=tuple(runtime),
        build=tuple(build),
        calibration=tuple(calibration),
        host=host,
        workspace_limit_bytes=workspace_limit,
        remaining_tensors=remaining,
        assumptions=tuple(assumptions),
        notes=tuple(notes),
        seconds=time.perf_counter() - started,
        details=details,
        os_reserve_bytes=os_reserve,
    )


def _os_reserve(given_gib: float | None) -> tuple[int, str]:
    """(bytes of a Jetson's DRAM the verdict keeps for the OS, a note that says whence)."""
    from yolomem.deployment.host import OS_DESKTOP_GB, OS_HEADLESS_BYTES

    reports = f"the OS takes about 0.3-0.5 GB headless, about {OS_DESKTOP_GB} GB with a desktop (user reports)"
    if given_gib is not None:
        return int(given_gib * GiB), f"{reports}; the verdict keeps os_reserve={given_gib:g} GiB for it"
    return OS_HEADLESS_BYTES, (f"{reports}; the verdict keeps {OS_HEADLESS_BYTES / GiB:.2f} GiB for it, a "
                               f"headless system's most (os_reserve={OS_DESKTOP_GB} with a desktop)")


def other_loop_message(model: str, framework: str) -> str:
    """Why deploy does not size ``model``: another loop trains it; and Ultralytics' own build of it, if any."""
    return (f"deploy sizes the models Ultralytics runs (its predictor, validator and exporter); {model!r} is "
            f"trained by the {framework} loop{_ultralytics_twin(model)}")


def _ultralytics_twin(model: str) -> str:
    from yolomem.loops import ultralytics_twin

    twin = ultralytics_twin(model)
    return f"; Ultralytics' {twin} (its anchor-free head, not the repo's model) deploys" if twin else ""


def config_dict(config: DeployConfig) -> dict:
    return {key: getattr(config, key) for key in ("model", "format", "precision", "batch", "imgsz", "mode", "device",
                                                  "gpu_mem", "dynamic", "workspace", "arena_extend_strategy",
                                                  "candidates", "nc", "os_reserve")}  # fmt: skip


def _torch_terms(resolved, config: DeployConfig, batch: int, imgsz: int, context: int, gpu: Gpu | None):
    from yolomem.allocator.replay import replay_trace
    from yolomem.deployment.torch_trace import InferenceSettings, trace_inference

    settings = InferenceSettings(mode=config.mode, batch=batch, imgsz=imgsz, half=config.precision == "fp16",
                                 candidates=config.candidates)  # fmt: skip
    traced = trace_inference(resolved, settings, nc=config.nc)
    replay = replay_trace(traced.trace, capacity_bytes=gpu.usable_bytes if gpu else None)
    # the weights: what is live once the model is on the device (fused, fp16 copies made), before the
    # warmup; the first val batch, collated before the first iteration, is not part of them
    live: dict[int, int] = {}
    events = traced.trace.events
    loaded = next((i for i, event in enumerate(events) if event.phase != "setup"), len(events))
    start = min(loaded, *traced.trace.iteration_bounds[:1])
    for event in events[:start]:
        if event.op == "alloc":
            live[event.storage_id] = event.nbytes
        else:
            live.pop(event.storage_id, None)
    weights = sum(live.values())
    allocated = replay.peak_allocated_bytes
    runtime = (
        Term.exact("weights", f"weights (fused, {'FP16' if settings.half else 'FP32'})", weights, "traced"),
        Term.exact("activations", f"{config.mode}: inputs, activations, {postprocess_of(resolved.task, traced.runs_nms)} "
                   "(peak allocated less weights)", max(allocated - weights, 0), "traced",
                   _candidates_note(traced) if traced.runs_nms else ""),
        Term.exact("allocator_cache", "caching allocator: rounding and cached blocks", replay.peak_reserved_bytes - allocated,
                   "traced", "torch.cuda.max_memory_reserved() - max_memory_allocated()"),
        Term.exact("cuda_context", "CUDA context", context, "assumed", "see yolomem.config.gpus"),
    )  # fmt: skip
    notes = list(traced.notes)
    if replay.oom:
        notes.append(f"does not fit {gpu.name}: {replay.oom}")
    assumptions = ["cuDNN/cuBLAS workspaces are not traced (transient buffers kernels take from the caching allocator)"]
    if traced.runs_nms:
        assumptions.append(f"NMS: {traced.candidates} (box, class) candidates per image pass conf ({traced.candidates_basis}); "
                           + ("rotated NMS's own matrices" if resolved.task == "obb" else "torchvision's CUDA kernel's buffers"))  # fmt: skip
    if config.mode == "val":
        shaped = ("resized and centre-cropped (classify_transforms)" if resolved.task == "classify"
                  else "letterboxed as the installed release does")  # fmt: skip
        assumptions.append(f"val: square images {shaped}; plots and save_json off")
    return runtime, traced.params, notes, assumptions


def _pipeline_term(resolved, config: DeployConfig, batch: int, imgsz: int, outputs: bool = True) -> Term:
    """Ultralytics' preprocessing, the model's outputs on the device (``outputs``: unless another term
    holds them) and postprocess around an exported model, traced in torch (``torch_trace.pipeline_memory``)."""
    from yolomem.deployment.torch_trace import InferenceSettings, pipeline_memory

    settings = InferenceSettings(mode=config.mode, batch=batch, imgsz=imgsz, half=config.precision == "fp16",
                                 candidates=config.candidates)  # fmt: skip
    memory = pipeline_memory(resolved, settings, nc=config.nc, outputs=outputs)
    label = "preprocess, outputs and postprocess" if outputs else "preprocess and postprocess"
    basis = "peak reserved by torch's caching allocator"
    if memory.runs_nms:
        basis += f"; {_candidates_note(memory)}"
    return Term.exact("pipeline", f"{label} in torch ({postprocess_of(resolved.task, memory.runs_nms)})",
                      memory.peak_reserved_bytes, "traced", basis)  # fmt: skip


# What each task's postprocess runs on the device (the predictors' ``postprocess``), with NMS and without
# (RT-DETR and end-to-end heads: YOLOv10, YOLO26)
POSTPROCESS = {"detect": "NMS", "segment": "NMS, masks", "pose": "NMS, keypoints", "obb": "rotated NMS",
               "classify": "softmax"}  # fmt: skip
NMS_FREE = {"detect": "no NMS", "segment": "masks, no NMS", "pose": "keypoints, no NMS", "obb": "no NMS",
            "classify": "softmax"}  # fmt: skip


def postprocess_of(task: str, runs_nms: bool) -> str:
    return (POSTPROCESS if runs_nms else NMS_FREE)[task]


def _candidates_note(traced) -> str:
    return f"{traced.candidates} NMS candidates per image assumed ({traced.candidates_basis})"


def _params(resolved, nc: int | None) -> int:
    from yolomem.loops import get_loop

    return get_loop("ultralytics").count_params(resolved, nc)


