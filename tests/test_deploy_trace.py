"""Traced predict and val allocate exactly what a real CPU run of Ultralytics' own predictor and validator does.

Ground truth: ``BasePredictor.__call__`` and ``BaseValidator.__call__`` themselves, on real CPU tensors and a
tiny dataset written by the test, recorded by the same ``Tracer`` with ``fake=False``. Both runs replace
the model's scores with the same synthetic ones (NMS decides by value, and a fake forward has none) and
make the CUDA NMS kernel's allocations, and max-pooling keeps its indices as on CUDA; everything else is
Ultralytics' code as it runs. The traced run
is ``yolomem.deployment.torch_trace`` on fake tensors, along the CPU path (``gpu_path=False``), so the two
must agree event for event once the model is on the device.
"""

from __future__ import annotations

import contextlib

import cv2
import numpy as np
import pytest
import torch

from yolomem.deployment.torch_trace import (
    InferenceSettings,
    apply_replaces_parameters,
    pooling_keeps_indices,
    synthetic_scores,
    trace_inference,
)
from yolomem.loops import resolve_model
from yolomem.loops.ultralytics.step import build_model, quiet_ultralytics
from yolomem.trace.tracer import Tracer

NC = 2
CANDIDATES = 40  # pairs per image passing conf: a few hundred NMS boxes in all, quick on the CPU


def _tiny_dataset(root, images=4, shape=(48, 64)):
    """Grey images of ``shape`` (H, W) with two labelled boxes each, and a data YAML naming them."""
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    for i in range(images):
        cv2.imwrite(str(root / "images" / "val" / f"{i}.jpg"), np.full((*shape, 3), 114, np.uint8))
        (root / "labels" / "val" / f"{i}.txt").write_text("0 0.5 0.5 0.3 0.4\n1 0.3 0.3 0.2 0.2\n")
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/val\nval: images/val\nnames:\n  0: a\n  1: b\n")
    return data


def _loop_events(real, traced):
    """The two streams from the first batch to the traced run's last allocation. After it both runs only
    tear down (the real one also sums its metrics on the host), in whatever order objects die."""
    real_events, real_model = _after_first_batch(real)
    traced_events, traced_model = _after_first_batch(traced)
    end = max(i for i, (op, _) in enumerate(traced_events) if op == "alloc") + 1
    return real_events[:end], traced_events[:end], real_model, traced_model


def _after_first_batch(trace):
    """(op, bytes) from the first batch on, and the bytes alive when it starts (the model on the device)."""
    start = trace.iteration_bounds[0]
    live: dict[int, int] = {}
    for event in trace.events[:start]:
        if event.op == "alloc":
            live[event.storage_id] = event.nbytes
        else:
            live.pop(event.storage_id, None)
    return [(e.op, e.nbytes) for e in trace.events[start:]], sum(live.values())


@contextlib.contextmanager
def _marks_batches(obj, method: str, tracer: Tracer):
    """Call ``tracer.start_iteration`` each time ``obj.method`` is called (the start of a batch)."""
    original = getattr(obj, method)
    count = [0]

    def marked(*args, **kwargs):
        tracer.start_iteration(count[0])
        count[0] += 1
        return original(*args, **kwargs)

    setattr(obj, method, marked)
    try:
        yield
    finally:
        setattr(obj, method, original)


def _real_model():
    torch.manual_seed(0)
    with quiet_ultralytics():
        return build_model(resolve_model("yolov8n.yaml").cfg, "detect", NC)


def _fused_bytes(model) -> int:
    """What the device holds once AutoBackend has loaded ``model``: its fused weights, buffers and tensor
    attributes (``Detect.stride``), each storage once."""
    import copy

    with quiet_ultralytics():
        fused = copy.deepcopy(model).fuse()  # verbose, as AutoBackend: its get_flops forward caches the anchors
    attributes = [v for m in fused.modules() for v in vars(m).values() if isinstance(v, torch.Tensor)]
    storages = {t.untyped_storage()._cdata: t.untyped_storage().nbytes()
                for t in (*fused.parameters(), *fused.buffers(), *attributes)}  # fmt: skip
    return sum(storages.values())


def test_traced_val_matches_ultralytics_validator(tmp_path):
    from ultralytics.models.yolo.detect import DetectionValidator

    data = _tiny_dataset(tmp_path)
    args = dict(data=str(data), imgsz=64, batch=2, device="cpu", workers=0, channels_last=False, plots=False, verbose=False,
                project=str(tmp_path), name="val", exist_ok=True)  # fmt: skip
    model = _real_model()
    validator = DetectionValidator(args=args)
    tracer = Tracer(fake=False)
    with quiet_ultralytics(), apply_replaces_parameters(), pooling_keeps_indices(), \
            synthetic_scores(tracer, "detect", NC, CANDIDATES), \
            _marks_batches(validator, "preprocess", tracer), tracer:  # fmt: skip
        validator(model=model)
    real = tracer.result()
    tracer.detach_finalizers()

    loader_owner = DetectionValidator(args=args)
    loader_owner.data = {"names": {0: "a", 1: "b"}, "nc": NC, "channels": 3}
    loader_owner.stride = 32
    loader_owner.device = torch.device("cpu")
    loader = loader_owner.get_dataloader(str(tmp_path / "images" / "val"), 2)
    settings = InferenceSettings(mode="val", batch=2, imgsz=64, half=False, candidates=CANDIDATES, gpu_path=False)
    traced = trace_inference(resolve_model("yolov8n.yaml"), settings, fake=True, val_batches=loader, nc=NC)

    real_events, traced_events, real_model_bytes, traced_model_bytes = _loop_events(real, traced.trace)
    assert len(real.iteration_bounds) == 2 and len(traced.trace.iteration_bounds) == 2  # both batches ran
    assert len(real_events) > 300
    # when the first batch starts: the fused model and the first collated batch (the CPU run's figure
    # also holds the host copies of the model that validator.get_model makes; a GPU keeps those in RAM)
    first_batch = sum(v.numel() * v.element_size() for v in next(iter(loader)).values() if isinstance(v, torch.Tensor))
    assert traced_model_bytes == _fused_bytes(model) + first_batch < real_model_bytes
    assert traced_events == real_events


def test_traced_predict_matches_ultralytics_predictor(tmp_path):
    from ultralytics.models.yolo.detect import DetectionPredictor

    images = [np.zeros((64, 64, 3), dtype=np.uint8) for _ in range(2)]
    predictor = DetectionPredictor(overrides=dict(imgsz=64, batch=2, device="cpu", channels_last=False, save=False,
                                                  verbose=False, project=str(tmp_path), name="p", exist_ok=True))  # fmt: skip
    model = _real_model()
    tracer = Tracer(fake=False)
    with quiet_ultralytics(), apply_replaces_parameters(), pooling_keeps_indices(), \
            synthetic_scores(tracer, "detect", NC, CANDIDATES), \
            _marks_batches(predictor, "preprocess", tracer), tracer:  # fmt: skip
        for _ in range(2):  # two calls: the second batch meets what the first left
            predictor(source=images, model=model)
    real = tracer.result()
    tracer.detach_finalizers()

    settings = InferenceSettings(mode="predict", batch=2, imgsz=64, half=False, candidates=CANDIDATES, gpu_path=False)
    traced = trace_inference(resolve_model("yolov8n.yaml"), settings, fake=True, nc=NC)

    real_events, traced_events, real_model_bytes, traced_model_bytes = _loop_events(real, traced.trace)
    assert len(real_events) > 300
    assert traced_model_bytes == _fused_bytes(model) < real_model_bytes  # the CPU run also holds host copies
    assert traced_events == real_events


@pytest.mark.parametrize("mode", ["predict", "val"])
def test_gpu_path_half_traced_like_a_real_run(mode):
    """fp16 on the device and the CUDA warmup, fake against real (the same driver; CPU runs fp16 too)."""
    settings = InferenceSettings(mode=mode, batch=2, imgsz=64, half=True, candidates=CANDIDATES, gpu_path=True)
    resolved = resolve_model("yolov8n.yaml")
    torch.manual_seed(0)
    real = trace_inference(resolved, settings, fake=False, nc=NC).trace
    fake = trace_inference(resolved, settings, fake=True, nc=NC).trace
    assert [(e.op, e.nbytes, e.phase) for e in fake.events] == [(e.op, e.nbytes, e.phase) for e in real.events]
    phases = {e.phase for e in fake.events if e.op == "alloc"}
    assert {"warmup", "preprocess", "forward", "nms"} <= phases
    dtypes = {e.dtype for e in fake.events if e.op == "alloc" and e.phase == "forward"}
    assert "float16" in dtypes  # the model ran in half precision


def test_half_halves_the_weights_on_the_device():
    resolved = resolve_model("yolov8n.yaml")
    full = trace_inference(resolved, InferenceSettings("predict", 1, 64, half=False, batches=1)).trace
    half = trace_inference(resolved, InferenceSettings("predict", 1, 64, half=True, batches=1)).trace

    def weights_after_setup(trace):
        live: dict[int, int] = {}
        for event in trace.events[: trace.iteration_bounds[0]]:
            if event.op == "alloc":
                live[event.storage_id] = event.nbytes
            else:
                live.pop(event.storage_id, None)
        return sum(live.values())

    assert weights_after_setup(half) * 2 == pytest.approx(weights_after_setup(full), rel=0.01)


@pytest.mark.parametrize("model", ["yolov8n-seg.yaml", "yolov8n-pose.yaml"])
def test_val_of_segment_and_pose_traced_like_a_real_run(model):
    """Standalone val of the tasks whose metrics read more than boxes: segmentation's mask IoU reads the
    predicted masks (crop_mask builds its grid with arange), pose's init_metrics reads the keypoint layout.
    Both ended in a traceback before; the fake trace now equals a real CPU run of the same code."""
    settings = InferenceSettings(mode="val", batch=2, imgsz=64, half=False, candidates=CANDIDATES, gpu_path=False)
    resolved = resolve_model(model)
    torch.manual_seed(0)
    real = trace_inference(resolved, settings, fake=False, nc=NC).trace
    fake = trace_inference(resolved, settings, fake=True, nc=NC).trace
    assert len(fake.events) > 300
    assert [(e.op, e.nbytes, e.phase) for e in fake.events] == [(e.op, e.nbytes, e.phase) for e in real.events]


def test_rotated_nms_takes_the_fitted_candidates_not_the_cap():
    """obb: rotated NMS keeps (n, n) float32 matrices; at NMS's cap of 30000 that is 3.4 GiB each, per image.
    Deploy takes the count training's validation takes (fitted to a measured obb run), and says why."""
    from yolomem.deployment.torch_trace import nms_candidates
    from yolomem.loops.val_pass import ROTATED_NMS_CANDIDATES_PER_IMAGE

    val = InferenceSettings(mode="val", batch=8, imgsz=1024, half=False)
    count, basis = nms_candidates(val, "obb", anchors=21504, nc=15)
    assert count == ROTATED_NMS_CANDIDATES_PER_IMAGE and "3.4 GiB" in basis
    assert nms_candidates(val, "detect", anchors=21504, nc=15) == (30000, "the most NMS holds")
    given = InferenceSettings(mode="val", batch=8, imgsz=1024, half=False, candidates=20000)
    assert nms_candidates(given, "obb", anchors=21504, nc=15) == (20000, "given")
    small = InferenceSettings(mode="predict", batch=1, imgsz=64, half=False)
    assert nms_candidates(small, "obb", anchors=84, nc=15)[0] == 84  # fewer anchors than the fitted count


def test_exported_pipeline_is_the_predictor_without_the_models_tensors():
    """ONNX Runtime and TensorRT run the model; Ultralytics' predictor around it is the same torch code as
    for a .pt model. ``pipeline_memory`` replays the .pt trace's preprocess, output and NMS allocations:
    none of the model's weights or activations, and the outputs and the preprocessed batch at their
    sizes. Segmentation's masks are in it: they were missing from the counted formula it replaces."""
    from yolomem.allocator.caching import CachingAllocator, parse_alloc_conf
    from yolomem.allocator.replay import replay
    from yolomem.deployment.torch_trace import OUTPUT_PHASE, PIPELINE_PHASES, pipeline_memory

    settings = InferenceSettings(mode="predict", batch=2, imgsz=64, half=False, candidates=CANDIDATES)
    peaks = {}
    for model, nc in (("yolov8n.yaml", NC), ("yolov8n-seg.yaml", NC)):
        resolved = resolve_model(model)
        whole = trace_inference(resolved, settings, nc=nc).trace
        kept = [e for e in whole.events if e.op == "alloc" and e.phase in PIPELINE_PHASES]
        assert {e.category for e in kept}.isdisjoint({"parameter"})
        outputs = [e.nbytes for e in kept if e.phase == OUTPUT_PHASE]
        channels = 4 + nc + (32 if model.endswith("-seg.yaml") else 0)
        anchors = sum((64 // s) ** 2 for s in (8, 16, 32))
        assert outputs[0] == 2 * channels * anchors * 4  # (batch, 4 + nc + masks, anchors) float32
        if model.endswith("-seg.yaml"):
            assert outputs[1] == 2 * 32 * 16 * 16 * 4  # the mask prototypes, (batch, 32, imgsz/4, imgsz/4)
        assert any(e.phase == "preprocess" and e.nbytes == 2 * 3 * 64 * 64 for e in kept)  # the uint8 batch on the device
        memory = pipeline_memory(resolved, settings, nc=nc)
        full = replay([whole.events], CachingAllocator(parse_alloc_conf(None)))
        assert 0 < memory.peak_allocated_bytes < full.stats.peak_allocated_bytes
        assert memory.peak_allocated_bytes >= sum(outputs[:2]) + 2 * 3 * 64 * 64 * 4  # outputs and the float batch
        assert pipeline_memory(resolved, settings, nc=nc) is memory  # asked again (int8 and fp32 engines): traced once
        # a TensorRT engine hands back its output bindings, which its own term counts
        without = pipeline_memory(resolved, settings, nc=nc, outputs=False)
        blocks = sum(-(-n // 512) * 512 for n in outputs[:2])  # the allocator's 512-byte rounding
        assert memory.peak_allocated_bytes - blocks <= without.peak_allocated_bytes <= memory.peak_allocated_bytes
        assert not model.endswith("-seg.yaml") or without.peak_allocated_bytes < memory.peak_allocated_bytes  # alive in NMS
        peaks[model] = memory.peak_allocated_bytes
    # an image's masks, upsampled to the input (process_mask): one float32 imgsz x imgsz plane per detection kept
    assert peaks["yolov8n-seg.yaml"] - peaks["yolov8n.yaml"] >= CANDIDATES * 64 * 64 * 4
