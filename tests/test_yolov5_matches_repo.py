"""The fake trace of our yolov5 loop allocates what the yolov5 repo's own code allocates.

Outside truth: the ``yolov5`` package (PyPI, 7.0.x, the yolov5 repo packaged) run for real on CPU
tensors under the same ``Tracer`` (``tests/yolov5_reference.py``): train.py's loop body with the repo's
``Model``, ``ComputeLoss``, ``smart_optimizer``, ``ModelEMA``, ``GradScaler``, then ``val.run`` at twice
the batch as train.py calls it after an epoch. Ours: ``trace_yolov5_run`` on fake tensors, then
``trace_val_pass``. Compared event by event: every allocation and free, its size, their order, and the
peak of live bytes; per-image metric bookkeeping (val.py's matching, data-dependent) only by its
allocations of 4 KiB and more. fp32: CUDA autocast cannot run on a CPU.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from yolov5_reference import yolov5_or_reason

yolov5, REASON = yolov5_or_reason()
pytestmark = pytest.mark.skipif(yolov5 is None, reason=REASON)

NC, BATCH, IMGSZ, ITERATIONS, INSTANCES, SEED, VAL_SEED = 80, 2, 64, 2, 3.0, 0, 100
METRICS = "val_metrics"
BIG = 4096  # bytes: val.py's per-image matching allocates below this; masks and concatenations above


def _val_shapes(stride: int):
    from yolomem.loops.val_pass import ValBatchShape

    # 2 x batch, rect: 64 -> ceil(64 / 32 + 0.5) * 32 = 96 square (128 at stride 64), and a landscape batch
    side = int(np.ceil(IMGSZ / stride + 0.5)) * stride
    return [ValBatchShape(2 * BATCH, side, side, (3, 1, 2, 0)), ValBatchShape(2 * BATCH, IMGSZ, side, (2, 2, 1, 1))]


def _ours(model: str, stride: int):
    from yolomem.config.settings import EstimateConfig
    from yolomem.loops import resolve_model, trace_run
    from yolomem.loops.yolov5.val_pass import trace_val_pass

    config = EstimateConfig(model=model, imgsz=IMGSZ, batch=BATCH, amp="fp32", iterations=ITERATIONS,
                            instances=INSTANCES, seed=SEED, framework="yolov5", optimizer="SGD")  # fmt: skip

    def validate(run) -> None:
        run.tracer.start_iteration(ITERATIONS)
        trace_val_pass(run, _val_shapes(stride), VAL_SEED, candidates=None)  # every (anchor, class) passes, as below

    # upper=False: no extra iteration at the upper figure's density, which train.py has no counterpart of
    return trace_run(config, resolve_model(model, "yolov5"), fake=True, after_iterations=validate, upper=False).trace


def _repo(yaml_name: str, stride: int):
    from yolov5_reference import package_trace

    path = Path(yolov5.__file__).parent / "models" / yaml_name
    return package_trace(path, nc=NC, batch=BATCH, imgsz=IMGSZ, iterations=ITERATIONS, instances=INSTANCES,
                         seed=SEED, val_shapes=_val_shapes(stride), val_seed=VAL_SEED)  # fmt: skip


@pytest.fixture(scope="module", params=[("yolov5n", "yolov5n.yaml", 32), ("yolov5n-seg", "segment/yolov5n-seg.yaml", 32),
                                        ("yolov5n6", "hub/yolov5n6.yaml", 64)],
                ids=["detect", "segment", "detect-p6"])  # fmt: skip
def traces(request):
    warnings.filterwarnings("ignore")
    ours, yaml_name, stride = request.param
    return _ours(ours, stride), _repo(yaml_name, stride)


def _tensor(event) -> bool:
    """A tensor storage on the GPU: zero-byte storages are no allocation (the allocator returns null),
    "host" storages are the harness's copies to the host, kernel workspaces exist only on the fake side."""
    return bool(event.nbytes) and event.category != "host" and not event.category.endswith("_workspace")


def _stream(trace, *, metrics: bool = False) -> list[tuple[str, int]]:
    """(op, bytes) in order of the GPU's tensor storages."""
    return [(e.op, e.nbytes) for e in trace.events if _tensor(e) and (e.phase == METRICS) == metrics]


def _peak(events: list[tuple[str, int]]) -> int:
    live = peak = 0
    for op, nbytes in events:
        live += nbytes if op == "alloc" else -nbytes
        peak = max(peak, live)
    return peak


def _training(trace) -> list[tuple[str, int]]:
    end = trace.iteration_bounds[ITERATIONS]
    return [(e.op, e.nbytes) for e in trace.events[:end] if _tensor(e)]


def test_training_iterations_allocate_as_train_py(traces):
    ours, repo = traces
    assert len(_training(repo)) > 5000  # setup and two whole iterations, not a stub
    assert _training(ours) == _training(repo)
    assert _peak(_training(ours)) == _peak(_training(repo))


def test_training_phases_and_categories_match(traces):
    ours, repo = traces
    key = lambda e: (e.op, e.nbytes, e.phase, e.category)  # noqa: E731
    training = lambda t: [key(e) for e in t.events[: t.iteration_bounds[ITERATIONS]] if _tensor(e)]  # noqa: E731
    assert training(ours) == training(repo)
    end = repo.iteration_bounds[ITERATIONS]
    phases = {e.phase for e in repo.events[:end]}
    assert {"setup", "preprocess", "forward", "loss", "backward", "optimizer", "ema", "log"} <= phases


def test_val_pass_allocates_as_val_py(traces):
    ours, repo = traces
    stream_ours, stream_repo = _stream(ours), _stream(repo)
    assert len(stream_repo) - len(_training(repo)) > 1000  # two validation batches were traced
    assert stream_ours == stream_repo
    assert _peak(stream_ours) == _peak(stream_repo)


def test_val_metrics_allocate_the_same_large_tensors(traces):
    ours, repo = traces
    big = lambda t: [(op, n) for op, n in _stream(t, metrics=True) if op == "alloc" and n >= BIG]  # noqa: E731
    assert len(big(repo)) >= 10  # per-image masks or concatenations
    assert big(ours) == big(repo)


def _ours_classify(model: str, imgsz: int):
    """ClassifyRun as the runner sets it up, at fp32 (the repo's autocast is CUDA-only)."""
    from yolomem.config.settings import EstimateConfig
    from yolomem.loops import resolve_model
    from yolomem.loops.base import tracing
    from yolomem.loops.batches import SyntheticBatch
    from yolomem.loops.yolov5.classify import ClassifyRun, ClassifySettings
    from yolomem.loops.yolov5.runner import build_original, original_of

    config = EstimateConfig(model=model, imgsz=imgsz, batch=BATCH, amp="fp32", framework="yolov5")
    with tracing(config, fake=True, oracle=None) as (tracer, policy):
        net = build_original(original_of(resolve_model(model, "yolov5")), NC)
        run = ClassifyRun(net, ClassifySettings(BATCH, imgsz, "Adam", precision="fp32"), tracer, policy)
        tracer.forget()
        for category, tensors in run.persistent_tensors().items():
            tracer.track_existing(tensors, category)
        del tensors
        for iteration in range(ITERATIONS):
            run.train_iteration(iteration, SyntheticBatch.draw("classify", BATCH, imgsz, 0.0, seed=SEED + iteration, nc=NC))
        trace = tracer.result()
        tracer.detach_finalizers()
    return trace


def test_classifier_iterations_allocate_as_classify_train_py():
    """yolov5n-cls: ClassificationModel(DetectionModel(yolov5n.yaml), nc, cutoff=10), Adam, EMA, label smoothing."""
    from yolov5_reference import package_classify_trace

    warnings.filterwarnings("ignore")
    path = Path(yolov5.__file__).parent / "models" / "yolov5n.yaml"
    repo = package_classify_trace(path, nc=NC, batch=BATCH, imgsz=IMGSZ, iterations=ITERATIONS, seed=SEED)
    ours = _ours_classify("yolov5n-cls", IMGSZ)
    stream = lambda t: [(e.op, e.nbytes) for e in t.events if _tensor(e)]  # noqa: E731
    assert len(stream(repo)) > 1000
    assert stream(ours) == stream(repo)
    assert _peak(stream(ours)) == _peak(stream(repo))


@pytest.mark.parametrize("script, amp_from", [("train.py", "check_amp(model)"), ("segment/train.py", "check_amp(model)"),
                                              ("classify/train.py", None)])  # fmt: skip
def test_the_repo_scripts_take_no_precision_option(script, amp_from):
    """Why the yolov5 loop turns ``amp=`` into a note (``Yolov5Loop.precision``): none of the repo's training
    scripts parses a precision option. train.py and segment/train.py set ``amp = check_amp(model)``;
    classify/train.py autocasts with ``enabled=cuda``."""
    import ast

    tree = ast.parse((Path(yolov5.__file__).parent / script).read_text())
    options = [node.args[0].value for node in ast.walk(tree) if isinstance(node, ast.Call)
               and getattr(node.func, "attr", "") == "add_argument" and isinstance(node.args[0], ast.Constant)]  # fmt: skip
    assert len(options) > 10 and not [o for o in options if any(w in o for w in ("amp", "half", "fp16", "bf16", "precision"))]
    assigned = {ast.unparse(node.value) for node in ast.walk(tree) if isinstance(node, ast.Assign)
                and any(getattr(target, "id", None) == "amp" for target in node.targets)}  # fmt: skip
    autocasts = {ast.unparse(node) for node in ast.walk(tree) if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("autocast")}
    if amp_from:
        assert assigned == {amp_from} and autocasts == {"torch.cuda.amp.autocast(amp)"}
    else:
        assert not assigned and autocasts == {"amp.autocast(enabled=cuda)"}


KEYPOINTS_17X3 = " 0.5 0.5 2" * 17  # a pose row's keypoints, visibility 2 as Ultralytics' pose labels have it
LABEL_LAYOUTS = {
    "boxes": ["0 0.5 0.5 0.2 0.2", "1 0.3 0.3 0.1 0.1"],
    "six values": ["0 0.5 0.5 0.2 0.2 0.9"],
    "boxes beside six values": ["0 0.5 0.5 0.2 0.2", "0 0.5 0.5 0.2 0.2 0.9"],
    "OBB corners": ["0 0.4 0.4 0.6 0.4 0.6 0.6 0.4 0.6"],
    "a polygon beside a box": ["0 0.4 0.4 0.6 0.4 0.6 0.6 0.4 0.6 0.5 0.7", "1 0.5 0.5 0.2 0.2"],
    "half a point": ["0 0.1 0.2 0.3 0.4 0.5 0.6 0.7"],
    "a polygon beside six values": ["0 0.4 0.4 0.6 0.4 0.6 0.6 0.4 0.6", "0 0.5 0.5 0.2 0.2 0.9"],
    "pose, 17 x 3 keypoints": ["0 0.5 0.5 0.2 0.2" + KEYPOINTS_17X3],
    "pose, 17 x 2 keypoints": ["0 0.5 0.5 0.2 0.2" + " 0.5 0.4" * 17],
}


@pytest.mark.parametrize("layout", LABEL_LAYOUTS)
def test_label_rows_are_judged_as_the_repos_verify_image_label_judges_them(layout, tmp_path):
    """``yolomem.loops.yolov5.labels``: the repo's ``verify_image_label`` on a real image and label file
    keeps or rejects it, and with the same words, as our copy does on its rows and on its layout."""
    from yolov5.utils.dataloaders import verify_image_label

    from yolomem.config.dataset import write_label_image
    from yolomem.loops.yolov5.labels import layout_verdict, rows_verdict

    rows = LABEL_LAYOUTS[layout]
    write_label_image(tmp_path / "image.png", tmp_path / "image.txt", rows)
    result = verify_image_label((str(tmp_path / "image.png"), str(tmp_path / "image.txt"), ""))
    repo = None if result[0] is not None else result[-1].split("ignoring corrupt image/label: ")[1]
    assert rows_verdict(rows) == repo
    assert (layout_verdict(frozenset(len(row.split()) for row in rows)) is None) == (repo is None)
