"""A mapping that keeps only its last few entries: the in-process memos of runs and figures."""

from __future__ import annotations

from collections import OrderedDict


class Recent(OrderedDict):
    """At most ``size`` entries; reading or writing an entry makes it the newest, and the oldest falls out."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def get(self, key, default=None):
        if key not in self:
            return default
        self.move_to_end(key)
        return self[key]

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)
