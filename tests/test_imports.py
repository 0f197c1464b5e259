"""The package imports cleanly: every module alone in a fresh interpreter, and no import circles.

Circles are found statically over every ``yolomem`` import, function-level ones included: a lazy
import that closes a circle still ties two rooms of the pipeline together both ways.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "yolomem"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(_module_name(p) for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")


def _imports(path: Path, known: set[str]) -> set[str]:
    """Every yolomem module ``path`` imports, resolved to a module file (not a package's attribute)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name.startswith("yolomem.") or name == "yolomem":
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    known = set(MODULES)
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name == "__main__.py":
            continue
        name = _module_name(path)
        # a package's __init__ is not a dependency of its submodules' users
        graph[name] = {m for m in _imports(path, known) if m != name and m != "yolomem"}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circles():
    assert find_cycle(import_graph()) is None


# One interpreter imports the libraries yolomem builds on, then forks a child per module: each child imports
# its module into a process where no yolomem module is loaded yet, as a fresh interpreter would, without
# paying torch's import (about 3 s here) 124 times.
_IMPORT_EACH_IN_A_FORK = r"""
import json, os, sys, traceback
import torch, ultralytics  # noqa: F401 - third-party, shared by every fork; no yolomem module is loaded
failures = {}
for name in sys.argv[1:]:
    read_end, write_end = os.pipe()
    if os.fork() == 0:
        os.close(read_end)
        try:
            __import__(name)
            message = ""
        except BaseException:
            message = traceback.format_exc()
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        failures[name] = pipe.read()
    os.wait()
print(json.dumps(failures))
"""


@pytest.fixture(scope="module")
def import_failures() -> dict[str, str]:
    result = subprocess.run([sys.executable, "-c", _IMPORT_EACH_IN_A_FORK, *MODULES], capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_fork_reports_a_module_that_fails_to_import():
    result = subprocess.run([sys.executable, "-c", _IMPORT_EACH_IN_A_FORK, "yolomem", "yolomem.no_such_module"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    failures = json.loads(result.stdout.strip().splitlines()[-1])
    assert failures["yolomem"] == ""
    assert "ModuleNotFoundError" in failures["yolomem.no_such_module"]


def test_a_fork_starts_with_no_yolomem_module_loaded():
    loaded = "print(sorted(m for m in sys.modules if m.startswith('yolomem')), flush=True)"
    script = _IMPORT_EACH_IN_A_FORK.replace("__import__(name)", loaded)
    assert script != _IMPORT_EACH_IN_A_FORK
    result = subprocess.run([sys.executable, "-c", script, "yolomem.cli"], capture_output=True, text=True, timeout=120)
    assert result.stdout.splitlines()[0] == "[]", result.stdout


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone(module, import_failures):
    assert import_failures[module] == "", import_failures[module][-2000:]
