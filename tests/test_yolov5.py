"""The yolov5 loop: a traced iteration on fake tensors against the same iteration on real CPU tensors."""

from __future__ import annotations

import warnings

import pytest
import torch

from yolomem.config.settings import EstimateConfig
from yolomem.errors import UserError
from yolomem.loops import resolve_model, trace_run
from yolomem.loops.yolov5.runner import trace_yolov5_run


def _tensor_events(trace):
    """Kernel workspaces (yolomem.trace.workspaces) exist only on the fake (CUDA) side: compare tensors."""
    return [e for e in trace.events if not e.category.endswith("_workspace")]


def _stream(trace):
    return [(e.op, e.nbytes) for e in _tensor_events(trace)]


def _peak(trace) -> int:
    live, peak = 0, 0
    for e in _tensor_events(trace):
        live += e.nbytes if e.op == "alloc" else -e.nbytes
        peak = max(peak, live)
    return peak


@pytest.mark.parametrize("model", ["yolov4-tiny"])
def test_fake_trace_equals_real_cpu_run(model):
    """imgsz 64, batch 2, fp32: the allocation sizes, in order, and the peak are the same."""
    warnings.filterwarnings("ignore")
    config = EstimateConfig(model=model, imgsz=64, batch=2, amp="fp32", iterations=1, framework="yolov5")
    resolved = resolve_model(model, "yolov5")
    torch.manual_seed(0)
    real = trace_yolov5_run(config, resolved, fake=False)
    torch.manual_seed(0)
    fake = trace_yolov5_run(config, resolved, fake=True)
    assert real.params == fake.params == 6_056_606
    allocs_real = [n for op, n in _stream(real.trace) if op == "alloc"]
    allocs_fake = [n for op, n in _stream(fake.trace) if op == "alloc"]
    assert len(allocs_real) > 500
    assert allocs_fake == allocs_real
    assert _peak(fake.trace) == _peak(real.trace)
    phases = {e.phase for e in fake.trace.events}
    assert {"forward", "loss", "backward", "optimizer", "ema"} <= phases


def test_names_select_the_framework():
    assert resolve_model("yolov4").framework == "yolov5"
    assert "framework=yolov5" in resolve_model("yolov4").note
    assert resolve_model("yolov3").framework == "ultralytics"  # Ultralytics' YOLOv3u unless asked
    assert resolve_model("yolov3", "yolov5").source == "darknet"
    with pytest.raises(UserError, match="framework=yolov5"):
        resolve_model("yolov8n", "yolov5")


@pytest.mark.parametrize("name", ["yolov3", "yolov3-tiny", "yolov3-spp"])
def test_yolov3u_names_are_ultralytics_v3_yamls(name):
    """Ultralytics publishes YOLOv3u as yolov3u.pt, yolov3-tinyu.pt and yolov3-sppu.pt, built from its v3
    YAMLs (its check_yolov5u_filename drops the u); those names were unknown models."""
    plain = resolve_model(name)
    for spec in (f"{name}u", f"{name}u.yaml", f"{name}u.pt"):
        resolved = resolve_model(spec)
        assert resolved.framework == "ultralytics" and resolved.task == "detect"
        assert (resolved.cfg["backbone"], resolved.cfg["head"]) == (plain.cfg["backbone"], plain.cfg["head"])


@pytest.mark.parametrize(("name", "same_as"), [("yolov5s6u.pt", "yolov5s-p6"), ("yolov5x6u", "yolov5x-p6"),
                                               ("yolov8m6.yaml", "yolov8m-p6")])
def test_p6_weight_names_are_ultralytics_p6_yamls(name, same_as):
    """yolov5s6u.pt is how Ultralytics publishes YOLOv5su-P6 (its yaml_model_load cannot resolve the
    name: it looks for yolov56.yaml); yolov8m6.yaml is the old name yaml_model_load still maps."""
    resolved, expected = resolve_model(name), resolve_model(same_as)
    assert resolved.framework == "ultralytics"
    assert (resolved.cfg["backbone"], resolved.cfg["head"], resolved.cfg["scale"]) == (
        expected.cfg["backbone"], expected.cfg["head"], expected.cfg["scale"])


def test_targets_match_anchor_ratio_and_neighbour_cells():
    """build_targets: a box matches anchors within ratio 4 and is copied to its 2 nearer neighbours."""
    from yolomem.loops.yolov5.loss import AnchorLoss, LossHyp
    from yolomem.loops.yolov5.modules import HeadSpec

    head = HeadSpec(nc=2, anchors_px=(((8.0, 8.0), (40.0, 40.0), (200.0, 200.0)),), strides=(8,))
    loss = AnchorLoss(head, LossHyp(), torch.tensor(head.anchors_in_grid_units()))
    p = [torch.zeros(1, 3, 8, 8, 7)]
    # one 16x16 px box centred at (20, 20) px = grid (2.5, 2.5)... placed at 0.3 of the cell: neighbours left/up
    targets = torch.tensor([[0, 1, 2.3 / 8, 2.3 / 8, 16 / 64, 16 / 64]])
    tcls, tbox, indices, anchors, _, _ = loss.build_targets(p, targets)
    b, a, gj, gi = indices[0]
    assert sorted(set(a.tolist())) == [0, 1]  # 16 px vs 8 and 40: ratios 2 and 2.5 < 4; 200: 12.5
    assert len(b) == 2 * 3  # each matched anchor: own cell + left + up
    assert sorted({(int(x), int(y)) for x, y in zip(gi, gj)}) == [(1, 2), (2, 1), (2, 2)]


# ClassificationModel(model=Model("yolov5?.yaml"), nc=1000, cutoff=10) counted with the yolov5 package
# 7.0.14; the yolov5 README's classification table (github.com/ultralytics/yolov5#classification) shows
# them cut to 2.5, 5.4, 12.9, 26.5 and 48.1 M
@pytest.mark.parametrize("scale, params", [("n", 2_493_000), ("s", 5_453_480), ("m", 12_957_640),
                                           ("l", 26_552_680), ("x", 48_097_160)])  # fmt: skip
def test_classifiers_are_the_released_yolov5_cls(scale, params):
    """yolov5?-cls was an unknown model. The classifiers are the detection backbone cut at layer 10
    with a Classify head, 1000 ImageNet classes."""
    from yolomem.loops import get_loop

    resolved = resolve_model(f"yolov5{scale}-cls")
    assert resolved.framework == "yolov5" and resolved.task == "classify"
    assert "classify/train.py" in resolved.note
    assert get_loop("yolov5").count_params(resolved) == params


def test_classifier_training_uses_the_repos_settings():
    """classify/train.py: AMP whatever amp= says (the trace too: ``test_the_repo_trains_the_precision_its_scripts_choose``),
    Adam by default, imgsz as given."""
    warnings.filterwarnings("ignore")
    config = EstimateConfig(model="yolov5n-cls", imgsz=48, batch=2, amp="fp32", iterations=1, framework="yolov5")
    run = trace_run(config, resolve_model("yolov5n-cls", "yolov5"))
    assert run.optimizer == "Adam" and run.imgsz == 48
    assert {"float16"} <= {e.dtype for e in run.trace.events if e.phase == "forward"}
    assert {"forward", "loss", "backward", "optimizer", "ema"} <= {e.phase for e in run.trace.events}


@pytest.mark.parametrize("model, amp, trained, words", [
    ("yolov5n-cls", "fp32", "fp16", "classify/train.py trains with AMP whenever CUDA is there"),
    ("yolov5n-cls", "bf16", "fp16", "classify/train.py trains with AMP whenever CUDA is there"),
    ("yolov5n", "fp32", "fp32", "in fp32 only where check_amp fails"),
    ("yolov5n-seg", "bf16", "fp16", "train.py has no bf16"),
    ("yolov5n", "fp16", "fp16", None),
    ("yolov5n-cls", "fp16", "fp16", None),
])  # fmt: skip
def test_the_repo_trains_the_precision_its_scripts_choose(model, amp, trained, words):
    """The repo has no precision option (``test_yolov5_matches_repo``: its scripts parse none): train.py
    trains fp16 AMP where ``check_amp`` passes, fp32 where it fails; classify/train.py autocasts whenever
    CUDA is there. The estimate is of that precision (in its header too), with a note where it is not
    what ``amp=`` asked."""
    from yolomem.result.prepare import prepare

    prepared = prepare(EstimateConfig(model=model, amp=amp, framework="yolov5"))
    assert prepared.config.amp == trained
    said = [note for note in prepared.notes if note.startswith("amp=")]
    if words is None:
        assert said == []
    else:
        assert len(said) == 1 and words in said[0]


def _dataset_of(root, task: str, other_task: str | None = None) -> str:
    """A synthetic dataset of ``task``'s label rows; with ``other_task``, its first train image's labels
    replaced by that task's rows."""
    import shutil

    from yolomem.measure.synthetic_dataset import SyntheticDatasetSpec, write_synthetic_dataset

    spec = dict(imgsz=64, train_images=6, val_images=3, instances=3, distribution="fixed", nc=2)
    dataset = write_synthetic_dataset(root / "main", SyntheticDatasetSpec(task=task, **spec))
    if other_task is not None:
        other = write_synthetic_dataset(root / "other", SyntheticDatasetSpec(task=other_task, **spec))
        first = sorted((dataset.root / "labels" / "train").iterdir())[0]
        shutil.copy(sorted((other.root / "labels" / "train").iterdir())[0], first)
    return str(dataset.data_yaml)


def test_pose_labels_stop_the_repos_dataset_in_one_line(tmp_path, capsys):
    """Every pose row has half a point for the repo's polygon reader: it rejects each image, and its
    dataset then has none (``yolomem.loops.yolov5.labels``)."""
    from yolomem.cli.main import main

    data = _dataset_of(tmp_path, "pose")
    assert main(["estimate", "yolov5n", f"data={data}", "imgsz=64", "batch=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rejects the labels of every train image" in err
    assert "cannot reshape array of size 55 into shape (2)" in err  # the repo's words for a 56-value row


@pytest.mark.parametrize("task", ["detect", "segment", "obb"])
def test_box_polygon_and_corner_labels_train(task, tmp_path):
    """The repo reads polygons (and OBB corners) as boxes: every image is kept and counted."""
    from yolomem.result.estimate import estimate

    result = estimate("yolov5n", data=_dataset_of(tmp_path, task), imgsz=64, batch=2)
    assert not [note for note in result.notes if "rejects" in note]
    assert "(6 images, densest image 3)" in result.density.source


def test_an_image_of_pose_rows_among_boxes_is_left_out(tmp_path):
    from yolomem.result.estimate import estimate

    result = estimate("yolov5n", data=_dataset_of(tmp_path, "detect", other_task="pose"), imgsz=64, batch=2)
    (note,) = [note for note in result.notes if "rejects" in note]
    assert "rejects the labels of 1 of 6 train images" in note and "not counted" in note
    assert "(5 images, densest image 3)" in result.density.source


@pytest.mark.parametrize("name", ["yolov5s", "yolov5s-seg", "yolov5s6"])
def test_the_note_names_ultralytics_twin_only_where_it_ships(name):
    """A bare repo name says which Ultralytics YAML is its anchor-free twin; there is no YOLOv5u-seg to name."""
    from yolomem.loops import get_loop

    note = resolve_model(name).note
    said = note.partition("Ultralytics' anchor-free YOLOv5u is ")[2]
    shipped = get_loop("ultralytics").model_names()
    assert (said in shipped) if said else not any(n.startswith("yolov5s") and "seg" in n for n in shipped), note


@pytest.mark.parametrize("name", ["yolov5s.yaml", "yolov5s.pt"])
def test_a_yolo_train_line_builds_the_repo_name_as_ultralytics_does(name):
    """``yolo train model=yolov5s.yaml`` (or ``.pt``) trains Ultralytics' anchor-free YOLOv5u; outside a yolo
    line the bare name stays the repo's anchor-based design."""
    from ultralytics import YOLO

    from yolomem.result.estimate import estimate_config

    pasted = EstimateConfig.from_words(["yolo", "train", f"model={name}", "imgsz=64", "batch=2"])
    assert pasted.model == "yolov5su.yaml"
    assert any(note.startswith(f"yolo train model={name} builds Ultralytics' anchor-free") for note in pasted.notes)
    built = YOLO("yolov5s.yaml").model  # Ultralytics' own build of the name (its yaml_model_load unifies it)
    assert resolve_model(pasted.model).framework == "ultralytics"
    assert estimate_config(pasted.with_changes(iterations=1, nc=built.model[-1].nc)).params == sum(p.numel() for p in built.parameters())
    assert EstimateConfig.from_words([name]).model == name  # yolomem's own words: the repo's model


def test_the_weights_train_py_copies_to_fp16_and_back_stay_parameters():
    """train.py's ``model.half().float()`` replaces every weight's storage: the new ones are still the model's."""
    from yolomem.result.estimate import estimate

    result = estimate("yolov5n", imgsz=64, batch=2, iterations=1)
    weights = 4 * result.params  # float32 parameters (the buffers and class weights add a little)
    assert weights <= result.breakdown["parameter"] < 1.1 * weights


def test_multi_scale_traces_the_largest_size_train_py_draws():
    """train.py --multi-scale: ``sz = random.randrange(int(imgsz * 0.5), int(imgsz * 1.5) + gs) // gs * gs``,
    then ``interpolate(imgs, size=ns)``: the step is traced on the largest size that line can draw (its own
    expression, read from the repo's train.py and evaluated at randrange's top)."""
    import ast
    from pathlib import Path
    from types import SimpleNamespace

    from yolov5_reference import yolov5_or_reason

    from yolomem.loops.yolov5.step import multi_scale_size

    yolov5, reason = yolov5_or_reason()
    if yolov5 is None:
        pytest.skip(reason)
    tree = ast.parse((Path(yolov5.__file__).parent / "train.py").read_text())  # read, not imported
    line = next(node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                and getattr(node.targets[0], "id", "") == "sz")  # fmt: skip
    top = SimpleNamespace(randrange=lambda start, stop: stop - 1)
    for imgsz, gs in ((640, 32), (64, 32), (1280, 64)):
        assert multi_scale_size(imgsz, gs) == eval(compile(ast.Expression(line), "train.py", "eval"),
                                                   {"random": top, "imgsz": imgsz, "gs": gs})  # fmt: skip
    config = EstimateConfig(model="yolov5n", framework="yolov5", imgsz=64, batch=2, iterations=1, multi_scale=0.5)
    run = trace_yolov5_run(config, resolve_model("yolov5n", "yolov5"))
    side = multi_scale_size(64, 32)
    inputs = {e.nbytes for e in run.trace.events if e.op == "alloc" and e.phase == "preprocess"}
    assert 2 * 3 * side * side * 4 in inputs  # the float32 batch interpolated to the largest size
    assert any(note.endswith(f"traced at the largest, {side}") for note in run.notes)
