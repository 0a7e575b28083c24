"""BLAKE3 of files: one read per file, several files at once, large files on several cores."""

from __future__ import annotations

import errno
import os
import stat
import threading
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
# O_DIRECT wants the buffer, the offset and the length aligned to the device's logical
# block; a page is a multiple of every block size Linux supports for a filesystem.
_ALIGN = os.sysconf("SC_PAGE_SIZE")
_DIRECT_BLOCK = 1 << 20
_buffers = threading.local()  # one aligned buffer per reading thread, reused for every file


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


def hash_from_device(fd: int, size: int) -> str:
    """Hex BLAKE3 of the first `size` bytes of an open file as its device holds them.

    The file's clean pages are dropped from the cache first, then it is read with
    O_DIRECT where the filesystem takes it: the bytes come from the device straight
    into this thread's buffer, never through the cache (measured: a quarter less CPU
    than a cached read of 128 KiB chunks, and nothing to drop after). A filesystem that refuses
    O_DIRECT is read through the cache, dropped again after; one that quietly reads
    some files through the cache anyway (ext4's inline data, data=journal) finds
    nothing of them there after the first drop.
    """
    import fcntl

    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
    else:
        try:
            return _hash_direct(fd, size)
        except _NotDirect:
            pass  # read it all again below, through the cache
        finally:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)
    digest = hash_fd(fd, size)
    # Do not leave a verification pass in the cache at the writer's expense.
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    return digest


class _NotDirect(Exception):
    """This file cannot be read on with O_DIRECT (a block larger than a page, a short read)."""


def _hash_direct(fd: int, size: int) -> str:
    view = getattr(_buffers, "view", None)
    if view is None:
        import mmap  # here: a copier imports this module, and never reads back

        # Anonymous mappings are page aligned; a bytearray's storage need not be.
        view = _buffers.view = memoryview(mmap.mmap(-1, _DIRECT_BLOCK))
    hasher = new_hasher(size)
    offset = 0
    while offset < size:
        # Whole pages only: the last read asks for the rest rounded up and gets what is there.
        want = min(len(view), -(-(size - offset) // _ALIGN) * _ALIGN)
        try:
            n = os.preadv(fd, [view[:want]], offset)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise _NotDirect from exc
            raise
        if n <= 0:
            raise OSError(0, f"file ended after {offset} of {size} bytes")
        n = min(n, size - offset)  # a file that grew: its first `size` bytes only
        hasher.update(view[:n])
        offset += n
        if n % _ALIGN and offset < size:
            raise _NotDirect  # the next offset would be unaligned
    return hasher.hexdigest()


def hash_file(path: str, evict: bool = False) -> tuple[str, int]:
    """(hex digest, size) of a regular file, never following a link.

    `evict`: the bytes are read from the device (hash_from_device): what a later
    reader of the disk would get, not what the page cache still remembers of the write.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(0, "not a regular file", path)
        if evict:
            return hash_from_device(fd, st.st_size), st.st_size
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
