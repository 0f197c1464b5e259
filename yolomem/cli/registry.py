"""The table of subcommands: each command module registers its handler here when imported."""

from __future__ import annotations

import argparse
from collections.abc import Callable

DEFAULT_MODEL = "yolov8n.yaml"
Handler = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[str, Handler]] = {}


def command(name: str, help_text: str):
    """Register a subcommand handler; each handler takes the parsed namespace and returns an exit code."""

    def register(handler: Handler) -> Handler:
        COMMANDS[name] = (help_text, handler)
        return handler

    return register
