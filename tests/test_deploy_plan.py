"""The liveness plan, the fusion rules, the BFC arena, the export rules and the deploy key table, on
small cases worked out by hand."""

from __future__ import annotations

import pytest

from yolomem.deployment.config import DeployConfig
from yolomem.deployment.export_rules import rules_from_source
from yolomem.deployment.fusion import Rules, element_bytes_for, materialize
from yolomem.deployment.graph import Buffer, Graph, Node
from yolomem.deployment.liveness import PlannedTensor, plan
from yolomem.deployment.onnxruntime import BfcArena
from yolomem.errors import UserError

K = 1024  # a multiple of the 256-byte alignment, so the sums below are exact


def test_chain_needs_two_neighbours_at_a_time():
    # a -> b -> c -> d: each layer reads one tensor and writes the next; peak = the largest adjacent pair
    tensors = [PlannedTensor("a", 4 * K, 0, 1), PlannedTensor("b", 8 * K, 1, 2), PlannedTensor("c", 2 * K, 2, 3),
               PlannedTensor("d", 1 * K, 3, 3)]  # fmt: skip
    result = plan(tensors)
    assert result.peak_live_bytes == 12 * K  # a + b at step 1
    assert result.packed_bytes == 12 * K  # a and c share b's neighbour slot
    assert result.peak_step == 1


def test_skip_connection_stays_alive_across_the_branch():
    # x (4K) feeds y (2K) -> z (2K) and the add at step 3 reads x and z
    tensors = [PlannedTensor("x", 4 * K, 0, 3), PlannedTensor("y", 2 * K, 1, 2), PlannedTensor("z", 2 * K, 2, 3),
               PlannedTensor("out", 4 * K, 3, 3)]  # fmt: skip
    result = plan(tensors)
    assert result.peak_live_bytes == 10 * K  # x + z + out at step 3
    assert result.packed_bytes == 10 * K  # out reuses y's place? no: y (2K) is too small; x + z + out
    offsets = dict(zip((t.name for t in tensors), result.offsets))
    assert offsets["x"] == 0  # the largest goes first, at the bottom


def test_packing_is_never_below_the_peak_and_fragmentation_shows():
    # big A [0,1], small B [1,2], big C [2,3]: C cannot reuse A's slot while B sits above A
    tensors = [PlannedTensor("A", 8 * K, 0, 1), PlannedTensor("B", 1 * K, 1, 2), PlannedTensor("C", 8 * K, 2, 3)]
    result = plan(tensors)
    assert result.peak_live_bytes == 9 * K
    assert result.packed_bytes == 9 * K  # C takes A's slot (A is dead by step 2)
    assert result.packed_bytes >= result.peak_live_bytes


def test_alignment_rounds_each_tensor():
    result = plan([PlannedTensor("a", 1, 0, 0), PlannedTensor("b", 1, 0, 0)])
    assert result.peak_live_bytes == 512  # two 256-byte blocks


def test_a_tensor_cannot_die_before_it_is_made():
    with pytest.raises(ValueError):
        PlannedTensor("bad", 1, 3, 2)


def _small_graph() -> Graph:
    """input(1) -conv-> 2 -silu-> 3 -conv-> 4 -silu-> 5 ; cat(3, 5) -> 6 (network output).

    Sizes in fp32 bytes: 3 and 5 are 4 KiB each, the cat 8 KiB."""
    buffers = {
        1: Buffer(1, (1, 1, 32, 32), "float32", 4 * K, False),
        2: Buffer(2, (1, 1, 32, 32), "float32", 4 * K, False),
        3: Buffer(3, (1, 1, 32, 32), "float32", 4 * K, False),
        4: Buffer(4, (1, 1, 32, 32), "float32", 4 * K, False),
        5: Buffer(5, (1, 1, 32, 32), "float32", 4 * K, False),
        6: Buffer(6, (1, 2, 32, 32), "float32", 8 * K, False),
    }
    nodes = (
        Node(0, "convolution", (1,), (2,), "model.0.conv", (1, 1, 3, 3)),
        Node(1, "silu", (2,), (3,), "model.0.act"),
        Node(2, "convolution", (3,), (4,), "model.1.conv", (1, 1, 3, 3)),
        Node(3, "silu", (4,), (5,), "model.1.act"),
        Node(4, "cat", (3, 5), (6,), "model.2"),
        Node(5, "convolution", (6,), (7,), "model.3.conv", (1, 2, 1, 1)),
    )
    buffers[7] = Buffer(7, (1, 1, 32, 32), "float32", 4 * K, False)
    return Graph(nodes, buffers, input=1, outputs=(7,), input_shape=(1, 1, 32, 32), weight_count=0,
                 weight_tensors=(), head_prefix="model.9")  # fmt: skip


def test_tensorrt_fuses_activation_and_elides_concat():
    graph = _small_graph()
    low = materialize(graph, Rules.tensorrt("low", reduced_precision=False), element_bytes_for("fp32", "model.9"))
    assert low.fused_pointwise == 2  # both SiLUs run inside their convolutions
    assert low.elided_concats == 1
    # what remains: the cat's buffer (8K, written by both conv+silu layers); conv outputs 2 and 4 vanish
    assert [(t.name, t.nbytes, t.first, t.last) for t in low.tensors] == [("b6", 8 * K, 0, 5)]
    assert plan(low.tensors).peak_live_bytes == 8 * K


def test_tensorrt_high_copies_concat_and_reformats_inputs():
    graph = _small_graph()
    high = materialize(graph, Rules.tensorrt("high", reduced_precision=False), element_bytes_for("fp32", "model.9"))
    names = sorted(t.name for t in high.tensors)
    assert names == ["b3", "b5", "b6", "reformat2_3", "reformat5_6"]
    # step 4 (the cat): 3, 5 and 6 alive = 16K; step 5: 6 and its reformat copy = 16K
    assert plan(high.tensors).peak_live_bytes == 16 * K


def test_fp16_halves_and_adds_the_input_reformat():
    graph = _small_graph()
    fp16 = materialize(graph, Rules.tensorrt("low", reduced_precision=True, channels=1),
                       element_bytes_for("fp16", "model.9"))  # fmt: skip
    sizes = {t.name: t.nbytes for t in fp16.tensors}
    assert sizes == {"b6": 4 * K, "input_reformat": 2 * K}  # 32x32 fp16 input copy


def test_onnxruntime_keeps_every_tensor_and_the_sigmoids():
    graph = _small_graph()
    ort = materialize(graph, Rules.onnxruntime(), element_bytes_for("fp32", "model.9"))
    names = sorted(t.name for t in ort.tensors)
    assert names == ["b2", "b3", "b4", "b5", "b6", "sigmoid1", "sigmoid3"]
    # step 1: conv output 2, sigmoid copy, silu output 3 = 12K; step 4: 3, 5 and the cat 6 = 16K
    assert plan(ort.tensors).peak_live_bytes == 16 * K


def test_int8_tensors_take_one_byte_outside_the_head():
    size = element_bytes_for("int8", "model.22", int8_bytes=1)
    buffer = Buffer(1, (1,), "float32", 4, False)
    assert size(buffer, Node(0, "convolution", (), (1,), "model.3.conv")) == 1
    assert size(buffer, Node(0, "sigmoid", (), (1,), "model.22")) == 4  # head Sigmoid kept FP32
    assert size(buffer, Node(0, "convolution", (), (1,), "model.22.cv2.0.2")) == 2  # head output conv FP16
    assert size(buffer, Node(0, "mul", (), (1,), "model.22")) == 2  # box decoding stays FP16


def test_bfc_arena_power_of_two_growth():
    arena = BfcArena("kNextPowerOfTwo")
    first = arena.alloc(700 * K)  # fits the 1 MiB initial region
    assert arena.total_bytes == 1 << 20
    arena.alloc(700 * K)  # no room: the next region doubles to 2 MiB
    assert arena.total_bytes == 3 << 20
    arena.alloc(5 << 20)  # 5 MiB: the region size doubles until it fits, 8 MiB
    assert arena.total_bytes == 11 << 20
    arena.free(first)
    arena.alloc(600 * K)  # reuses the freed chunk of the first region
    assert arena.total_bytes == 11 << 20


def test_bfc_arena_same_as_requested_grows_by_the_request():
    arena = BfcArena("kSameAsRequested")
    arena.alloc(700 * K)
    arena.alloc(700 * K)
    assert arena.total_bytes == 2 * 700 * K
    arena.reserve(1000)  # Reserve: exact (256-byte aligned), outside the regions
    assert arena.total_bytes == 2 * 700 * K + 1024


def test_export_rules_follow_the_source():
    old = rules_from_source("8.3.74", "batch=2 * self.args.batch,\nself.args.dynamic = True  # enforce dynamic to export TensorRT INT8\n"
                            "max_shape = (*shape[:2], *(int(max(1, workspace) * d) for d in shape[2:]))",
                            "workspace: None # (float, optional)\n")  # fmt: skip
    assert (old.calibration_batch_factor, old.int8_forces_dynamic, old.workspace_gib) == (2, True, None)
    assert old.dynamic_max_factor(None) == 1.0 and old.dynamic_max_factor(4) == 4.0
    new = rules_from_source("8.4.190", "max_shape = (*shape[:2], *(2 * d for d in shape[2:]))  # 2x imgsz\n"
                            "get_tensor_profile_shape(name, 0)[2]", "workspace: # (float, optional)\n")  # fmt: skip
    assert (new.calibration_batch_factor, new.int8_forces_dynamic, new.io_at_max_shape) == (1, False, True)
    assert new.dynamic_max_factor(None) == 2.0
    v82 = rules_from_source("8.2.0", "batch_size=self.args.batch * 2,", "workspace: 4 # (int) TensorRT\n")
    assert (v82.calibration_batch_factor, v82.workspace_gib) == (2, 4.0)


def test_deploy_keys_and_ultralytics_spellings():
    config = DeployConfig.from_words(["yolov8s.yaml", "format=trt", "quantize=8", "batch=8", "dynamic=true"])
    assert (config.model, config.format, config.precision, config.batch, config.dynamic) == \
        ("yolov8s.yaml", "engine", "int8", 8, True)  # fmt: skip
    assert DeployConfig.from_words(["half=true"]).precision == "fp16"
    assert DeployConfig.from_words(["mode=val"]).resolved_batch == 16
    assert DeployConfig.from_words(["quantize=16", "precision=fp16"]).precision == "fp16"  # agreeing spellings
    # Ultralytics' exporter: "half=True and int8=True are mutually exclusive, setting half=False"
    both = DeployConfig.from_words(["half=true", "int8=true", "format=engine"])
    assert both.precision == "int8" and any("mutually exclusive" in note for note in both.notes)


@pytest.mark.parametrize("words, message", [
    (["format=tensort"], "did you mean 'tensorrt'"),
    (["precison=fp16"], "did you mean 'precision'"),
    (["batch=0"], "batch=0"),
    (["format=torch", "precision=int8"], "format=engine"),
    (["format=engine", "quantize=8", "precision=fp16"], "quantize=int8 and precision=fp16 ask for different precisions"),
    (["yolov8n.yaml", "extra"], "missing '='"),
])  # fmt: skip
def test_bad_deploy_input_is_one_line(words, message):
    with pytest.raises(UserError) as error:
        DeployConfig.from_words(words)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_in_place_activations_are_new_tensors_in_the_exported_graph(monkeypatch):
    """Ultralytics 8.3 and earlier make every SiLU in-place (``initialize_weights``). ONNX has no in-place
    ops: the export writes ``silu_`` as Sigmoid and Mul into a new tensor, so the graph and its plan are
    those of the out-of-place model (the fusion pass failed on an in-place node's missing output)."""
    import torch

    from yolomem.deployment.graph import capture_graph, export_ready_model
    from yolomem.loops import resolve_model

    resolved, shape = resolve_model("yolov8n.yaml"), (1, 3, 128, 128)
    plain = capture_graph(resolved, shape, fmt="onnx")
    model = export_ready_model(resolved, None, shape[2:], "onnx", False)
    for module in model.modules():
        if isinstance(module, torch.nn.SiLU):
            monkeypatch.setattr(module, "inplace", True)  # undone after the test: Conv shares one SiLU
    in_place = capture_graph(resolved, shape, fmt="onnx", model=model)
    assert [(n.op, len(n.creates)) for n in in_place.nodes] == [(n.op, len(n.creates)) for n in plain.nodes]
    rules, element_bytes = Rules.onnxruntime(), element_bytes_for("fp32", plain.head_prefix)
    planned = [sorted((t.nbytes, t.first, t.last) for t in materialize(g, rules, element_bytes).tensors)
               for g in (plain, in_place)]  # fmt: skip
    assert planned[0] == planned[1]
