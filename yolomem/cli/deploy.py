"""``yolomem deploy``: the memory of running a trained model (PyTorch, ONNX Runtime, TensorRT)."""

from __future__ import annotations

import argparse

from yolomem.cli.registry import DEFAULT_MODEL, command


@command("deploy", "memory of predict/val in PyTorch, ONNX Runtime or a TensorRT engine, e.g. on a Jetson")
def deploy_command(options: argparse.Namespace) -> int:
    from yolomem.deploy.config import DeployConfig
    from yolomem.deploy.estimate import deploy_config

    config = DeployConfig.from_words(options.words or [DEFAULT_MODEL])
    result = deploy_config(config)
    if options.json:
        from yolomem.render.json_output import dumps

        print(dumps(result.to_json()))
    else:
        from yolomem.render.deploy_output import render_deployment

        render_deployment(result)
    return 0
