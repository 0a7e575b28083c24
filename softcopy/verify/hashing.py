"""BLAKE3 of files: one read per file, several files at once, large files on several cores."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from blake3 import blake3

if TYPE_CHECKING:  # a copier imports this module for its hasher, never the thread pool
    from concurrent.futures import Executor

# Above this a file is hashed with BLAKE3's own threads; below, the per-call
# overhead of threading costs more than it saves (measured: 64 KiB chunks hash
# at ~6 GB/s on one core, and slower when two Python threads contend).
_MULTITHREAD_FROM = 8 << 20
_BLOCK = 4 << 20
_MAX_BATCH = 64  # files per task handed to an executor


def new_hasher(size_hint: int = 0) -> blake3:
    if size_hint >= _MULTITHREAD_FROM:
        return blake3(max_threads=blake3.AUTO)
    return blake3()


def hash_fd(fd: int, size: int) -> str:
    """Hex BLAKE3 of the first `size` bytes of an open file (raises if it is shorter)."""
    hasher = new_hasher(size)
    offset = 0
    while offset < size:
        block = os.pread(fd, min(_BLOCK, size - offset), offset)
        if not block:
            raise OSError(0, f"file ended after {offset} of {size} bytes")
        hasher.update(block)
        offset += len(block)
    return hasher.hexdigest()


def hash_file(path: str, evict: bool = False) -> tuple[str, int]:
    """(hex digest, size) of a regular file, never following a link.

    `evict` drops the file's clean pages from the cache first, so the bytes are
    read from the device: what a later reader of the disk would get, not what
    the page cache still remembers of the write.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(0, "not a regular file", path)
        if evict:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        digest = hash_fd(fd, st.st_size)
        # Do not leave a verification pass in the cache at the writer's expense.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return digest, st.st_size
    finally:
        os.close(fd)


def hash_files(
    root: str,
    keys: Iterable[str],
    workers: int = 4,
    evict: bool = False,
    executor: Executor | None = None,
) -> Iterator[tuple[str, str | None, OSError | None]]:
    """(key, hex digest or None, error or None) for each key, in any order.

    By default a pool of `workers` threads overlaps the reads (they release the GIL),
    one file per task; the hashing of large files runs on BLAKE3's own threads.
    `executor`, if given, runs them instead: anything with `submit` whose futures have
    `result()` and `cancel()` (a concurrent.futures executor, a Dask client). It gets
    files in batches, so a process or a remote worker pays its round trip once per batch,
    at least 4 batches per one of `workers`, so that one slow file leaves no one idle.
    """
    keys = list(keys)
    if executor is not None:
        size = max(1, min(_MAX_BATCH, len(keys) // (4 * max(1, workers))))
        yield from _hash_on(executor, root, keys, size, evict)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        yield from _hash_on(pool, root, keys, 1, evict)


def _hash_on(
    executor: Executor, root: str, keys: list[str], size: int, evict: bool
) -> Iterator[tuple[str, str | None, OSError | None]]:
    futures = [
        executor.submit(_hash_batch, root, evict, keys[i : i + size])
        for i in range(0, len(keys), size)
    ]
    try:
        for future in futures:
            yield from future.result()
    finally:  # a caller that stops early leaves no reads running for nothing
        for future in futures:
            future.cancel()


def _hash_batch(
    root: str, evict: bool, keys: list[str]
) -> list[tuple[str, str | None, OSError | None]]:
    """Module level, so an executor in another process can be handed it."""
    results: list[tuple[str, str | None, OSError | None]] = []
    for key in keys:
        try:
            results.append((key, hash_file(os.path.join(root, key), evict)[0], None))
        except OSError as exc:
            results.append((key, None, exc))
    return results
