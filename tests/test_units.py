"""One unit rule in every renderer (``yolomem.render.units``): sizes in GiB; GB only where a trainer
prints GB, labelled as such; card names shown with their memory in GiB, the catalog keys still typed."""

from __future__ import annotations

import re
import types
from dataclasses import replace

import pytest
from rich.console import Console

from yolomem.config.gpus import GiB, find_gpu
from yolomem.config.settings import EstimateConfig
from yolomem.render.estimate_table import render_estimate
from yolomem.render.fit_output import render_fit, render_ladder, render_pick
from yolomem.render.units import card_label, card_name
from yolomem.result.estimate import estimate_config
from yolomem.result.host_memory import HostMemory
from yolomem.sweeps.fit import FitResult, Probe
from yolomem.sweeps.ladder import Strategy
from yolomem.sweeps.pick import PickResult, PickRow

TINY = EstimateConfig(model="yolov8n.yaml", imgsz=64, batch=2, iterations=1, gpu="RTX-3060-12GB")
MiB = 1 << 20


def _gb(text: str) -> bool:
    """Whether ``text`` says GB (10^9 bytes) anywhere (GiB is not GB)."""
    return "GB" in text.replace("GiB", "")


def _record(render, *args) -> list[str]:
    console = Console(width=200, record=True, color_system=None)
    render(*args, console=console)
    return console.export_text().splitlines()


@pytest.fixture(scope="module")
def tiny():
    return estimate_config(TINY)


@pytest.fixture(scope="module")
def with_epochs(tiny):
    def spread(median, high):
        return types.SimpleNamespace(median=median, high=high)

    epochs = types.SimpleNamespace(
        epoch1_reserved=spread(int(6.795 * GiB), int(7.1 * GiB)), steady_reserved=spread(7 * GiB, 8 * GiB),
        peak_reserved=spread(8 * GiB, 9 * GiB), peak_phase="validation",
    )  # fmt: skip
    host = HostMemory("ram", 3 * GiB, 6 * GiB, 4 * GiB, 5 * GiB, 8, 2 * GiB)
    return replace(tiny, epochs=epochs, host=host)


def test_card_keys_stay_and_labels_say_gib():
    assert find_gpu("RTX-3060-12GB").name == "RTX-3060-12GB"  # the name people type still works
    assert card_label("RTX-3060-12GB", find_gpu("RTX-3060-12GB").total_bytes) == "RTX-3060 (12 GiB)"
    assert card_label("H100-80GB", find_gpu("H100-80GB").total_bytes) == "H100 (79.6 GiB)"
    assert card_label("T4", find_gpu("T4").total_bytes) == "T4 (14.7 GiB)"  # torch's total_memory, 15102 MiB
    assert card_name("A100-80GB") == "A100" and card_name("RTX-3090") == "RTX-3090"


def test_every_card_name_a_table_shows_can_be_typed_back():
    """A table's column says "RTX-3060 (12 GiB)": ``gpu=RTX-3060`` names a card (the one of that size, or
    for a name shared by two sizes, the default one the label's size tells apart)."""
    from yolomem.config.gpus import CATALOG

    for name in CATALOG:
        assert find_gpu(card_name(name)).name.startswith(card_name(name)), name
    assert find_gpu("RTX-3060").name == "RTX-3060-12GB" and find_gpu("GTX-1060").name == "GTX-1060-6GB"


def test_estimate_view_is_gib_one_unit_per_cell(with_epochs):
    lines = _record(render_estimate, with_epochs)
    text = "\n".join(lines)
    assert not _gb(text)  # Ultralytics 8.4 prints GiB: nothing on the page is GB
    assert "6.795 / 7.100 GiB" in text  # median / p90: one unit for the cell
    assert "RTX-3060 (12 GiB)" in text and "12GB" not in text
    assert "3.000 GiB (asks 6.000 GiB)" in text


def test_gb_only_in_the_gpu_mem_line_of_a_gb_trainer(with_epochs):
    yolov5 = replace(with_epochs, gpu_mem_unit="GB", config=with_epochs.config.with_changes(framework="yolov5"))
    lines = [line for line in _record(render_estimate, yolov5) if _gb(line)]
    assert len(lines) == 1
    assert "yolov5 train.py GPU_mem" in lines[0] and "GB = 10^9 bytes" in lines[0]
    assert yolov5.gpu_mem_printed in lines[0] and "GiB" not in lines[0]


def test_fit_pick_and_ladder_views_name_cards_in_gib(tiny):
    card = find_gpu("RTX-3060-12GB")
    capacity = int(0.9 * card.usable_bytes)
    fit = FitResult("batch", "yolov8n.yaml", card.name, card.total_bytes, card.context_bytes, 0.1, capacity, 2, 64,
                    None, 64, TINY, tiny, 2, (Probe(2, 64, tiny.peak_reserved_bytes, True, 0.1),), False)  # fmt: skip
    row = PickRow("yolov8n.yaml", "detect", tiny.params, tiny.peak_reserved_bytes, tiny.peak_reserved_upper_bytes,
                  tiny.device_total_bytes, tiny.device_total_upper_bytes, True, capacity - tiny.peak_reserved_upper_bytes,
                  tiny)  # fmt: skip
    pick = PickResult(card.name, card.total_bytes, capacity, 0.1, 2, 64, "detect", (row,))
    step = Strategy("as asked", {}, "yolo train model=yolov8n.yaml", tiny.peak_reserved_bytes, 0, True, 100)
    text = "\n".join(_record(render_fit, fit) + _record(render_pick, pick) + _record(render_ladder, (step,), capacity))
    assert "12GB" not in text and not _gb(text)
    assert "RTX-3060: 12.00 GiB - CUDA context" in text and "RTX-3060 (12 GiB): " in text
    assert f"Ultralytics GPU_mem {tiny.gpu_mem_printed} / {tiny.gpu_mem_upper_printed}, GiB" in text  # expected / upper


def test_report_page_names_cards_in_gib(tiny):
    from yolomem.render.report_html import render_report
    from yolomem.result.timeline import estimate_timeline
    from yolomem.sweeps.figure_data import GpuFit, ReportData, breakdown_figure, curve_figure

    curve = curve_figure(["yolov8n.yaml"], base=TINY.with_changes(gpu=None), xs=(2,), amps=("fp16",),
                         gpus=[find_gpu("RTX-3060-12GB")], estimator=lambda _config: tiny)  # fmt: skip
    data = ReportData(tiny, estimate_timeline(tiny), breakdown_figure([("tiny", tiny)]), curve,
                      (GpuFit(curve.gpu_lines[0], True, 99, "test"),), 0.1, ("yolov8n.yaml", "imgsz=64"))  # fmt: skip
    page = render_report(data)
    visible = re.sub(r'<pre id="commands">.*?</pre>|<script.*?</script>|<svg.*?</svg>', "", page, flags=re.S)
    visible = re.sub(r"<[^>]+>", " ", visible)
    assert "RTX-3060 (12 GiB)" in visible and "12GB" not in visible and not _gb(visible)
    assert "gpu=RTX-3060-12GB" in page  # the commands keep the key people type
