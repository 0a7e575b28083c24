"""BLAKE3 of files: one read per file, several files at once, large files on several cores."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

from blake3 import blake3

# Above this a file is hashed with BLAKE3's own threads; below, the per-call
# overhead of threading costs more than it saves (measured: 64 KiB chunks hash
# at ~6 GB/s on one core, and slower when two Python threads contend).
_MULTITHREAD_FROM = 8 << 20
_BLOCK = 4 << 20


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
    root: str, keys: Iterable[str], workers: int = 4, evict: bool = False
) -> Iterator[tuple[str, str | None, OSError | None]]:
    """(key, hex digest or None, error or None) for each key, in any order.

    Threads overlap the reads (which release the GIL); the hashing of large
    files runs on BLAKE3's own threads.
    """

    def one(key: str) -> tuple[str, str | None, OSError | None]:
        try:
            return key, hash_file(os.path.join(root, key), evict)[0], None
        except OSError as exc:
            return key, None, exc

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        yield from pool.map(one, keys, chunksize=64)
