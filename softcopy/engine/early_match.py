"""A large rerun's destination side (prematch.py), begun before the engine is imported.

A rerun of a finished copy spends its first half second importing numpy and the engine
and opening the journal; its destination side needs none of that, only the destination,
the journal's path and the target's id in it. `copy` starts it here, right after the
targets parse (cli/copy.py), and the supervisor takes it (`take`) where it would have
started its own, once it holds the destination's lock and has opened the journal.

What the side reads is only good if no other run wrote the destination or the journal
between its reading and this run's lock. So it starts only while the destination's lock
is free, and the target's journal row (when it last started and changed) is read while
that lock is held for a moment here; a run that came between would have changed that
row, and the supervisor compares it with what its own opening of the journal found
(`Journal.previous`) before it takes the side. Nor is it taken once it is older than a
start-up takes (`FRESH_FOR`: a supervisor that waited for its source lists the destination
after the wait, as it always did). A side nobody took is killed (`discard`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..locations import is_object_store
from ..sources.select import Selection
from ..state.journal import JOURNAL, default_state_dir, is_current, open_reader, to_db
from ..state.records import LOCK, lock_fd, records_dir
from ..verify.manifest import CERTIFICATE
from .prematch import DestinationSide, start

if TYPE_CHECKING:
    from ..config import TargetConfig
    from ..state.journal import Journal

log = logging.getLogger(__name__)

# A rerun's destination is listed in a process of its own (prematch.py) once the journal
# holds this many of its files: below, starting one costs more than the listing. The
# supervisor (target.py) uses the same bound when no early side was started.
SIDE_FROM = 5000
# The supervisor's priority (target.py): a side started from this thread, which keeps
# its priority, lowers its own to it.
NICE = 10
# Destination files matched with the journal in one step (a batch of directories): 2,048
# keeps a 200,000-file rerun 5 MB lower than 8,192, for a little more work per batch.
MATCH_BATCH = 2048
# Seconds from the side's start within which the supervisor may take it: its listing is
# then about as old as one the supervisor would have begun itself.
FRESH_FOR = 5.0


@dataclass
class _Early:
    side: DestinationSide
    journal: Path
    target: int
    stamp: tuple
    select: Selection
    begun: float  # time.monotonic()


_lock = threading.Lock()
_started: dict[str, _Early] = {}


def selection_of(cfg: TargetConfig) -> Selection:
    """The target's selection, as its supervisor makes it."""
    return Selection(
        cfg.complete_marker, cfg.sentinels + cfg.sentinel_fallbacks, cfg.include, cfg.exclude
    )


def begin(cfg: TargetConfig) -> bool:
    """Start the destination side of `cfg` if it is a large rerun of a finished local copy
    that no other run holds; whether one started."""
    if cfg.dry_run or cfg.pack or cfg.compress or is_object_store(cfg.destination):
        return False
    dst = str(cfg.destination)
    if os.path.islink(dst) or not os.path.isdir(dst):
        return False  # the supervisor refuses a link, and lists no destination it makes
    if not os.path.isdir(cfg.source):
        return False  # the supervisor waits for it, or refuses it
    records = records_dir(Path(dst))
    if not (records / CERTIFICATE).exists():
        return False  # a copy that was not finished: most likely work to do
    journal = (cfg.state_dir or default_state_dir()) / JOURNAL
    found = _journaled(records / LOCK, journal, str(cfg.source), dst)
    if found is None:
        return False
    target, stamp = found
    select = selection_of(cfg)
    begun = time.monotonic()
    side = start(dst, journal, target, select, MATCH_BATCH, nice=NICE)
    if side is None:
        return False
    with _lock:
        old = _started.pop(dst, None)
        _started[dst] = _Early(side, journal, target, stamp, select, begun)
    if old is not None:
        old.side.close()
    return True


def _journaled(lock: Path, journal: Path, source: str, destination: str) -> tuple | None:
    """(target id, stamp) of a large finished target while its destination's lock is free;
    None for anything else (the supervisor then decides as it always did)."""
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:  # closing the descriptor releases the lock
        if not lock_fd(fd):
            return None  # another run holds it: what it writes, a listing now might miss
        if not is_current(journal):
            return None  # the supervisor refuses it, resets it or migrates it
        db = open_reader(journal)
        try:
            row = db.execute(
                "SELECT id, source, started, updated FROM targets WHERE destination = ?",
                (to_db(destination),),
            ).fetchone()
            if row is None or row[1] != to_db(source):
                return None
            many = db.execute(
                "SELECT 1 FROM files WHERE target = ? LIMIT 1 OFFSET ?", (row[0], SIDE_FROM - 1)
            ).fetchone()
            return (row[0], (row[2], row[3])) if many else None
        finally:
            db.close()
    except sqlite3.Error as exc:
        log.debug("no early destination side for %s: %s", destination, exc)
        return None
    finally:
        os.close(fd)


def take(destination: str, journal: Journal, select: Selection) -> DestinationSide | None:
    """The side begun for `destination`, if what it read still stands: the same journal,
    target and selection, no run between (the target's row as it was read), and begun
    within `FRESH_FOR`."""
    with _lock:
        early = _started.pop(destination, None)
    if early is None:
        return None
    same = (early.journal, early.target, early.stamp, early.select) == (
        journal.path,
        journal.id,
        journal.previous,
        select,
    )
    if same and time.monotonic() - early.begun <= FRESH_FOR:
        return early.side
    log.debug("%s: the destination side begun early is stale or of another run", destination)
    early.side.close()
    return None


def discard() -> None:
    """Kill the sides nobody took (a refused target, a failure before the match)."""
    with _lock:
        left = list(_started.values())
        _started.clear()
    for early in left:
        early.side.close()
