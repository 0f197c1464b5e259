"""Issue 11, item 5: one definition of "fits" (``yolomem.result.fits``), with the margin as a setting.

A run whose peak lies between the card's capacity after the margin and its usable memory used to fit
for ``estimate`` and the plots (usable memory), not for ``fit``/``pick`` (10 % margin), and be "yes"
or "near" in the table by a third rule. Every caller now gives one answer, and shows the margin."""

from __future__ import annotations

import pytest

from yolomem.config.gpus import CATALOG, CUDA_CONTEXT_BYTES, CUDA_CONTEXT_UPPER_BYTES, Gpu, find_gpu
from yolomem.config.settings import EstimateConfig
from yolomem.errors import UserError
from yolomem.result.estimate import estimate_config
from yolomem.result.fits import DEFAULT_MARGIN, Budget, fits, verdict
from yolomem.sweeps.figure_data import curve_figure
from yolomem.sweeps.fit import Prober
from yolomem.sweeps.pick import pick_models
from yolomem.sweeps.table import _precision_result, _Traced

GiB = 1 << 30
TINY = EstimateConfig(model="yolov8n.yaml", imgsz=64, batch=2, iterations=1)


@pytest.fixture(scope="module")
def edge():
    """A card whose memory after the (upper) context holds the run's upper figure, but not with the 10 % margin."""
    estimated = estimate_config(TINY)
    upper = estimated.peak_reserved_upper_bytes
    usable = int(upper / (1 - DEFAULT_MARGIN / 2))  # the upper figure sits in the middle of the margin
    return estimated.peak_reserved_bytes, upper, Gpu("edge", CUDA_CONTEXT_UPPER_BYTES + usable)


def test_the_function_and_its_margin():
    card = Gpu("card", CUDA_CONTEXT_UPPER_BYTES + 1000)  # verdicts assume the upper figure's context
    assert Budget(card).capacity_bytes == 900 and Budget(card, 0.0).capacity_bytes == 1000
    assert fits(900, Budget(card)) and not fits(901, Budget(card))
    assert [verdict(b, Budget(card)) for b in (900, 950, 1001)] == ["yes", "near", "no"]
    with pytest.raises(UserError, match="margin"):
        Budget(card, 0.95)
    assert EstimateConfig.from_words(["margin=5%"]).margin == 0.05


def test_every_caller_gives_the_same_verdict_at_the_edge(edge):
    peak, upper, card = edge
    gpu_mem = card.total_bytes / GiB
    config = TINY.with_changes(gpu_mem=gpu_mem)
    estimated = estimate_config(config)
    assert estimated.peak_reserved_bytes == peak
    assert estimated.fits is False and estimated.margin == DEFAULT_MARGIN  # fits the usable memory, not the margin
    assert estimate_config(config.with_changes(margin=0.0)).fits is True
    _, probe = Prober(Budget(card)).run(config)
    assert probe.fits is False
    row = pick_models(gpu_mem=gpu_mem, imgsz=64, batch=2, models=("yolov8n.yaml",), iterations=1).rows[0]
    assert row.fits is False and row.headroom_bytes < 0
    curve = curve_figure(["yolov8n.yaml"], base=TINY, xs=(2,), amps=("fp16",), gpus=[card])
    assert curve.curves[0].points[0].fits == (False,)
    traced = _Traced("yolov8n", "ultralytics", "detect", 1, 64, 2, peak, peak + CUDA_CONTEXT_BYTES, CUDA_CONTEXT_BYTES,
                     0, "", "GiB", (), upper, upper + CUDA_CONTEXT_UPPER_BYTES, CUDA_CONTEXT_UPPER_BYTES)  # fmt: skip
    assert _precision_result("fp16", traced, None, [Budget(card)]).gpus[0].fits == "near"


def test_the_text_output_shows_the_margin(edge, capsys, monkeypatch):
    from yolomem.cli.main import main

    monkeypatch.setenv("COLUMNS", "200")  # one line per row
    _, _, card = edge
    assert main(["estimate", "yolov8n.yaml", "imgsz=64", "batch=2", "iterations=1", f"gpu_mem={card.total_bytes / GiB}",
                 "margin=0.2"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "20% margin" in out and "does not fit" in out


def test_a_jetson_holds_back_the_training_process_ram_it_shares():
    """A Jetson's GPU shares the module's DRAM: the process's own RAM (Python, torch, the CUDA libraries:
    yolomem.deployment.host's sources) is not the GPU's to give. A card with its own memory holds none back."""
    from yolomem.deployment.host import PROCESS, TORCH_LIBRARIES

    jetson, card = Budget(find_gpu("Jetson-Orin-Nano-8GB")), Budget(find_gpu("T4"))
    assert jetson.host_bytes == PROCESS[1] + TORCH_LIBRARIES[1] and card.host_bytes == 0
    assert jetson.after_context_bytes == jetson.gpu.total_bytes - jetson.context_bytes - jetson.host_bytes
    assert jetson.capacity_bytes == jetson.after_context_bytes - jetson.margin_bytes
    assert card.after_context_bytes == card.gpu.total_bytes - card.context_bytes


@pytest.mark.parametrize("short", ["Jetson-Orin-Nano", "Jetson-Orin-NX", "Jetson-AGX-Orin", "Jetson-Xavier-NX",
                                   "Jetson-AGX-Xavier", "orin-nano"])  # fmt: skip
def test_a_short_jetson_name_is_the_smaller_of_its_two_modules(short):
    """Every Jetson module ships in two memory sizes: the short name's verdict must hold on the smaller."""
    module = find_gpu(short)
    sizes = [gpu.total_bytes for name, gpu in CATALOG.items() if name.lower().startswith(module.name.lower().rsplit("-", 1)[0])]
    assert len(sizes) == 2 and module.total_bytes == min(sizes)
