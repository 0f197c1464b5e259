"""Where Ultralytics tests the device type to pick a dtype, the trace takes the branch a GPU takes.

The trace's tensors are CPU tensors (fake, or real in the tests' ground truth), so in it
``x.device.type == "cuda"`` is False. Where that choice changes memory, the method is compiled again
from its own source with the test replaced by ``True`` for the duration of a trace, and put back after:

- ``SegTaskAlignedAssigner.pair_overlaps`` (8.4.190, YOLO26-seg): ``torch.half if proto.device.type ==
  "cuda" else torch.float`` for its decoded-mask blocks, chunks of about 2^27 pixels that float32 would
  count twice.

A release whose source does not hold the test is left as it is.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceTest:
    module: str
    owner: str  # the class
    method: str
    test: str  # the expression, as the source spells it


DEVICE_TESTS = (DeviceTest("ultralytics.utils.tal", "SegTaskAlignedAssigner", "pair_overlaps", 'proto.device.type == "cuda"'),)


@contextlib.contextmanager
def gpu_branches() -> Iterator[None]:
    """Inside, each method of ``DEVICE_TESTS`` found in the installed release takes its GPU branch."""
    restore: list[tuple[type, str, object]] = []
    try:
        for device_test in DEVICE_TESTS:
            owner = getattr(_module(device_test.module), device_test.owner, None)
            function = vars(owner).get(device_test.method) if owner is not None else None
            replacement = _on_gpu(owner, function, device_test.test) if function is not None else None
            if replacement is not None:
                restore.append((owner, device_test.method, function))
                setattr(owner, device_test.method, replacement)
        yield
    finally:
        for owner, name, function in reversed(restore):
            setattr(owner, name, function)


def _module(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _on_gpu(owner: type, function, test: str):
    """``function`` compiled from its source with ``test`` read as True, or None where the source lacks it.
    It keeps its file and line numbers (tracebacks, and the tests' replay of scalar reads by line), its
    module's globals, and ``owner`` as the class zero-argument ``super()`` resolves against."""
    lines, first_line = inspect.getsourcelines(function)
    source = textwrap.dedent("".join(lines))
    if test not in source:
        return None
    # a class body around it, so that the compiler gives it the __class__ cell super() reads
    tree = ast.parse("class _Owner:\n" + textwrap.indent(source.replace(test, "True"), "    "))
    ast.increment_lineno(tree, first_line - 2)
    namespace: dict = {}
    exec(compile(tree, inspect.getsourcefile(function), "exec"), function.__globals__, namespace)  # noqa: S102
    compiled = vars(namespace["_Owner"])[function.__name__]
    for name, cell in zip(compiled.__code__.co_freevars, compiled.__closure__ or ()):
        if name == "__class__":
            cell.cell_contents = owner
    compiled.__qualname__ = function.__qualname__
    return compiled
