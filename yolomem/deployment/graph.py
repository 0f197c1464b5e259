"""The inference graph an export sees: the fused model, in Ultralytics' export mode, recorded op by op.

ONNX and TensorRT are not installed here, so the graph is not read from an ``.onnx`` file. It is the
same computation recorded at the aten level: the model is built from its YAML on the meta device (no
memory, no compute), put in the state ``Exporter.__call__`` puts it in (``fuse()``: Conv2d+BatchNorm
folded; ``Detect.export = True``, ``format``, ``dynamic``, ``max_det``; ``C2f.forward_split``), and one
forward at the export shape is recorded by a ``TorchDispatchMode``.

A *buffer* is one tensor storage: a view (``split``, ``view``, ``permute``) is the same buffer, as
it is the same memory. Each node lists the buffers it reads and the buffers it creates. Buffers that
do not depend on the network input (anchor grids, strides) are constants: ONNX export folds them,
and TensorRT stores them with the weights.

Not the ONNX graph, node for node: SiLU is one aten op here and ``Sigmoid`` + ``Mul`` in ONNX, and
ONNX ``Split`` makes tensors where aten makes views. TensorRT fuses both back (``yolomem.deployment.fusion``),
so for the engine the difference does not reach the plan; ONNX Runtime's plan says where it does.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from yolomem.config.models import ResolvedModel

aten = torch.ops.aten

# aten ops TensorRT runs as one pointwise (elementwise) layer and can fuse into the layer before them
POINTWISE_OPS = frozenset({
    "silu", "sigmoid", "relu", "hardswish", "hardsigmoid", "leaky_relu", "gelu", "tanh", "exp", "log", "sqrt",
    "add", "sub", "mul", "div", "clamp", "clamp_min", "clamp_max", "neg", "abs", "pow", "rsqrt", "where",
    "gt", "lt", "ge", "le", "eq", "ne", "_to_copy", "fill", "masked_fill", "sign", "floor", "round",
})  # fmt: skip
CONCAT_OPS = frozenset({"cat", "stack"})
_SHAPE_ONLY = frozenset({"new_full", "new_zeros", "new_ones", "new_empty", "zeros_like", "ones_like", "empty_like",
                         "full_like"})  # fmt: skip
PRODUCER_OPS = frozenset({"convolution", "max_pool2d_with_indices", "max_pool2d", "upsample_nearest2d",
                          "upsample_bilinear2d", "addmm", "mm", "bmm", "_softmax", "avg_pool2d"})  # fmt: skip


@dataclass(frozen=True)
class Buffer:
    """One tensor storage of the graph, at the dtype it was traced in (fp32)."""

    id: int
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    constant: bool  # does not depend on the network input: folded by the export


@dataclass(frozen=True)
class Node:
    """One aten op: the buffers it reads (weights excluded) and the buffers it creates."""

    index: int
    op: str  # aten op name without overload, e.g. "convolution", "silu", "cat"
    reads: tuple[int, ...]
    creates: tuple[int, ...]
    module: str  # module path of the layer, e.g. "model.2.m.0.cv1"
    kernel: tuple[int, ...] = ()  # convolution: the weight's shape (out, in / groups, kh, kw)


@dataclass(frozen=True)
class Graph:
    """The inference graph at one input shape (batch, channels, height, width)."""

    nodes: tuple[Node, ...]
    buffers: dict[int, Buffer]
    input: int  # the network input buffer
    outputs: tuple[int, ...]  # the network output buffers
    input_shape: tuple[int, int, int, int]
    weight_count: int  # parameters and buffers of the fused model (elements)
    weight_tensors: tuple[tuple[str, int, str], ...]  # (name, elements, role) of each weight tensor
    head_prefix: str  # module path of the detection head, e.g. "model.22"

    def consumers(self) -> dict[int, list[int]]:
        """Buffer id -> indices of the nodes that read it."""
        readers: dict[int, list[int]] = {b: [] for b in self.buffers}
        for node in self.nodes:
            for b in node.reads:
                readers[b].append(node.index)
        return readers

    def producer(self) -> dict[int, int]:
        """Buffer id -> index of the node that created it."""
        return {b: node.index for node in self.nodes for b in node.creates}


class _GraphRecorder(TorchDispatchMode):
    """Records each op's input and output storages. Views share their base's storage."""

    def __init__(self, weight_keys: set[int]):
        super().__init__()
        self.weight_keys = weight_keys
        self.module_stack: list[str] = []
        self.keys: dict[int, int] = {}  # storage key -> buffer id
        self.buffers: dict[int, Buffer] = {}
        self.nodes: list[Node] = []
        self.keep: list[torch.Tensor] = []  # storages stay alive, so their keys are never reused

    def buffer_of(self, tensor: torch.Tensor, constant: bool, rebind: bool = False) -> tuple[int, bool]:
        """The buffer holding ``tensor``'s storage, and whether it is new. ``rebind``: an in-place op's
        output is a new buffer all the same (unless constant), since the exported graph has no in-place
        ops: ``torch.onnx.export`` writes ``x.silu_()`` (Ultralytics 8.3 and earlier make every SiLU
        in-place) as Sigmoid and Mul into a new tensor, which later readers read instead of ``x``."""
        key = tensor.untyped_storage()._cdata
        if key in self.keys and not (rebind and not constant and not self.buffers[self.keys[key]].constant):
            return self.keys[key], False
        bid = len(self.buffers) + 1
        self.keys[key] = bid
        storage = tensor.untyped_storage()
        self.buffers[bid] = Buffer(bid, tuple(tensor.shape), str(tensor.dtype).replace("torch.", ""),
                                   storage.nbytes(), constant)  # fmt: skip
        self.keep.append(tensor)
        return bid, True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in (torch.ops.prim.device.default, aten.size.default, aten.stride.default):
            return out
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        reads = []
        for tensor in inputs:
            key = tensor.untyped_storage()._cdata
            if key in self.weight_keys:
                continue
            bid = self.keys.get(key)
            if bid is None:  # a tensor made outside the forward (the input is registered first)
                bid, _ = self.buffer_of(tensor, constant=True)
            if bid not in reads:
                reads.append(bid)
        name = func.__name__.split(".")[0]
        # factories read a tensor for its dtype/device only; shape-only values are folded by the export
        constant = name in _SHAPE_ONLY or all(self.buffers[b].constant for b in reads)
        in_place = name.endswith("_") and not name.endswith("__")
        creates = []
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                bid, new = self.buffer_of(tensor, constant, rebind=in_place)
                if new:
                    creates.append(bid)
        if in_place:
            name = name[:-1]  # silu_, add_: the same layer as silu, add
        module = self.module_stack[-1] if self.module_stack else ""
        kernel = tuple(args[1].shape) if name == "convolution" and len(args) > 1 else ()
        self.nodes.append(Node(len(self.nodes), name, tuple(reads), tuple(creates), module, kernel))
        return out


def export_ready_model(resolved: ResolvedModel, nc: int | None, imgsz: tuple[int, int], fmt: str, dynamic: bool,
                       max_det: int = 300) -> torch.nn.Module:
    """The model in the state ``Exporter.__call__`` leaves it before ``torch.onnx.export`` (8.4.x):
    eval, fp32, ``fuse()``, and each head told it is exporting; then moved to the meta device, where a
    forward allocates and computes nothing. (It is built on the CPU: its constructor reads the strides.)"""
    from ultralytics.nn.modules import C2f, Detect

    from yolomem.loops.ultralytics.step import build_model, quiet_ultralytics

    model = build_model(resolved.cfg, resolved.task, nc)
    for p in model.parameters():
        p.requires_grad = False
    model.eval()
    model.float()
    with quiet_ultralytics():
        model = model.fuse()
    strides = model.stride.tolist()
    heads = [m for m in model.modules() if isinstance(m, Detect)]
    head_strides = [m.stride.clone() for m in heads]
    model.to("meta")
    for m, stride in zip(heads, head_strides):
        m.stride = stride  # read as Python numbers by make_anchors: keep it a real (CPU) tensor
    for m in model.modules():
        if isinstance(m, Detect):
            m.dynamic = dynamic
            m.export = True
            m.format = fmt
            m.max_det = min(max_det, sum(int(imgsz[0] / s) * int(imgsz[1] / s) for s in strides))
            m.xyxy = False  # nms=False, the default export
            m.shape = None
        elif isinstance(m, C2f) and hasattr(m, "forward_split"):  # the Exporter's swap, from 8.0.36
            m.forward = m.forward_split
    return model


def capture_graph(resolved: ResolvedModel, input_shape: tuple[int, int, int, int], *, fmt: str = "engine",
                  dynamic: bool = False, nc: int | None = None, model: torch.nn.Module | None = None) -> Graph:
    """Record the export-mode forward of ``resolved`` at ``input_shape`` (B, C, H, W), on the meta device.
    ``model``: one ``export_ready_model`` already built (it can be recorded at several shapes)."""
    from yolomem.trace.tracer import module_scopes

    if model is None:
        model = export_ready_model(resolved, nc, input_shape[2:], fmt, dynamic)
    with torch.device("meta"):
        weights = [*model.named_parameters(), *model.named_buffers()]
        weight_keys = {t.untyped_storage()._cdata for _, t in weights}
        image = torch.empty(input_shape, dtype=torch.float32)  # (B, C, H, W), on the meta device
        recorder = _GraphRecorder(weight_keys)
        input_id, _ = recorder.buffer_of(image, constant=False)
        scopes = SimpleNamespace(module_stack=recorder.module_stack)
        with module_scopes(model, scopes), recorder, torch.no_grad():
            out = model(image)
        outputs = []
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                outputs.append(recorder.keys[tensor.untyped_storage()._cdata])
    head = f"model.{len(model.model) - 1}"
    weight_tensors = tuple((name, t.numel(), _weight_role(name, t, head)) for name, t in weights
                           if t.is_floating_point())  # fmt: skip
    return Graph(
        nodes=tuple(recorder.nodes),
        buffers=dict(recorder.buffers),
        input=input_id,
        outputs=tuple(dict.fromkeys(outputs)),
        input_shape=tuple(input_shape),
        weight_count=sum(n for _, n, _ in weight_tensors),
        weight_tensors=weight_tensors,
        head_prefix=head,
    )


def _weight_role(name: str, tensor: torch.Tensor, head: str) -> str:
    """How an INT8 build treats a weight: conv kernels may go INT8; biases stay fp32; the head's output
    convolutions and DFL are kept fp16 by Ultralytics' exporter (``onnx2engine``, 8.4.x)."""
    if tensor.dim() < 2:
        return "bias"
    if name.startswith(head + ".") and (".dfl." in name or _is_output_conv(name)):
        return "head_fp16"
    return "kernel"


def _is_output_conv(name: str) -> bool:
    # Detect.cv2[i] / cv3[i] end in a plain nn.Conv2d at index 2: "model.22.cv2.0.2.weight"
    parts = name.split(".")
    return len(parts) >= 3 and parts[-2] == "2" and parts[-1] in {"weight", "bias"}
