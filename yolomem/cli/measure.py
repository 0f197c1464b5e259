"""``yolomem measure`` (a real training run on a CUDA GPU) and ``yolomem validate`` (estimate vs measurement)."""

from __future__ import annotations

import argparse
import sys

from yolomem.cli.registry import JSON, command
from yolomem.errors import UserError
from yolomem.measure.run import MEASURE_KEYS


@command(
    "measure", "measure real training memory on a CUDA GPU and append it to a results file",
    keys=MEASURE_KEYS, words="MODEL", flags=(JSON,), traces=False,
    examples=("yolomem measure yolov8n.yaml batch=16 results=runs.jsonl",
              "yolomem measure yolov5s framework=yolov5 batch=16   # the yolov5 repo's train.py (pip install yolov5)"),
)  # fmt: skip
def _measure(options: argparse.Namespace) -> int:
    from yolomem.measure.run import measure, parse_measure_words

    if not options.words:
        raise UserError("measure needs a model, e.g. 'yolomem measure yolov8n.yaml batch=16 results=runs.jsonl'")
    # the words first (keys, values and the model, with estimate's one-line errors), then CUDA (measure())
    settings, results = parse_measure_words(options.words)
    record = measure(settings, results)
    if options.json:
        from yolomem.render.json_output import dumps

        print(dumps(record.to_json()), file=options.stdout)
    else:
        from yolomem.render.compare_output import render_measurement

        render_measurement(record, str(results))
    return 0 if record.status == "ok" else 1


@command(
    "validate", "estimate every config of a results file and compare with its measurement",
    words="RESULTS.jsonl", flags=(JSON,), examples=("yolomem validate tests/data/sample_results.jsonl",),
    more="Exit code 1 when no record could be compared (every one skipped, with the reasons); 2 for a file "
         "that is not a results file.",
)  # fmt: skip
def _validate(options: argparse.Namespace) -> int:
    from yolomem.measure.compare import validate

    if len(options.words) != 1:
        raise UserError("validate takes one results file, e.g. 'yolomem validate tests/data/sample_results.jsonl'")
    report = validate(options.words[0])
    if options.json:
        from yolomem.render.json_output import dumps

        print(dumps(report.to_json()), file=options.stdout)
        for line in report.unreadable:
            print(f"yolomem: warning: {line.describe(report.path)}", file=sys.stderr)
    else:
        from yolomem.render.compare_output import render_validation

        render_validation(report)
    failed = report.nothing_compared()
    if failed:  # a check built on validate must not pass on nothing (1: as measure for a run that failed)
        print(f"yolomem: error: {failed}", file=sys.stderr)
        return 1
    return 0
