"""batch=-1 or a fraction: the installed Ultralytics' own AutoBatch, run on a simulated card
(yolomem.loops.ultralytics.autobatch), and the run estimated at the batch it picks."""

from __future__ import annotations

import inspect
import json

import pytest
import torch

from yolomem.cli.main import main
from yolomem.config.gpus import find_gpu
from yolomem.config.settings import EstimateConfig
from yolomem.errors import UserError
from yolomem.loops import resolve_model
from yolomem.loops.autobatch_card import SimulatedCard
from yolomem.loops.ultralytics.autobatch import pick_batch


def _pick(imgsz: int, gpu: str = "GTX-1650", requested: float = -1, densest: int = 10, images: int | None = None):
    config = EstimateConfig(model="yolov8n.yaml", imgsz=imgsz)
    return pick_batch(config, resolve_model(config.model), find_gpu(gpu), requested, densest, images)


def test_the_run_is_estimated_at_the_batch_the_release_picks(capsys):
    assert main(["estimate", "yolov8n.yaml", "imgsz=320", "batch=-1", "gpu=GTX-1650", "iterations=1", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    picked = payload["autobatch"]
    assert payload["config"]["batch"] == picked["batch"] > 16  # a 4 GiB card holds more than 16 yolov8n images at 320
    # the release's own account of its pick: its log line, with the batch it returned
    assert any(f"Using batch-size {picked['batch']} " in line for line in picked["log"])
    readings = [reading for _, reading in picked["probes"]]
    assert [batch for batch, _ in picked["probes"]] == [1, 2, 4, 8, 16]  # a card under 16 GiB
    assert all(a < b for a, b in zip(readings, readings[1:]))
    assert any(note.startswith("batch=-1: AutoBatch") for note in payload["notes"])
    assert "autobatch" not in payload["config"]  # the config estimated is the picked batch's


def test_fit_shows_autobatchs_pick_beside_the_largest_batch_that_fits(capsys):
    assert main(["fit", "yolov8n.yaml", "imgsz=320", "batch=-1", "gpu=GTX-1650", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    at = payload["autobatch"]
    assert at["config"]["batch"] == at["autobatch"]["batch"]
    # one card, one margin: the verdict on AutoBatch's pick agrees with the largest batch that fits
    assert at["capacity_bytes"] == payload["capacity_bytes"]
    assert at["fits"] == (at["config"]["batch"] <= payload["max_batch"])


def test_a_fraction_of_the_card_goes_through_the_release():
    if "batch" not in inspect.signature(__import__("ultralytics.utils.autobatch", fromlist=["x"]).check_train_batch_size).parameters:
        pytest.skip("this release takes AutoBatch as batch=-1 only")
    picks = [_pick(320, requested=fraction).batch for fraction in (0.3, -1, 0.9)]
    assert picks[0] < picks[1] < picks[2]  # -1 is the release's default share (0.6)


def test_a_probe_past_the_card_fails_and_autobatch_stays_below_it():
    pick = _pick(1280)  # yolov8n at 1280 on 4 GiB: batch 8 runs out
    failed = [probe.batch for probe in pick.probes if probe.reading is None]
    assert failed and failed[0] <= 8
    assert 1 <= pick.batch < failed[0]
    assert any("out of memory" in line for line in pick.log)


def test_no_probe_fitting_is_the_releases_answer():
    from ultralytics.utils import autobatch

    if "no usable batch size" in inspect.getsource(autobatch):  # 8.4.190: the trainer stops
        with pytest.raises(UserError, match="AutoBatch stops the run"):
            _pick(4096)
    else:  # before: its default batch, with a warning
        pick = _pick(4096)
        assert pick.batch == 16 and any("using default batch-size 16" in line for line in pick.log)


def test_the_labels_give_the_objects_and_the_images(tmp_path):
    from test_dataset import make_dataset

    data = make_dataset(tmp_path, [(64, 64, 7), (64, 64, 2), (64, 64, 1), (64, 64, 0), (64, 64, 3)], [(64, 64, 1)])
    data.write_text(data.read_text().replace("names:\n  0: a\n", "names: [" + ", ".join("abcdefgh") + "]\n"))  # its classes 0-6
    config = EstimateConfig.from_words(["yolov8n.yaml", "imgsz=320", "batch=-1", "gpu=GTX-1650", f"data={data}"])
    from yolomem.result.prepare import prepare

    prepared = prepare(config)
    pick = prepared.autobatch
    from ultralytics.utils import autobatch

    parameters = inspect.signature(autobatch.autobatch).parameters
    if "max_num_obj" in parameters:  # DetectionTrainer.auto_batch: the densest image's objects x 4 (mosaic)
        assert pick.max_num_obj == 7 * 4
    if "dataset_size" in parameters:  # no probe and no pick beyond the training images
        assert pick.batch <= 5 and all(probe.batch <= 5 for probe in pick.probes)
    assert prepared.config.batch == pick.batch


def test_the_simulated_card_reads_what_the_replay_of_the_stream_reads():
    """Its live answers are the one replay's (yolomem.allocator.replay) of the events so far."""
    from yolomem.allocator.caching import CachingAllocator, parse_alloc_conf
    from yolomem.allocator.replay import replay
    from yolomem.trace.tracer import Tracer

    card = None
    with Tracer(fake=True) as tracer:
        card = SimulatedCard(tracer, find_gpu("T4"))
        kept = [torch.empty(1 << 20) for _ in range(3)]  # 4 MiB each
        first = torch.empty(3 << 20)
        del first  # freed: cached, still reserved
        reserved, allocated = card.memory_reserved(), card.memory_allocated()
        card.empty_cache()
        after_empty = card.memory_reserved()
        events = tracer.result().events
        tracer.detach_finalizers()
    allocator = CachingAllocator(parse_alloc_conf(None))
    replay([events], allocator)
    assert (reserved, allocated) == (allocator.reserved_bytes, allocator.allocated_bytes) == (reserved, 3 * 4 << 20)
    allocator.empty_cache()
    assert after_empty == allocator.reserved_bytes < reserved
    del kept


def test_an_allocation_past_the_card_is_reported_at_the_next_reading_not_at_empty_cache():
    from yolomem.trace.tracer import Tracer

    with Tracer(fake=True) as tracer:
        card = SimulatedCard(tracer, find_gpu("GTX-1650"))
        too_big = torch.empty(5 << 30, dtype=torch.uint8)  # 5 GiB on a 4 GiB card
        del too_big
        card.empty_cache()  # the profiler calls it outside its try: it must not raise
        with pytest.raises(torch.OutOfMemoryError, match="simulated on GTX-1650"):
            card.memory_reserved()
        assert card.memory_reserved() == 0  # reported once; the failed allocation never happened
        tracer.detach_finalizers()


def test_config_keeps_the_request_until_a_batch_is_set():
    config = EstimateConfig.from_words(["yolov8n.yaml", "batch=-1"])
    assert config.autobatch == -1 and "batch" not in config.left_to_trainer
    assert EstimateConfig.from_json(config.to_json()) == config
    assert EstimateConfig.from_mapping({"batch": 0.7}).autobatch == 0.7
    assert config.with_changes(batch=8).autobatch is None  # a sweep's batch is not AutoBatch's
    with pytest.raises(UserError, match="AutoBatch"):
        EstimateConfig(batch=-1)


@pytest.mark.parametrize(
    "words",
    [
        ["estimate", "yolov8n.yaml", "batch=-1"],  # no card to size for
        ["estimate", "yolov5s", "framework=yolov5", "batch=0.5", "gpu=T4"],  # train.py takes -1 only
        ["fit", "yolov8n.yaml", "batch=-1", "gpu=T4", "solve=imgsz"],  # the imgsz search needs a batch
        ["fit", "yolov8n.yaml", "batch=-1", "gpu=T4", "--explain"],
        ["pick", "batch=0.5", "gpu=T4"],
        ["table", "yolov8n.yaml", "batch=-1"],
        ["plot", "yolov8n.yaml", "batch=-1", "-o", "curve.png"],
        ["measure", "yolov8n.yaml", "batch=-1"],
    ],
)
def test_what_cannot_run_autobatch_says_so_in_one_line(words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(words) == 2
    err = capsys.readouterr().err
    assert "AutoBatch" in err and err.count("\n") == 1
