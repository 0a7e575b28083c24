"""Checkpoints: flush the destination, then record in the journal what the flush made durable.

The order is the promise: a crash can lose journal rows, never data the journal
claims. Copies that are not proven yet (racy.py) are never handed to a checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..sources.scan import Version
from ..state.journal import Journal

# Seconds between checkpoints: the most a crash can make a resumed run compare again.
EVERY = 2.0
# Or sooner, when this many copies wait to be recorded (bounds the memory they take).
MOST_UNRECORDED = 2000


class Checkpoints:
    def __init__(self) -> None:
        self.copied: list[tuple[str, Version, str]] = []  # copied, not yet flushed+recorded
        self.deleted: list[str] = []
        self.last = time.monotonic()

    def due(self, now: float) -> bool:
        return now - self.last >= EVERY or len(self.copied) > MOST_UNRECORDED

    def commit(
        self,
        journal: Journal | None,
        flush: Callable[[], None],
        failures: dict[str, str],
        progress: dict[str, int],
    ) -> list[tuple[str, Version, str]]:
        """Flush and record; returns the copies this made durable (and recorded)."""
        self.last = time.monotonic()
        if journal is None:
            return []
        if self.copied or self.deleted:
            flush()
        journal.checkpoint(self.copied, self.deleted, failures, progress)
        durable, self.copied = self.copied, []
        self.deleted = []
        return durable
