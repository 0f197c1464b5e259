"""The per-version table: blog rows, the linear max-batch model, and every output format."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from yolomem.render import table_formats
from yolomem.sweeps.table import (
    BLOG_ROWS, GpuFit, PrecisionResult, RowRequest, Table, TableRow, _precision_result, _Traced, blog_rows,
    compute_table,
)  # fmt: skip

SEED = Path(__file__).resolve().parent / "data" / "reference" / "seed_table.csv"  # see SOURCES.md there
GiB = 1 << 30


def test_blog_rows_are_the_seed_table():
    seed = list(csv.DictReader(SEED.open()))
    assert [(r["model"], int(r["imgsz"]), int(r["batch"])) for r in seed] == [(b[0], b[2], b[3]) for b in BLOG_ROWS]
    assert len(blog_rows()) == 16 and blog_rows(imgsz=64, batch=2)[0].imgsz == 64


def _traced(batch: int, peak: int, fixed: int, upper: int | None = None) -> _Traced:
    upper = peak if upper is None else upper
    return _Traced("m", "yolov5", "detect", 1, 640, batch, peak, peak + (500 << 20), 500 << 20, fixed, "1G", "GiB", (),
                   upper, upper + (600 << 20), 600 << 20)  # fmt: skip


def test_linear_model_and_verdicts():
    from yolomem.config.gpus import find_gpu
    from yolomem.result.fits import Budget

    # 24 GiB: 20.93 GiB after the upper figure's 762 MiB context and a 10 % margin of the 23.26 GiB usable
    card = Budget(find_gpu("RTX-3090"))
    result = _precision_result("fp32", _traced(16, 12 * GiB, 2 * GiB), None, [card])
    fit = result.gpus[0]
    assert fit.fits == "yes"
    # (20.93 GiB capacity - 2 GiB fixed) / (10 GiB / 16 per image) = 30.3 -> 30
    assert fit.max_batch == 30
    near = _precision_result("fp32", _traced(16, 21 * GiB + (700 << 20), 2 * GiB), None, [card]).gpus[0]
    assert near.fits == "near"  # fits the 23.26 GiB after the upper context, not the 20.93 after the margin too
    assert _precision_result("fp32", _traced(16, 30 * GiB, 2 * GiB), None, [card]).gpus[0].fits == "no"
    two_point = _precision_result("fp32", _traced(16, 12 * GiB, 0), _traced(8, 7 * GiB, 0), [card])
    assert two_point.fixed_bytes == 2 * GiB and two_point.gpus[0].max_batch == 30


def test_verdict_and_max_batch_use_the_upper_figure():
    from yolomem.config.gpus import find_gpu
    from yolomem.result.fits import Budget

    card = Budget(find_gpu("RTX-3090"))
    row = _precision_result("fp32", _traced(16, 12 * GiB, 2 * GiB, upper=25 * GiB), None, [card])
    assert row.gpus[0].fits == "no"  # expected 12.5 GiB would say "yes"
    assert row.gpus[0].max_batch == 13  # (21.06 capacity - 2 fixed) / (23 GiB / 16) = 13.3
    assert row.peak_reserved_upper_bytes == 25 * GiB and row.device_total_upper_bytes == 25 * GiB + (600 << 20)


def _precision(name, peak, unit="GiB"):
    gpus = (GpuFit("RTX-3060-12GB", 12 * GiB, "yes", 30), GpuFit("RTX-3090", 24 * GiB, "near", 70))
    return PrecisionResult(name, peak, peak + (500 << 20), f"{peak / GiB:.3g}G", unit, GiB, 1e8, gpus)


def _table() -> Table:
    row = TableRow("yolov4-tiny", "yolov5", "detect", 6_056_606, 10.5, "counted", 416, 64,
                   _precision("fp32", 5 * GiB), _precision("fp16", 3 * GiB), ())  # fmt: skip
    return Table((row,), ("RTX-3060-12GB", "RTX-3090"), "breakdown", 1, 12.0, "GiB")


def test_json_format():
    payload = json.loads(table_formats.to_json(_table()))
    row = payload[0]
    assert {"model", "framework", "params", "imgsz", "batch", "fp32", "amp"} <= set(row)
    assert row["model"] == "yolov4-tiny" and row["framework"] == "yolov5"
    for key in ("fp32", "amp"):
        assert {"peak_reserved_bytes", "device_total_bytes", "fits", "max_batch"} <= set(row[key])
        assert row[key]["fits"] == {"RTX-3060-12GB": "yes", "RTX-3090": "near"}
        assert row[key]["max_batch"] == {"RTX-3060-12GB": 30, "RTX-3090": 70}


def test_csv_and_markdown_formats():
    rows = list(csv.reader(table_formats.to_csv(_table()).splitlines()))
    assert rows[0][:3] == ["model", "framework", "task"] and rows[1][0] == "yolov4-tiny"
    assert rows[1][rows[0].index("amp_fits_RTX-3090")] == "near"
    text = table_formats.to_markdown(_table())
    assert text.startswith("| model | framework |")
    assert "| yolov4-tiny | yolov5 | 416 | 64 | 6.06 | 10.5 | 5.49 | 5G | 3.49 | 3G | ✅/✅ | ⚠️/⚠️ | 30/30 | 70/70 |" in text
    assert "linear-in-batch" in text
    # shown, a card is its memory in GiB; the CSV/JSON keys stay the names people type
    assert "| RTX-3060 (12 GiB) FP32/AMP |" in text and "12GB" not in text
    assert "fp32_fits_RTX-3060-12GB" in rows[0]
    upper = int(rows[1][rows[0].index("amp_peak_reserved_upper_bytes")])  # the figure the verdicts judge
    assert upper == _table().rows[0].amp.peak_reserved_upper_bytes


def test_markdown_names_the_unit_per_cell_when_trainers_differ():
    yolov5 = TableRow("yolov5s", "yolov5", "detect", 7_235_389, 16.4, "counted", 640, 32,
                      _precision("fp32", 10 * GiB, "GB"), _precision("fp16", 6 * GiB, "GB"), ())  # fmt: skip
    table = Table((yolov5, *_table().rows), ("RTX-3060-12GB", "RTX-3090"), "breakdown", 1, 12.0, "GiB/GB")
    text = table_formats.to_markdown(table)
    assert "FP32 GPU_mem (GiB/GB)" in text
    assert "| 10G (GB) |" in text and "| 5G (GiB) |" in text
    assert '"gpu_mem_unit": "GB"' in table_formats.to_json(table)


def test_cli_flags_exist():
    from yolomem.cli.main import parse_command_line

    spec, options = parse_command_line(["table", "yolov5n", "--markdown", "imgsz=64"])
    assert spec.name == "table" and options.markdown and not options.csv and options.words == ["yolov5n", "imgsz=64"]


# 32 traces in one process, 2 min on CI's 2 shared cores: with ``-m exhaustive``, as every listed name is
# (test_model_list.py); by default one row end to end and four side by side below, and the darknet and
# yolov5-loop models in test_darknet.py and test_yolov5.py
@pytest.mark.exhaustive
def test_every_blog_row_estimates_in_both_precisions():
    table = compute_table(blog_rows(imgsz=64, batch=2))
    assert len(table.rows) == 16
    for row in table.rows:
        assert row.params > 1e6
        assert row.fp32.peak_reserved_bytes > 0 and row.amp.peak_reserved_bytes > 0
    frameworks = {row.model: row.framework for row in table.rows}
    assert frameworks["yolov3"] == "yolov5" and frameworks["yolov4"] == "yolov5" and frameworks["yolov8n"] == "ultralytics"


def test_one_row_end_to_end():
    table = compute_table([blog_rows(imgsz=64, batch=2)[2]], gpus=("RTX-3090",))  # yolov4-tiny
    row = table.rows[0]
    assert (row.model, row.framework, row.params) == ("yolov4-tiny", "yolov5", 6_056_606)
    assert row.fp32.gpus[0].fits == "yes" and row.fp32.gpus[0].max_batch > 2


def test_rows_traced_side_by_side_equal_rows_traced_here():
    """``jobs=2``: this process takes rows from the front while a worker takes them from the back (each
    row once, whichever starts it first); the table is the one a single process makes."""
    rows = [RowRequest(m, 64, 2) for m in ("yolov8n", "yolov5n", "yolov4-tiny", "yolo11n")]
    side_by_side, here = compute_table(rows, jobs=2), compute_table(rows, jobs=1)
    assert [r.model for r in side_by_side.rows] == ["yolov8n", "yolov5n", "yolov4-tiny", "yolo11n"]
    assert [r.to_json() for r in side_by_side.rows] == [r.to_json() for r in here.rows]


def _blog_like_table() -> Table:
    """The blog's 16 rows with made-up figures (rendering only), on the 4 default cards."""
    from yolomem.config.gpus import find_gpu
    from yolomem.sweeps.table import DEFAULT_GPUS

    cards = [find_gpu(name) for name in DEFAULT_GPUS]

    def precision(name, peak, unit):
        gpus = tuple(GpuFit(card.name, card.total_bytes, "near" if index == 1 else "yes", 100 + index)
                     for index, card in enumerate(cards))  # fmt: skip
        return PrecisionResult(name, peak, peak + (500 << 20), f"{peak / GiB:.3g}G", unit, GiB, 1e8, gpus)

    rows = []
    for label, name, imgsz, batch in BLOG_ROWS:
        framework, unit = ("yolov5", "GB") if name.startswith(("yolov3", "yolov4", "yolov5")) else ("ultralytics", "GiB")
        rows.append(TableRow(name, framework, "detect", 99_123_456, 232.5, "counted", imgsz, batch,
                             precision("fp32", 21 * GiB + 123, unit), precision("fp16", 13 * GiB, unit), ()))  # fmt: skip
    return Table(tuple(rows), tuple(card.name for card in cards), "breakdown", 1, 12.0, "GiB/GB")


@pytest.mark.parametrize("width", [100, 120])
def test_terminal_view_reads_at_100_columns(width):
    from rich.console import Console

    table = _blog_like_table()
    console = Console(width=width, record=True, color_system=None)
    table_formats.render_rich(table, console=console)
    text = console.export_text()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    for row in table.rows:  # every row on a line of its own, in each of the views
        assert any(line.lstrip("│ ").startswith(row.model + " ") for line in text.splitlines()), row.model
    # every card's fit and largest batch is shown, under the card's size in GiB
    for card in ("RTX-3060 (12 GiB)", "RTX-3090 (24 GiB)", "A100 (40 GiB)", "H100 (79.6 GiB)"):
        assert card in text
    assert "12GB" not in text and "80GB" not in text
    assert "✅ 100 / ✅ 100" in text and "⚠️ 101 / ⚠️ 101" in text


def test_terminal_view_splits_many_cards_into_groups():
    from rich.console import Console

    from yolomem.config.gpus import CATALOG

    base = _blog_like_table()
    names = ("T4", "L4", "A10", "RTX-3060-12GB", "RTX-3090", "RTX-4090", "A100-40GB", "A100-80GB", "H100-80GB")
    cards = [CATALOG[name] for name in names]

    def with_cards(result):
        gpus = tuple(GpuFit(card.name, card.total_bytes, "no", 7) for card in cards)
        return PrecisionResult(result.precision, result.peak_reserved_bytes, result.device_total_bytes,
                               result.gpu_mem_printed, result.gpu_mem_unit, result.fixed_bytes, result.per_image_bytes, gpus)  # fmt: skip

    from dataclasses import replace

    rows = tuple(replace(row, fp32=with_cards(row.fp32), amp=with_cards(row.amp)) for row in base.rows)
    table = replace(base, rows=rows, gpus=names)
    console = Console(width=100, record=True, color_system=None)
    table_formats.render_rich(table, console=console)
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 100
    for name in ("T4 (14.7 GiB)", "L4 (22.5 GiB)", "A100 (80 GiB)", "H100 (79.6 GiB)"):
        assert name in text


def test_rows_of_models_given_take_what_each_trainer_takes():
    """``yolomem table MODEL ...`` without imgsz or batch: each row as its trainer would train it (a
    classifier at 224, the yolov5 repo's at batch 64 too), as ``estimate`` takes them."""
    from yolomem.sweeps.table import RowRequest, model_rows

    rows = model_rows(("yolov8n-cls.yaml", "yolov5n-cls", "yolov8n.yaml"))
    assert rows == (RowRequest("yolov8n-cls.yaml", 224, 16), RowRequest("yolov5n-cls", 224, 64),
                    RowRequest("yolov8n.yaml", 640, 16))  # fmt: skip
    assert model_rows(("yolov8n-cls.yaml",), imgsz=320, batch=8) == (RowRequest("yolov8n-cls.yaml", 320, 8),)


def test_a_classifiers_gflops_are_counted_as_ultralytics_counts_them():
    """The -cls YAMLs' summary lines are not at 640 (yolo11n-cls.yaml: 0.5 GFLOPs, fewer parameters than
    it builds): the figure is Ultralytics' own count on the model it builds, at the row's imgsz."""
    from ultralytics.nn.tasks import ClassificationModel
    from ultralytics.utils.torch_utils import get_flops

    from yolomem.loops.ultralytics.models import ultralytics_gflops

    for imgsz in (224, 640):
        expected = get_flops(ClassificationModel("yolo11n-cls.yaml", verbose=False), imgsz)
        assert expected > 0 and ultralytics_gflops("yolo11n-cls.yaml", imgsz) == (pytest.approx(expected), "counted")
    assert ultralytics_gflops("yolo11n.yaml", 640) == (6.6, "yaml")  # detection: the YAML's line, at 640


def test_on_a_card_without_amp_the_amp_column_is_the_fp32_run():
    """Ultralytics' check_amp turns AMP off on a GTX 1650 (8.3.47+): its AMP verdicts there are the FP32
    run's, and the footer says so; another card, and the yolov5 repo's loop, keep AMP's."""
    from yolomem.loops.ultralytics.release import release
    from yolomem.render.table_formats import footer
    from yolomem.sweeps.table import RowRequest, compute_table

    table = compute_table((RowRequest("yolov8n.yaml", 64, 2), RowRequest("yolov5n", 64, 2)), gpus=("GTX-1650", "T4"),
                          iterations=1)  # fmt: skip
    ultralytics, original = table.rows
    refused = release().amp_refused_cards is not None
    assert table.amp_off_on == (("GTX-1650",) if refused else ())
    fp32, amp = ultralytics.fp32.gpus, ultralytics.amp.gpus
    assert (amp[0] == fp32[0]) is refused and amp[0].max_batch != 0
    assert amp[1].max_batch > fp32[1].max_batch  # T4: AMP's own figures
    assert original.amp.gpus[0].max_batch > original.fp32.gpus[0].max_batch  # the yolov5 repo checks AMP its own way
    assert any("check_amp turns AMP off" in line for line in footer(table)) is refused
