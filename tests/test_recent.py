"""The in-process memos' mapping: the last few entries, the least recently used falling out."""

from yolomem.recent import Recent


def test_recent_keeps_the_last_entries_read_or_written():
    recent = Recent(2)
    recent["a"], recent["b"] = 1, 2
    assert recent.get("a") == 1  # read: now the newest
    recent["c"] = 3
    assert list(recent) == ["a", "c"]
    assert recent.get("b") is None and recent.get("b", 0) == 0
    recent["a"] = 4  # written again: the newest, still one entry
    assert list(recent.items()) == [("c", 3), ("a", 4)]
