"""The memory of a TensorRT engine exported by the installed Ultralytics: at run time, at build time,
and during INT8 calibration. TensorRT cannot run here; what the graph fixes is computed, what it does
not is a range with its source (``deployment_memory.md`` section 4).

Run time (one process, one execution context):
- **weights**: each weight tensor at the engine's precision (the engine file size; logs show the
  deserialization allocation matching it: 21 MiB -> GPU +20, 161 MiB -> GPU +163). INT8 is
  opportunistic: 1 byte per kernel weight where an INT8 kernel wins, 2 where FP16 does; biases FP32;
  the head's output convolutions and DFL stay FP16 (``onnx2engine``).
- **activations** = the execution context's device memory (``createExecutionContext`` default
  ``kSTATIC``: one block sized for the profile's *max* shape): a liveness plan over the export graph
  after TensorRT's fusions (``yolomem.deployment.fusion``); low: every fusion happens; high (the figure):
  every layer may also reformat its input. The one public log with a configuration (TensorRT issue
  3907: yolov8m-seg, 128x3x640x640, 4150 MiB) lies at the high end (tests/data/deploy_public_figures.csv).
- **I/O buffers**: torch tensors Ultralytics' backend allocates for the bindings: the profile's max
  shape (8.4.x on TensorRT 10) or its opt shape (older), FP32 (the ONNX keeps FP32 I/O).
- **CUDA context** (``yolomem.config.gpus``) and **TensorRT's libraries**: cuBLAS/cuBLASLt/cuDNN
  loaded for tactics: ``GPU +182`` and ``GPU +241`` MiB in a TensorRT 8 log (issue 2217); TensorRT 10
  leaves them off by default: 0 to 423 MiB.

Build time (``yolo export format=engine``):
- the builder's **workspace** pool: Ultralytics' ``workspace`` (GiB) when set (its default in the
  installed ``default.yaml``), else TensorRT's default, all device memory; tactics asking more than is
  free are skipped (``Tactic Device request: ... Available: ...``), not failed;
- **tactic DRAM**: TensorRT's ``kTACTIC_DRAM`` default, 75% of the device's memory on embedded
  (Jetson: host memory of the build included), 100% elsewhere;
- the **builder's kernel library**: ``GPU +72`` MiB (T4, TensorRT 8.4) to ``GPU +1096`` MiB (AGX Orin,
  TensorRT 10.3) in Ultralytics issues 7125 and 22271;
- what the build needs at least: the library, the FP32 network weights, the engine being built and
  its activation block, and the exporter's own PyTorch model and dry run, which stay on the device
  (8.4.x frees neither before ``onnx2engine``; PR 5149's ``empty_cache`` is gone).

INT8 calibration (implicit quantization, TensorRT <= 10): FP32 inference over the calibration batches
(``batch`` x the installed release's factor), with the ranges of every tensor collected; low: a plan
that reuses memory; high (the figure): every activation kept, as histogram collection reads all.
"""

from __future__ import annotations

from dataclasses import dataclass

from yolomem.config.gpus import Gpu
from yolomem.config.models import ResolvedModel
from yolomem.deployment.export_rules import ExportRules
from yolomem.deployment.fusion import Rules, element_bytes_for, materialize
from yolomem.deployment.graph import Graph, capture_graph, export_ready_model
from yolomem.deployment.liveness import Plan, plan
from yolomem.deployment.terms import Term

MiB = 1 << 20
TRT_LIBRARIES_MAX = (182 + 241) * MiB  # cuBLAS/cuBLASLt + cuDNN, TensorRT 8 trtexec log (NVIDIA/TensorRT issue 2217)
BUILDER_LIBRARY = (72 * MiB, 1096 * MiB)  # "Init builder kernel library": T4 TRT 8.4.3 (#7125); AGX Orin TRT 10.3 (#22271)
TACTIC_DRAM_EMBEDDED = 0.75  # kTACTIC_DRAM default: 75% of totalGlobalMem when cudaDeviceProp.embedded
PRECISIONS = ("fp32", "fp16", "int8")
_WEIGHT_BYTES = {"fp32": 4, "fp16": 2}


@dataclass(frozen=True)
class EngineSettings:
    batch: int
    imgsz: int
    precision: str
    dynamic: bool = False
    workspace_gib: float | None = None  # None: Ultralytics' default for the installed release
    channels: int = 3


@dataclass(frozen=True)
class EngineMemory:
    runtime: tuple[Term, ...]
    build: tuple[Term, ...]
    calibration: tuple[Term, ...]  # empty unless int8
    profile_max_shape: tuple[int, int, int, int]
    calibration_batch: int | None
    workspace_limit_bytes: int | None  # None: all device memory (the device is unknown)
    activation_plan: Plan  # the high plan (the figure)
    remaining: tuple[tuple[str, int], ...]  # (module, bytes) of the activations alive at the plan's peak
    fused_pointwise: int
    elided_concats: int
    conv_layers: int
    notes: tuple[str, ...]


def weight_bytes(graph: Graph, precision: str, int8_bytes: int) -> int:
    """Bytes of the engine's weights: kernels at the precision, biases FP32, the head's output
    convolutions and DFL FP16 in INT8 builds."""
    total = 0
    for _name, count, role in graph.weight_tensors:
        if role == "bias":
            total += 4 * count
        elif precision == "int8":
            total += (2 if role == "head_fp16" else int8_bytes) * count
        else:
            total += _WEIGHT_BYTES[precision] * count
    return total


def activation_plans(graph: Graph, precision: str) -> tuple[Plan, Plan, object]:
    """(low plan, high plan, high materialization) of the engine's activations."""
    reduced = precision != "fp32"
    low = materialize(graph, Rules.tensorrt("low", reduced, graph.input_shape[1]),
                      element_bytes_for(precision, graph.head_prefix, int8_bytes=1))  # fmt: skip
    high = materialize(graph, Rules.tensorrt("high", reduced, graph.input_shape[1]),
                       element_bytes_for(precision, graph.head_prefix, int8_bytes=2))  # fmt: skip
    return plan(low.tensors), plan(high.tensors), (low, high)


def engine_memory(resolved: ResolvedModel, settings: EngineSettings, rules: ExportRules, gpu: Gpu | None,
                  nc: int | None = None, exporter_torch_bytes: int | None = None) -> EngineMemory:
    """The memory terms of the engine Ultralytics would export for ``settings``.

    ``exporter_torch_bytes``: what the exporter's PyTorch model and dry run hold in the caching allocator
    (traced by the caller); None leaves that term out with a note."""
    if settings.precision not in PRECISIONS:
        raise ValueError(f"precision {settings.precision!r} is not one of {PRECISIONS}")
    notes: list[str] = list(rules.notes)
    int8 = settings.precision == "int8"
    dynamic = settings.dynamic or (int8 and rules.int8_forces_dynamic)
    if dynamic and not settings.dynamic:
        notes.append(f"ultralytics {rules.version} forces dynamic=True for INT8 TensorRT exports")
    workspace = settings.workspace_gib if settings.workspace_gib is not None else rules.workspace_gib
    side = settings.imgsz
    if dynamic:
        factor = rules.dynamic_max_factor(workspace)
        side = int(settings.imgsz * factor)
        notes.append(f"dynamic=True: the profile's max shape is {side}x{side} ({factor:g}x imgsz, ultralytics "
                     f"{rules.version}); kSTATIC contexts size their block for it")  # fmt: skip
    shape = (settings.batch, settings.channels, side, side)
    model = export_ready_model(resolved, nc, (side, side), "engine", dynamic)
    graph = capture_graph(resolved, shape, model=model, dynamic=dynamic)

    # -- run time ---------------------------------------------------------------------------------
    runtime: list[Term] = []
    if int8:
        runtime.append(Term("weights", "weights (INT8 where faster, else FP16)", weight_bytes(graph, "int8", 2),
                            weight_bytes(graph, "int8", 1), weight_bytes(graph, "int8", 2), "counted",
                            "INT8 is opportunistic: 1 byte per kernel weight where an INT8 kernel wins, 2 where FP16 does"))  # fmt: skip
    else:
        runtime.append(Term.exact("weights", f"weights ({settings.precision.upper()})",
                                  weight_bytes(graph, settings.precision, 0), "counted"))  # fmt: skip
    low_plan, high_plan, (low_m, high_m) = activation_plans(graph, settings.precision)
    runtime.append(Term("activations", "activations = execution context memory (kSTATIC, max shape)",
                        high_plan.packed_bytes, low_plan.packed_bytes, high_plan.packed_bytes, "planned",
                        f"{len(low_m.tensors)} tensors after fusion (low) to {len(high_m.tensors)} (high: every "
                        f"layer may reformat its input; concatenations copied)"))  # fmt: skip
    io_side = side if rules.io_at_max_shape else settings.imgsz
    scale = (io_side / side) ** 2
    input_bytes = settings.batch * settings.channels * io_side * io_side * 4
    output_bytes = round(sum(graph.buffers[b].nbytes for b in graph.outputs) * scale)
    runtime.append(Term.exact("io_buffers", f"I/O bindings (torch, FP32, {io_side}x{io_side})",
                              input_bytes + output_bytes, "counted",
                              "the profile's max shape" if rules.io_at_max_shape else "the profile's opt shape"))  # fmt: skip
    context = gpu.context_bytes if gpu else _default_context()
    runtime.append(Term.exact("cuda_context", "CUDA context", context, "assumed", "see yolomem.config.gpus"))
    runtime.append(Term("trt_libraries", "TensorRT tactic libraries (cuBLAS, cuDNN)", TRT_LIBRARIES_MAX, 0,
                        TRT_LIBRARIES_MAX, "reported",
                        "TensorRT 8: GPU +182 and +241 MiB (issue 2217); TensorRT 10: off by default (0)"))  # fmt: skip

    # -- build time -------------------------------------------------------------------------------
    fp32_weights = weight_bytes(graph, "fp32", 0)
    engine_weights = runtime[0].bytes
    build: list[Term] = [
        Term("builder_library", "builder kernel library", BUILDER_LIBRARY[1], BUILDER_LIBRARY[0], BUILDER_LIBRARY[1],
             "reported", "Init builder kernel library: GPU +72 MiB (T4, TRT 8.4) to +1096 MiB (AGX Orin, TRT 10.3)"),
        Term.exact("network_weights", "network weights (FP32, from the ONNX)", fp32_weights, "counted"),
        Term.exact("engine_weights", "engine weights being built", engine_weights, "counted"),
        Term("engine_activations", "activation block of the engine being built", high_plan.packed_bytes,
             low_plan.packed_bytes, high_plan.packed_bytes, "planned"),
        Term.exact("cuda_context", "CUDA context", context, "assumed"),
    ]  # fmt: skip
    if exporter_torch_bytes is not None:
        build.append(Term.exact("exporter_pytorch", "exporter's PyTorch model and dry run (caching allocator)",
                                exporter_torch_bytes, "traced", "not freed before onnx2engine"))  # fmt: skip
    else:
        notes.append("the exporter's PyTorch model, still on the device during the build, is not counted")
    device_bytes = gpu.total_bytes if gpu else None
    if workspace is not None:
        limit = int(workspace * (1 << 30))
        if device_bytes is not None:
            limit = min(limit, device_bytes)
        workspace_note = f"workspace={workspace:g} GiB (ultralytics {rules.version} default)" if settings.workspace_gib is None \
            else f"workspace={workspace:g} GiB"  # fmt: skip
    else:
        limit = device_bytes
        workspace_note = (f"workspace unset (ultralytics {rules.version}): TensorRT's default, all device memory; "
                          "tactics are tried while memory is free and skipped beyond")  # fmt: skip
    tactic_cap = None
    if gpu is not None:
        tactic_cap = int(gpu.total_bytes * (TACTIC_DRAM_EMBEDDED if gpu.shared_memory else 1.0))
    notes.append(workspace_note)
    if tactic_cap is not None:
        notes.append(f"kTACTIC_DRAM default on {gpu.name}: {tactic_cap / (1 << 30):.1f} GiB "
                     f"({'75% of memory: embedded, host memory of the build included' if gpu.shared_memory else '100%'})")  # fmt: skip

    # -- INT8 calibration -------------------------------------------------------------------------
    calibration: list[Term] = []
    calibration_batch = None
    if int8:
        calibration_batch = settings.batch * rules.calibration_batch_factor
        calib_graph = capture_graph(resolved, (calibration_batch, settings.channels, settings.imgsz, settings.imgsz),
                                    model=model, dynamic=dynamic)  # fmt: skip
        reused = plan(materialize(calib_graph, Rules.tensorrt("low", False, settings.channels),
                                  element_bytes_for("fp32", calib_graph.head_prefix)).tensors)  # fmt: skip
        every = sum(b.nbytes for i, b in calib_graph.buffers.items()
                    if not b.constant and i != calib_graph.input and i not in calib_graph.outputs)  # fmt: skip
        every += sum(calib_graph.buffers[b].nbytes for b in calib_graph.outputs)
        calibration = [
            Term("calibration_activations", f"FP32 activations at calibration batch {calibration_batch}", max(every, reused.packed_bytes),
                 reused.packed_bytes, max(every, reused.packed_bytes), "planned",
                 "high: every tensor kept for its range histogram; low: memory reused"),
            Term.exact("calibration_input", "calibration batch (torch, FP32 /255)",
                       calibration_batch * settings.channels * settings.imgsz ** 2 * 4, "counted"),
            Term.exact("network_weights", "network weights (FP32)", fp32_weights, "counted"),
            Term("builder_library", "builder kernel library", BUILDER_LIBRARY[1], BUILDER_LIBRARY[0],
                 BUILDER_LIBRARY[1], "reported"),
            Term.exact("cuda_context", "CUDA context", context, "assumed"),
        ]  # fmt: skip
        if rules.calibration_batch_factor != 1:
            notes.append(f"ultralytics {rules.version} calibrates INT8 at {rules.calibration_batch_factor}x batch = {calibration_batch}")
        else:
            notes.append(f"ultralytics {rules.version} calibrates INT8 at the batch ({calibration_batch}), fewer if the data has fewer images")

    peak_live = high_plan.live_at(high_plan.peak_step)
    by_module: dict[str, int] = {}
    for tensor in peak_live:
        module = high_m.modules.get(tensor.name, "")
        by_module[module] = by_module.get(module, 0) + tensor.nbytes
    remaining = tuple(sorted(by_module.items(), key=lambda item: -item[1]))
    return EngineMemory(
        runtime=tuple(runtime),
        build=tuple(build),
        calibration=tuple(calibration),
        profile_max_shape=shape,
        calibration_batch=calibration_batch,
        workspace_limit_bytes=limit,
        activation_plan=high_plan,
        remaining=remaining,
        fused_pointwise=low_m.fused_pointwise,
        elided_concats=low_m.elided_concats,
        conv_layers=low_m.conv_layers,
        notes=tuple(notes),
    )


def _default_context() -> int:
    from yolomem.config.gpus import CUDA_CONTEXT_BYTES

    return CUDA_CONTEXT_BYTES
