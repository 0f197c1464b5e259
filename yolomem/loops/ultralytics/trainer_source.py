"""Reading the installed trainer's own code: its syntax tree, and what the density plan needs of it.

Apart from ``release`` so that ``yolomem.loops.density`` can ask without importing the release probes
(which import ``yolomem.loops.base``, which imports the density plan)."""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap


class ReleaseProbeError(RuntimeError):
    """The installed code does not look like any release the probe knows how to read."""


def function_tree(function) -> ast.FunctionDef:
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    return next(node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)))


def closes_mosaic_when_short() -> bool:
    """How ``_do_train`` closes the mosaic: ``epoch >= self.epochs - self.args.close_mosaic`` behind a
    once-only gate (8.4.157+: a run of at most ``close_mosaic`` epochs closes it at epoch 0), or
    ``epoch == ...`` (before: such a run never reaches the close and keeps its mosaic)."""
    from ultralytics.engine.trainer import BaseTrainer

    for node in ast.walk(function_tree(BaseTrainer._do_train)):
        if (isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "epoch"
                and "close_mosaic" in ast.dump(node.comparators[0])):  # fmt: skip
            if isinstance(node.ops[0], ast.Eq):
                return False
            if isinstance(node.ops[0], ast.GtE):
                return True
    raise ReleaseProbeError("no 'epoch == / >= self.epochs - self.args.close_mosaic' in BaseTrainer._do_train")


@functools.cache
def mosaic_close_rule() -> bool:
    """``closes_mosaic_when_short`` once per process; a release that rewrote the close takes the newest rule."""
    try:
        return closes_mosaic_when_short()
    except ReleaseProbeError:
        return True
