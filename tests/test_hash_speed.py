"""The faster `--hash` path (issue 12): reads from the device with O_DIRECT, and copies
read back after a flush of the early reader's own, before any checkpoint names them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from blake3 import blake3

from softcopy.sinks.local import LocalDirectory
from softcopy.sources.scan import Version, version_of
from softcopy.verify import early as early_module
from softcopy.verify.early import EarlyRead, EarlyReads
from softcopy.verify.hashing import hash_file, hash_from_device

PAGE = os.sysconf("SC_PAGE_SIZE")
# Around every edge the aligned reads have: empty, one byte, a page, the 1 MiB buffer.
SIZES = [0, 1, PAGE - 1, PAGE, PAGE + 1, 3 * PAGE + 7, (1 << 20) - 1, 1 << 20, (1 << 20) + 3]


@pytest.mark.parametrize("size", SIZES)
def test_a_device_read_hashes_exactly_the_bytes_of_the_file(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    os.sync()  # on the device, as after a checkpoint's flush
    fd = os.open(path, os.O_RDONLY)
    try:
        assert hash_from_device(fd, size) == blake3(data).hexdigest()
        # The descriptor is left as it was given: a later read goes through the cache.
        assert not _flags(fd) & os.O_DIRECT
    finally:
        os.close(fd)
    assert hash_file(str(path), evict=True) == (blake3(data).hexdigest(), size)


def test_a_device_read_is_of_the_first_size_bytes_and_fails_on_a_shorter_file(
    tmp_path: Path,
) -> None:
    data = os.urandom(3 * PAGE + 11)
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        # A file that grew since it was measured: the bytes measured, no more.
        assert hash_from_device(fd, PAGE + 5) == blake3(data[: PAGE + 5]).hexdigest()
        with pytest.raises(OSError, match="file ended after"):
            hash_from_device(fd, len(data) + 1)
    finally:
        os.close(fd)


def test_a_device_read_sees_a_change_still_only_in_the_page_cache(tmp_path: Path) -> None:
    """A byte changed after the flush (dirty in the cache) is what the device gets next:
    the read must see it, never the bytes the device held before."""
    path = tmp_path / "f"
    path.write_bytes(b"a" * (2 * PAGE))
    os.sync()
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, b"b", PAGE + 3)
        expected = blake3(b"a" * (PAGE + 3) + b"b" + b"a" * (PAGE - 4)).hexdigest()
        assert hash_from_device(fd, 2 * PAGE) == expected
    finally:
        os.close(fd)


def _flags(fd: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_GETFL)


def _tree(tmp_path: Path, n: int) -> tuple[Path, Path, list[str]]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    keys = [f"c/{i}" for i in range(n)]
    for root in (src, dst):
        (root / "c").mkdir(parents=True)
    for key in keys:
        data = os.urandom(5000 + int(key[2:]))
        (src / key).write_bytes(data)
        (dst / key).write_bytes(data)
    return src, dst, keys


def test_copies_are_read_back_after_a_flush_of_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without waiting for a checkpoint: once enough is copied, the early reader flushes
    the destination itself, and reads back only what that flush covered."""
    monkeypatch.setattr(early_module, "_FLUSH_FILES", 3)
    monkeypatch.setattr(early_module, "_FLUSH_EVERY", 0.0)
    src, dst, keys = _tree(tmp_path, 4)
    sink = LocalDirectory(str(dst))
    flushed: list[bytes] = []

    def flush() -> None:
        # The bytes at flush time are what must be read back: rewrite one first, so a
        # read from before the flush would show the old bytes.
        (dst / keys[0]).write_bytes(b"after")
        sink.flush()
        flushed.append((dst / keys[0]).read_bytes())

    reads = EarlyReads(str(dst), workers=2, flush=flush)
    versions = {k: version_of(os.lstat(src / k)) for k in keys}
    for key in keys:
        reads.copied(key, versions[key])
    # The fourth was copied after the flush began: left to a checkpoint or verification.
    done = reads.take()
    assert flushed == [b"after"]
    assert set(done) == set(keys[:3])
    assert done[keys[0]].digest == blake3(b"after").hexdigest()
    for key in keys[1:3]:
        assert done[key] == EarlyRead(
            version_of(os.lstat(dst / key)),
            versions[key],
            blake3((dst / key).read_bytes()).hexdigest(),
        )


def test_a_checkpoint_does_not_read_again_what_was_read_after_an_own_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(early_module, "_FLUSH_FILES", 2)
    monkeypatch.setattr(early_module, "_FLUSH_EVERY", 0.0)
    read_batch = early_module._read_batch
    read: list[tuple[str, Version]] = []

    def counted(root: str, rows: list[tuple[str, Version]]) -> list[tuple[str, EarlyRead]]:
        read.extend(rows)  # list.extend holds the GIL: safe from the reading threads
        return read_batch(root, rows)

    monkeypatch.setattr(early_module, "_read_batch", counted)
    src, dst, keys = _tree(tmp_path, 3)
    reads = EarlyReads(str(dst), workers=2, flush=LocalDirectory(str(dst)).flush)
    versions = {k: version_of(os.lstat(src / k)) for k in keys}
    for key in keys:
        reads.copied(key, versions[key])  # a flush of our own for the first two
    # The checkpoint names all three, and another version of the second.
    newer = versions[keys[1]]._replace(ctime_ns=versions[keys[1]].ctime_ns + 1)
    reads.read([(k, versions[k], "") for k in keys] + [(keys[1], newer, "")])
    done = reads.take()
    assert sorted(read) == sorted([*versions.items(), (keys[1], newer)])
    assert set(done) == set(keys)
    assert done[keys[2]].source == versions[keys[2]]


def test_without_a_flush_copies_wait_for_a_checkpoint(tmp_path: Path) -> None:
    src, dst, keys = _tree(tmp_path, 2)
    reads = EarlyReads(str(dst), workers=1)
    for key in keys:
        reads.copied(key, version_of(os.lstat(src / key)))
    assert reads.take() == {}
