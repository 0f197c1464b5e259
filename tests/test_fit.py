"""``yolomem fit`` / ``pick``: answers confirmed by the allocator simulation, and clear errors."""

from __future__ import annotations

import json
import math

import pytest

from yolomem.cli.main import main
from yolomem.result.estimate import estimate
from yolomem.config.gpus import CUDA_CONTEXT_UPPER_BYTES
from yolomem.sweeps.fit import Probe, _LINEAR, _search, largest_batch
from yolomem.sweeps.pick import pick_models

GiB = 1 << 30
MiB = 1 << 20
# a custom card 140 MiB larger than the upper figure's CUDA context (yolomem.config.gpus): verdicts use the
# upper figure, so yolov8n at imgsz 160 (upper: batch 2 about 127 MiB reserved, batch 8 178 MiB) fits a handful
TINY_GPU_GIB = (CUDA_CONTEXT_UPPER_BYTES + 140 * MiB) / GiB
# epochs=1: such a small card keeps 8.4's cache between epochs (it empties above half the card), so a verdict
# there would otherwise judge the whole default run (yolomem.result.fits.judged_run, tests/test_judged_run.py)
TINY = {"imgsz": 160, "iterations": 1, "epochs": 1}


def test_largest_batch_fits_and_one_more_does_not():
    result = largest_batch("yolov8n.yaml", gpu_mem=TINY_GPU_GIB, margin=0, bracket=(2, 8), **TINY)
    n = result.max_batch
    assert 2 <= n < 8
    assert result.estimate_at_max.fits is True  # the one "fits", with the search's margin
    over = estimate("yolov8n.yaml", batch=n + 1, gpu_mem=TINY_GPU_GIB, margin=0, **TINY)  # traced afresh
    assert over.fits is False
    assert len(result.probes) <= 6  # the line brackets it; only the last steps are searched
    assert result.accumulate == max(round(64 / n), 1)
    assert f"batch={n} " in result.train_command and "imgsz=160" in result.train_command
    payload = result.to_json()
    assert {"gpu", "gpu_total_bytes", "max_batch", "estimate_at_max", "train_command"} <= payload.keys()
    assert payload["estimate_at_max"]["config"]["batch"] == n


def test_margin_shrinks_the_capacity_the_simulation_gets():
    from yolomem.config.gpus import find_gpu
    from yolomem.result.fits import Budget

    card = find_gpu("RTX-3090")
    upper_context = CUDA_CONTEXT_UPPER_BYTES  # verdicts use the upper figure, with the CUDA context at the most measured
    assert Budget(card, 0.0).capacity_bytes == 24 * GiB - upper_context
    assert Budget(card, 0.25).capacity_bytes == pytest.approx(0.75 * (24 * GiB - upper_context), abs=1)


@pytest.mark.parametrize("capacity_mib", [130, 377, 1000, 5000])
def test_search_on_a_staircase_finds_the_exact_edge_with_few_probes(capacity_mib):
    """Memory rounded up to 20 MiB steps, as large-pool segments are: the answer must still be exact."""
    calls = []

    def reserved(batch: int) -> int:
        return math.ceil((70 + 7.3 * batch) / 20) * 20 * MiB

    def probe(batch: int) -> Probe:
        calls.append(batch)
        return Probe(batch, 640, reserved(batch), reserved(batch) <= capacity_mib * MiB, 0.0)

    answer, predicted, at_cap = _search(probe, _LINEAR, 2, 16, 1024, capacity_mib * MiB)
    truth = max(b for b in range(1, 1025) if reserved(b) <= capacity_mib * MiB)
    assert answer == truth and not at_cap
    assert len(set(calls)) <= 10  # two for the line, then stepping and bisecting near its answer


@pytest.mark.parametrize("capacity_mib", [377, 5000])
def test_the_search_hands_its_prediction_and_next_step_ahead_before_probing_them(capacity_mib):
    """``ahead`` (fit's ``Prober.prefetch``: the two found side by side where neither derives, as the
    yolov5 repo's whole epochs at a new batch) gets the line's prediction and the step up from it, the
    next probe when the prediction fits; on a straight line both are probed next (at 5000 MiB the step is
    22 batches, and bisecting follows)."""
    calls, told = [], []

    def reserved(batch: int) -> int:
        return (70 + 7 * batch) * MiB

    def probe(batch: int) -> Probe:
        calls.append(batch)
        return Probe(batch, 640, reserved(batch), reserved(batch) <= capacity_mib * MiB, 0.0)

    answer, predicted, _ = _search(probe, _LINEAR, 2, 16, 1024, capacity_mib * MiB, lambda units: told.append((units, len(calls))))
    assert told == [([predicted, predicted + max(1, predicted // 32)], 2)]  # after the line's two probes
    assert calls[2:4] == told[0][0] and answer == predicted


def test_a_guess_too_high_is_aimed_again_not_stepped_down_from():
    """Where memory grows faster than the two small probes say, the first guess overshoots. The search aims
    again through the guess and starts there, instead of stepping down from the guess. Each probe below
    all the earlier ones past the guess is a trace for segmentation above batch 256 (its per-image block
    cannot be derived below its smallest traced run). On this curve the search stepped down to 709, 665
    and 577 before; now it makes one such probe (641). ``fit yolov8n-seg.yaml gpu=H200``: 7 traces and
    230 s before, 4 and 100 s now, the same answer."""
    calls = []

    def reserved(batch: int) -> int:
        return int((900 + 60 * batch + 0.012 * batch * batch) * MiB)

    capacity = reserved(650) + MiB

    def probe(batch: int) -> Probe:
        calls.append(batch)
        return Probe(batch, 640, reserved(batch), reserved(batch) <= capacity, 0.0)

    answer, predicted, _ = _search(probe, _LINEAR, 4, 16, 1024, capacity)
    assert answer == 650 and predicted > 700  # the line through batches 4 and 16 overshoots
    after_guess = calls[2:]
    new_lows = [b for i, b in enumerate(after_guess[1:], 1) if b < min(after_guess[:i])]
    assert len(new_lows) == 1, calls


def test_imgsz_search_does_not_answer_a_size_the_trainer_trains_smaller():
    """Up to 8.0.103 Ultralytics trains a classifier asked for 640 at 224, so 640 "fits" where 320 does not.
    The search must not answer 640 (a user at 608 or 640 would run out of memory), nor be thrown off its line
    by the dip: 640 counts as 672, and the answer is the largest size that fits as asked."""
    from yolomem.config.settings import EstimateConfig
    from yolomem.sweeps.fit import _SQUARE, probe_as_trained

    def reserved(imgsz: int) -> int:
        return int((200 + 0.02 * imgsz * imgsz) * MiB)

    capacity = reserved(288) + MiB

    class StandIn:  # a Prober over a release with the classifier rewrite
        def probe(self, config):
            trained = 224 if config.imgsz == 640 else config.imgsz
            return Probe(config.batch, trained, reserved(trained), reserved(trained) <= capacity, 0.0)

    config = EstimateConfig(model="yolov8x-cls.yaml", batch=128)
    probe = lambda unit: probe_as_trained(StandIn(), config, unit * 32, 32)  # noqa: E731
    assert StandIn().probe(config.with_changes(imgsz=640)).fits  # the dip the search must step over
    answer, _, _ = _search(probe, _SQUARE, 10, 20, 128, capacity)
    assert answer * 32 == 288
    assert not probe(20).fits and probe(20).imgsz == 672


def test_search_reports_nothing_when_one_does_not_fit():
    probe = lambda batch: Probe(batch, 640, 10 * GiB, False, 0.0)  # noqa: E731
    assert _search(probe, _LINEAR, 2, 16, 1024, GiB)[0] is None


def test_cli_bad_gpu_name_is_one_line_with_suggestions(capsys):
    assert main(["fit", "yolov8n.yaml", "gpu=RTX-3091"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'RTX-3090'" in err


def test_a_card_no_bigger_than_the_cuda_context_is_refused(capsys):
    assert main(["fit", "yolov8n.yaml", "gpu_mem=0.3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "gpu_mem=0.3" in err and "CUDA context" in err


def test_cli_nothing_fits_is_one_line(capsys):
    # 6 MiB after the context; epochs=1: epoch 1 alone is judged (the whole run's simulation is not what this is about)
    assert main(["fit", "yolov8n.yaml", "gpu_mem=0.75", "imgsz=64", "iterations=1", "epochs=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not fit" in err and "batch 1" in err


def test_pick_ranks_by_size_with_headroom():
    result = pick_models(gpu_mem=TINY_GPU_GIB, batch=2, models=("yolov8s.yaml", "yolov8n.yaml"), margin=0, **{**TINY, "imgsz": 64})
    assert [row.model for row in result.rows] == ["yolov8n", "yolov8s"]
    small, large = result.rows
    assert small.params < large.params
    assert small.fits and not large.fits  # yolov8s: 11 M params x (weights, grads, 2 AdamW states, EMA) > 140 MiB
    assert small.headroom_bytes == result.capacity_bytes - small.peak_reserved_upper_bytes > 0 > large.headroom_bytes
    assert result.best is small


def test_line_prediction_is_the_same_whichever_point_comes_first():
    from yolomem.sweeps.fit import line_prediction

    assert line_prediction(8, 110, 4, 78, 100) == line_prediction(4, 78, 8, 110, 100) == pytest.approx(6.75)
    assert line_prediction(4, 90, 8, 90, 100) is None  # flat memory: no line to solve


# --- issue 11, items 14 and 15 ------------------------------------------------------------------------


def _fake_prober(monkeypatch, asked: list):
    """Prober.run without tracing: each model 'needs' memory in proportion to the letter of its size."""
    import types

    import yolomem.sweeps.pick as pick
    from yolomem.sweeps.fit import Probe

    def run(self, config):
        asked.append(config.model)
        size = "ntsmbclxe".index(config.model.split(".")[0].split("-")[0][-1])
        task = "segment" if "-seg" in config.model else "detect"
        estimate = types.SimpleNamespace(config=config.with_changes(model=config.model.split(".")[0]), task=task,
                                         params=size * 10**6, context_bytes=0, peak_reserved_bytes=size * GiB // 2,
                                         device_total_bytes=size * GiB // 2, notes=())  # fmt: skip
        return estimate, Probe(config.batch, config.imgsz, size * GiB, size * GiB <= self.budget.capacity_bytes, 0.0)

    monkeypatch.setattr(pick.Prober, "run", run)
    # nothing to trace ahead, side by side: the runs are faked
    monkeypatch.setattr("yolomem.sweeps.prefetch.prefetch", lambda configs, **kwargs: None)


def test_pick_ranks_a_family_it_names(monkeypatch, capsys):
    import io

    from rich.console import Console

    from yolomem.render.fit_output import render_pick

    asked = []
    _fake_prober(monkeypatch, asked)
    result = pick_models("T4", family="yolov8")
    assert asked == [f"yolov8{s}.yaml" for s in "nsmlx"] and result.family == "yolov8"
    assert result.to_json()["family"] == "yolov8"
    buffer = io.StringIO()
    render_pick(result, Console(file=buffer, width=120))
    assert "ranking the yolov8 family" in buffer.getvalue()

    asked.clear()
    default = pick_models("T4")  # no family, no models: the family of the model `yolo train` takes by default
    from ultralytics.cfg import TASK2MODEL

    family = TASK2MODEL["detect"].removesuffix("n.pt")  # yolo26n.pt in 8.4
    assert default.family == family and asked == [f"{family}{s}.yaml" for s in "nsmlx"]
    asked.clear()
    listed = pick_models("T4", models=("yolov8n.yaml", "yolo11s.yaml"))
    assert listed.family is None and asked == ["yolov8n.yaml", "yolo11s.yaml"]
    asked.clear()
    assert main(["pick", "gpu=T4", "family=yolov9", "--json"]) == 0  # a family with its own size letters
    assert json.loads(capsys.readouterr().out)["family"] == "yolov9" and asked[0] == "yolov9t.yaml"


def test_pick_names_the_tasks_it_ranks(monkeypatch):
    """``pick gpu=T4 models=yolov8n,yolov8n-seg`` said "· detect" (task='s default) over a segment model."""
    import io

    from rich.console import Console

    from yolomem.render.fit_output import render_pick

    _fake_prober(monkeypatch, [])
    listed = pick_models("T4", models=("yolov8n.yaml", "yolov8n-seg.yaml"))
    family = pick_models("T4", family="yolov8", task="detect")
    heads = []
    for result in (listed, family):
        buffer = io.StringIO()
        render_pick(result, Console(file=buffer, width=300))
        heads.append(buffer.getvalue().splitlines()[0])
    assert heads[0].endswith("imgsz 640 · detect, segment") and heads[1].endswith("imgsz 640 · detect")
    assert listed.to_json()["tasks"] == ["detect", "segment"] and listed.to_json()["task"] is None
    assert family.to_json()["tasks"] == ["detect"] and family.to_json()["task"] == "detect"


def test_pick_says_upper_and_its_json_keys_mean_what_estimates_do(capsys, monkeypatch):
    """pick showed the upper figure as "peak reserved", and its JSON put the upper figures under the keys that
    hold the expected ones in ``estimate --json``. Now: the same keys, the same meanings, and the text says upper."""
    words = ["gpu=RTX-3060-12GB", "imgsz=64", "batch=2", "iterations=1"]
    assert main(["estimate", "yolov8n.yaml", *words, "--json"]) == 0
    estimated = json.loads(capsys.readouterr().out)
    assert main(["pick", "models=yolov8n", *words, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    keys = ("peak_reserved_bytes", "peak_reserved_upper_bytes", "device_total_bytes", "device_total_upper_bytes")
    assert {key: row[key] for key in keys} == {key: estimated[key] for key in keys}
    assert row["peak_reserved_bytes"] < row["peak_reserved_upper_bytes"]  # two figures, not one twice
    assert row["headroom_bytes"] == estimated["capacity_bytes"] - row["peak_reserved_upper_bytes"]
    monkeypatch.setenv("COLUMNS", "200")  # one line per row
    assert main(["pick", "models=yolov8n", *words]) == 0
    out = capsys.readouterr().out
    assert "peak reserved (upper)" in out and "nvidia-smi (upper)" in out
    upper = f"{row['peak_reserved_upper_bytes'] / GiB:.2f} GiB"
    assert next(line for line in out.splitlines() if "yolov8n" in line and "GiB" in line).count(upper) == 1


@pytest.mark.parametrize("task_models", [{"detect": "yolov8n.pt"}, {}], ids=["TASK2MODEL says yolov8", "no TASK2MODEL"])
def test_pick_ranks_yolov8_where_the_release_predates_yolo11(task_models, monkeypatch):
    """On Ultralytics 8.1 and 8.2 there is no yolo11 (nor yolo26), and `yolo train` takes yolov8n.pt: pick's
    default was an unknown family there. Without a default model named, it falls back to yolov8 too."""
    from dataclasses import replace

    from yolomem.loops.ultralytics import release as probes
    from yolomem.sweeps import pick

    asked = []
    _fake_prober(monkeypatch, asked)
    names = {n for n in pick._model_names() if not n.startswith(("yolo11", "yolo26"))}
    monkeypatch.setattr(pick, "_model_names", lambda: names)
    installed = probes.release()
    monkeypatch.setattr(probes, "release", lambda: replace(installed, task_models=task_models))
    result = pick_models("T4")
    assert result.family == "yolov8" and asked == [f"yolov8{s}.yaml" for s in "nsmlx"]


@pytest.mark.parametrize(
    ("words", "fragment"),
    [(["family=yolov7"], "did you mean"), (["family=yolov8", "models=yolov8n"], "give one"),
     (["yolov8n.yaml"], "takes no model")],
)
def test_pick_family_errors(words, fragment, capsys):
    assert main(["pick", "gpu=T4", *words]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1


def test_the_yolo_train_line_uses_the_users_data_or_a_placeholder():
    from yolomem.config.settings import EstimateConfig
    from yolomem.sweeps.fit import DATA_PLACEHOLDER, train_command, yolo_train_command

    line = yolo_train_command(EstimateConfig(model="yolov8s.yaml"))
    assert f"data={DATA_PLACEHOLDER}" in line and "coco" not in line
    assert "data=my/data.yaml" in yolo_train_command(EstimateConfig(model="yolov8s.yaml", data="my/data.yaml"))
    # a classifier's data is a folder (train/ and val/ class folders), not a YAML
    assert "data=path/to/dataset " in train_command(EstimateConfig(model="yolov8n-cls.yaml"))
    assert " single_cls=True" in train_command(EstimateConfig(model="yolov8s.yaml", single_cls=True))
    # the run's length, which the estimate followed (epochs simulated, the mosaic's close), read back as it was
    words = yolo_train_command(EstimateConfig(model="yolov8s.yaml", epochs=2)).split()[2:]  # after "yolo train"
    assert EstimateConfig.from_words([w for w in words if not w.startswith("data=")]).epochs == 2


@pytest.mark.slow  # 7 searches of a few traces each: about 1.5 min on 2 shared cores
def test_explain_ladder_agrees_with_fit_and_keeps_the_effective_batch():
    from yolomem.config.settings import EstimateConfig
    from yolomem.sweeps.ladder import EXPANDABLE, strategy_ladder

    def accumulate(batch: int, nbs: int) -> int:  # Ultralytics' BaseTrainer: max(round(nbs / batch), 1)
        return max(round(nbs / batch), 1)

    # yolov8n at imgsz 160 on a card with ~76 MiB for the allocator after the margin: a batch of about 10
    # fits in AMP, 16 does not. freeze= and expandable segments as asked keep those two rungs out (time).
    # nbs=8 < batch: the asked effective batch (16) needs nbs raised once the batch is smaller.
    config = EstimateConfig(model="yolov8n.yaml", batch=16, nbs=8, gpu_mem=TINY_GPU_GIB, freeze=tuple(range(10)),
                            alloc_conf=EXPANDABLE, **TINY)  # fmt: skip
    ladder = strategy_ladder(config)
    steps = {step.name: step for step in ladder}
    fp32 = steps["FP32 (amp=False)"]
    assert fp32.max_batch == largest_batch(config.with_changes(amp="fp32")).max_batch  # what `fit amp=false` says
    for step in ladder:  # "fits" at the asked batch and "largest batch" never contradict each other
        asked = step.changes.get("batch", config.batch)
        assert step.fits == (step.max_batch is not None and step.max_batch >= asked), step.name
        # its whole estimate, made when first asked, is of the config its verdict judged
        assert step.estimate.peak_reserved_upper_bytes == step.peak_reserved_bytes, step.name
    smaller = steps["smaller batch + accumulation"]
    batch, nbs = smaller.changes["batch"], smaller.changes.get("nbs", config.nbs)
    assert batch < config.batch and smaller.fits and smaller.max_batch == batch
    assert batch * accumulate(batch, nbs) == config.batch * accumulate(config.batch, config.nbs) == 16
    assert f"batch={batch} " in smaller.how and f"nbs={nbs}" in smaller.how


def test_the_ladders_searches_shared_with_a_worker_answer_as_this_process_alone(monkeypatch):
    """``fit --explain`` runs its rungs' searches side by side with the command's warm worker. Without
    the disk cache the worker has only the runs this process hands it: its answer must be this one's."""
    from yolomem import workers
    from yolomem.config.settings import EstimateConfig
    from yolomem.result import runs
    from yolomem.sweeps import ladder
    from yolomem.sweeps.fit import Prober, make_budget

    monkeypatch.setattr(workers, "default_jobs", lambda: 2)
    # the worker's answer is what is checked: this process would otherwise take its search back while the
    # worker still imports (yolomem.workers.side_by_side)
    monkeypatch.setattr(workers._Claims, "take_back", lambda self, slot: False)
    saved = runs._SOURCE
    runs.configure(cache=False)
    try:
        config = EstimateConfig(model="yolov8n.yaml", batch=16, gpu_mem=TINY_GPU_GIB, margin=0, **TINY)
        rungs = [ladder._Rung("as asked", {}, ""), ladder._Rung("FP32", {"amp": "fp32"}, "")]
        prober = Prober(make_budget(config))
        alone = {config.with_changes(**r.changes): ladder._largest(prober, config.with_changes(**r.changes)) for r in rungs}
        with workers.warm_workers():
            shared = ladder._searched_side_by_side(config, rungs, Prober(make_budget(config)))
    finally:
        runs._SOURCE = saved
    assert shared == alone and all(answer[0] for answer in alone.values())  # the worker's answer came back too


@pytest.mark.parametrize("amp, written", [("fp16", None), ("fp32", False), ("bf16", "bf16")])
def test_the_train_line_sets_amp_as_ultralytics_reads_it(amp, written):
    """From 8.4.129 Ultralytics takes ``amp=bf16``; before, ``amp`` is a bool (``torch.tensor(self.args.amp)``
    stops on a string), so a bf16 config gets no ``amp=`` and a note instead."""
    from ultralytics.cfg import parse_key_value_pair

    from yolomem.config.settings import EstimateConfig
    from yolomem.loops.ultralytics.release import release
    from yolomem.sweeps.fit import yolo_train_command

    if amp == "bf16" and not release().trains_bf16:
        written = None

    line = yolo_train_command(EstimateConfig.from_mapping({"model": "yolov8n.yaml", "amp": amp}))
    command, _, note = line.partition("#")
    overrides = dict(parse_key_value_pair(word) for word in command.split()[2:])
    assert overrides.get("amp") == written and type(overrides.get("amp")) is type(written)
    assert ("no switch" in note) == (amp == "bf16" and not release().trains_bf16)


@pytest.mark.parametrize("changes", [{}, {"amp": False}, {"epochs": 2}], ids=["amp", "fp32-allowance", "epochs"])
def test_a_probes_verdict_is_the_whole_estimates(changes):
    """Searches judge their probes by the upper figure alone (``Prober.probe``, no breakdown or other
    replays): its peak and verdict must be the full estimate's, also where an allowance or the epoch
    simulation sets the upper figure."""
    from yolomem.config.settings import EstimateConfig
    from yolomem.result.estimate import estimate_config
    from yolomem.sweeps.fit import Prober, make_budget

    config = EstimateConfig.from_mapping({"model": "yolov8n.yaml", "batch": 4, "gpu_mem": 0.9, "margin": 0, **TINY, **changes})
    prober = Prober(make_budget(config))
    probe = prober.probe(config)
    whole = estimate_config(config)
    assert probe.peak_reserved_bytes == whole.peak_reserved_upper_bytes
    assert probe.fits is whole.fits
    assert probe.imgsz == whole.config.imgsz == 160
    assert prober.run(config)[1] is probe  # the estimate of a probed config keeps its probe


@pytest.mark.parametrize("changes", [
    {},
    {"optimizer": "AdamW", "freeze": tuple(range(10))},
    {"world_size": 2, "batch": 32, "freeze": (0, 2, 5), "alloc_conf": "expandable_segments:True"},
    {"amp": "fp32", "nbs": 32},
], ids=["default", "adamw-freeze10", "ddp-freeze-list-allocator", "fp32-nbs"])  # fmt: skip
def test_the_yolov5_repo_line_is_what_its_train_py_reads(changes, monkeypatch):
    """A model the yolov5 repo's loop trains gets ``python train.py`` (not ``yolo train``), and the
    repo's own argument parser (``yolov5.train.parse_opt``, outside truth) reads back the config."""
    import shlex

    from yolov5_reference import repo_parse_opt

    from yolomem.config.settings import EstimateConfig
    from yolomem.sweeps.fit import train_command

    config = EstimateConfig.from_mapping({"model": "yolov5s", "batch": 16, "imgsz": 512, **changes})
    line = train_command(config)
    command, _, note = line.partition("  #")
    words = shlex.split(command)
    if config.alloc_conf:
        assert words.pop(0) == f"PYTORCH_CUDA_ALLOC_CONF={config.alloc_conf}"
    assert words[0] == "python"
    if config.world_size > 1:
        assert words[1:5] == ["-m", "torch.distributed.run", "--nproc_per_node", "2"]
        words = words[4:]
    assert words[1] == "train.py"
    opt = repo_parse_opt("train.py", words[2:], monkeypatch)
    assert (opt.cfg, opt.weights, opt.batch_size, opt.imgsz) == ("yolov5s.yaml", "", config.batch, 512)
    assert opt.optimizer == (config.optimizer if config.optimizer != "auto" else "SGD")
    frozen = opt.freeze if len(opt.freeze) > 1 else list(range(opt.freeze[0]))  # train.py's own rule
    assert tuple(frozen) == config.freeze
    assert opt.device == ("0,1" if config.world_size == 2 else "")
    assert ("no switch" in note) == (config.amp != "fp16") and ("nbs" in note) == (config.nbs != 64)


@pytest.mark.parametrize(("model", "script"), [("yolov5s-seg", "segment/train.py"), ("yolov5s-cls", "classify/train.py")])
def test_the_yolov5_repo_line_runs_the_tasks_own_script(model, script, monkeypatch):
    """Segmentation and classification train through the repo's segment/ and classify/ scripts; their own
    argument parsers (outside truth) read the line back. classify/train.py takes --model, not --cfg."""
    import shlex

    from yolov5_reference import repo_parse_opt

    from yolomem.config.settings import EstimateConfig
    from yolomem.sweeps.fit import train_command

    config = EstimateConfig.from_mapping({"model": model, "batch": 8, "imgsz": 320, "optimizer": "AdamW",
                                          "single_cls": True})  # fmt: skip
    words = shlex.split(train_command(config).partition("  #")[0])
    assert words[:2] == ["python", script]
    opt = repo_parse_opt(script, words[2:], monkeypatch)
    assert (opt.batch_size, opt.imgsz, opt.optimizer) == (8, 320, "AdamW")
    if script.startswith("classify"):
        assert opt.model == "yolov5s-cls.pt" and opt.data == "path/to/dataset"  # a folder of class folders
    else:
        assert (opt.cfg, opt.weights, opt.single_cls, opt.data) == ("yolov5s-seg.yaml", "", True, "path/to/data.yaml")


@pytest.mark.parametrize(("model", "cfg", "darknet"), [("yolov5s", "yolov5s.yaml", False), ("yolov4", "yolov4.cfg", True),
                                                       ("yolov3-tiny", "yolov3-tiny.cfg", True)])  # fmt: skip
def test_darknet_designs_get_their_cfg_file_and_say_who_reads_it(model, cfg, darknet):
    """YOLOv3/v4 are built from darknet .cfg files, which the yolov5 repo's train.py cannot read: the
    line names the .cfg and a note says so; the calculator page writes the same --cfg."""
    from yolomem.config.settings import EstimateConfig
    from yolomem.loops import resolve_model
    from yolomem.sweeps.fit import train_command
    from yolomem.sweeps.site_data import train_command as page_command

    config = EstimateConfig.from_mapping({"model": model, "framework": "yolov5"})  # yolov3-tiny alone: Ultralytics' own
    line = train_command(config)
    assert f"--cfg {cfg} " in line and f"--cfg {cfg} " in page_command(config, resolve_model(model, config.framework))
    assert ("reads YAMLs only" in line) == darknet


def test_pick_writes_the_command_of_the_loop_that_trains_its_answer():
    """pick's "largest that fits" line is fit's: the yolov5 repo's train.py for an original design (``yolo
    train model=yolov5n.yaml`` would train Ultralytics' anchor-free YOLOv5nu), and optimizer=auto stays
    auto, not what it resolved to."""
    settings = dict(gpu_mem=8, imgsz=64, batch=2, margin=0, iterations=1)
    original = pick_models(models=("yolov5n",), **settings)
    assert original.train_command.startswith("python train.py --cfg yolov5n.yaml ")
    assert "--optimizer" not in original.train_command
    ultralytics = pick_models(models=("yolov8n",), **settings)
    assert ultralytics.train_command.startswith("yolo train model=yolov8n.yaml ") and "optimizer=" not in ultralytics.train_command
    assert ultralytics.to_json()["train_command"] == ultralytics.train_command


def test_bf16_traces_fp16s_stream_but_gradscalers_scalars():
    """Why ``fit --explain`` has one AMP rung (``ladder.precision_rungs``): bf16 and fp16 autocast make the
    same allocations, event for event, except the GradScaler's scale, growth tracker and found-inf scalars
    (4 or 8 bytes each), which only fp16 has."""
    from yolomem.config.settings import EstimateConfig
    from yolomem.loops import resolve_model, trace_run

    streams = {}
    for amp in ("fp16", "bf16"):
        config = EstimateConfig(model="yolov8n.yaml", imgsz=64, batch=2, amp=amp)
        streams[amp] = [(e.op, e.nbytes, e.category, e.phase) for e in trace_run(config, resolve_model(config.model)).trace.events]
    fp16, bf16 = streams["fp16"], streams["bf16"]
    scalars = lambda events: [e for e in events if e[1] > 8]  # noqa: E731
    assert scalars(fp16) == scalars(bf16)
    assert len(fp16) > len(bf16) > 1000  # fp16 has the scaler's scalars on top


def _real_build(resolved):
    """The model built for real on the CPU, its stride forward pass computed (what each trainer reads)."""
    from yolomem.loops.ultralytics.step import build_model
    from yolomem.loops.yolov5.runner import build_original, original_of

    if resolved.framework == "yolov5":
        return build_original(original_of(resolved), resolved.nc)
    return build_model(resolved.cfg, resolved.task, resolved.nc)


@pytest.mark.parametrize("model, framework, stride", [
    ("yolov8n.yaml", "ultralytics", 32), ("yolov8n-p6.yaml", "ultralytics", 64),
    ("yolov5n", "yolov5", 32), ("yolov5n6", "yolov5", 64), ("yolov4-tiny", "yolov5", 32),
])  # fmt: skip
def test_the_model_stride_is_the_trainers_own_and_is_built_once_per_cache(model, framework, stride, tmp_path, monkeypatch):
    """``fit`` by imgsz and ``--explain`` round sizes to the model's stride. It is found on a fake build (no
    weights, no computed forward pass) and must equal what a real CPU build computes (the yolov5 loop's
    meta-device build once failed on ``stride.max()``); a second process (the memo cleared) reads it back
    from the cache without building anything."""
    from yolomem.config.settings import EstimateConfig
    from yolomem.loops import get_loop, resolve_model
    from yolomem.loops.base import max_stride
    from yolomem.result import runs
    from yolomem.sweeps import fit
    from yolomem.trace import store

    resolved = resolve_model(model, framework)
    assert max_stride(_real_build(resolved)) == stride
    monkeypatch.setattr(runs, "_SOURCE", runs._SOURCE)  # both put back after the test
    monkeypatch.setattr(store, "_ACTIVE", store._ACTIVE)
    runs.configure(cache=True, root=tmp_path)
    monkeypatch.setattr(fit, "_STRIDES", {})
    config = EstimateConfig(model=model, framework=framework)
    assert fit.model_stride(config) == stride
    monkeypatch.setattr(fit, "_STRIDES", {})
    monkeypatch.setattr(type(get_loop(framework)), "stride", lambda *_: pytest.fail("built again"))
    assert fit.model_stride(config) == stride
    runs.configure(cache=False)  # --no-cache: neither read nor written, so built
    monkeypatch.setattr(fit, "_STRIDES", {})
    with pytest.raises(pytest.fail.Exception, match="built again"):
        fit.model_stride(config)


def test_a_verdict_asked_again_is_read_back_from_the_cache_as_it_was_found(tmp_path, monkeypatch):
    """A sweep asked again (``fit --explain`` after ``fit``) reads each verdict's figures back instead of
    deriving and replaying its run; they are the figures of the estimate. Without the cache, or with a
    dataset (whose labels the key does not hold), each is found afresh."""
    from yolomem.config.settings import EstimateConfig
    from yolomem.result import estimate as estimate_module
    from yolomem.result import runs
    from yolomem.sweeps import fit
    from yolomem.trace import store

    monkeypatch.setattr(runs, "_SOURCE", runs._SOURCE)  # both put back after the test
    monkeypatch.setattr(store, "_ACTIVE", store._ACTIVE)
    runs.configure(cache=True, root=tmp_path)
    config = EstimateConfig(model="yolov8n.yaml", batch=2, **TINY)
    whole = estimate(config)
    assert fit.verdict_figures(config) == (whole.config.imgsz, whole.peak_reserved_upper_bytes)

    def not_again(_config):
        raise AssertionError("estimated again")

    monkeypatch.setattr(fit, "estimate_figures", not_again)
    estimate_module.forget_recent_figures()
    assert fit.verdict_figures(config) == (whole.config.imgsz, whole.peak_reserved_upper_bytes)
    prober = fit.Prober(fit.make_budget(config.with_changes(gpu_mem=TINY_GPU_GIB)))
    assert prober.probe(config).peak_reserved_bytes == whole.peak_reserved_upper_bytes
    with pytest.raises(AssertionError, match="estimated again"):
        fit.verdict_figures(config.with_changes(data=str(tmp_path / "data.yaml")))
    runs.configure(cache=False)
    with pytest.raises(AssertionError, match="estimated again"):
        fit.verdict_figures(config)


def test_pick_says_what_every_candidate_was_estimated_with():
    """On a card Ultralytics turns AMP off on (check_amp, 8.3.47+) every candidate is its FP32 run: pick says so
    once, as it says optimizer=auto's choice."""
    from yolomem.loops.ultralytics.release import release

    result = pick_models("GTX-1650", 64, 2, models=("yolov8n.yaml", "yolov8s.yaml"), iterations=1)
    refused = release().amp_refused_cards is not None
    assert any("check_amp turns AMP off on GTX-1650" in note for note in result.notes) is refused
    assert all(row.estimate.config.amp == ("fp32" if refused else "fp16") for row in result.rows)
    assert any(note.startswith("optimizer=auto") for note in result.to_json()["notes"])
