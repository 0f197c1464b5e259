"""The probes of the installed Ultralytics (``yolomem.loops.ultralytics.release``) read what its code does.

Expected behaviour per release comes from reading the Ultralytics sources at each boundary (the
diff between the two releases named in each comment); it is written here independently of the
probes, which never look at version numbers. These tests run on whatever release is installed; CI's
matrix (``.ci/ultralytics_matrix.py``) runs them against each release it installs.
"""

from __future__ import annotations

import pytest

from yolomem.errors import UserError
from yolomem.loops.base import CacheClears
from yolomem.loops.ultralytics import release as rel


def _installed() -> tuple[int, ...]:
    return rel.version_tuple(rel.installed_version())


def _expected_clears(v: tuple[int, ...]) -> CacheClears:
    if v < (8, 0, 59):  # 8.0.58 -> 8.0.59: torch.cuda.empty_cache() after each epoch; before, only after training
        return CacheClears()
    if v < (8, 3, 87):  # 8.0.59: torch.cuda.empty_cache() inline; 8.2.94: self._clear_memory(), both unconditional
        return CacheClears(after_epoch=0.0)
    if v < (8, 3, 109):  # 8.3.86 -> 8.3.87: `if self._get_memory(fraction=True) > 0.9: self._clear_memory()`
        return CacheClears(after_epoch=0.9)
    if v < (8, 3, 152):  # 8.3.108 -> 8.3.109: 0.9 -> 0.5
        return CacheClears(after_epoch=0.5)
    return CacheClears(before_val=0.5, after_epoch=0.5)  # 8.3.151 -> 8.3.152: _clear_memory(threshold=0.5) before validate()


def test_cache_clears_are_read_from_the_epoch_loop():
    assert rel.cache_clears() == _expected_clears(_installed())


def test_gpu_mem_unit():
    # 8.3.75 -> 8.3.76: _get_memory returns memory / (2**30) instead of memory / 1e9
    assert rel.gpu_mem_unit() == ("GiB" if _installed() >= (8, 3, 76) else "GB")


def test_validation_precision():
    v = _installed()
    style = rel.validation_precision()
    # 8.4.61 -> 8.4.62: `model = model.half() if self.args.half else model.float()` -> `model.float()` + autocast
    assert style.ema_half_in_place == (v < (8, 4, 62))
    assert style.autocast == (v >= (8, 4, 62))
    # 8.2.95 -> 8.2.96: `self.args.half = self.device.type != "cpu"` gains `and trainer.amp`
    assert style.half_without_amp == (v < (8, 2, 96))
    # 8.4.103 -> 8.4.104: `self.loss += model.loss(batch, preds)[1]` -> `for k, v in ...: self.loss[k] += v`
    assert style.keeps_last_loss_item == (v >= (8, 4, 104))


def test_closes_mosaic_when_short():
    # 8.4.156 -> 8.4.157: `if epoch == (self.epochs - self.args.close_mosaic)` -> a once-only gate on
    # `epoch >= self.epochs - self.args.close_mosaic`
    from yolomem.loops.ultralytics.trainer_source import closes_mosaic_when_short

    assert closes_mosaic_when_short() == (_installed() >= (8, 4, 157))


def test_the_installed_trainer_closes_the_mosaic_where_the_plan_says():
    """The epochs the installed trainer's own test closes the mosaic in, against the density plan's: a run
    shorter than, as long as, and longer than ``close_mosaic``."""
    from yolomem.config.settings import EstimateConfig
    from yolomem.loops.density import Augmentation

    for epochs in (2, 10, 13):
        closed = _epochs_closed_by_the_trainer(epochs, close_mosaic=10)
        config = EstimateConfig(model="yolov8n.yaml", epochs=epochs)
        planned = [e for e in range(epochs) if Augmentation.of_config(config, e).mosaic == 0.0]
        assert planned == closed, epochs


def _epochs_closed_by_the_trainer(epochs: int, close_mosaic: int) -> list[int]:
    """The epochs (0-based) the installed ``BaseTrainer._do_train`` trains without mosaic: its own test of the
    epoch against ``close_mosaic``, evaluated for each epoch; the first epoch it passes closes the loader's
    mosaic for the rest of the run."""
    import ast
    import inspect
    import textwrap
    from types import SimpleNamespace

    from ultralytics.engine.trainer import BaseTrainer

    tree = ast.parse(textwrap.dedent(inspect.getsource(BaseTrainer._do_train)))
    test = next(node for node in ast.walk(tree) if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name)
                and node.left.id == "epoch" and "close_mosaic" in ast.dump(node))  # fmt: skip
    code = compile(ast.Expression(test), "_do_train", "eval")
    trainer = SimpleNamespace(epochs=epochs, args=SimpleNamespace(close_mosaic=close_mosaic))
    first = next((e for e in range(epochs) if eval(code, {}, {"epoch": e, "self": trainer})), epochs)
    return list(range(first, epochs))


def test_default_imgsz_is_what_each_trainer_sets():
    # ClassificationTrainer.__init__: `if overrides.get("imgsz") is None: overrides["imgsz"] = 224` (8.0.103 ->
    # 8.0.104; before, it trains at default.yaml's 640 too); the other trainers take default.yaml's 640
    found = rel.default_imgsz()
    assert found["classify"] == (224 if _installed() >= (8, 0, 104) else 640)
    assert {found[task] for task in ("detect", "segment", "pose") if task in found} == {640}


def test_single_cls_one_class():
    # 8.3.78 -> 8.3.79: get_dataset gains `if self.args.single_cls: ... self.data["nc"] = 1`
    assert rel.single_cls_one_class() == (_installed() >= (8, 3, 79))


def test_optimizer_choices():
    v = _installed()
    installed = rel.release()
    # 8.4.153 -> 8.4.154: build_optimizer passes fused=True for Adam/AdamW on CUDA
    assert installed.fused_adam == (v >= (8, 4, 154))
    if v <= (8, 0, 112):  # no optimizer=auto: default.yaml's optimizer, SGD
        assert installed.auto_short == installed.auto_long == "SGD"
    elif v == (8, 0, 113):  # 8.0.113: NAdam up to 6000 iterations, SGD beyond
        assert (installed.auto_short, installed.auto_long) == ("NAdam", "SGD")
    else:  # optimizer=auto, <= 10k iterations: AdamW; 8.4.0-8.4.7 MuSGD. Beyond: SGD up to 8.4.0, MuSGD after
        assert installed.auto_short == ("MuSGD" if (8, 4, 0) <= v < (8, 4, 8) else "AdamW")
        assert installed.auto_long == ("SGD" if v <= (8, 4, 0) else "MuSGD")
    assert ("MuSGD" in installed.optimizers) == (v >= (8, 4, 0))
    assert installed.optimizer_name("rmsprop") in {"RMSprop", "RMSProp"}
    assert installed.optimizer_name("adamw") == "AdamW"


def test_nms_is_ultralytics_own():
    from yolomem.loops.ultralytics.legacy_layout import has_legacy_layout, old_name

    module = rel.nms_function().__module__
    # 8.3.189 -> 8.3.190: non_max_suppression moves from utils/ops.py to utils/nms.py
    expected = "ultralytics.utils.nms" if _installed() >= (8, 3, 190) else "ultralytics.utils.ops"
    assert module == (old_name(expected) if has_legacy_layout() else expected)  # up to 8.0.135: ultralytics.yolo.utils.ops


def test_an_optimizer_the_release_lacks_is_one_line():
    installed = rel.release()
    missing = "MuSGD" if "MuSGD" not in installed.optimizers else "Lion"
    with pytest.raises(UserError, match=f"optimizer={missing} is not in the installed ultralytics"):
        installed.optimizer_name(missing)


def test_pyproject_keeps_the_installed_release():
    """``pip install yolomem`` leaves the user's Ultralytics as it is: its requirement admits it."""
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    requirement = next(Requirement(d) for d in project["dependencies"] if d.startswith("ultralytics"))
    assert requirement.specifier.contains(rel.installed_version())


def test_version_tuple():
    assert rel.version_tuple("8.3.74") == (8, 3, 74)
    assert rel.version_tuple("8.4.0rc1") == (8, 4, 0)
    assert rel.version_tuple("8.4.190.dev0") == (8, 4, 190)


def test_release_range():
    with pytest.raises(UserError, match="older than 8.0.35"):
        rel.check_release("8.0.6")  # hydra settings, another trainer API
    warning = rel.check_release("8.5.2")
    assert warning and "8.0.35 to 8.4.190" in warning and "8.5.2" in warning
    assert rel.check_release("8.0.35") is None
    assert rel.check_release("8.0.58") is None  # its import fails only with YOLO_CONFIG_DIR set
    assert rel.check_release("8.4.190") is None


def test_cli_refuses_an_old_release_in_one_line(monkeypatch, capsys):
    from yolomem.cli.main import main

    monkeypatch.setattr(rel, "installed_version", lambda: "8.0.6")
    assert main(["estimate", "yolov8n.yaml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ultralytics 8.0.6 is older than 8.0.35" in err[0]


def test_cli_warns_once_about_a_newer_release(monkeypatch, capsys):
    from yolomem.cli.main import main

    monkeypatch.setattr(rel, "installed_version", lambda: "8.5.2")
    rel.warn_once.cache_clear()
    # --no-cache: the cache is keyed by the real release, which the stand-in version does not change
    assert main(["estimate", "yolov8n.yaml", "imgsz=64", "batch=1", "iterations=1", "--json", "--no-cache"]) == 0
    out, err = capsys.readouterr()
    warnings = [line for line in err.splitlines() if line.startswith("yolomem: warning:")]
    assert len(warnings) == 1 and "newer than the releases yolomem is tested with (8.0.35 to 8.4.190)" in warnings[0]
    import json

    assert "newer than the releases" in " ".join(json.loads(out)["notes"])


def test_the_probe_is_kept_in_the_cache_and_read_back(tmp_path, monkeypatch):
    """A second process reads the release's probe from the trace cache instead of probing again (the
    probes build optimizers, which imports torch._dynamo: over a second of a cached estimate)."""
    from yolomem.trace import store as store_module

    store = store_module.TraceStore(tmp_path)
    monkeypatch.setattr(store_module, "_ACTIVE", store)
    probed = rel.release.__wrapped__()  # a new process: probes, then keeps what it found
    assert store.info().files == 0 and store.info().bytes > 0  # not counted as a traced run

    def no_probe():
        raise AssertionError("probed again")

    monkeypatch.setattr(rel, "_probe_release", no_probe)
    assert rel.release.__wrapped__() == probed
    monkeypatch.setattr(store_module, "_ACTIVE", store_module.TraceStore(tmp_path, enabled=False))  # --no-cache
    with pytest.raises(AssertionError, match="probed again"):
        rel.release.__wrapped__()


def _estimate_with_a_stand_in_release(tmp_path, version: str, init_source: str, **environment: str):
    """``yolomem estimate`` in a process whose ``ultralytics`` is a stand-in package: ``init_source`` as its
    ``__init__.py``, ``version`` in its package metadata. Returns the finished process."""
    import os
    import subprocess
    import sys

    package = tmp_path / "ultralytics"
    package.mkdir()
    (package / "__init__.py").write_text(init_source)
    info = tmp_path / f"ultralytics-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: ultralytics\nVersion: {version}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]), **environment}
    return subprocess.run([sys.executable, "-m", "yolomem", "estimate", "yolov8n.yaml"], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_cli_refuses_an_old_release_that_fails_its_own_import(tmp_path):
    """8.0.6 imports hydra, which this environment lacks: its import raises before any version check
    could run. The version then comes from its package metadata, and the user sees the same one line."""
    done = _estimate_with_a_stand_in_release(tmp_path, "8.0.6", "__version__ = '8.0.6'\nimport hydra_not_in_this_python\n")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "yolomem: error: ultralytics 8.0.6 is older than 8.0.35, the oldest release yolomem traces "
        f"(tested: {rel.TESTED_RANGE}); pip install 'ultralytics>=8.0.35'"
    ]


def test_cli_names_the_config_dir_that_stops_an_import_in_one_line(tmp_path):
    """8.0.56-8.0.58 join YOLO_CONFIG_DIR, a str, to a file name at import (``USER_CONFIG_DIR / 'settings.yaml'``);
    a stand-in package fails the same way, and the user is told which variable to unset."""
    source = "import os\n__version__ = '8.0.57'\nos.getenv('YOLO_CONFIG_DIR', '') / 'settings.yaml'\n"
    done = _estimate_with_a_stand_in_release(tmp_path, "8.0.57", source, YOLO_CONFIG_DIR=str(tmp_path / "settings"))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "ultralytics 8.0.57 cannot be imported while YOLO_CONFIG_DIR is set" in lines[0]


def test_the_class_bound_of_verify_image_label_is_read_from_the_function():
    # up to 8.3.40 at least: `assert max_cls <= num_cls` (class nc itself kept); by 8.3.189: `max_cls < num_cls`
    from yolomem.config.dataset import keeps_class_equal_to_count

    installed = _installed()
    if (8, 3, 40) < installed < (8, 3, 189):
        pytest.skip("the bound changed between 8.3.40 and 8.3.189; not pinned down here")
    assert keeps_class_equal_to_count() == (installed <= (8, 3, 40))


def test_a_validation_key_stands_for_val_where_check_det_dataset_renames_it():
    # 8.0.148 -> 8.0.149: check_det_dataset renames a data YAML's 'validation' key to 'val'
    from yolomem.config.dataset import renames_validation_key

    assert renames_validation_key() == (_installed() >= (8, 0, 149))


def test_u_names_are_offered_where_check_file_resolves_them():
    # 8.0.149 -> 8.0.150: check_yolov5u_filename maps yolov5nu.yaml to yolov5n.yaml; before, no such file from
    # 8.0.55 on, when one YAML per design with its scales replaced the files per scale (yolov5nu.yaml, yolov3u.yaml)
    from yolomem.loops.ultralytics.models import resolves_u_names, shipped_model_names

    resolves = _installed() >= (8, 0, 150)
    assert resolves_u_names() == resolves
    named = resolves or _installed() < (8, 0, 55)
    assert ("yolov5nu.yaml" in shipped_model_names()) == named
    assert ("yolov3u.yaml" in shipped_model_names()) == named


def test_amp_refused_cards():
    # 8.3.46 -> 8.3.47: check_amp returns False at once on GTX 16xx, T400-T2000 and K40m
    assert (rel.amp_refused_cards() is not None) == (_installed() >= (8, 3, 47))


def test_oom_retries():
    """8.4.13 added the first epoch's out-of-memory retries (``self._oom_retries >= 3``); 8.4.12 had none
    (read in the published wheels of 8.4.0, 8.4.10, 8.4.12, 8.4.13, 8.4.20 ... 8.4.190, and 8.3.253)."""
    assert rel.oom_retries() == (3 if _installed() >= (8, 4, 13) else 0)


def test_classify_imgsz_rewrite():
    """Up to 8.0.103 ``ClassificationTrainer.get_model`` turns imgsz 640 into 224 (8.0.104 moved the default to
    ``__init__``, for an imgsz not given; read in the published wheels of 8.0.35, 8.0.59, 8.0.100, 8.0.103,
    8.0.104 and 8.0.105)."""
    assert rel.classify_imgsz_rewrite() == ((640, 224) if _installed() < (8, 0, 104) else None)


def test_a_classifier_trains_at_the_imgsz_its_trainer_sets(monkeypatch):
    """With the rewrite (8.0.103 and before) a classifier asked for 640 is estimated at 224, with a note (so is
    one given no imgsz there: default.yaml's 640); 320 stays 320, and so does every other task."""
    import dataclasses

    from yolomem.config.settings import EstimateConfig
    from yolomem.result.prepare import prepare

    monkeypatch.setattr(rel, "release", lambda: dataclasses.replace(rel._probe_release(), classify_imgsz_rewrite=(640, 224)))
    asked = prepare(EstimateConfig(model="yolov8n-cls.yaml", imgsz=640))
    assert asked.config.imgsz == 224 and any("get_model sets imgsz=224" in note for note in asked.notes)
    assert prepare(EstimateConfig(model="yolov8n-cls.yaml", imgsz=320)).config.imgsz == 320
    assert prepare(EstimateConfig(model="yolov8n.yaml", imgsz=640)).config.imgsz == 640


def test_amp_switch():
    """8.0.57 added the ``amp`` option (``default.yaml``); 8.0.56 and before train AMP on every GPU (read in the
    published wheels of 8.0.35, 8.0.44, 8.0.54, 8.0.55, 8.0.57 and 8.0.58)."""
    assert rel.amp_switch() == (_installed() >= (8, 0, 57))


def test_a_trainer_without_an_amp_option_is_estimated_with_amp(monkeypatch):
    """Before 8.0.57 (``amp_switch``) ``amp=false`` and ``amp=bf16`` are estimated as the fp16 AMP run the
    trainer trains, with a note; with the option they stay what was asked."""
    import dataclasses

    from yolomem.config.settings import EstimateConfig
    from yolomem.loops import get_loop, resolve_model

    loop, resolved = get_loop("ultralytics"), resolve_model("yolov8n.yaml")
    for switch in (True, False):
        monkeypatch.setattr(rel, "release", lambda switch=switch: dataclasses.replace(rel._probe_release(), amp_switch=switch))
        precision, note = loop.precision(EstimateConfig(model="yolov8n.yaml", amp="fp32"), resolved)
        assert (precision, note is None) == (("fp32", True) if switch else ("fp16", False))
        if not switch:
            assert "no amp option (it arrived in 8.0.57)" in note
        assert loop.precision(EstimateConfig(model="yolov8n.yaml", amp="fp16"), resolved) == ("fp16", None)


def test_trains_bf16():
    """8.4.129 added ``amp='bf16'`` (``autocast(torch.bfloat16 if self.args.amp == "bf16" ...)``); 8.4.128 and
    before read ``amp`` as a bool (read in the published wheels of 8.3.100, 8.3.200, 8.3.253, 8.4.0, 8.4.50,
    8.4.100, 8.4.125 ... 8.4.129, 8.4.150 and 8.4.190)."""
    assert rel.trains_bf16() == (_installed() >= (8, 4, 129))


def test_every_catalog_card_trains_with_the_amp_check_amp_leaves_it(monkeypatch):
    """Truth: the installed ``check_amp`` itself, told the card's device name (its download of a model for
    the output comparison made to fail as offline, which it answers with AMP on)."""
    from types import SimpleNamespace

    import torch
    import ultralytics
    from yolomem.config.gpus import CATALOG
    from yolomem.config.settings import EstimateConfig
    from yolomem.loops import resolve_model
    from yolomem.result.prepare import trained_precision

    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    rel.release()  # probed before YOLO is made to fail (the probe reads its task map)
    monkeypatch.setattr(ultralytics, "YOLO", offline)
    model = SimpleNamespace(parameters=lambda: iter([SimpleNamespace(device=torch.device("cuda", 0))]),
                            stride=torch.tensor([32.0]))  # fmt: skip
    resolved = resolve_model("yolov8n.yaml")
    refused = []
    for gpu in CATALOG.values():
        if gpu.shared_memory:
            continue  # Jetson modules: torch names them "Orin" and the like, which no list names
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None, gpu=gpu: gpu.device_name)
        config = trained_precision(EstimateConfig(model="yolov8n.yaml", gpu=gpu.name), resolved)[0]
        if rel.amp_refused_cards() is None:  # before 8.3.47: no card is refused by name (nor at all before 8.0.50)
            assert config.amp == "fp16", gpu.name
        else:
            assert (config.amp == "fp32") is (rel.check_amp_function()(model) is False), gpu.name
        refused += [gpu.name] if config.amp == "fp32" else []
    if rel.amp_refused_cards():
        assert set(refused) == {"GTX-1650", "GTX-1660", "GTX-1660-Ti", "GTX-1660-SUPER", "T1000"}
