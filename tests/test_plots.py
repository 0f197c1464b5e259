"""Plot data equals the estimates it shows; the figures are written and carry those numbers."""

from __future__ import annotations

import sys

import pytest

from yolomem.cli.main import main
from yolomem.config.settings import EstimateConfig
from yolomem.errors import UserError
from yolomem.result.estimate import estimate_config
from yolomem.config.gpus import CUDA_CONTEXT_BYTES, CUDA_CONTEXT_UPPER_BYTES, Gpu, find_gpu
from yolomem.sweeps.figure_data import (
    Curve,
    CurvePoint,
    _crossing,
    breakdown_figure,
    curve_figure,
)
from yolomem.result.fits import Budget
from yolomem.result.timeline import estimate_timeline

pytest.importorskip("matplotlib")

from yolomem.render import plots  # noqa: E402

GiB = 1 << 30
MiB = 1 << 20
TINY = EstimateConfig(model="yolov8n.yaml", imgsz=64, batch=2, iterations=1)
# a card with 1 MiB usable: nothing fits
NOTHING_FITS = Gpu("one-MiB", CUDA_CONTEXT_BYTES + MiB)


@pytest.fixture(scope="module")
def curve():
    seen = []

    def recording(config):
        result = estimate_config(config)
        seen.append(result)
        return result

    progress = []
    data = curve_figure(
        ["yolov8n.yaml"], base=TINY, xs=(1, 2), amps=("fp16",), gpus=[NOTHING_FITS, find_gpu("T4")],
        progress=lambda done, total, what: progress.append((done, total)), estimator=recording,
    )  # fmt: skip
    return data, seen, progress


@pytest.fixture(scope="module")
def tiny_estimate():
    return estimate_config(TINY)


def test_curve_points_are_the_estimates(curve):
    data, seen, progress = curve
    (only,) = data.curves
    assert [p.x for p in only.points] == [1, 2]
    assert [r.config.batch for r in seen] == [1, 2]
    for point, result in zip(only.points, seen):
        assert point.peak_reserved_bytes == result.peak_reserved_bytes
        assert point.peak_allocated_bytes == result.peak_allocated_bytes
        assert point.device_total_bytes == result.device_total_bytes
        assert data.value(point) == result.peak_reserved_bytes  # measure=gpu_mem plots GPU_mem
    assert progress[0] == (0, 2) and progress[-1] == (2, 2)


def test_curve_point_equals_a_fresh_estimate(curve, tiny_estimate):
    data, _, _ = curve
    point = data.curves[0].points[1]  # batch 2, fp16: the same config as TINY
    assert point.peak_reserved_bytes == tiny_estimate.peak_reserved_bytes
    assert point.device_total_bytes == tiny_estimate.device_total_bytes


def test_fits_and_crossings(curve):
    data, _, _ = curve
    assert [line.name for line in data.gpu_lines] == ["one-MiB", "T4"]
    t4_card = find_gpu("T4")  # the line is the card less the verdicts' context: what its margin is a share of
    assert data.gpu_lines[1].after_context_bytes == t4_card.total_bytes - data.gpu_lines[1].context_bytes
    for point in data.curves[0].points:
        assert point.fits == (False, True)
    nothing, t4 = data.crossings
    assert nothing.largest_x is None and not nothing.all_fit
    assert t4.largest_x == 2 and t4.all_fit


def test_crossing_stops_at_first_sample_that_does_not_fit():
    def point(x, fits):
        return CurvePoint(x, 0, 0, 0, (fits,), 0)

    curve = Curve("m", "fp16", (point(1, True), point(2, True), point(4, False), point(8, True)))
    crossing = _crossing(0, 0, curve)
    assert crossing.largest_x == 2 and not crossing.all_fit


def test_bad_inputs_are_user_errors():
    from yolomem.cli.plot import PLOT_KEYS

    with pytest.raises(UserError, match="batches=1,2,4,8"):
        PLOT_KEYS["batches"].parse("1,two")
    with pytest.raises(UserError, match="positive"):
        PLOT_KEYS["batches"].parse("0,2")
    with pytest.raises(UserError, match="at most 12"):
        PLOT_KEYS["batches"].parse(",".join(map(str, range(1, 14))))
    with pytest.raises(UserError, match="did you mean 'imgsz'"):
        curve_figure(["yolov8n.yaml"], x_name="imgz")
    with pytest.raises(UserError, match="measure"):
        curve_figure(["yolov8n.yaml"], measure="nvidia")


def test_timeline_matches_the_estimate(tiny_estimate):
    timeline = estimate_timeline(tiny_estimate)
    # One iteration and no card: the iteration's peaks are the estimate's peaks.
    assert timeline.peak_allocated_bytes == tiny_estimate.peak_allocated_bytes
    assert timeline.peak_reserved_bytes == tiny_estimate.peak_reserved_bytes
    assert timeline.peak_phase == tiny_estimate.peak_phase
    assert timeline.allocated_bytes[timeline.peak_offset] == max(timeline.allocated_bytes)
    bounds = tiny_estimate.trace.iteration_bounds + [len(tiny_estimate.trace.events)]
    last = tiny_estimate.config.iterations - 1  # the upper figure's iteration follows it in the trace
    assert timeline.first_event == bounds[last]
    assert timeline.steps == bounds[last + 1] - bounds[last]
    assert all(a <= r for a, r in zip(timeline.allocated_bytes, timeline.reserved_bytes))
    for spans in (timeline.phases, timeline.shading):
        assert spans[0].start == 0 and spans[-1].stop == timeline.steps
        assert all(a.stop == b.start for a, b in zip(spans, spans[1:]))
    shaded = {span.phase for span in timeline.shading}
    assert {"forward", "backward", "optimizer"} <= shaded
    assert len(timeline.shading) <= len(timeline.phases)
    order = [span.phase for span in timeline.phases]  # zero_grad's frees are the optimizer step's, not a backward
    assert "backward" not in order[order.index("optimizer"):]


def test_breakdown_figure_is_the_breakdown(tiny_estimate):
    figure = breakdown_figure([("tiny", tiny_estimate)])
    (bar,) = figure.bars
    assert {part.category: part.bytes for part in bar.parts} == tiny_estimate.breakdown
    assert bar.total_bytes == sum(tiny_estimate.breakdown.values())
    assert bar.parts[0].category == "parameter" and bar.parts[-1].category == "cuda_context"


def test_drawn_curve_carries_the_data(curve, tmp_path):
    data, _, _ = curve
    figure = plots.draw_curves(data)
    ax = figure.axes[0]
    drawn = ax.lines[0]
    assert list(drawn.get_xdata()) == [1, 2]
    assert list(drawn.get_ydata()) == [p.peak_reserved_bytes / GiB for p in data.curves[0].points]
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "yolov8n.yaml AMP" in labels and f"T4: {Budget(find_gpu('T4')).capacity_bytes / GiB:.3g} GiB after a 10% margin (above the plot)" in labels
    assert "GPU_mem" in plots.curve_caption(data)
    png = plots.save(figure, tmp_path / "curve.png")
    svg = plots.save(figure, tmp_path / "curve.svg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert svg.read_text().count("<path") > 20
    with pytest.raises(UserError, match="must end in"):
        plots.save(figure, tmp_path / "curve.jpg")


def test_device_total_caption_and_lines(curve):
    data, _, _ = curve
    from dataclasses import replace

    total = replace(data, measure="device_total")
    assert "nvidia-smi" in plots.curve_caption(total)
    t4 = Budget(find_gpu("T4"))  # the lines are the one "fits" (yolomem.result.fits), seen from each measure
    assert total.threshold(total.gpu_lines[1]) == t4.capacity_bytes + t4.context_bytes  # the budget's (upper) CUDA context
    assert data.threshold(data.gpu_lines[1]) == t4.capacity_bytes
    assert total.value(total.curves[0].points[0]) == total.curves[0].points[0].device_total_bytes


def test_drawn_timeline_and_breakdown(tiny_estimate, tmp_path):
    timeline = estimate_timeline(tiny_estimate)
    figure = plots.draw_timeline(timeline)
    ax = figure.axes[0]
    reserved, allocated = ax.lines[0], ax.lines[1]
    assert max(allocated.get_ydata()) == timeline.peak_allocated_bytes / GiB
    assert max(reserved.get_ydata()) == tiny_estimate.peak_reserved_bytes / GiB
    notes = [t.get_text() for t in ax.texts]
    assert any(f"{tiny_estimate.peak_allocated_bytes / GiB:.3f} GiB" in n and timeline.peak_phase in n for n in notes)
    assert plots.save(figure, tmp_path / "t.png").stat().st_size > 20_000
    data = breakdown_figure([("tiny", tiny_estimate)])
    bars = plots.draw_breakdown(data)
    widths = [patch.get_width() for patch in bars.axes[0].patches]
    assert widths == pytest.approx([part.bytes / GiB for part in data.bars[0].parts])
    assert plots.save(bars, tmp_path / "b.svg").stat().st_size > 10_000


def test_missing_matplotlib_gives_the_install_hint(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(plots.PlotsUnavailable, match=r"pip install 'yolomem\[plot\]'"):
        plots.require_matplotlib()
    # the CLI fails at once (before estimating), with one line and exit code 2
    assert main(["plot", "yolov8n.yaml", "-o", str(tmp_path / "x.png")]) == 2
    assert "yolomem[plot]" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_cli_plot_writes_a_curve(tmp_path, capsys):
    out = tmp_path / "curve.svg"
    assert main(["plot", "yolov8n.yaml", "imgsz=64", "iterations=1", "batches=2", "amp=true", "gpu=T4",
                 "-o", str(out)]) == 0  # fmt: skip
    assert capsys.readouterr().out.strip() == str(out)
    assert out.stat().st_size > 20_000 and "<svg" in out.read_text()


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["kind=pie"], "kind='pie' is not valid"),
        (["x=imgsz", "batches=1,2"], "batches= goes with x=batch"),
        (["gpu=RTX-9999"], "unknown gpu"),
        (["batches=a"], "whole numbers"),
    ],
)
def test_cli_plot_errors(words, message, tmp_path, capsys):
    assert main(["plot", "yolov8n.yaml", *words, "-o", str(tmp_path / "x.png")]) == 2
    assert message in capsys.readouterr().err


def test_cli_plot_rejects_unknown_suffix(tmp_path, capsys):
    assert main(["plot", "yolov8n.yaml", "-o", str(tmp_path / "x.gif")]) == 2
    assert "must end in" in capsys.readouterr().err


def _synthetic_figure(unit="GiB"):
    from yolomem.sweeps.figure_data import CurveFigure, GpuLine

    card = find_gpu("RTX-3060-12GB")
    line = GpuLine(Budget(card))

    def points(scale):
        return tuple(CurvePoint(x, 0, int(scale * x * GiB), int(scale * x * GiB) + CUDA_CONTEXT_BYTES,
                                (scale * x * GiB <= line.capacity_bytes,), int(scale * x * GiB)) for x in (2, 4, 8, 16))  # fmt: skip

    curves = (Curve("yolov8s.yaml", "fp16", points(0.5)), Curve("yolov8s.yaml", "fp32", points(1.0)))
    crossings = tuple(_crossing(i, 0, curve) for i, curve in enumerate(curves))
    return CurveFigure("batch", "gpu_mem", (("imgsz", "640"),), curves, (line,), crossings, unit)


def test_legend_and_caption_show_the_styles_drawn():
    data = _synthetic_figure()
    figure = plots.draw_curves(data)
    ax = figure.axes[0]
    legend = ax.get_legend()
    handles = dict(zip((t.get_text() for t in legend.get_texts()), legend.legend_handles))
    drawn = {line.get_label(): line for line in ax.lines}
    curve_styles = set()
    for curve in data.curves:
        handle, line = handles[curve.label], drawn[curve.label]
        assert handle.get_linestyle() == line.get_linestyle()
        # no marker on the legend sample: a marker in its middle hides the dash gap
        assert handle.get_marker() in ("None", None, "", " ")
        curve_styles.add(line.get_linestyle())
    assert drawn["yolov8s.yaml FP32"].get_linestyle() == "--" and drawn["yolov8s.yaml AMP"].get_linestyle() == "-"
    assert legend.handlelength * legend.prop.get_size() >= 2 * sum(handles["yolov8s.yaml FP32"]._dash_pattern[1])
    (card_line,) = [line for line in ax.lines if line.get_label().startswith("RTX-3060")]
    assert card_line.get_linestyle() not in curve_styles  # a card's line never looks like a curve
    text = plots.curve_caption(data)
    assert f"{plots.STYLE_NAMES[card_line.get_linestyle()]} lines: what each card gives a run".lower() in text.lower()
    assert "dashed: FP32" in text and "solid: AMP" in text and "dashed lines" not in text
    assert card_line.get_label().startswith("RTX-3060: ") and "12GB" not in text + card_line.get_label()


def test_default_batches_reach_every_cards_crossing():
    # yolov8n at imgsz 64 in FP32, upper figure (the verdicts'): batches 2-16 reserve ~125-150 MiB, batch
    # 32 ~200 MiB; a card with 180 MiB after the upper context is crossed only beyond (2, 4, 8, 16)
    card = Gpu("small", CUDA_CONTEXT_UPPER_BYTES + 180 * MiB)
    cache = {}

    def cached(config):
        if config not in cache:
            cache[config] = estimate_config(config)
        return cache[config]

    data = curve_figure(["yolov8n.yaml"], base=TINY, amps=("fp32",), gpus=[card], estimator=cached)
    xs = [p.x for p in data.curves[0].points]
    assert xs[:4] == [2, 4, 8, 16] and xs[-1] > 16
    (crossing,) = data.crossings
    assert not crossing.all_fit and crossing.largest_x is not None
    points = data.curves[0].points
    index = xs.index(crossing.largest_x)
    assert points[index].fits == (True,) and points[index + 1].fits == (False,)
    capacity = card.total_bytes - CUDA_CONTEXT_UPPER_BYTES
    assert points[index + 1].peak_reserved_upper_bytes > capacity >= points[index].peak_reserved_upper_bytes
    figure = plots.draw_curves(data)
    labels = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert not any("above the plot" in label for label in labels)


def test_default_batches_under_ddp_are_totals_of_the_same_images_per_gpu():
    """Under DDP the batch is the total over the GPUs; batch 2 over 2 GPUs would leave each 1, over 4 none."""
    data = curve_figure(["yolov8n.yaml"], base=TINY.with_changes(world_size=2), amps=("fp16",))
    assert [p.x for p in data.curves[0].points] == [4, 8, 16, 32]


def test_an_imgsz_point_is_drawn_where_it_was_estimated():
    """imgsz=100 is estimated at 128 (the stride): the point was drawn at 100 with 128's figure."""
    data = curve_figure(["yolov8n.yaml"], base=TINY, x_name="imgsz", xs=(64, 100), amps=("fp16",))
    (only,) = data.curves
    assert [p.x for p in only.points] == [64, 128]


def test_the_caption_names_the_cards_that_train_amp_in_fp32():
    """A GTX 1650 line beside an AMP curve of an Ultralytics model: its check_amp turns AMP off there
    (8.3.47+), and the caption says which curve a run there follows."""
    from yolomem.loops.ultralytics.release import release
    from yolomem.render.plots import curve_caption

    data = curve_figure(["yolov8n.yaml"], base=TINY, xs=(1,), amps=("fp16",), gpus=[find_gpu("GTX-1650"), find_gpu("T4")])
    refused = release().amp_refused_cards is not None
    assert data.amp_off_on == (("GTX-1650",) if refused else ())
    assert ("On GTX-1650 Ultralytics' check_amp turns AMP off" in curve_caption(data)) is refused
    fp32 = curve_figure(["yolov8n.yaml"], base=TINY, xs=(1,), amps=("fp32",), gpus=[find_gpu("GTX-1650")])
    assert fp32.amp_off_on == ()  # no AMP curve: nothing to say


def test_the_held_imgsz_is_the_one_estimated():
    """A classifier left to its trainer trains at 224 (``trainer_defaults``): the figure says so, not 640."""
    base = EstimateConfig.from_words(["iterations=1"])
    data = curve_figure(["yolov8n-cls.yaml"], base=base, xs=(1,), amps=("fp16",))
    assert data.fixed[0] == ("imgsz", "224")
    both = curve_figure(["yolov8n-cls.yaml", "yolov8n.yaml"], base=base, xs=(1,), amps=("fp16",))
    assert both.fixed[0] == ("imgsz", "224, 640")  # each model's own
