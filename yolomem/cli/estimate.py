"""``yolomem estimate``: the memory of one training run."""

from __future__ import annotations

import argparse

from yolomem.cli.registry import DEFAULT_MODEL, command


@command("estimate", "estimate the GPU memory of a training run")
def estimate_command(options: argparse.Namespace) -> int:
    from yolomem.config.settings import EstimateConfig
    from yolomem.result.estimate import estimate_config

    from yolomem.cli.progress import progress_display

    words = options.words or [DEFAULT_MODEL]
    config = EstimateConfig.from_words(words)
    with progress_display("estimate", quiet=options.json):
        result = estimate_config(config)
    if options.json:
        from yolomem.render.json_output import dumps

        print(dumps(result.to_json()))
    else:
        from yolomem.render.estimate_table import render_estimate

        render_estimate(result)
    return 0
