"""A fresh clone passes on its own: no test names a file outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
# Top folders of this machine a test might reach for, and the sibling folder with the shared reference
# data: the pattern and its own check are built from these, so this file names no such path itself.
MACHINE_ROOTS = ("work", "home", "root")
SHARED = "shared"
OUTSIDE = re.compile("[\"'](" + "|".join(f"/{root}/" for root in MACHINE_ROOTS) + rf"|\.\./{SHARED})"
                     rf"|parents\[\d\]\s*/\s*[\"']{SHARED}")


def test_the_pattern_catches_outside_paths():
    for root in MACHINE_ROOTS:
        assert OUTSIDE.search(f'Path("/{root}/{SHARED}/reference/x.csv")')
    assert OUTSIDE.search(f'open("../{SHARED}/reference/x.csv")')
    assert OUTSIDE.search(f'Path(__file__).resolve().parents[1] / "{SHARED}" / "reference"')
    assert not OUTSIDE.search('Path(__file__).parent / "data" / "reference" / "x.csv"')


def test_no_test_reads_outside_the_repository():
    offenders = [f"{path.name}:{n}" for path in TESTS.glob("*.py") if path.name != Path(__file__).name
                 for n, line in enumerate(path.read_text().splitlines(), 1) if OUTSIDE.search(line)]  # fmt: skip
    assert offenders == []


def test_reference_copies_name_their_source():
    sources = (TESTS / "data" / "reference" / "SOURCES.md").read_text()
    for copy in (TESTS / "data" / "reference").glob("*.csv"):
        assert f"`{copy.name}`" in sources
