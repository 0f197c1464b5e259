"""The table of subcommands: each command module registers its handler, keys and flags here when imported.

A command declares what it takes: its ``key=value`` keys (a ``KeyTable``, listed by ``--help``), what its
bare words are (a model, models, a file), and its own flags. A flag exists only on the commands where it
means something: ``yolomem estimate --csv`` is an error.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from yolomem.config.keys import ESTIMATE_KEYS, NO_KEYS, KeyTable

DEFAULT_MODEL = ESTIMATE_KEYS.default("model")
Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Flag:
    names: tuple[str, ...]  # ("-o", "--output")
    help: str
    metavar: str | None = None  # set: the flag takes a value
    machine: bool = False  # its output is for programs: stdout holds only that output

    def but(self, help_text: str) -> Flag:
        """The same flag with a command's own help."""
        return Flag(self.names, help_text, self.metavar, self.machine)

    @property
    def dest(self) -> str:
        return self.names[-1].lstrip("-").replace("-", "_")


JSON = Flag(("--json",), "print JSON instead of a table (stdout holds only the JSON)", machine=True)
OUTPUT = Flag(("-o", "--output"), "the file to write", metavar="FILE")
NO_CACHE = Flag(("--no-cache",), "neither read nor write the trace cache (yolomem cache shows where it is)")
VERBOSE = Flag(("-v", "--verbose"), "say where each traced run came from: traced, the cache, or derived (and why not)")


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    handler: Handler
    keys: KeyTable
    words: str  # what the bare words are, for the usage line: "[MODEL]", "[MODEL ...]", "RESULTS.jsonl", ""
    flags: tuple[Flag, ...]
    examples: tuple[str, ...]
    more: str = ""  # a paragraph after the examples
    sweeps: bool = False  # traces side by side in worker processes: they start with the command (yolomem.workers)


COMMANDS: dict[str, Command] = {}


def command(name: str, help_text: str, *, keys: KeyTable = NO_KEYS, words: str = "", flags: tuple[Flag, ...] = (JSON,),
            examples: tuple[str, ...] = (), more: str = "", traces: bool = True, sweeps: bool = False):
    """Register a subcommand handler; each handler takes the parsed namespace and returns an exit code.

    The namespace holds ``words`` (the bare and ``key=value`` words, in order), one attribute per flag,
    and ``stdout``: where the command's result goes (under a machine-readable flag, ``sys.stdout`` itself
    points at stderr while the command runs, so that nothing else lands in the result)."""

    every = (NO_CACHE, VERBOSE) if traces else ()  # commands that estimate: the trace cache's switches

    def register(handler: Handler) -> Handler:
        COMMANDS[name] = Command(name, help_text, handler, keys, words, (*flags, *every), examples, more, sweeps)
        return handler

    return register
