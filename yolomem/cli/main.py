"""``yolomem`` command line: a thin layer over the Python API.

Subcommands take Ultralytics-style ``key=value`` words, so a pasted ``yolo train ...`` line works.
Bad input prints one line and exits with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from yolomem.cli.registry import COMMANDS
from yolomem.errors import UserError

# Each module registers its subcommands on import; this list is the whole CLI, in help order.
COMMAND_MODULES = ("estimate", "fit", "table", "plot", "measure", "cache")


def load_commands() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"yolomem.cli.{name}")


def get_parser() -> argparse.ArgumentParser:
    load_commands()
    parser = argparse.ArgumentParser(
        prog="yolomem",
        description="GPU memory of YOLO training, predicted without a GPU.",
        epilog="example: yolomem estimate yolov8s.yaml batch=32 imgsz=640 amp=true",
    )
    sub = parser.add_subparsers(dest="command")
    for name, (help_text, _handler) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        p.add_argument("words", nargs="*", help="MODEL and key=value settings (Ultralytics names)")
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        p.add_argument("-o", "--output", help="file to write (plot: .png/.svg/.pdf, report: .html)")
        p.add_argument("--explain", action="store_true", help="fit: list what each memory-saving step buys")
        p.add_argument("--csv", action="store_true", help="table: print CSV")
        p.add_argument("--markdown", action="store_true", help="table: print a Markdown table")
        p.add_argument("--no-cache", action="store_true", help="neither read nor write the trace cache")
        p.add_argument("-v", "--verbose", action="store_true", help="say where each traced run came from")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    options = parser.parse_args(argv)
    if options.command is None:
        options = parser.parse_args(["estimate", *(argv or [])])
    _setup(options)
    try:
        return COMMANDS[options.command][1](options)
    except UserError as error:
        print(f"yolomem: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _setup(options: argparse.Namespace) -> None:
    """``--no-cache`` and ``--verbose``: for the whole command."""
    if getattr(options, "no_cache", False):
        import os

        from yolomem.result.runs import configure
        from yolomem.trace.store import OFF_ENV

        os.environ[OFF_ENV] = "1"  # worker processes (the table's) start from the environment
        configure(cache=False)
    if getattr(options, "verbose", False):
        logger = logging.getLogger("yolomem")
        if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
            handler = _StderrHandler()
            handler.setFormatter(logging.Formatter("yolomem: %(message)s"))
            logger.addHandler(handler)
        logger.setLevel(logging.INFO)


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is when a line is logged (the progress bar's console does too)."""

    def emit(self, record) -> None:
        print(self.format(record), file=sys.stderr)
