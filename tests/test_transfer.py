"""copy_one: one key from the source tree to the destination tree, on real files.

Mounts (tmpfs) and fanotify need root; those tests skip without it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import shutil
import stat
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from softcopy.sinks.local import CHANGED, COPIED, DELETED, FAILED, SAME, DirCache, Outcome, copy_one
from softcopy.sources.scan import TEMP_PREFIX, version_of

MTIME_NS = 1_234_567_890_123_456_789
DEADLINE = 60.0


@pytest.fixture
def src(tmp_path: Path) -> Path:
    p = tmp_path / "src"
    p.mkdir()
    return p


@pytest.fixture
def dst(tmp_path: Path) -> Path:
    p = tmp_path / "dst"
    p.mkdir()
    return p


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside both trees: nothing may ever be written here."""
    p = tmp_path / "outside"
    p.mkdir()
    (p / "victim").write_bytes(b"precious")
    return p


def put(root: Path, key: str, data: bytes, mode: int = 0o644, mtime_ns: int = MTIME_NS) -> Path:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def copy(src: Path, dst: Path, key: str, **kw: bool) -> Outcome:
    dirs = DirCache(str(dst))
    try:
        return copy_one(str(src), dirs, key, **kw)
    finally:
        dirs.close()


def temporaries(root: Path) -> list[str]:
    return [
        os.path.join(d, n)
        for d, dirnames, names in os.walk(root)
        for n in names + dirnames
        if n.startswith(TEMP_PREFIX)
    ]


def all_files(root: Path) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, n), root) for d, _, names in os.walk(root) for n in names
    )


def assert_untouched(outside: Path) -> None:
    assert all_files(outside) == ["victim"]
    assert (outside / "victim").read_bytes() == b"precious"


# ---- plain copies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "size", "mode"),
    [
        ("zarr.json", 0, 0o644),
        ("0.0", 1, 0o600),
        ("c/0/0/1", 4097, 0o640),
        ("a/b/c/d/e", 3 * 1024 * 1024 + 7, 0o755),
    ],
)
def test_copies_content_mode_and_mtime(
    src: Path, dst: Path, key: str, size: int, mode: int
) -> None:
    data = os.urandom(size)
    put(src, key, data, mode)
    outcome = copy(src, dst, key)
    assert outcome.checked_ns > 0, "when the source was re-checked (racy.py needs it)"
    outcome = replace(outcome, checked_ns=0)
    assert outcome == Outcome(key, COPIED, version_of(os.lstat(src / key)), size)
    st = os.lstat(dst / key)
    assert stat.S_ISREG(st.st_mode)
    assert (dst / key).read_bytes() == data
    assert stat.S_IMODE(st.st_mode) == mode
    assert st.st_mtime_ns == MTIME_NS
    assert temporaries(dst) == []
    assert all_files(dst) == [key]


def test_a_newer_version_replaces_the_copy(src: Path, dst: Path) -> None:
    put(src, "0.0", b"first")
    assert copy(src, dst, "0.0").status == COPIED
    put(src, "0.0", b"second, longer", mtime_ns=MTIME_NS + 1)
    assert copy(src, dst, "0.0").status == COPIED
    assert (dst / "0.0").read_bytes() == b"second, longer"
    assert os.lstat(dst / "0.0").st_mtime_ns == MTIME_NS + 1
    assert temporaries(dst) == []


def test_a_stale_temporary_file_is_overwritten(src: Path, dst: Path) -> None:
    put(src, "0.0", b"new")
    put(dst, TEMP_PREFIX + "0.0", b"a crashed run's partial file, much longer than new")
    assert copy(src, dst, "0.0").status == COPIED
    assert (dst / "0.0").read_bytes() == b"new"
    assert temporaries(dst) == []


def test_a_stale_temporary_file_does_not_block_a_link(src: Path, dst: Path) -> None:
    (src / "link").symlink_to("0.0")
    put(dst, TEMP_PREFIX + "link", b"a crashed run's partial file")
    assert copy(src, dst, "link").status == COPIED
    assert os.readlink(dst / "link") == "0.0"
    assert temporaries(dst) == []


def test_a_source_that_is_not_a_file_fails(src: Path, dst: Path) -> None:
    os.mkfifo(src / "fifo")
    outcome = copy(src, dst, "fifo")  # must not block opening a FIFO
    assert outcome.status == FAILED
    assert "not a regular file" in outcome.error
    assert all_files(dst) == []


# ---- links are copied, never followed ------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    ["0.0", "../outside/victim", "TARGET_ABS", "no/such/file", "/nonexistent/path", "dir"],
)
def test_a_symlink_is_copied_as_a_link(src: Path, dst: Path, outside: Path, target: str) -> None:
    target = str(outside / "victim") if target == "TARGET_ABS" else target
    put(src, "0.0", b"data")
    (src / "dir").mkdir()
    (src / "sub").mkdir()
    (src / "sub" / "link").symlink_to(target)
    outcome = copy(src, dst, "sub/link")
    assert outcome.status == COPIED
    assert outcome.version == version_of(os.lstat(src / "sub" / "link"))
    assert (dst / "sub" / "link").is_symlink()
    assert os.readlink(dst / "sub" / "link") == target
    assert all_files(dst) == ["sub/link"]  # nothing the link points at came along
    assert_untouched(outside)


def test_a_link_replaces_a_file_and_a_file_replaces_a_link(
    src: Path, dst: Path, outside: Path
) -> None:
    put(dst, "k", b"old file")
    (src / "k").symlink_to(outside / "victim")
    assert copy(src, dst, "k").status == COPIED
    assert os.readlink(dst / "k") == str(outside / "victim")

    (src / "k").unlink()
    put(src, "k", b"a file again")
    assert copy(src, dst, "k").status == COPIED
    assert not (dst / "k").is_symlink()
    assert (dst / "k").read_bytes() == b"a file again"
    assert_untouched(outside)


def test_compare_first_does_not_read_through_a_link(src: Path, dst: Path, outside: Path) -> None:
    put(src, "k", b"precious")  # same bytes as the link's target
    (dst / "k").symlink_to(outside / "victim")
    outcome = copy(src, dst, "k", compare_first=True)
    assert outcome.status == COPIED  # a link is never "the same file"
    assert not (dst / "k").is_symlink()
    assert_untouched(outside)


@pytest.mark.parametrize("key", ["sub/0.0", "sub/deeper/0.0"])
def test_a_symlinked_destination_directory_is_not_written_through(
    src: Path, dst: Path, outside: Path, key: str
) -> None:
    put(src, key, b"data")
    (dst / "sub").symlink_to(outside)
    outcome = copy(src, dst, key)
    assert outcome.status == FAILED
    assert outcome.errno in (errno.ELOOP, errno.ENOTDIR)
    assert outcome.error
    assert_untouched(outside)
    assert os.readlink(dst / "sub") == str(outside)


def test_a_delete_is_not_done_through_a_symlinked_directory(
    src: Path, dst: Path, outside: Path
) -> None:
    (dst / "sub").symlink_to(outside)
    outcome = copy(src, dst, "sub/victim")  # gone at the source
    # Without following links the destination holds no "sub/victim": nothing to delete.
    assert outcome.status in (DELETED, FAILED)
    assert_untouched(outside)
    assert os.readlink(dst / "sub") == str(outside)


def test_a_planted_temporary_link_is_not_written_through(
    src: Path, dst: Path, outside: Path
) -> None:
    put(src, "0.0", b"data")
    (dst / (TEMP_PREFIX + "0.0")).symlink_to(outside / "victim")
    first = copy(src, dst, "0.0")
    assert_untouched(outside)
    # Never opened (O_EXCL refuses any existing name, a link included): the link
    # itself is removed and the temporary file created afresh.
    assert first.status == COPIED
    assert (dst / "0.0").read_bytes() == b"data" and not (dst / "0.0").is_symlink()
    assert_untouched(outside)
    assert temporaries(dst) == []


# ---- deletions ------------------------------------------------------------------------------


def test_a_deleted_source_deletes_the_copy(src: Path, dst: Path) -> None:
    put(src, "c/0", b"data")
    put(src, "c/1", b"data")
    assert copy(src, dst, "c/0").status == COPIED
    (src / "c" / "0").unlink()
    assert copy(src, dst, "c/0") == Outcome("c/0", DELETED)
    assert not (dst / "c" / "0").exists()
    # Deleted where there never was a copy, or not even a directory: nothing to do.
    assert copy(src, dst, "c/9") == Outcome("c/9", DELETED)
    assert copy(src, dst, "x/y/z") == Outcome("x/y/z", DELETED)
    assert not (dst / "x").exists()  # and no directory was made for it
    # A key below something that is now a file at the source.
    assert copy(src, dst, "c/1/0") == Outcome("c/1/0", DELETED)


def test_a_deleted_link_deletes_the_link_only(src: Path, dst: Path, outside: Path) -> None:
    (src / "link").symlink_to(outside / "victim")
    assert copy(src, dst, "link").status == COPIED
    (src / "link").unlink()
    assert copy(src, dst, "link").status == DELETED
    assert not os.path.lexists(dst / "link")
    assert_untouched(outside)


# ---- compare first -------------------------------------------------------------------------


def test_compare_first_with_identical_bytes_keeps_the_file(src: Path, dst: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)  # more than one compare block
    put(src, "k", data, mode=0o640)
    put(dst, "k", data, mode=0o600, mtime_ns=5)
    inode = os.lstat(dst / "k").st_ino
    outcome = copy(src, dst, "k", compare_first=True)
    assert outcome.checked_ns > 0
    assert replace(outcome, checked_ns=0) == Outcome("k", SAME, version_of(os.lstat(src / "k")))
    st = os.lstat(dst / "k")
    assert st.st_ino == inode  # not rewritten
    assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (0o640, MTIME_NS)
    assert temporaries(dst) == []


@pytest.mark.parametrize("where", ["start", "end", "size"])
def test_compare_first_with_other_bytes_copies(src: Path, dst: Path, where: str) -> None:
    data = os.urandom(2 * 1024 * 1024)
    put(src, "k", data)
    other = {
        "start": b"X" + data[1:],
        "end": data[:-1] + bytes([data[-1] ^ 1]),  # in the last compare block
        "size": data + b"!",
    }[where]
    put(dst, "k", other)
    inode = os.lstat(dst / "k").st_ino
    outcome = copy(src, dst, "k", compare_first=True)
    assert outcome.status == COPIED
    assert outcome.nbytes == len(data)
    assert (dst / "k").read_bytes() == data
    assert os.lstat(dst / "k").st_ino != inode
    assert temporaries(dst) == []


def test_compare_first_without_a_copy_copies(src: Path, dst: Path) -> None:
    put(src, "a/k", b"data")
    assert copy(src, dst, "a/k", compare_first=True).status == COPIED
    assert (dst / "a" / "k").read_bytes() == b"data"


# ---- the source changes while it is copied --------------------------------------------------
#
# fanotify permission events make this deterministic: the kernel holds the copier's first
# read of the source (after copy_one has taken the file's version with fstat) until the
# test has changed the source and answered. No timing is involved.

_FAN_CLOEXEC = 0x1
_FAN_CLASS_CONTENT = 0x4
_FAN_ACCESS_PERM = 0x20000
_FAN_MARK_ADD = 0x1
_FAN_ALLOW = 0x1
_AT_FDCWD = -100
_EVENT = struct.Struct("IBBHQii")  # struct fanotify_event_metadata


def _fanotify_on(path: Path) -> int:
    if os.geteuid() != 0:
        pytest.skip("fanotify permission events need root")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fanotify_mark.argtypes = [
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint64,
        ctypes.c_int,
        ctypes.c_char_p,
    ]
    fd = libc.fanotify_init(_FAN_CLASS_CONTENT | _FAN_CLOEXEC, os.O_RDONLY)
    if fd < 0:
        pytest.skip(f"fanotify_init: {os.strerror(ctypes.get_errno())}")
    if libc.fanotify_mark(fd, _FAN_MARK_ADD, _FAN_ACCESS_PERM, _AT_FDCWD, bytes(path)) != 0:
        err = ctypes.get_errno()
        os.close(fd)
        pytest.skip(f"fanotify_mark(FAN_ACCESS_PERM): {os.strerror(err)}")
    return fd


def copy_while_reading(
    src: Path, dst: Path, key: str, act: Callable[[], None], **kw: bool
) -> Outcome:
    """copy_one, with `act` run while the copier is held at its first read of the source."""
    fan = _fanotify_on(src / key)
    result: dict[str, object] = {}

    def worker() -> None:
        try:
            result["outcome"] = copy(src, dst, key, **kw)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=worker, daemon=True)
    acted = False
    try:
        thread.start()
        deadline = time.monotonic() + DEADLINE
        while thread.is_alive():
            if time.monotonic() > deadline:
                pytest.fail("copy_one did not finish")
            if not select.select([fan], [], [], 0.05)[0]:
                continue
            buf = os.read(fan, 4096)
            offset = 0
            while offset < len(buf):
                length, _vers, _, _mlen, _mask, event_fd, _pid = _EVENT.unpack_from(buf, offset)
                offset += length
                try:
                    if not acted:
                        acted = True
                        act()
                finally:
                    os.write(fan, struct.pack("iI", event_fd, _FAN_ALLOW))
                    os.close(event_fd)
    finally:
        os.close(fan)  # closing the group lets any held read through
        thread.join(DEADLINE)
    assert acted, "copy_one never read the source"
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["outcome"]  # type: ignore[return-value]


def _replace(path: Path) -> None:
    new = path.with_name(path.name + ".__lock")
    new.write_bytes(b"a newer version")
    os.rename(new, path)


def _append(path: Path) -> None:
    with open(path, "ab") as f:
        f.write(b"more")


def _truncate(path: Path) -> None:
    os.truncate(path, 1000)


def _touch(path: Path) -> None:
    os.utime(path, ns=(MTIME_NS + 10**9, MTIME_NS + 10**9))


CHANGES = {
    "renamed over (tensorstore)": _replace,
    "appended": _append,
    "truncated": _truncate,
    "touched": _touch,
    "deleted": os.unlink,
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_source_that_changes_during_the_copy_is_not_published(
    src: Path, dst: Path, change: str
) -> None:
    data = os.urandom(2 * 1024 * 1024 + 3)
    put(src, "c/0/0", data)
    outcome = copy_while_reading(src, dst, "c/0/0", lambda: CHANGES[change](src / "c/0/0"))
    assert outcome == Outcome("c/0/0", CHANGED)
    assert all_files(dst) == []  # nothing published, no temporary file left
    # Once the source holds still, the next attempt copies it.
    if (src / "c/0/0").exists():
        assert copy(src, dst, "c/0/0").status == COPIED
        assert (dst / "c/0/0").read_bytes() == (src / "c/0/0").read_bytes()


def test_a_changing_source_leaves_the_previous_copy_alone(src: Path, dst: Path) -> None:
    put(src, "k", b"version 1")
    assert copy(src, dst, "k").status == COPIED
    put(src, "k", b"version 2", mtime_ns=MTIME_NS + 1)
    outcome = copy_while_reading(src, dst, "k", lambda: _replace(src / "k"))
    assert outcome.status == CHANGED
    assert (dst / "k").read_bytes() == b"version 1"
    assert os.lstat(dst / "k").st_mtime_ns == MTIME_NS
    assert temporaries(dst) == []


def test_an_unchanged_source_under_the_gate_is_copied(src: Path, dst: Path) -> None:
    """The gate itself changes nothing: the same copy with a no-op change succeeds."""
    data = os.urandom(1024 * 1024)
    put(src, "k", data)
    outcome = copy_while_reading(src, dst, "k", lambda: None)
    assert outcome.status == COPIED
    assert (dst / "k").read_bytes() == data


# ---- other filesystems ------------------------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """mount(name, options) -> a fresh tmpfs; unmounted at the end of the test."""
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        if not shutil.which("mount"):
            pytest.skip("mount is not installed")
        point = tmp_path / name
        point.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {proc.stderr.strip()}")
        mounted.append(point)
        return point

    try:
        yield mount
    finally:
        for point in reversed(mounted):
            if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(point)], capture_output=True)


def test_a_copy_across_filesystems_falls_back_from_copy_file_range(
    src: Path, tmpfs: Callable[[str, str], Path]
) -> None:
    dst = tmpfs("other-fs", "size=16m")
    data = os.urandom(5 * 1024 * 1024 + 333)
    put(src, "c/0/0", data, mode=0o640)
    # The premise: the kernel refuses copy_file_range between these two filesystems.
    with open(src / "c/0/0", "rb") as fin, open(dst / "probe", "wb") as fout:
        try:
            os.copy_file_range(fin.fileno(), fout.fileno(), 10)
        except OSError as exc:
            assert exc.errno == errno.EXDEV
        else:
            pytest.skip("this kernel copies across these filesystems; no fallback to test")
    os.unlink(dst / "probe")

    outcome = copy(src, dst, "c/0/0")
    assert outcome.status == COPIED, outcome.error
    assert outcome.nbytes == len(data)
    assert (dst / "c/0/0").read_bytes() == data
    st = os.lstat(dst / "c/0/0")
    assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (0o640, MTIME_NS)
    assert temporaries(dst) == []


def test_a_full_destination_fails_with_enospc_and_leaves_nothing(
    src: Path, tmpfs: Callable[[str, str], Path]
) -> None:
    dst = tmpfs("full", "size=1m")
    data = os.urandom(2 * 1000 * 1000 + 17)  # not a multiple of the page size
    put(src, "c/0/0", data)
    outcome = copy(src, dst, "c/0/0")
    assert outcome.status == FAILED
    assert outcome.errno == errno.ENOSPC
    assert "No space left" in outcome.error
    assert all_files(dst) == []  # no partial file, no temporary file
    assert shutil.disk_usage(dst).used < 64 * 1024  # and the space is free again
    # A file that fits still goes through after the failure.
    put(src, "c/0/1", b"small")
    assert copy(src, dst, "c/0/1").status == COPIED


def test_no_free_inode_fails_with_enospc_and_leaves_nothing(
    src: Path, tmpfs: Callable[[str, str], Path]
) -> None:
    dst = tmpfs("no-inodes", "size=1m,nr_inodes=2")  # the root directory and one more
    (dst / "existing").write_bytes(b"x")
    put(src, "0.0", b"data")
    outcome = copy(src, dst, "0.0")
    assert outcome.status == FAILED
    assert outcome.errno == errno.ENOSPC
    assert all_files(dst) == ["existing"]
