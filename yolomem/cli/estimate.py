"""``yolomem estimate``: the memory of one training run."""

from __future__ import annotations

import argparse

from yolomem.cli.registry import JSON, command
from yolomem.config.keys import ESTIMATE_KEYS


@command(
    "estimate", "estimate the GPU memory of a training run", keys=ESTIMATE_KEYS, words="[MODEL]", flags=(JSON,),
    examples=("yolomem estimate yolov8s.yaml batch=32 imgsz=640 amp=true",
              "yolomem estimate yolo11n-seg.yaml batch=8 gpu=T4 --json",
              "yolomem yolo detect train model=yolov8n.pt data=coco8.yaml epochs=3   (a pasted Ultralytics line)",
              "yolomem python train.py --img 640 --batch 16 --weights yolov5s.pt   (a pasted yolov5 repo line)"),
    more="Ultralytics' other keys (lr0=, patience=, ...) are accepted and ignored with a note.",
)  # fmt: skip
def estimate_command(options: argparse.Namespace) -> int:
    from yolomem.config.settings import EstimateConfig
    from yolomem.result.estimate import estimate_config

    from yolomem.cli.progress import progress_display

    config = EstimateConfig.from_words(options.words)  # no model given: the model key's default
    with progress_display("estimate", quiet=options.json):
        result = estimate_config(config, follow_oom_retry=True)
    if options.json:
        from yolomem.render.json_output import dumps

        print(dumps(result.to_json()), file=options.stdout)
    else:
        from yolomem.render.estimate_table import render_estimate

        render_estimate(result)
    return 0
