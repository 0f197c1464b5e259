"""``yolomem`` command line: a thin layer over the Python API.

Subcommands take Ultralytics-style ``key=value`` words, so a pasted ``yolo train ...`` line works; each
command's keys (``yolomem.config.keys``) and flags are its own, and ``yolomem COMMAND --help`` lists them.
Options may stand anywhere among the words. Without a command, the words are an estimate's
(``yolomem yolov8s.yaml batch=8``). Bad input prints one line and exits with code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import itertools
import logging
import os
import sys

from yolomem.cli.registry import COMMANDS, Command
from yolomem.config.keys import INFERENCE_MODES, yolo_mode
from yolomem.errors import UserError, missing_dependency_error, too_large_error
from yolomem.workers import warm_workers

# Each module registers its subcommands on import; this list is the whole CLI, in help order.
COMMAND_MODULES = ("estimate", "fit", "table", "plot", "measure", "deploy", "site", "cache")
DEFAULT_COMMAND = "estimate"


def load_commands() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"yolomem.cli.{name}")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage and the message on two lines: one line here
        raise UserError(f"{message}; see '{self.prog} --help'")


def get_parser() -> argparse.ArgumentParser:
    """``yolomem --help``: the commands, one line each."""
    from yolomem import __version__

    load_commands()
    width = max(map(len, COMMANDS))
    listing = "\n".join(f"  {name:<{width}}  {spec.help}" for name, spec in COMMANDS.items())
    parser = _Parser(
        prog="yolomem", usage="yolomem [COMMAND] [MODEL] [key=value ...] [options]",
        description="GPU memory of YOLO training, predicted without a GPU.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"commands:\n{listing}\n\nWithout a command, yolomem runs '{DEFAULT_COMMAND}'. "
               "'yolomem COMMAND --help' lists the command's keys.\n"
               "example: yolomem estimate yolov8s.yaml batch=32 imgsz=640 amp=true",
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"yolomem {__version__}")
    return parser


def command_parser(spec: Command) -> argparse.ArgumentParser:
    """One command's parser: its bare and ``key=value`` words, and its own flags."""
    flags = " ".join(f"[{f.names[0]}{' ' + f.metavar if f.metavar else ''}]" for f in spec.flags)
    words = f"{spec.words} " if spec.words else ""
    keys = "[key=value ...] " if spec.keys.keys else ""
    epilog = [spec.keys.help_text()] if spec.keys.keys else []
    if spec.more:
        epilog.append(spec.more)
    if spec.examples:
        epilog.append("examples:\n" + "\n".join(f"  {line}" for line in spec.examples))
    parser = _Parser(
        prog=f"yolomem {spec.name}", usage=f"yolomem {spec.name} {words}{keys}{flags}".rstrip(),
        description=spec.help, epilog="\n\n".join(epilog), formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("words", nargs="*", help=argparse.SUPPRESS)
    for flag in spec.flags:
        if flag.metavar:
            parser.add_argument(*flag.names, dest=flag.dest, metavar=flag.metavar, help=flag.help)
        else:
            parser.add_argument(*flag.names, dest=flag.dest, action="store_true", help=flag.help)
    return parser


def _split_command(argv: list[str]) -> tuple[str | None, list[str]]:
    """(command, its arguments); None for the top-level ``--help``/``--version``."""
    if argv and argv[0] in COMMANDS:
        return argv[0], argv[1:]
    flags = list(itertools.takewhile(lambda word: word.startswith("-") and word not in {"-h", "--help", "--version"}, argv))
    if flags and len(argv) > len(flags) and argv[len(flags)] in COMMANDS:  # options stand anywhere: `--json estimate ...`
        return argv[len(flags)], flags + argv[len(flags) + 1 :]
    if argv and argv[0] in {"-h", "--help", "--version"}:
        return None, argv
    if yolo_mode(argv) in INFERENCE_MODES:
        return "deploy", argv  # a pasted yolo predict/val/export line, without a command: deploy sizes it
    first = argv[0] if argv else ""
    if first and not first.startswith("-") and not any(c in first for c in "=./\\"):
        # a near miss of a command is a typo, not a model name (model names are far from every command)
        close = difflib.get_close_matches(first.lower(), COMMANDS, n=1, cutoff=0.8)
        if close:
            raise UserError(f"unknown command {first!r}; did you mean {close[0]!r}? commands: {', '.join(COMMANDS)}")
    return DEFAULT_COMMAND, argv


def _parse(spec: Command, args: list[str]) -> argparse.Namespace:
    parser = command_parser(spec)
    options, extra = parser.parse_known_intermixed_args(args)
    if extra:  # an option this command does not have
        known = [name for flag in spec.flags for name in flag.names]
        close = difflib.get_close_matches(extra[0], known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        has = f"its options: {', '.join(known)}" if known else "it has no options"
        raise UserError(f"{spec.name} has no option {extra[0]!r}{hint}; {has}")
    return options


def _message(error: UserError, argv: list[str]) -> str:
    """The error's line; for a key this command does not take: which commands take it, and where the
    valid keys are listed."""
    from yolomem.config.keys import UnknownKey

    if not isinstance(error, UnknownKey):
        return str(error)
    name = argv[0] if argv and argv[0] in COMMANDS else DEFAULT_COMMAND
    words = COMMANDS[name].words
    if error.key in ("model", "models") and "MODEL" in words:  # pick and site take models=; these take words
        given = next((word.partition("=")[2] for word in argv if word.startswith(f"{error.key}=")), "")
        models = given.replace(",", " ").split() or ["yolov8n.yaml"]
        if "..." in words:
            return f"unknown key {error.key!r}: {name} takes its models as words: yolomem {name} {' '.join(models)}"
        return f"unknown key {error.key!r}: {name} takes its model as a word: yolomem {name} {models[0]}"
    others = [f"yolomem {other}" for other, spec in COMMANDS.items() if other != name and error.key in spec.keys]
    elsewhere = f"; {error.key}= is a key of {' and '.join(others)}" if others else ""
    return f"{error.short}{elsewhere}; 'yolomem {name} --help' lists the keys"


def _read_pasted_script(spec: Command, args: list[str]) -> list[str]:
    """``args``, or the words of a pasted yolov5 repo line (``python train.py --img 640 ...``,
    ``yolomem.cli.train_py``) with the command's own flags kept, saying on stderr what they were read as."""
    from yolomem.cli.train_py import check_not_inference, read_train_py_line, script_index

    if script_index(args) is None:
        check_not_inference(args)
        return args
    own, line_words, words = [], [], iter(args)
    takes_value = {name: bool(flag.metavar) for flag in spec.flags for name in flag.names}
    for word in words:
        name = word.partition("=")[0]
        if name in takes_value:
            own.append(word)
            if takes_value[name] and "=" not in word:
                own.append(next(words, ""))
        else:
            line_words.append(word)
    line = read_train_py_line(line_words)
    for text in line.echo(spec.name):
        print(f"yolomem: {text}", file=sys.stderr)
    return [*line.words, *own]


def parse_command_line(argv: list[str]) -> tuple[Command, argparse.Namespace]:
    """The command ``argv`` names and its options, without running it (``UserError`` when malformed)."""
    load_commands()
    name, args = _split_command(argv)
    if name is None:
        raise UserError("no command: give one, e.g. 'estimate'")
    return COMMANDS[name], _parse(COMMANDS[name], args)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    stdout = sys.stdout
    try:
        load_commands()
        name, args = _split_command(argv)
        if name is None:
            get_parser().parse_args(args)
            return 0
        spec = COMMANDS[name]
        args = _read_pasted_script(spec, args)
        options = _parse(spec, args)
        options.stdout = stdout
        machine = any(flag.machine and getattr(options, flag.dest, False) for flag in spec.flags)
        # under --json (or --csv, ...) everything but the result goes to stderr: Ultralytics prints its
        # settings banner on stdout the first time it runs on a machine
        # workers first: they import torch while this process does (its --no-cache import, its handler's)
        with warm_workers(spec.sweeps), _command_scope(options), \
                contextlib.redirect_stdout(sys.stderr) if machine else contextlib.nullcontext():  # fmt: skip
            return spec.handler(options)
    except UserError as error:
        print(f"yolomem: error: {_message(error, argv)}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as error:
        refused = too_large_error(error)
        if refused is None:
            raise
        print(f"yolomem: error: {refused}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        refused = missing_dependency_error(error)
        if refused is None:
            raise
        print(f"yolomem: error: {refused}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `yolomem ... --json | head`: the reader left; Python would print a traceback
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # and again at exit, flushing
        return 141  # 128 + SIGPIPE, as a shell reports it
    except SystemExit as done:  # --help, --version
        return done.code if isinstance(done.code, int) else 0


@contextlib.contextmanager
def _command_scope(options: argparse.Namespace):
    """``--no-cache`` and ``--verbose``, for the whole command and no longer: ``main`` may be called
    again in the same process (tests, notebooks), and the next command starts as a fresh one would."""
    logger = logging.getLogger("yolomem")
    saved_level, handler = logger.level, None
    if getattr(options, "verbose", False):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("yolomem: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    cache = contextlib.nullcontext()
    if getattr(options, "no_cache", False):
        from yolomem.result.runs import cache_off

        cache = cache_off()
    elif hasattr(options, "no_cache"):  # a command that estimates, with the cache on
        _warn_of_an_unusable_cache()
    try:
        with cache:
            yield
    finally:
        if handler is not None:
            logger.removeHandler(handler)
            logger.setLevel(saved_level)


def _warn_of_an_unusable_cache() -> None:
    """A file where the cache folder should be: every read and write would fail, and the command runs
    without the cache. Said once, on stderr (``yolomem cache`` refuses it)."""
    from yolomem.trace.store import active_store  # not the run source's module: it imports torch

    store = active_store()
    problem = store.problem() if store.enabled else None
    if problem:
        print(f"yolomem: warning: {problem}; running without the trace cache", file=sys.stderr)


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is when a line is logged (the progress bar's console does too)."""

    def emit(self, record) -> None:
        print(self.format(record), file=sys.stderr)
