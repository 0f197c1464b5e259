"""The measure runner without a GPU: the no-CUDA error, the command, the record, and the real
Ultralytics callback wiring driven on the CPU with a fake memory source."""

from __future__ import annotations

import json

import pytest

from yolomem.cli.main import main
from yolomem.config.settings import EstimateConfig
from yolomem.errors import UserError
from yolomem.measure.log import read_records
from yolomem.measure.run import (
    DEFAULT_ITERATIONS, Environment, LaunchResult, MeasurementRecord, MeasureSettings, measure, parse_measure_words,
    rank_output_path, worker_command, worker_environment,
)  # fmt: skip
from yolomem.measure.worker import Reading, offline_ultralytics, run_rank, train_arguments

GiB = 1 << 30


def test_measure_without_cuda_prints_one_line_and_exits_2(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["measure", "yolov8n.yaml"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "CUDA" in lines[0] and lines[0].startswith("yolomem: error:")
    assert captured.out == ""


@pytest.mark.parametrize("words, error", [
    (["yolov8nn.yaml"], "unknown model 'yolov8nn.yaml' in the installed ultralytics"),
    (["yolov8n.yaml", "batch=0"], "batch=0 must be a positive whole number"),
    (["yolov8n.yaml", "timeout=-1"], "timeout=-1 must be > 0"),
    (["yolov8n.yaml", "augment=exakt"], "did you mean 'exact'"),
    (["yolov8n.yaml", "bacth=8"], "did you mean 'batch'"),
    # Ultralytics' trainer would build its own yolov5s (yolov5su's head), not the repo's model estimated
    (["yolov5s.yaml"], "'yolov5s.yaml' is trained by the yolov5 loop (Ultralytics' own build of it is yolov5su.yaml"),
])  # fmt: skip
def test_measure_checks_its_words_before_cuda(monkeypatch, capsys, words, error):
    """Without CUDA, bad words get the error estimate gives for them, not only "needs a CUDA GPU"."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["measure", *words]) == 2
    err = capsys.readouterr().err
    assert err.startswith("yolomem: error:") and err.count("\n") == 1 and error in err and "CUDA" not in err


def test_measure_api_without_cuda_raises_before_launching(tmp_path):
    launched = []
    settings = MeasureSettings(EstimateConfig())
    with pytest.raises(UserError, match="torch.cuda.is_available"):
        measure(settings, tmp_path / "r.jsonl", launch=lambda *a: launched.append(a), device_count=lambda: 0)
    with pytest.raises(UserError, match="world_size=2 needs 2 GPUs"):
        measure(MeasureSettings(EstimateConfig(world_size=2)), tmp_path / "r.jsonl", launch=lambda *a: launched.append(a),
                device_count=lambda: 1)  # fmt: skip
    with pytest.raises(UserError, match="unknown model 'yolov8nn.yaml'"):  # the model before CUDA
        measure(MeasureSettings(EstimateConfig(model="yolov8nn.yaml")), tmp_path / "r.jsonl",
                launch=lambda *a: launched.append(a), device_count=lambda: 0)  # fmt: skip
    assert launched == [] and not (tmp_path / "r.jsonl").exists()


def test_measure_refuses_bf16_where_the_trainer_has_none(tmp_path, monkeypatch):
    """Before 8.4.129 ``yolo train amp=bf16`` stops (``torch.tensor('bf16')``; ``release.trains_bf16``): measure
    says so before CUDA, and the installed release's own answer decides (8.4.190 takes it)."""
    import dataclasses

    from yolomem.loops.ultralytics import release as release_module

    installed = release_module.release()
    bf16 = MeasureSettings(EstimateConfig(amp="bf16"))
    with pytest.raises(UserError, match="torch.cuda.is_available" if installed.trains_bf16 else "has no bf16"):
        measure(bf16, tmp_path / "r.jsonl", launch=lambda *a: None, device_count=lambda: 0)
    monkeypatch.setattr(release_module, "release", lambda: dataclasses.replace(installed, trains_bf16=False))
    with pytest.raises(UserError, match=f"ultralytics {installed.version}'s trainer has no bf16"):
        measure(bf16, tmp_path / "r.jsonl", launch=lambda *a: None, device_count=lambda: 1)
    with pytest.raises(UserError, match="torch.cuda.is_available"):  # fp16 goes on to the CUDA check
        measure(MeasureSettings(EstimateConfig()), tmp_path / "r.jsonl", launch=lambda *a: None, device_count=lambda: 0)
    assert not (tmp_path / "r.jsonl").exists()


def test_parse_measure_words_splits_own_keys_from_the_estimator_config(tmp_path):
    settings, results = parse_measure_words(["yolov8s.yaml", "batch=32", f"results={tmp_path}/m.jsonl", "augment=ultralytics"])
    assert results == tmp_path / "m.jsonl"
    assert settings.config.model == "yolov8s.yaml" and settings.config.batch == 32
    assert settings.augment == "ultralytics" and settings.iterations == DEFAULT_ITERATIONS
    given, _ = parse_measure_words(["yolov8n.yaml", "iterations=3"])
    assert given.iterations == 3 and given.worker_request()["iterations"] == 3
    with pytest.raises(UserError, match="did you mean 'exact'"):
        parse_measure_words(["yolov8n.yaml", "augment=exakt"])


def test_worker_command_single_process_and_ddp(tmp_path):
    single = worker_command(tmp_path / "req.json", tmp_path / "out", 1, python="py")
    assert single == ["py", "-m", "yolomem.measure.worker", "--request", str(tmp_path / "req.json"), "--out", str(tmp_path / "out")]
    ddp = worker_command(tmp_path / "req.json", tmp_path / "out", 4, python="py")
    assert ddp[:3] == ["py", "-m", "torch.distributed.run"] and "--nproc_per_node=4" in ddp
    assert ddp[-6:] == single[1:]


def test_train_arguments_carry_the_augmentation_the_estimate_assumed():
    """Every augmentation key the density model reads is one of Ultralytics' train arguments; the run
    trains with the config's values, or with all of them off under ``augment="exact"``."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    config = EstimateConfig(model="yolov8n.yaml", mosaic=0.5, close_mosaic=3, scale=0.9, translate=0.2)
    keys = ("mosaic", "close_mosaic", "scale", "translate")
    given = train_arguments(config, "d.yaml", "ultralytics", "0", "runs")
    assert {k: given[k] for k in keys} == {"mosaic": 0.5, "close_mosaic": 3, "scale": 0.9, "translate": 0.2}
    assert set(keys) <= set(DEFAULT_CFG_DICT)
    exact = train_arguments(config, "d.yaml", "exact", "0", "runs")
    assert (exact["mosaic"], exact["scale"], exact["translate"]) == (0.0, 0.0, 0.0)


def test_train_arguments_are_the_ones_the_release_has(monkeypatch):
    """A key the installed default.yaml lacks stops ``yolo train`` (``check_cfg_mismatch``): before 8.0.57
    there is no ``amp``, and the run is started without it. Truth: the installed release's own check
    (``check_dict_alignment``, ``check_cfg_mismatch`` in older releases)."""
    import ultralytics.cfg as cfg

    check = getattr(cfg, "check_dict_alignment", None) or cfg.check_cfg_mismatch
    config = EstimateConfig(model="yolov8n.yaml")
    check(cfg.DEFAULT_CFG_DICT, train_arguments(config, "d.yaml", "exact", "0", "runs"))
    without_amp = {k: v for k, v in cfg.DEFAULT_CFG_DICT.items() if k != "amp"}
    monkeypatch.setattr(cfg, "DEFAULT_CFG_DICT", without_amp)
    arguments = train_arguments(config, "d.yaml", "exact", "0", "runs")
    assert "amp" not in arguments and arguments["batch"] == config.batch
    check(without_amp, arguments)  # raises SyntaxError on a key it does not know
    with pytest.raises(SyntaxError):
        check(without_amp, {**arguments, "amp": True})


def test_worker_environment_is_offline_and_sets_only_the_asked_allocator_config():
    env = worker_environment(EstimateConfig(alloc_conf="expandable_segments:True"), base={"PATH": "/bin"})
    assert env == {"PATH": "/bin", "YOLO_OFFLINE": "1", "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    inherited = worker_environment(EstimateConfig(), base={"PYTORCH_CUDA_ALLOC_CONF": "garbage_collection_threshold:0.6"})
    assert "PYTORCH_CUDA_ALLOC_CONF" not in inherited  # the record's config is the whole truth


def _rank_json(rank: int, status: str = "ok", batch_used: int = 16) -> dict:
    phase = lambda alloc, res, end, proc: {  # noqa: E731
        "max_allocated_bytes": alloc, "max_reserved_bytes": res, "reserved_end_bytes": end,
        "nvml_used_bytes": proc + 1 * GiB, "nvml_process_bytes": proc,
    }  # fmt: skip
    return {
        "rank": rank, "status": status, "error": None if status == "ok" else "OutOfMemoryError: CUDA out of memory",
        "phases": {"setup": phase(1, 2 * GiB, 2 * GiB, 3 * GiB), "train": phase(3 * GiB, 4 * GiB, 4 * GiB, 5 * GiB),
                   "epoch_end": phase(1, 4 * GiB, 4 * GiB, 5 * GiB), "val": phase(2 * GiB, 6 * GiB, 6 * GiB, 7 * GiB)},
        "reserved_per_iteration": [3 * GiB, 4 * GiB], "nvml_used_before_bytes": GiB, "batch_used": batch_used,
        "environment": {"gpu_name": "NVIDIA H200", "torch": "2.14.1"}, "notes": [],
    }  # fmt: skip


def _fake_launch(ranks: list[dict], returncode: int = 0, stderr: str = ""):
    calls = []

    def launch(command, env, timeout):
        calls.append((command, env, timeout))
        prefix = command[command.index("--out") + 1]
        request = json.loads(open(command[command.index("--request") + 1]).read())
        assert request["config"]["model"] == "yolov8n.yaml" and request["schema_version"] == 1
        from pathlib import Path

        for data in ranks:
            rank_output_path(Path(prefix), data["rank"]).write_text(json.dumps(data))
        return LaunchResult(returncode, "", stderr)

    return launch, calls


def test_measure_appends_one_record_with_the_train_phase_figures(tmp_path):
    results = tmp_path / "results.jsonl"
    launch, calls = _fake_launch([_rank_json(0)])
    record = measure(MeasureSettings(EstimateConfig(batch=16)), results, launch=launch, device_count=lambda: 1)
    assert len(calls) == 1 and calls[0][1]["YOLO_OFFLINE"] == "1"
    assert record.status == "ok" and record.environment.gpu_name == "NVIDIA H200"
    assert record.measured == {
        "peak_reserved_bytes": 4 * GiB,
        "peak_allocated_bytes": 3 * GiB,
        "steady_reserved_bytes": 6 * GiB,  # max over train, epoch_end and val
        "context_bytes": 1 * GiB,  # NVML process (5 GiB) - reserved at the train phase end (4 GiB)
    }
    record2 = measure(MeasureSettings(EstimateConfig(batch=16)), results, launch=launch, device_count=lambda: 1)
    lines = read_records(results).records
    assert len(lines) == 2 and lines[0]["measured"] == record.measured  # appended, not rewritten
    assert MeasurementRecord.from_json(lines[1]) == record2  # the JSON round trip is lossless


def test_measure_records_failures_instead_of_losing_them(tmp_path):
    results = tmp_path / "results.jsonl"
    crashed, _ = _fake_launch([], returncode=1, stderr="Traceback ...\nImportError: no module named foo\n")
    record = measure(MeasureSettings(EstimateConfig()), results, launch=crashed, device_count=lambda: 1)
    assert record.status == "error" and "ImportError: no module named foo" in record.error and record.measured == {}
    oom, _ = _fake_launch([_rank_json(0, status="oom")], returncode=1)
    record = measure(MeasureSettings(EstimateConfig()), results, launch=oom, device_count=lambda: 1)
    assert record.status == "oom" and "out of memory" in record.error
    halved, _ = _fake_launch([_rank_json(0, batch_used=8)])
    record = measure(MeasureSettings(EstimateConfig(batch=16)), results, launch=halved, device_count=lambda: 1)
    assert any("halved the batch to 8" in note for note in record.notes)
    assert [r["status"] for r in read_records(results).records] == ["error", "oom", "ok"]


def test_ddp_records_every_rank_and_fails_when_one_is_missing(tmp_path):
    config = EstimateConfig(batch=32, world_size=2)
    launch, calls = _fake_launch([_rank_json(0), _rank_json(1)])
    record = measure(MeasureSettings(config), tmp_path / "r.jsonl", launch=launch, device_count=lambda: 2)
    assert "torch.distributed.run" in calls[0][0] and [r.rank for r in record.ranks] == [0, 1]
    assert record.status == "ok"
    missing, _ = _fake_launch([_rank_json(0)])
    record = measure(MeasureSettings(config), tmp_path / "r.jsonl", launch=missing, device_count=lambda: 2)
    assert record.status == "error" and "1 of 2 ranks wrote no result" in record.error


class FakeMemory:
    """Counters that grow with every read, so each phase gets distinct, ordered figures."""

    def __init__(self, index: int = 0):
        self.reads = 0
        self.resets = 0

    def reset_peaks(self):
        self.resets += 1

    def reserved(self) -> int:
        return 1000 + self.reads

    def nvml_used(self):
        return 500

    def read(self) -> Reading:
        self.reads += 1
        return Reading(10 * self.reads, 20 * self.reads, 30 * self.reads, 600 + self.reads, None)

    def environment(self) -> Environment:
        return Environment(gpu_name="fake")


def test_worker_drives_real_ultralytics_training_through_every_phase_on_cpu(tmp_path):
    """Real YOLO.train on the CPU (tiny), with the fake counters: the callbacks mark each phase once, in order."""
    import ultralytics.engine.trainer as trainer_module

    original_check_amp = trainer_module.check_amp
    settings = MeasureSettings(EstimateConfig(model="yolov8n.yaml", imgsz=64, batch=2, amp="fp32", iterations=2),
                               iterations_given=True)  # fmt: skip
    result = run_rank(settings.worker_request(), 0, tmp_path, FakeMemory, device="cpu")
    assert result.status == "ok", result.error
    assert list(result.phases) == ["setup", "train", "epoch_end", "val", "save", "final_val", "teardown"]
    assert len(result.reserved_per_iteration) == 2  # iterations = dataset size / batch
    assert result.batch_used == 2 and result.environment.gpu_name == "fake"
    assert [p.max_reserved_bytes for p in result.phases.values()] == [20 * (i + 1) for i in range(7)]
    assert trainer_module.check_amp is original_check_amp  # the offline patch was undone
    labels = list((tmp_path / "rank0" / "data" / "labels" / "train").glob("*.txt"))
    assert len(labels) == 4  # iterations x batch images


def test_worker_fwd_bwd_runs_the_autobatch_probe_on_cpu(tmp_path):
    config = EstimateConfig(model="yolov8n.yaml", imgsz=64, batch=2, step="fwd_bwd")
    result = run_rank(MeasureSettings(config).worker_request(), 0, tmp_path, FakeMemory, device="cpu")
    assert result.status == "ok", result.error
    assert list(result.phases) == ["setup", "fwd_bwd"] and len(result.reserved_per_iteration) == 1
    assert any("AutoBatch probe" in note for note in result.notes)


def test_worker_turns_a_bad_run_into_an_error_result(tmp_path):
    request = MeasureSettings(EstimateConfig(model="yolov8n.yaml", imgsz=64, batch=2, data=str(tmp_path / "no.yaml"))).worker_request()
    result = run_rank(request, 0, tmp_path, FakeMemory, device="cpu")
    assert result.status == "error" and result.error


def test_offline_patch_restores_on_error():
    import ultralytics.data.utils as data_utils

    before = data_utils.check_font
    with pytest.raises(RuntimeError), offline_ultralytics():
        assert data_utils.check_font() is None
        raise RuntimeError
    assert data_utils.check_font is before


def test_offline_check_amp_keeps_the_releases_card_check(monkeypatch):
    """measure's check_amp is the release's own with the download answered as offline: AMP stays on (as
    Ultralytics keeps it offline) except on the cards it turns AMP off on by name (8.3.47+)."""
    from types import SimpleNamespace

    import torch
    import ultralytics
    import ultralytics.engine.trainer as trainer_module

    from yolomem.loops.ultralytics.release import release

    model = SimpleNamespace(parameters=lambda: iter([SimpleNamespace(device=torch.device("cuda", 0))]),
                            stride=torch.tensor([32.0]))  # fmt: skip
    before = ultralytics.YOLO
    with offline_ultralytics():
        for name, on in (("NVIDIA GeForce GTX 1650", release().amp_refused_cards is None), ("Tesla T4", True)):
            monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None, name=name: name)
            assert trainer_module.check_amp(model) is on, name
    assert ultralytics.YOLO is before
