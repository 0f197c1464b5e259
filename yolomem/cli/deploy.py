"""``yolomem deploy``: the memory of running a trained model (PyTorch, ONNX Runtime, TensorRT)."""

from __future__ import annotations

import argparse

from yolomem.cli.registry import JSON, command
from yolomem.deployment.config import DEPLOY_KEYS


@command(
    "deploy", "memory of predict/val in PyTorch, ONNX Runtime or a TensorRT engine, e.g. on a Jetson",
    keys=DEPLOY_KEYS, words="[MODEL]", flags=(JSON,), traces=False,
    examples=("yolomem deploy yolov8s.yaml format=engine precision=int8 batch=8 device=Jetson-AGX-Orin-32GB",
              "yolomem deploy yolov8m-seg.yaml format=engine precision=fp16 device=Jetson-Orin-Nano-8GB",
              "yolomem deploy yolo11n.pt mode=val batch=32 precision=fp16 device=T4 --json"),
    more="Unified memory (Jetson): the figure is what the deployment takes of the module's RAM, and the RAM "
         "left for the OS and the application is shown.",
)  # fmt: skip
def deploy_command(options: argparse.Namespace) -> int:
    from yolomem.deployment.config import DeployConfig
    from yolomem.deployment.estimate import deploy_config

    result = deploy_config(DeployConfig.from_words(options.words))
    if options.json:
        from yolomem.render.json_output import dumps

        print(dumps(result.to_json()), file=options.stdout)
    else:
        from yolomem.render.deploy_output import render_deployment

        render_deployment(result)
    return 0
