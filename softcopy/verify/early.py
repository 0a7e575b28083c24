"""Reading the copy back while copying goes on (`--hash`), so verification need not wait.

A file is read back once it is on the device: after a checkpoint's flush (`read`), or
sooner, after a flush of this module's own (`copied`: once enough has been copied since
the last flush, so a fast copy's last seconds are not all left to verification). Each
is read from the device (verify.hashing.hash_from_device) and hashed on a few
background threads, overlapping with the copies that follow. Verification then reads
again only what was not read back, or what changed since its early read: an early
digest counts only while the destination file is the one read (same size, mtime, inode
and ctime) and the source is still at the version that was copied.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

from ..priority import lower_io_priority
from ..sources.scan import Version
from .hashing import hash_from_device

log = logging.getLogger(__name__)

_BATCH = 64  # files per task: a thread's round trip per file costs more than a small read
# A flush of our own once this much waits to be read back: about half a second of a
# fast local copy, so the read-back trails it closely, while a copy slower than 32 MB/s
# (a live acquisition's trickle) is left to the checkpoints' flushes, every 2 s.
_FLUSH_BYTES = 64 << 20
_FLUSH_FILES = 1000
_FLUSH_EVERY = 0.25  # seconds, at least, between flushes of our own


class EarlyRead(NamedTuple):
    destination: Version  # the file that was read, as fstat saw it
    source: Version  # the source version it is the copy of
    digest: str  # BLAKE3 of the bytes read back from the device


class EarlyReads:
    """Background re-reads of durable copies; `take()` hands their digests to verification.

    Called from one thread (the supervisor's); `flush` (the destination's, e.g.
    LocalDirectory.flush) runs on a background thread and must be safe there.
    """

    def __init__(self, root: str, workers: int, flush: Callable[[], None] | None = None) -> None:
        self.root = root
        # The idle I/O class, as the copiers': the read-back must not delay the writer's
        # disk either. Not the idle CPU class: a thread starved while it holds the GIL
        # would stall the supervisor's own.
        self._pool = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="softcopy-reread", initializer=_idle_io
        )
        self._pending: list[Future[list[tuple[str, EarlyRead]]]] = []
        self.done: dict[str, EarlyRead] = {}
        self._flush = flush
        self._unflushed: list[tuple[str, Version]] = []
        self._unflushed_bytes = 0
        self._flushing: Future[list[tuple[str, Version]]] | None = None
        self._last_flush = time.monotonic()
        # What a flush of our own covered (key -> source version): a checkpoint's rows
        # among them are not read twice.
        self._queued: dict[str, Version] = {}

    def copied(self, key: str, version: Version) -> None:
        """A copy just made, not yet flushed: read back after a flush of our own.

        Called for each copy before the checkpoint that will name it (`read`). Only with
        `flush`; without it, copies are read when a checkpoint names them.
        """
        if self._flush is None:
            return
        self._unflushed.append((key, version))
        self._unflushed_bytes += version.size
        self._flushed(wait=False)  # only that: a scan of every pending read per copy is too much
        enough = self._unflushed_bytes >= _FLUSH_BYTES or len(self._unflushed) >= _FLUSH_FILES
        now = time.monotonic()
        if enough and self._flushing is None and now - self._last_flush >= _FLUSH_EVERY:
            rows, self._unflushed, self._unflushed_bytes = self._unflushed, [], 0
            self._queued.update(rows)
            self._last_flush = now
            self._flushing = self._pool.submit(_flush_then, self._flush, rows)

    def read(self, durable: list[tuple[str, Version, str]]) -> None:
        """Queue (key, source version, digest) rows a flush has just made durable."""
        # The checkpoint's flush covers every copy not yet flushed by us: read them now.
        self._unflushed, self._unflushed_bytes = [], 0
        # A checkpoint names each copy once: forget what ours covered as it comes by, so
        # the map holds only what waits for a checkpoint.
        rows = [
            (key, version) for key, version, _ in durable if self._queued.pop(key, None) != version
        ]
        self._submit(rows)
        self._collect(wait=False)

    def take(self) -> dict[str, EarlyRead]:
        """Every early read, once those queued have finished; nothing is queued after."""
        self._collect(wait=True)
        self.close()
        done, self.done = self.done, {}
        return done

    def close(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending = []
        self._flushing = None
        self._unflushed, self._queued = [], {}

    def _submit(self, rows: list[tuple[str, Version]]) -> None:
        for i in range(0, len(rows), _BATCH):
            self._pending.append(self._pool.submit(_read_batch, self.root, rows[i : i + _BATCH]))

    def _flushed(self, wait: bool) -> None:
        """Once a flush of our own is over, read back what it covered."""
        flushing = self._flushing
        if flushing is not None and (wait or flushing.done()):
            self._flushing = None
            if not flushing.cancelled() and flushing.exception() is None:
                self._submit(flushing.result())
            # A flush that failed leaves its files to verification (and the
            # checkpoint's own flush to report what is wrong with the destination).

    def _collect(self, wait: bool) -> None:
        self._flushed(wait)
        still = []
        for future in self._pending:
            if wait or future.done():
                if not future.cancelled():
                    self.done.update(future.result())
            else:
                still.append(future)
        self._pending = still


def _idle_io() -> None:
    for _, text in lower_io_priority():
        log.debug("%s", text)  # the read-back goes on at normal I/O priority


def _flush_then(
    flush: Callable[[], None], rows: list[tuple[str, Version]]
) -> list[tuple[str, Version]]:
    flush()
    return rows


def _read_batch(root: str, rows: list[tuple[str, Version]]) -> list[tuple[str, EarlyRead]]:
    out = []
    for key, source in rows:
        try:
            fd = os.open(os.path.join(root, key), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue  # gone or replaced: verification reads whatever is there then
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                continue
            # From the device, not from the page cache the copy left behind.
            digest = hash_from_device(fd, st.st_size)
        except OSError:
            continue
        finally:
            os.close(fd)
        there = Version(st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
        out.append((key, EarlyRead(there, source, digest)))
    return out
