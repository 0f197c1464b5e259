"""The HTML report: self-contained, complete, and its numbers are the estimate's."""

from __future__ import annotations

import json
import re
import shlex
from html.parser import HTMLParser

import pytest

from yolomem.cli.main import main, parse_command_line
from yolomem.config.settings import EstimateConfig, parse_estimate_words
from yolomem.result.estimate import estimate_config
from yolomem.config.gpus import CUDA_CONTEXT_BYTES, CUDA_CONTEXT_UPPER_BYTES, Gpu, find_gpu
from yolomem.sweeps.figure_data import report_data
from yolomem.render.report_html import command_lines, render_report

GiB = 1 << 30
# epochs=1: the small cards below keep 8.4's cache between epochs (it empties above half the card), so their
# verdicts would otherwise judge the whole default run (yolomem.result.fits.judged_run)
TINY = EstimateConfig(model="yolov8n.yaml", imgsz=64, batch=2, iterations=1, epochs=1)
WORDS = ("yolov8n.yaml", "imgsz=64", "batch=2", "iterations=1", "epochs=1")
NOTHING_FITS = Gpu("one-MiB", CUDA_CONTEXT_BYTES + (1 << 20))


class _Cells(HTMLParser):
    """Collects every element with data-key: (key, attributes, text)."""

    def __init__(self):
        super().__init__()
        self.cells: list[tuple[str, dict, str]] = []
        self._open: list[list] = []
        self.json_text = ""
        self._in_json = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("id") == "estimate-json":
            self._in_json = True
        if "data-key" in attrs:
            self._open.append([tag, attrs, ""])

    def handle_endtag(self, tag):
        self._in_json = False
        if self._open and self._open[-1][0] == tag:
            name, attrs, text = self._open.pop()
            self.cells.append((attrs["data-key"], attrs, text.strip()))

    def handle_data(self, data):
        if self._in_json:
            self.json_text += data
        for item in self._open:
            item[2] += data


def parse(page: str) -> _Cells:
    parser = _Cells()
    parser.feed(page)
    return parser


def check_numbers(page: str, payload: dict) -> int:
    """Assert every number on the page equals the JSON estimate; return how many were checked."""
    cells = parse(page)
    checked = 0
    for key, attrs, text in cells.cells:
        if key in payload and "data-bytes" in attrs:
            assert int(attrs["data-bytes"]) == payload[key], key
            assert text == f"{payload[key] / GiB:.3f} GiB", key
            checked += 1
        elif key in payload.get("breakdown", {}):
            assert int(attrs["data-bytes"]) == payload["breakdown"][key], key
            assert text == f"{payload['breakdown'][key] / GiB:.3f} GiB", key
            checked += 1
        elif key in {"gpu_mem_printed", "peak_phase"}:
            assert text == attrs["data-text"] == payload[key]
            checked += 1
    layers = [(a, t) for k, a, t in cells.cells if k == "layer"]
    assert [int(a["data-bytes"]) for a, _ in layers] == [layer["bytes"] for layer in payload["top_layers"]]
    return checked + len(layers)


@pytest.fixture(scope="module")
def data():
    return report_data(TINY, [find_gpu("T4"), NOTHING_FITS], batches=(1, 2), words=WORDS)


@pytest.fixture(scope="module")
def page(data):
    return render_report(data)


def test_report_data_is_the_estimate(data):
    again = estimate_config(TINY)
    assert data.estimate.peak_reserved_bytes == again.peak_reserved_bytes
    assert data.estimate.device_total_bytes == again.device_total_bytes
    assert [p.x for p in data.curve.curves[0].points] == [1, 2]
    assert data.curve.curves[0].points[1].peak_reserved_bytes == again.peak_reserved_bytes
    assert data.timeline.peak_allocated_bytes == again.peak_allocated_bytes
    t4, nothing = data.fits
    assert (t4.gpu.name, t4.fits, t4.largest_batch) == ("T4", True, 1024)  # fit's search, at its cap
    assert "the search stops at 1024: more fits" in t4.method
    assert (nothing.fits, nothing.largest_batch) == (False, None) and "not even batch 1" in nothing.method


def test_page_is_complete_and_non_trivial(page):
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert len(page) > 50_000
    assert page.count("<svg") == 3
    for section in ('id="estimate"', 'id="fits"', 'id="curve"', 'id="breakdown"', 'id="timeline"',
                    'id="breakdown-table"', 'id="commands"', 'id="estimate-json"'):  # fmt: skip
        assert section in page, section
    assert "GPU_mem" in page and "does not fit" in page


def test_each_fit_row_adds_up(data, page):
    """The T4 row showed "usable (minus context)" with the typical context (15 - 0.652 = 14.348) and then the
    capacity with the upper one ((15 - 0.744) x 0.9 = 12.830): no reader could redo it. Now the row shows the
    context the verdict uses and each step after it, and they add up, to the byte and as printed."""
    cells = parse(page).cells

    def column(key):
        return [(int(attrs["data-bytes"]), float(text.split()[0])) for name, attrs, text in cells if name == key]

    keys = ("card_total_bytes", "card_context_bytes", "card_after_context_bytes", "card_margin_bytes",
            "card_capacity_bytes")  # fmt: skip
    columns = [column(key) for key in keys]
    assert all(len(values) == len(data.fits) for values in columns)
    for fit, (total, context, after, margin, capacity) in zip(data.fits, zip(*columns)):
        assert context[0] == CUDA_CONTEXT_UPPER_BYTES == fit.gpu.budget.context_bytes  # the verdicts' context
        assert capacity[0] == fit.gpu.capacity_bytes
        assert total[0] - context[0] == after[0] or after[0] == 0 == capacity[0]  # a card the context fills
        assert after[0] - margin[0] == capacity[0] and margin[0] == int(after[0] * data.margin)
        assert total[1] - context[1] == pytest.approx(after[1], abs=0.0015) or after[1] == 0  # as printed, 3 decimals
        assert after[1] - margin[1] == pytest.approx(capacity[1], abs=0.0015)
    t4 = next(values for values in zip(*columns) if values[0][0] == find_gpu("T4").total_bytes)
    assert [printed for _, printed in t4] == [14.748, 0.744, 14.004, 1.4, 12.604]


def test_page_loads_nothing_from_anywhere(page):
    # xmlns="http://www.w3.org/2000/svg" names a namespace; it is not a request
    without_ns = re.sub(r'xmlns(:\w+)?="[^"]*"', "", page)
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:|//|file:)", without_ns, re.I)
    assert not re.search(r"url\(\s*[\"']?(?!#)", without_ns)
    assert "@import" not in page and "<link" not in page and "<img" not in page
    assert not re.search(r"<script(?![^>]*application/json)", page)
    assert "default-src 'none'" in page  # the browser refuses any request the page might still make


def test_page_numbers_equal_the_json(data, page):
    payload = data.estimate.to_json()
    embedded = json.loads(parse(page).json_text)
    embedded.pop("cards")
    assert embedded == json.loads(json.dumps(payload))
    assert check_numbers(page, payload) >= 5 + len(payload["breakdown"])


def test_the_json_holds_each_cards_verdict_as_estimate_gpu_gives_it(page, capsys):
    """The page's JSON held the estimate alone: its cards, their verdicts and largest batches were only in
    the HTML. Each card's entry now says what ``estimate gpu=`` says of it, in the same keys."""
    t4, nothing = json.loads(parse(page).json_text)["cards"]
    assert (t4["gpu"], t4["fits"], t4["largest_batch"]) == ("T4", True, 1024) and "1024" in t4["method"]
    assert (nothing["gpu"], nothing["fits"], nothing["largest_batch"]) == ("one-MiB", False, None)
    assert main(["estimate", *WORDS, "gpu=T4", "--json"]) == 0
    said = json.loads(capsys.readouterr().out)
    for key in ("gpu", "gpu_total_bytes", "fits", "margin", "capacity_bytes"):
        assert t4[key] == said[key], key


def test_commands_reproduce_it(data):
    lines = command_lines(data)
    assert lines[0] == "yolomem estimate yolov8n.yaml imgsz=64 batch=2 iterations=1 epochs=1"
    assert any(line.endswith("gpu=T4") for line in lines)
    assert lines[-1] == "yolomem report yolov8n.yaml imgsz=64 batch=2 iterations=1 epochs=1 batches=1,2 gpu=T4,one-MiB -o report.html"
    for line in lines:
        words = shlex.split(line)
        assert words[0] == "yolomem"
        spec, options = parse_command_line(words[1:])  # a UserError on a malformed line
        parse_estimate_words(options.words, spec.keys)  # every key=value word is one of the command's keys
    EstimateConfig.from_words(shlex.split(lines[0])[2:])


def test_report_without_matplotlib_keeps_the_numbers(monkeypatch, data):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    page = render_report(data)
    assert "<svg" not in page and "pip install &#x27;yolomem[plot]&#x27;" in page
    check_numbers(page, data.estimate.to_json())


def test_cli_report(tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["report", *WORDS, "batches=2", "gpu=RTX-3090", "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    page = out.read_text()
    assert page.count("<svg") == 3 and 'data-gpu="RTX-3090"' in page
    check_numbers(page, json.loads(parse(page).json_text))


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["yolov8n.yaml", "yolov8s.yaml"], "a report covers one model"),
        (["amp=true,false"], "one precision"),
        (["x=imgsz"], "x= is a key of yolomem plot"),
        (["margin=lots"], "margin"),
        (["margin=0.95"], "margin"),
    ],
)
def test_cli_report_errors(words, message, tmp_path, capsys):
    assert main(["report", *words, "-o", str(tmp_path / "r.html")]) == 2
    assert message in capsys.readouterr().err


def test_cli_report_output_must_be_html(tmp_path, capsys):
    assert main(["report", "-o", str(tmp_path / "r.png")]) == 2
    assert ".html" in capsys.readouterr().err


def test_largest_batch_is_fits_search_not_the_largest_sample():
    """The report's largest batch per card is ``yolomem fit``'s answer (traced to fit, one more traced
    not to), not the largest batch the curve happened to sample."""
    from yolomem.sweeps.fit import largest_batch

    # 150 MiB after the upper figure's context (verdicts use it), ~125 MiB after the 10 % margin
    card = Gpu("small", CUDA_CONTEXT_UPPER_BYTES + (150 << 20))
    report = report_data(TINY, [card], words=WORDS)
    (fit,) = report.fits
    sampled = [p.x for p in report.curve.curves[0].points]
    assert sampled == [1, 2, 4]
    expected = largest_batch(TINY, gpu=card.name, gpu_mem=card.total_bytes / GiB)  # as `yolomem fit` runs it
    assert fit.largest_batch == expected.max_batch > max(sampled)
    assert fit.fits is True and "10% margin" in fit.method
    page = render_report(report)
    assert f'data-key="largest_batch" data-value="{expected.max_batch}"' in page
