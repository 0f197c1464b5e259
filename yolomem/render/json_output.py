"""JSON output: one object per result, stable keys (locked by tests/test_cli.py)."""

from __future__ import annotations

import json


def dumps(payload) -> str:
    return json.dumps(payload, indent=2, sort_keys=False)
