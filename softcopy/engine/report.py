"""The numbers a running target reports about itself once a second (the `progress` event).

Counting pending work is a pass over every array's rows; on a ten-million-chunk
layout that takes ~0.1 s, so it is repeated no more often than keeps it under
about 2 % of a core. Copy lag is measured from a change seen at the source to its
copy published.
"""

from __future__ import annotations

import time

from .ledger import Ledger

EVERY = 1.0  # seconds between progress events


class Progress:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.pending = (0, 0)  # files, bytes still to copy (also what checkpoints record)
        self.chunks = (0, 0)  # chunk files present, expected
        self.totals = (0, 0, 0)  # files at the source, their bytes, files done
        self.observed_at: dict[str, float] = {}  # key -> when its change was seen
        self.lags: list[float] = []
        self.last = time.monotonic()
        self._recount_at = 0.0
        self._bytes_at_last = 0

    def changed(self, keys: list[str], now: float) -> None:
        for key in keys:
            self.observed_at.setdefault(key, now)

    def published(self, key: str, now: float) -> None:
        seen = self.observed_at.pop(key, None)
        if seen is not None:
            self.lags.append(now - seen)

    def recount(self) -> None:
        self.pending = self.ledger.pending_totals()
        self.chunks = self.ledger.expected_counts()
        self.totals = self.ledger.source_totals()

    def fields(self, bytes_copied: int) -> dict:
        """This interval's numbers (rate, lag) and the latest counts, for one event."""
        now = time.monotonic()
        elapsed = max(now - self.last, 1e-9)
        self.last = now
        if now >= self._recount_at:
            started = time.monotonic()
            self.recount()
            self._recount_at = now + max(EVERY, 50 * (time.monotonic() - started))
        rate = (bytes_copied - self._bytes_at_last) / elapsed
        self._bytes_at_last = bytes_copied
        lags = sorted(self.lags)
        self.lags.clear()
        return {
            "files_pending": self.pending[0],
            "bytes_pending": self.pending[1],
            "chunks_present": self.chunks[0],
            "chunks_expected": self.chunks[1],
            # Files, not copy operations: a file rewritten and copied again is one file.
            "files_at_source": self.totals[0],
            "bytes_at_source": self.totals[1],
            "files_done": self.totals[2],
            "rate": rate,
            "lag_p50": lags[len(lags) // 2] if lags else None,
            "lag_max": lags[-1] if lags else None,
        }
