"""Which tensors of the inference graph a runtime keeps in memory, after its layer fusion.

TensorRT (``Rules.tensorrt``), from its developer guide's "Layer Fusion" section and build logs of
YOLO engines:
- Convolution + BatchNorm are one layer already (the model is fused before export); the activation
  (SiLU: ``Sigmoid`` + ``Mul`` in ONNX) and a following element-wise add (the residual of a
  Bottleneck) run inside the convolution's kernel: only the last output of such a chain is stored.
- Concatenation is eliminated: each input is written straight into its slice of the output.
- Reshapes and channel slices are free (no copy); transposes are free in ``low`` and copies in ``high``.
- Network inputs and outputs are the caller's buffers, not activations. An FP16/INT8 engine with FP32
  inputs reformats the input first (``Reformatting CopyNode for Input Tensor 0``), which is an
  activation: at 3 channels, or padded to 8 channels (``kHWC8``) in ``high``.
The ``high`` variant undoes the fusions that may not happen (concat copies, a separate residual add,
transposes that copy), so the truth is in [low, high] as far as the graph can tell.

ONNX Runtime (``Rules.onnxruntime``): no convolution-activation fusion on the CUDA EP for SiLU (its
``FusedConv`` takes Relu-family activations), so ``Sigmoid`` and ``Mul`` each make a tensor; ``Split``,
``Concat`` and ``Transpose`` copy.

Precision: FP32 tensors take 4 bytes per element, FP16 2. INT8 is opportunistic (TensorRT picks an
INT8 kernel only where it is faster): 1 byte where an INT8 kernel runs, else 2; Ultralytics'
``onnx2engine`` keeps the head's Sigmoid in FP32 and its output convolutions and DFL in FP16.
Integer and boolean tensors keep their own size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from yolomem.deployment.graph import CONCAT_OPS, POINTWISE_OPS, PRODUCER_OPS, Buffer, Graph, Node
from yolomem.deployment.liveness import PlannedTensor

LAYER_OPS = frozenset({"convolution", "max_pool2d_with_indices", "max_pool2d", "upsample_nearest2d",
                       "upsample_bilinear2d", "_softmax", "avg_pool2d"})  # layers that pick their own tensor format
# layers with INT8 kernels (and what fuses into them); the box decoding arithmetic stays FP16
_INT8_OPS = frozenset({"convolution", "silu", "add", "cat", "max_pool2d_with_indices", "max_pool2d",
                       "upsample_nearest2d"})  # fmt: skip
_TRANSPOSE_OPS = frozenset({"transpose", "permute"})
_SPLIT_OPS = frozenset({"split", "split_with_sizes", "chunk", "unbind"})
_FLOAT_DTYPES = {"float32", "float16", "bfloat16", "float64"}
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int64": 8, "int32": 4, "bool": 1,
                "uint8": 1, "int8": 1}  # fmt: skip


@dataclass(frozen=True)
class Rules:
    """What the runtime does to the graph before it plans memory."""

    fuse_pointwise: bool  # activation and residual add run inside the producing layer
    elide_concat: bool  # producers write into the concatenation's output
    split_copies: bool  # channel slices (ONNX Split) are new tensors
    transpose_copies: bool
    silu_two_tensors: bool  # SiLU stores Sigmoid's output too (ONNX Sigmoid + Mul, unfused)
    input_reformat_channels: int | None  # channels of the input reformat copy; None: no copy
    reformat_layer_inputs: bool = False  # every layer may first copy its input to another format

    @staticmethod
    def tensorrt(bound: str, reduced_precision: bool, channels: int = 3) -> Rules:
        high = bound == "high"
        reformat = (8 if high else channels) if reduced_precision else None
        return Rules(fuse_pointwise=True, elide_concat=not high, split_copies=False, transpose_copies=high,
                     silu_two_tensors=False, input_reformat_channels=reformat, reformat_layer_inputs=high)  # fmt: skip

    @staticmethod
    def onnxruntime() -> Rules:
        return Rules(fuse_pointwise=False, elide_concat=False, split_copies=True, transpose_copies=True,
                     silu_two_tensors=True, input_reformat_channels=None)  # fmt: skip


@dataclass(frozen=True)
class Materialized:
    """The graph's activations as a runtime stores them, and what fusion removed."""

    tensors: tuple[PlannedTensor, ...]
    fused_pointwise: int  # pointwise ops run inside the layer before them
    elided_concats: int  # concatenations whose inputs write into their output
    conv_layers: int
    modules: dict[str, str]  # planned tensor name -> module path that makes it


ElementBytes = Callable[[Buffer, Node], int]


def element_bytes_for(precision: str, head_prefix: str, int8_bytes: int = 1) -> ElementBytes:
    """Bytes per element of a float activation made by ``node`` at the engine's ``precision``."""

    def size(buffer: Buffer, node: Node) -> int:
        if buffer.dtype not in _FLOAT_DTYPES:
            return _DTYPE_BYTES.get(buffer.dtype, 4)
        if precision == "fp32":
            return 4
        if precision == "int8":
            in_head = node.module == head_prefix or node.module.startswith(head_prefix + ".")
            if in_head and node.op == "sigmoid":
                return 4  # onnx2engine: the head's Sigmoid layers are constrained to FP32
            kept_fp16 = node.module == head_prefix or ".dfl" in node.module or _is_output_conv(node.module)
            if node.op in _INT8_OPS and not (in_head and kept_fp16):
                return int8_bytes
        return 2

    return size


def _is_output_conv(module: str) -> bool:
    """Detect's last convolution of each branch, ``model.22.cv2.0.2`` (ONNX ``/model.22/cv2.0/cv2.0.2/Conv``)."""
    return module.endswith(".2") and any(f".{branch}." in module for branch in ("cv2", "cv3", "cv4", "cv5"))


def materialize(graph: Graph, rules: Rules, element_bytes: ElementBytes) -> Materialized:
    """The activations a runtime stores for ``graph``, with the first and last step of each."""
    producer = graph.producer()
    consumers = graph.consumers()
    nodes = graph.nodes
    external = {graph.input, *graph.outputs}
    live = {b for b, buf in graph.buffers.items() if not buf.constant and b not in external}

    # start/end step and element bytes of each buffer, before fusion
    first = {b: producer[b] for b in live}
    last = {b: max(consumers[b], default=producer[b]) for b in live}
    last_extended = dict(last)
    scale = {b: element_bytes(graph.buffers[b], nodes[producer[b]]) / _DTYPE_BYTES.get(graph.buffers[b].dtype, 4)
             for b in live}  # fmt: skip
    owner = {b: b for b in live}  # buffer -> the buffer whose memory holds it
    fused = elided = 0

    if rules.fuse_pointwise:  # a pointwise op takes over its input's memory slot when it is that input's only reader
        for node in nodes:
            if node.op not in POINTWISE_OPS or len(node.creates) != 1 or node.creates[0] not in live:
                continue
            out = node.creates[0]
            candidates = [b for b in node.reads if b in live and b not in external and consumers[b] == [node.index]
                          and nodes[producer[b]].op in PRODUCER_OPS | POINTWISE_OPS]  # fmt: skip
            if candidates:
                absorbed = max(candidates, key=lambda b: producer[b])
                first[out] = min(first[out], first[absorbed])
                live.discard(absorbed)
                fused += 1

    if rules.elide_concat:
        for node in nodes:
            if node.op not in CONCAT_OPS or len(node.creates) != 1 or node.creates[0] not in live | external:
                continue
            out = node.creates[0]
            members = [owner.get(b, b) for b in dict.fromkeys(node.reads)]
            members = list(dict.fromkeys(members))
            size = sum(graph.buffers[b].nbytes for b in members)
            if size != graph.buffers[out].nbytes or not all(b in live and b not in external for b in members):
                continue  # a partial view, a constant or the network input among the inputs: a real copy
            for b in members:
                for alias, held_by in owner.items():
                    if held_by == b:
                        owner[alias] = out
                live.discard(b)
                if out in live:
                    first[out] = min(first[out], first[b])
                    last_extended[out] = max(last_extended[out], last_extended[b])
            elided += 1

    if rules.split_copies:  # ONNX: Split is the source's only reader; its parts live on instead
        for node in nodes:
            if node.op in _SPLIT_OPS:
                for b in node.reads:
                    if b in live:
                        last_extended[b] = node.index

    tensors: list[PlannedTensor] = []
    modules: dict[str, str] = {}

    def add(name: str, nbytes: int, start: int, end: int, module: str) -> None:
        tensors.append(PlannedTensor(name, nbytes, start, end))
        modules[name] = module

    for b in sorted(live):
        buffer = graph.buffers[b]
        add(f"b{b}", round(buffer.nbytes * scale[b]), first[b], last_extended[b], nodes[producer[b]].module)

    for node in nodes:
        read_live = [b for b in node.reads if b in graph.buffers and not graph.buffers[b].constant]
        if rules.silu_two_tensors and node.op == "silu":  # ONNX: Sigmoid, then Mul(x, sigmoid(x))
            out = node.creates[0]
            add(f"sigmoid{node.index}", round(graph.buffers[out].nbytes * scale.get(out, 1)), node.index, node.index,
                node.module)  # fmt: skip
        if rules.split_copies and node.op in _SPLIT_OPS and read_live:
            source = read_live[0]  # ONNX Split: one new tensor per part, alive until the parts' last reader
            add(f"split{node.index}", round(graph.buffers[source].nbytes * scale.get(source, 1)), node.index,
                max(consumers[source], default=node.index), node.module)  # fmt: skip
        if rules.transpose_copies and node.op in _TRANSPOSE_OPS and read_live:
            source = read_live[0]
            readers = [i for i in consumers[source] if i > node.index]
            add(f"transpose{node.index}", round(graph.buffers[source].nbytes * scale.get(source, 1)), node.index,
                min(readers, default=node.index), node.module)  # fmt: skip

    if rules.reformat_layer_inputs:  # a reformat copy of each input, alive while the layer runs
        held = {b: name for b, name in ((b, f"b{b}") for b in live)}
        for node in nodes:
            if node.op not in LAYER_OPS:
                continue
            for b in node.reads:
                b = owner.get(b, b)
                if b in held:
                    add(f"reformat{node.index}_{b}", round(graph.buffers[b].nbytes * scale[b]), node.index, node.index,
                        f"{node.module} (input reformat)")  # fmt: skip

    if rules.input_reformat_channels is not None:  # FP32 input -> FP16 copy for the first layer
        batch, channels, height, width = graph.input_shape
        first_reader = min(consumers[graph.input], default=0)
        add("input_reformat", batch * rules.input_reformat_channels * height * width * 2, 0, first_reader, "input")

    conv_layers = sum(1 for node in nodes if node.op == "convolution")
    return Materialized(tuple(tensors), fused, elided, conv_layers, modules)
