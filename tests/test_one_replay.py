"""Issue 11: one replay. Every path from events to the allocator model goes through
``yolomem.allocator.replay.replay``; no other module feeds ``malloc`` itself."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "yolomem"


def _modules_calling_malloc() -> set[str]:
    """Modules with a ``<something other than self>.malloc(...)`` call: a replay loop of their own."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "malloc":
                owner = node.value
                if not (isinstance(owner, ast.Name) and owner.id == "self"):
                    found.add(path.relative_to(PACKAGE.parent).as_posix())
    return found


def test_only_the_replay_module_feeds_the_allocator():
    assert _modules_calling_malloc() == {"yolomem/allocator/replay.py"}
