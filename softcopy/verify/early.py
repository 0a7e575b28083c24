"""Reading the copy back while copying goes on (`--hash`), so verification need not wait.

After a checkpoint's flush the files it recorded are on the device; each is read back
from there (its cached pages dropped first) and hashed on a few background threads,
overlapping with the copies that follow. Verification then reads again only what was
copied after the last checkpoint, or what changed since its early read: an early digest
counts only while the destination file is the one read (same size, mtime, inode and
ctime) and the source is still at the version that was copied.
"""

from __future__ import annotations

import os
import stat
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

from ..sources.scan import Version
from .hashing import hash_fd

_BATCH = 64  # files per task: a thread's round trip per file costs more than a small read


class EarlyRead(NamedTuple):
    destination: Version  # the file that was read, as fstat saw it
    source: Version  # the source version it is the copy of
    digest: str  # BLAKE3 of the bytes read back from the device


class EarlyReads:
    """Background re-reads of durable copies; `take()` hands their digests to verification."""

    def __init__(self, root: str, workers: int) -> None:
        self.root = root
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="softcopy-reread")
        self._pending: list[Future[list[tuple[str, EarlyRead]]]] = []
        self.done: dict[str, EarlyRead] = {}

    def read(self, durable: list[tuple[str, Version, str]]) -> None:
        """Queue (key, source version, digest) rows a flush has just made durable."""
        rows = [(key, version) for key, version, _ in durable]
        for i in range(0, len(rows), _BATCH):
            self._pending.append(self._pool.submit(_read_batch, self.root, rows[i : i + _BATCH]))
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

    def _collect(self, wait: bool) -> None:
        still = []
        for future in self._pending:
            if wait or future.done():
                if not future.cancelled():
                    self.done.update(future.result())
            else:
                still.append(future)
        self._pending = still


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
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            digest = hash_fd(fd, st.st_size)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            continue
        finally:
            os.close(fd)
        there = Version(st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
        out.append((key, EarlyRead(there, source, digest)))
    return out
