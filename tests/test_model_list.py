"""Issue 11, item 4: every name ``yolomem models`` lists estimates, or is refused in one line; never a
traceback, never a download. RT-DETR, YOLO-World and YOLOE are estimated with their own trainers'
steps (``yolomem.loops.ultralytics.families``); depth and semantic models leave the list and are refused."""

from __future__ import annotations

import socket

import pytest

from yolomem.cli.main import main
from yolomem.errors import UserError
from yolomem.result.estimate import estimate
from yolomem.sweeps.model_list import list_models

TINY = {"imgsz": 64, "batch": 2, "iterations": 1}
# one of each kind the list holds: the families with their own trainers, both of their tasks, the
# torchvision backbone that used to download its weights, and the plain YOLO tasks
SAMPLE = ("rtdetr-l.yaml", "rtdetr-resnet50.yaml", "yolov8n-rtdetr.yaml", "yolov8n-world.yaml", "yolov8s-worldv2.yaml",
          "yoloe-11n.yaml", "yoloe-v8s-seg.yaml", "yoloe-26n-seg.yaml", "yolo11-cls-resnet18.yaml",
          "yolov8n-cls-resnet50.yaml", "yolo26n-obb.yaml", "yolov5nu.yaml")  # fmt: skip


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """A download attempt fails loudly instead of reaching the network."""

    def refuse(*args, **kwargs):
        raise AssertionError("tried to reach the network (a download)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _listed() -> list[str]:
    return [entry.name for entry in list_models()]


def test_the_list_offers_rtdetr_world_and_yoloe_and_no_depth_or_semantic_models():
    names = _listed()
    assert set(SAMPLE) <= set(names)
    assert not [n for n in names if n.endswith(("-depth.yaml", "-sem.yaml"))]


def test_the_list_counts_the_model_training_builds():
    """The parameters listed are those of the model a trace builds, the estimate's header figure, counted
    by Ultralytics' own classes. yolo11n-cls.yaml's summary line (1,633,584) counts a build with 80 classes,
    not its nc: 1000; yoloe-11n.yaml's (2,624,080) is below even its fused model; yolov8n.yaml's agrees."""
    from ultralytics.nn.tasks import ClassificationModel, YOLOEModel

    def count(model) -> int:
        return sum(p.numel() for p in model.parameters())

    listed = {entry.name: entry.params for entry in list_models()}
    assert listed["yolo11n-cls.yaml"] == count(ClassificationModel("yolo11n-cls.yaml", verbose=False)) == 2_812_104
    assert listed["yoloe-11n.yaml"] == count(YOLOEModel("yoloe-11n.yaml", verbose=False))
    assert listed["yolov8n.yaml"] == 3_157_200  # its YAML's summary line
    assert listed["yolo11n-cls.yaml"] == estimate("yolo11n-cls.yaml", **TINY).params


@pytest.mark.parametrize("name", SAMPLE)
def test_a_sample_of_the_list_estimates_with_the_parameters_listed(name):
    """The list counts the layers ``parse_model`` builds with the YAML's classes; the estimate's header,
    the model the trace builds with its trainer's class, here for those classes too (an OBB model trains
    on DOTA's 15 by default)."""
    from yolomem.loops import resolve_model

    result = estimate(name, **TINY, nc=resolve_model(name).cfg.get("nc"))
    assert result.peak_reserved_bytes > 0
    assert result.params == {entry.name: entry.params for entry in list_models()}[name]


def test_family_steps_follow_their_trainers():
    world = estimate("yolov8n-world.yaml", **TINY)
    assert any("text embeddings" in note for note in world.notes)
    assert world.breakdown["input"] > 0
    detr = estimate("rtdetr-l.yaml", epochs=2, **TINY)
    assert any("linear_sum_assignment" in item for item in detr.unaccounted)  # the matching it assumed
    assert detr.epochs is None and any("validator is not modelled" in note for note in detr.notes)
    resnet = estimate("yolo11-cls-resnet18.yaml", **TINY)
    assert any("pretrained weights" in note for note in resnet.notes)


@pytest.mark.parametrize("name", ["yolo26n-depth.yaml", "yolo26s-sem.yaml"])
def test_models_of_tasks_not_modelled_are_refused_in_one_line(name, capsys):
    with pytest.raises(UserError, match="not modelled"):
        estimate(name, **TINY)
    assert main(["estimate", name, "imgsz=64", "batch=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("command", ["estimate", "deploy", "fit"])
def test_a_name_too_long_for_a_file_is_an_unknown_model_in_one_line(command, capsys):
    # Path.is_file() raises ENAMETOOLONG instead of answering False; it ended in a traceback
    name = "yolov8n" + "x" * 300 + ".yaml"
    assert main([command, name, "gpu_mem=8" if command == "fit" else "imgsz=64"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "unknown model 'yolov8nxxx" in err and "(file name too long)" in err and "valid: " in err


def test_a_name_as_blogs_write_it_is_read_in_lower_case_and_a_file_is_not(tmp_path):
    """``YOLOv8n`` (the blog table's spelling) is yolov8n, and ``YOLOv5s`` the yolov5 repo's, as their
    lower-case names are; a name no spelling finds is refused as the user wrote it; a file path is
    never renamed."""
    from yolomem.loops import resolve_model

    for written, name, framework in (("YOLOv8n", "yolov8n", "ultralytics"), ("YOLO11n-pose.yaml", "yolo11n-pose", "ultralytics"),
                                     ("YOLOv5s", "yolov5s", "yolov5")):  # fmt: skip
        resolved = resolve_model(written)
        assert (resolved.name, resolved.framework) == (name, framework)
        assert f"model {written!r} read as {written.lower()!r}" in resolved.note
    assert resolve_model("yolov8n").note == ""
    with pytest.raises(UserError, match=r"unknown model 'YOLOv99\.yaml'"):
        resolve_model("YOLOv99")
    with pytest.raises(UserError, match="does not exist"):
        resolve_model(str(tmp_path / "YOLOv8n.yaml"))  # lower-cased, it would still name no file


@pytest.mark.exhaustive  # every listed name, traced at 64 x 2: about 10-15 min on 2 shared cores
def test_every_listed_name_estimates_or_is_refused_in_one_line():
    failures = []
    for name in _listed():
        try:
            estimate(name, **TINY)
        except UserError as error:
            if "\n" in str(error):
                failures.append(f"{name}: refusal spans lines")
        except Exception as error:  # noqa: BLE001 - any other exception is the bug this test is for
            failures.append(f"{name}: {type(error).__name__}: {error}")
    assert not failures, failures


def test_a_world_trainer_without_cached_embeddings_is_refused_in_one_line(monkeypatch):
    """WorldTrainer before ``set_text_embeddings`` (8.2 up to at least 8.3.74) runs CLIP's text model on
    the GPU for every batch; yolomem does not model that and says so, in one line (it used to fail with
    ``'WorldTrainer' object has no attribute 'clip'``)."""
    from yolomem.errors import UserError
    from yolomem.loops.ultralytics import families

    families.check_modelled(families.WORLD, "detect")  # the installed release caches them: modelled
    entry = families.task_classes(families.WORLD, "detect")

    class OlderWorldTrainer:  # the installed trainer without the method
        preprocess_batch = entry[1].preprocess_batch

    monkeypatch.setattr(families, "task_classes", lambda family, task: (entry[0], OlderWorldTrainer))
    with pytest.raises(UserError, match="CLIP text model on the GPU for every batch") as error:
        families.check_modelled(families.WORLD, "detect")
    assert "\n" not in str(error.value)
    families.check_modelled(families.YOLO, "detect")  # the others: untouched


def test_a_generation_newer_than_the_release_says_a_newer_release_may_ship_it(monkeypatch, capsys):
    """On 8.3 (newest generation YOLO12) a user asking for yolo26n-seg hears why it is unknown there."""
    from yolomem.loops.ultralytics import models

    older = tuple(n for n in models.shipped_model_names() if not n.startswith(("yolo26", "yoloe-26")))
    monkeypatch.setattr(models, "shipped_model_names", lambda: older)
    assert main(["estimate", "yolo26n-seg.yaml"]) == 2
    err = capsys.readouterr().err
    assert "a newer release may ship YOLO26: pip install -U ultralytics" in err and err.count("\n") == 1
    assert main(["estimate", "yolov8q.yaml"]) == 2  # a typo in a shipped generation: no such hint
    assert "newer release" not in capsys.readouterr().err


def test_each_name_is_listed_once_with_its_parameters(monkeypatch):
    """yolov5nu.yaml was listed twice (Ultralytics' own name, and yolov5n.yaml renamed to it), and the names
    whose YAML publishes no summary line (yolov9, yolov10, rtdetr-l, the yolov5u family) had no parameters:
    they are counted on a build, kept in the trace cache. Ground truth: Ultralytics' own class, built on the CPU."""
    import copy

    from ultralytics.nn.tasks import DetectionModel

    from yolomem.loops import resolve_model
    from yolomem.loops.ultralytics import models, step

    shipped = ("yolov10n.yaml", "yolov5n.yaml", "yolov5nu.yaml", "yolov8n.yaml", "yolov9t.yaml")
    monkeypatch.setattr(models, "shipped_model_names", lambda: shipped)
    entries = [entry for entry in list_models() if entry.framework == "ultralytics"]
    assert [entry.name for entry in entries] == ["yolov10n.yaml", "yolov5nu.yaml", "yolov8n.yaml", "yolov9t.yaml"]
    assert models.yaml_summary("yolov9t") is None and models.yaml_summary("yolov8n")[0] == 3157200  # published
    for entry in entries:
        built = DetectionModel(copy.deepcopy(resolve_model(entry.name).cfg), verbose=False)
        assert entry.params == sum(p.numel() for p in built.parameters()), entry.name

    def no_build(*args, **kwargs):
        raise AssertionError("counted again: the trace cache holds the counts")

    monkeypatch.setattr(step, "build_model", no_build)
    assert [entry for entry in list_models() if entry.framework == "ultralytics"] == entries


@pytest.mark.parametrize("name", ["yolov8.yaml", "yolo11-seg.yaml"])
def test_a_shipped_yaml_without_its_scale_is_the_model_ultralytics_builds_from_it(name):
    """``parse_model`` builds the first of the YAML's ``scales`` when the name has none, and warns."""
    from ultralytics import YOLO

    built = YOLO(name).model  # Ultralytics' own build from the name (random weights, nothing downloaded)
    result = estimate(name, imgsz=64, batch=2, iterations=1, nc=built.model[-1].nc)
    assert result.params == sum(p.numel() for p in built.parameters())
    assert any(note.startswith(f"{name} names no scale: Ultralytics builds its first") for note in result.notes)
