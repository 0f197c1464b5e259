"""A fresh clone passes on its own: no test names a file outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
OUTSIDE = re.compile(r"""["'](/work/|/home/|/root/|\.\./shared)|parents\[\d\]\s*/\s*["']shared""")


def test_the_pattern_catches_outside_paths():
    assert OUTSIDE.search('Path("/work/shared/reference/x.csv")')
    assert OUTSIDE.search('Path(__file__).resolve().parents[1] / "shared" / "reference"')
    assert not OUTSIDE.search('Path(__file__).parent / "data" / "reference" / "x.csv"')


def test_no_test_reads_outside_the_repository():
    offenders = [f"{path.name}:{n}" for path in TESTS.glob("*.py") if path.name != Path(__file__).name
                 for n, line in enumerate(path.read_text().splitlines(), 1) if OUTSIDE.search(line)]  # fmt: skip
    assert offenders == []


def test_reference_copies_name_their_source():
    sources = (TESTS / "data" / "reference" / "SOURCES.md").read_text()
    for copy in (TESTS / "data" / "reference").glob("*.csv"):
        assert f"`{copy.name}`" in sources
