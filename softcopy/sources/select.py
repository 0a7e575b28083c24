"""Which keys of a source are copied with the data, and which are end markers.

Markers (the `complete` file, sentinels) live at the source root and are copied
last, after verification; include/exclude globs choose the rest.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass


@dataclass(frozen=True)
class Selection:
    complete_marker: str
    sentinels: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def is_marker(self, key: str) -> bool:
        if "/" in key:
            return False
        return key == self.complete_marker or any(
            fnmatch.fnmatchcase(key, p) for p in self.sentinels
        )

    def wanted(self, key: str) -> bool:
        """A key copied with the data: not a marker, included, not excluded."""
        if not (self.sentinels or self.include or self.exclude):
            return "/" in key or key != self.complete_marker  # per file per listing: no loops
        if self.is_marker(key):
            return False
        if self.include and not any(fnmatch.fnmatchcase(key, p) for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(key, p) for p in self.exclude)

    def taken(self, key: str) -> bool:
        """A key a finished run's copy takes: a marker, or wanted (packed, compressed)."""
        return self.is_marker(key) or self.wanted(key)

    @property
    def filters(self) -> bool:
        return bool(self.include or self.exclude)
