"""Racily clean copies: a version read within its filesystem's timestamp tick is not yet proven.

A file's version is (size, mtime, inode, ctime). On a filesystem whose timestamps
are coarse (1 s on ext4 with 128-byte inodes, many NFS and SMB servers; 2 s on
FAT), a writer that publishes twice within one tick by temporary file and rename
can reuse the first version's inode: every field repeats, and a copy of the
first version looks like a copy of the second. An in-place rewrite within the
same tick looks unchanged too. This is git's "racily clean" index entry.

The rule: a version checked at wall time T is proven only if every later change
gets a later timestamp, i.e. T is past the end of the tick its newest timestamp
fell in (plus the kernel clock's own coarseness). A copy checked earlier stays
unproven: the supervisor does not journal it, and compares it byte for byte with
the source again once the tick has passed, before the target can be done.

The granularity is measured, not guessed from the filesystem's name: it is the
coarsest step that every timestamp seen at the source is a multiple of, floored
at the kernel's coarse clock resolution (file times come from that clock).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable

from ..sources.scan import Version

# Steps a filesystem's timestamps come in: FAT's 2 s, whole seconds (ext3, ext4 with
# 128-byte inodes, HFS+, many NFS/SMB servers), then decimal fractions (NTFS: 100 ns).
_STEPS = (2_000_000_000, 1_000_000_000, 100_000_000, 10_000_000, 1_000_000, 1_000, 100, 1)
_CLOCK_REALTIME_COARSE = 5  # Linux clock id; not exported by the time module


def coarse_clock_ns() -> int:
    """Resolution of the clock the kernel stamps files with (a jiffy, typically 1-4 ms)."""
    try:
        return max(1, round(time.clock_getres(_CLOCK_REALTIME_COARSE) * 1e9))
    except OSError:
        return 10_000_000  # not Linux: assume a coarse 10 ms clock


class Granularity:
    """The timestamp step of one source tree, narrowed by every timestamp seen.

    Starts at the coarsest step known (2 s) until evidence says otherwise, so the
    first files copied are treated as cautiously as on a FAT disk.
    """

    def __init__(self, clock_ns: int | None = None) -> None:
        self._clock_ns = coarse_clock_ns() if clock_ns is None else clock_ns
        self._step = 0  # index into _STEPS
        self.samples = 0

    @property
    def ns(self) -> int:
        """The tick: later changes of a file are visible once this has passed."""
        return max(_STEPS[self._step], self._clock_ns)

    @property
    def settled(self) -> bool:
        """No timestamp can make it finer than the clock: stop looking."""
        return _STEPS[self._step] <= self._clock_ns

    def observe(self, stamp_ns: int) -> None:
        if stamp_ns <= 0:
            return  # unknown (a file that could not be stat'ed), or the epoch
        self.samples += 1
        while self._step < len(_STEPS) - 1 and stamp_ns % _STEPS[self._step]:
            self._step += 1

    def observe_versions(self, versions: object) -> None:
        """Every timestamp of an iterable of versions, until the granularity is settled."""
        if self.settled:
            return
        for v in versions:  # type: ignore[attr-defined]
            self.observe(v.mtime_ns)
            self.observe(v.ctime_ns)
            if self.settled:
                return


def proven_after_ns(version: Version, tick_ns: int, margin_ns: int = 0) -> int:
    """Wall time (ns) after which a check of `version` proves it: the end of its newest tick."""
    stamp = max(version.mtime_ns, version.ctime_ns)
    return (stamp // tick_ns + 1) * tick_ns + margin_ns


class UnprovenCopies:
    """Copies whose version a later change could still hide, until their tick has passed.

    They are not journaled; once due, the engine compares each with the source again.
    """

    def __init__(self, granularity: Granularity, margin_ns: int) -> None:
        self.granularity = granularity
        self.margin_ns = margin_ns
        self.versions: dict[str, Version] = {}
        self._due: list[tuple[int, str]] = []  # heap of (wall ns, key)

    def __len__(self) -> int:
        return len(self.versions)

    def _proven_after(self, version: Version) -> int:
        return proven_after_ns(version, self.granularity.ns, self.margin_ns)

    def unproven(self, version: Version, checked_ns: int) -> bool:
        """A copy checked before its version's timestamp tick ended."""
        return bool(checked_ns) and checked_ns < self._proven_after(version)

    def hold(self, key: str, version: Version) -> None:
        self.versions[key] = version
        heapq.heappush(self._due, (self._proven_after(version), key))

    def settle(self, key: str) -> None:
        """Proven (checked after its tick), or deleted: nothing left to re-check."""
        self.versions.pop(key, None)

    def due(self, copied: Callable[[str], Version | None]) -> list[str]:
        """Keys whose tick has passed and whose copy is still the one held."""
        now = time.time_ns()
        keys = []
        while self._due and self._due[0][0] <= now:
            _, key = heapq.heappop(self._due)
            version = self.versions.get(key)
            if version is None or copied(key) != version:
                continue  # proven, deleted or superseded since
            later = self._proven_after(version)
            if later > now:  # the granularity turned out coarser than when it was queued
                heapq.heappush(self._due, (later, key))
                continue
            keys.append(key)
        return keys
