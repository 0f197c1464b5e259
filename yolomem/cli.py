"""``yolomem`` command line: a thin layer over the Python API.

Subcommands take Ultralytics-style ``key=value`` words, so a pasted ``yolo train ...`` line works.
Bad input prints one line and exits with code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from yolomem.errors import UserError

DEFAULT_MODEL = "yolov8n.yaml"
Handler = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[str, Handler]] = {}


def command(name: str, help_text: str):
    """Register a subcommand handler; each handler takes the parsed namespace and returns an exit code."""

    def register(handler: Handler) -> Handler:
        _COMMANDS[name] = (help_text, handler)
        return handler

    return register


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="yolomem",
        description="GPU memory of YOLO training, predicted without a GPU.",
        epilog="example: yolomem estimate yolov8s.yaml batch=32 imgsz=640 amp=true",
    )
    sub = parser.add_subparsers(dest="command")
    for name, (help_text, _handler) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        p.add_argument("words", nargs="*", help="MODEL and key=value settings (Ultralytics names)")
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        p.add_argument("-o", "--output", help="file to write (plot: .png/.svg/.pdf, report: .html)")
        p.add_argument("--explain", action="store_true", help="fit: list what each memory-saving step buys")
        p.add_argument("--csv", action="store_true", help="table: print CSV")
        p.add_argument("--markdown", action="store_true", help="table: print a Markdown table")
    return parser


@command("estimate", "estimate the GPU memory of a training run")
def _estimate(options: argparse.Namespace) -> int:
    from yolomem.config import EstimateConfig
    from yolomem.estimator import estimate_config

    words = options.words or [DEFAULT_MODEL]
    config = EstimateConfig.from_words(words)
    result = estimate_config(config)
    if options.json:
        from yolomem.render.json_output import dumps

        print(dumps(result.to_json()))
    else:
        from yolomem.render.estimate_table import render_estimate

        render_estimate(result)
    return 0


def main(argv: list[str] | None = None) -> int:
    _load_plugins()
    parser = get_parser()
    options = parser.parse_args(argv)
    if options.command is None:
        options = parser.parse_args(["estimate", *(argv or [])])
    try:
        return _COMMANDS[options.command][1](options)
    except UserError as error:
        print(f"yolomem: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _load_plugins() -> None:
    """Other subcommands live in their own modules and register themselves on import."""
    import importlib

    for module in ("yolomem.commands",):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise


if __name__ == "__main__":
    # run through the imported module, where subcommand modules register themselves
    from yolomem.cli import main as _main

    sys.exit(_main())
