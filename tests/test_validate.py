"""validate: the error arithmetic, the checked-in public sample, and one real end-to-end estimate."""

from __future__ import annotations

import json
from pathlib import Path
from dataclasses import dataclass

import pytest

from yolomem.cli.main import main
from yolomem.config.settings import EstimateConfig
from yolomem.measure.log import append_record
from yolomem.measure.run import SOURCE_PUBLIC, MeasurementRecord
from yolomem.measure.compare import relative_error, summarize, validate, validate_records

SAMPLE = "tests/data/sample_results.jsonl"
CSV = str(Path(__file__).resolve().parent / "data" / "reference" / "measured_public_examples.csv")  # see SOURCES.md there


@dataclass(frozen=True)
class FakeEstimate:
    peak_reserved_bytes: int
    peak_allocated_bytes: int = 0
    steady_reserved_bytes: int | None = None
    context_bytes: int = 0


def _record(measured: dict, **config) -> dict:
    base = {"model": "yolov8n.yaml", "imgsz": 640, "batch": 16, "amp": "fp16"} | config
    return {"schema_version": 1, "source": "yolomem-measure", "created": "t", "config": base, "status": "ok",
            "error": None, "measured": measured}  # fmt: skip


def test_relative_error_is_signed_and_relative_to_the_measurement():
    assert relative_error(110, 100) == pytest.approx(0.10)
    assert relative_error(75, 100) == pytest.approx(-0.25)
    with pytest.raises(ValueError):
        relative_error(1, 0)


def test_median_and_max_of_absolute_errors():
    summary = summarize("peak_reserved_bytes", [0.10, -0.30, 0.05, -0.02])
    assert summary.count == 4
    assert summary.median_abs_error == pytest.approx((0.05 + 0.10) / 2)
    assert summary.max_abs_error == pytest.approx(0.30)
    assert summary.median_error == pytest.approx((-0.02 + 0.05) / 2)


def test_validate_arithmetic_with_a_stub_estimator():
    estimates = {8: FakeEstimate(1100, 500), 16: FakeEstimate(1500, 1000), 32: FakeEstimate(4400, 2000)}
    records = [
        _record({"peak_reserved_bytes": 1000, "peak_allocated_bytes": 400}, batch=8),  # +10 %, +25 %
        _record({"peak_reserved_bytes": 2000, "steady_reserved_bytes": 3000}, batch=16),  # -25 %, steady not estimated
        _record({"peak_reserved_bytes": 4000}, batch=32),  # +10 %
    ]
    asked = []

    def fake(config: EstimateConfig):
        asked.append(config.batch)
        return estimates[config.batch]

    report = validate_records(records, fake)
    assert asked == [8, 16, 32]
    errors = {(row.line, c.metric): c.error for row in report.rows for c in row.comparisons}
    assert errors[(1, "peak_reserved_bytes")] == pytest.approx(0.10)
    assert errors[(1, "peak_allocated_bytes")] == pytest.approx(0.25)
    assert errors[(2, "peak_reserved_bytes")] == pytest.approx(-0.25)
    assert errors[(2, "steady_reserved_bytes")] is None  # the estimator gives None: shown, not counted
    reserved = next(s for s in report.summaries if s.metric == "peak_reserved_bytes")
    assert (reserved.count, reserved.median_abs_error, reserved.max_abs_error) == (3, pytest.approx(0.10), pytest.approx(0.25))
    assert {s.metric for s in report.summaries} == {"peak_reserved_bytes", "peak_allocated_bytes"}


def test_failed_and_unestimable_records_are_skipped_with_a_reason():
    records = [
        _record({"peak_reserved_bytes": 1}) | {"status": "oom", "error": "CUDA out of memory", "measured": {}},
        _record({"peak_reserved_bytes": 1}, optimizer="Adamm"),
        _record({"peak_reserved_bytes": 1}) | {"schema_version": 99},
    ]
    report = validate_records(records, lambda config: pytest.fail("must not estimate"))
    reasons = [row.skipped for row in report.rows]
    assert "run oom" in reasons[0] and "did you mean 'Adam'" in reasons[1] and "schema_version 99" in reasons[2]
    assert report.summaries == ()


def test_sample_is_public_and_matches_the_reference_csv():
    """Every row of the checked-in sample is a public figure, converted from GB (1e9) to bytes exactly."""
    import csv

    rows = [json.loads(line) for line in open(SAMPLE)]
    assert rows and all(r["source"] == SOURCE_PUBLIC and r["reference"].startswith("https://") for r in rows)
    reference = {(r["model"].split(".")[0], int(r["imgsz"]), int(r["batch"]), float(r["value_gb"])) for r in csv.DictReader(open(CSV))}
    for row in rows:
        (value,) = row["measured"].values()
        key = (row["config"]["model"].split(".")[0], row["config"]["imgsz"], row["config"]["batch"], value / 1e9)
        assert key in reference, key
        MeasurementRecord.from_json(row)  # the sample follows the schema


def test_validate_on_the_sample_with_a_stub_reads_a_truncated_copy(tmp_path):
    copy = tmp_path / "sample.jsonl"
    copy.write_bytes(open(SAMPLE, "rb").read() + b'{"schema_version": 1, "sour')  # torn last line
    report = validate(copy, lambda config: FakeEstimate(peak_reserved_bytes=10**9))
    assert len(report.unreadable) == 1 and "truncated" in report.unreadable[0].reason
    assert len(report.rows) == 8
    first = report.rows[0]
    assert first.comparisons[0].error == pytest.approx(1e9 / 2.43e9 - 1)


def test_validate_end_to_end_on_a_tiny_config(tmp_path, capsys):
    """A real estimate through the CLI: the JSON's error is (estimated - measured) / measured."""
    measured = 50_000_000
    config = {"model": "yolov8n.yaml", "imgsz": 64, "batch": 2, "amp": "fp32", "iterations": 1}
    results = tmp_path / "r.jsonl"
    append_record(results, _record({"peak_reserved_bytes": measured}, **config))
    assert main(["validate", str(results), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)  # stdout is pure JSON
    comparison = payload["rows"][0]["comparisons"][0]
    estimated = comparison["estimated_bytes"]
    assert 2 * 2**20 < estimated < 2**30  # a tiny yolov8n run: some MiB, far below a GiB
    assert comparison["error"] == pytest.approx((estimated - measured) / measured)
    assert payload["summary"][0]["max_abs_error"] == pytest.approx(abs(comparison["error"]))


def test_table_shows_errors_summary_and_skips():
    import io

    from rich.console import Console

    from yolomem.render.compare_output import render_validation

    records = [_record({"peak_reserved_bytes": 2**30}), _record({}, optimizer="Adamm")]
    report = validate_records(records, lambda config: FakeEstimate(peak_reserved_bytes=2**29), path="r.jsonl")
    buffer = io.StringIO()
    render_validation(report, Console(file=buffer, width=140))
    text = buffer.getvalue()
    assert "-50.0 %" in text and "1.000" in text and "0.500" in text and "median |error|" in text
    assert "skipped #2" in text


def test_validate_cli_errors_are_one_line(capsys, tmp_path):
    assert main(["validate", str(tmp_path / "missing.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err


# --- issue 11, item 12 ------------------------------------------------------------------------------


def test_rows_are_numbered_by_their_file_line(tmp_path):
    path = tmp_path / "r.jsonl"
    good = json.dumps(_record({"peak_reserved_bytes": 1000}))
    path.write_text(f"\n{{not json\n{good}\n\n{good.replace('16', '8', 1)}\n")
    report = validate(path, lambda config: FakeEstimate(peak_reserved_bytes=1100))
    assert [row.line for row in report.rows] == [3, 5]
    assert [s.line_number for s in report.unreadable] == [2]


def test_extra_config_keys_are_ignored_with_a_note(tmp_path, capsys):
    records = [_record({"peak_reserved_bytes": 1000}, lr0=0.01, patience=5)]
    report = validate_records(records, lambda config: FakeEstimate(peak_reserved_bytes=1100))
    (row,) = report.rows
    assert row.skipped is None and row.comparisons[0].error == pytest.approx(0.10)
    assert "lr0" in row.notes[0] and "patience" in row.notes[0] and "ignored" in row.notes[0]
    assert report.to_json()["rows"][0]["notes"] == list(row.notes)


def test_a_directory_is_named_as_one(tmp_path, capsys):
    assert main(["validate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a directory" in err and err.count("\n") == 1


def test_a_binary_file_is_one_line_and_exit_2(tmp_path, capsys):
    binary = tmp_path / "results.jsonl"
    binary.write_bytes(bytes(range(256)) * 40)
    assert main(["validate", str(binary)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "binary" in err and "warning" not in err


# --- a check built on validate must not pass on nothing --------------------------------------------


@pytest.mark.parametrize("text, error", [
    ("", "holds no JSON record (it is empty)"),
    ("\n \n", "holds no JSON record (it holds only blank lines)"),
    ("not json\n[1]\n", "holds no JSON record (2 unreadable lines, the first: line 1, not valid JSON)"),
])  # fmt: skip
def test_a_file_without_records_is_one_line_and_exit_2(tmp_path, capsys, text, error):
    path = tmp_path / "r.jsonl"
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and error in captured.err and captured.out == ""


@pytest.mark.parametrize("json_flag", [False, True])
def test_nothing_compared_is_exit_1_with_the_reason_and_the_lines_that_are_not_json(tmp_path, capsys, json_flag):
    path = tmp_path / "r.jsonl"
    unversioned = {k: v for k, v in _record({"peak_reserved_bytes": 1000}).items() if k != "schema_version"}
    path.write_text(json.dumps(unversioned) + "\nnot json\n")
    assert main(["validate", str(path), *(["--json"] if json_flag else [])]) == 1
    captured = capsys.readouterr()
    (error,) = [line for line in captured.err.splitlines() if line.startswith("yolomem: error:")]
    assert f"no record of {path} could be compared: line 2 is not a JSON record, and 1 record was skipped" in error
    assert "(the first, line 1: unreadable record: schema_version None" in error
    if json_flag:
        assert json.loads(captured.out)["unreadable_lines"] == [{"line": 2, "reason": "not valid JSON"}]


def test_one_record_compared_is_enough(tmp_path):
    records = [_record({"peak_reserved_bytes": 1000}), _record({}) | {"status": "oom", "error": "CUDA out of memory"}]
    assert validate_records(records, lambda config: FakeEstimate(1100)).nothing_compared() is None
    failed = validate_records(records[1:], lambda config: pytest.fail("must not estimate"), path="r.jsonl")
    assert failed.nothing_compared() == ("no record of r.jsonl could be compared: 1 record was skipped "
                                         "(the first, line 1: run oom: CUDA out of memory)")  # fmt: skip
