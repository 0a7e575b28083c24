"""A passthrough FUSE filesystem that injects faults, for tests.

    python tests/faultfs.py BACKING MOUNTPOINT CONTROL_JSON [--direct-io] [--cache-timeout S]

Every path under MOUNTPOINT is the same path under BACKING, except where the
control file says otherwise. The control file is a JSON object, looked at again
on every operation (re-parsed when its inode, size or mtime changed), so a test
changes faults while the filesystem is in use by replacing the file
(write a temporary file, then os.replace). A control file that is missing or
does not parse injects nothing; a half-written one keeps the previous faults.

Faults select paths with shell globs matched against the path inside the mount,
with a leading slash ("/src.zarr/c/0/0/0/0"); `*` also matches `/`.

    eio_read: [glob, ...]           read() fails with EIO
    eio_after_bytes: {glob: n}      a read() that reaches byte n or beyond fails with EIO
    short_read: {glob: n}           read() returns at most n bytes
    enotconn: [glob, ...]           every operation on the path fails with ENOTCONN
    enotconn_data: [glob, ...]      open, read, write and fsync fail with ENOTCONN; stat works
    vanish: [glob, ...]             hidden from readdir; getattr, open and friends: ENOENT
    latency_ms: ms | {glob: ms}     sleep before every operation (on matching paths)
    enospc_write: [glob, ...]       write() and create() fail with ENOSPC
    eio_fsync: [glob, ...]          fsync() fails with EIO

libfuse changes the working directory to "/", so BACKING and CONTROL_JSON are
made absolute before mounting. The daemon runs in the foreground; SIGTERM or
`fusermount3 -u MOUNTPOINT` unmounts it.

Page-cache mode (the default) lets the kernel cache file data; it takes a short
read for the end of the file. With --direct-io every read() of the application
becomes a read here, so short reads reach the application. Attribute and entry
caching are off by default (--cache-timeout 0), so a fault set at run time, or a
change made in BACKING, is seen at the next system call.
"""

from __future__ import annotations

import argparse
import errno
import fnmatch
import json
import os
import sys
import threading
import time
from typing import Any

import mfusepy as fuse

_STAT_FIELDS = (
    "st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks", "st_blksize",
)  # fmt: skip
_STATVFS_FIELDS = (
    "f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail",
    "f_files", "f_ffree", "f_favail", "f_flag", "f_namemax",
)  # fmt: skip


class Control:
    """The faults in force, from a JSON file re-read whenever it changed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        self._faults: dict[str, Any] = {}

    def faults(self) -> dict[str, Any]:
        try:
            st = os.stat(self.path)
        except OSError:
            return {}
        seen = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            if seen != self._seen:
                try:
                    with open(self.path) as f:
                        faults = json.load(f)
                    if isinstance(faults, dict):
                        self._faults, self._seen = faults, seen
                except (OSError, ValueError):
                    pass  # caught mid-write: keep the previous faults until it parses
            return self._faults


def _matches(path: str, globs: Any) -> bool:
    return any(fnmatch.fnmatchcase(path, g) for g in globs or ())


def _lookup(path: str, table: Any) -> int | None:
    """The value of the first glob in {glob: n} that matches path."""
    for glob, value in (table or {}).items():
        if fnmatch.fnmatchcase(path, glob):
            return int(value)
    return None


class FaultFS(fuse.Operations):
    use_ns = True

    def __init__(self, backing: str, control: str, direct_io: bool, timeout: float) -> None:
        self.backing = backing
        self.control = Control(control)
        self.direct_io = direct_io
        self.timeout = timeout

    def init_with_config(self, conn_info: Any, config: Any) -> None:
        if config is not None:
            config.use_ino = 1  # the backing inode numbers: a rename changes the inode
            config.direct_io = int(self.direct_io)
            config.entry_timeout = self.timeout
            config.attr_timeout = self.timeout
            config.negative_timeout = self.timeout

    # ---- faults ------------------------------------------------------------------------

    def _enter(self, path: str | None, *, hidden_is_enoent: bool = True) -> dict[str, Any]:
        """Apply the faults every operation shares; return the faults for op-specific ones."""
        faults = self.control.faults()
        path = path or ""
        latency = faults.get("latency_ms")
        if isinstance(latency, int | float):
            delay = latency
        else:
            delay = _lookup(path, latency) if isinstance(latency, dict) else None
        if delay:
            time.sleep(delay / 1000)
        if path and _matches(path, faults.get("enotconn")):
            raise fuse.FuseOSError(errno.ENOTCONN)
        if path and hidden_is_enoent and _matches(path, faults.get("vanish")):
            raise fuse.FuseOSError(errno.ENOENT)
        return faults

    def _real(self, path: str) -> str:
        return os.path.join(self.backing, path.lstrip("/"))

    # ---- metadata ------------------------------------------------------------------------

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        self._enter(path)
        try:
            st = os.fstat(fh) if fh is not None else os.lstat(self._real(path))
        except OSError as exc:
            raise fuse.FuseOSError(exc.errno) from None
        attrs = {k: getattr(st, k) for k in _STAT_FIELDS}
        for k in ("st_atime", "st_mtime", "st_ctime"):
            attrs[k] = getattr(st, k + "_ns")  # nanoseconds, as use_ns asks
        return attrs

    def readdir(self, path: str, fh: int) -> list[Any]:
        faults = self._enter(path)
        hidden = faults.get("vanish")
        entries: list[Any] = [".", ".."]
        with os.scandir(self._real(path)) as it:
            for entry in it:
                child = os.path.join(path, entry.name)
                if _matches(child, hidden):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted since it was listed
                entries.append((entry.name, {"st_mode": st.st_mode, "st_ino": st.st_ino}, 0))
        return entries

    def readlink(self, path: str) -> str:
        self._enter(path)
        return os.readlink(self._real(path))

    def statfs(self, path: str) -> dict[str, int]:
        self._enter(path, hidden_is_enoent=False)
        sv = os.statvfs(self._real(path))
        return {k: getattr(sv, k) for k in _STATVFS_FIELDS}

    def chmod(self, path: str, mode: int) -> int:
        self._enter(path)
        os.chmod(self._real(path), mode, follow_symlinks=False)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        self._enter(path)
        os.lchown(self._real(path), uid, gid)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        self._enter(path)
        if times is None:
            os.utime(self._real(path), follow_symlinks=False)
        else:
            os.utime(self._real(path), ns=times, follow_symlinks=False)
        return 0

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        self._enter(path)
        if fh is not None:
            os.ftruncate(fh, length)
        else:
            os.truncate(self._real(path), length)
        return 0

    # ---- namespace ------------------------------------------------------------------------

    def mkdir(self, path: str, mode: int) -> int:
        self._enter(path, hidden_is_enoent=False)
        os.mkdir(self._real(path), mode)
        return 0

    def rmdir(self, path: str) -> int:
        self._enter(path)
        os.rmdir(self._real(path))
        return 0

    def unlink(self, path: str) -> int:
        self._enter(path)
        os.unlink(self._real(path))
        return 0

    def rename(self, old: str, new: str) -> int:
        self._enter(old)
        self._enter(new, hidden_is_enoent=False)
        os.rename(self._real(old), self._real(new))
        return 0

    def symlink(self, target: str, source: str) -> int:
        # mfusepy passes (link path, what it points to)
        self._enter(target, hidden_is_enoent=False)
        os.symlink(source, self._real(target))
        return 0

    # ---- data -------------------------------------------------------------------------------

    def _data(self, path: str) -> dict[str, Any]:
        faults = self._enter(path)
        if _matches(path, faults.get("enotconn_data")):
            raise fuse.FuseOSError(errno.ENOTCONN)
        return faults

    def open(self, path: str, flags: int) -> int:
        self._data(path)
        return os.open(self._real(path), flags | os.O_CLOEXEC)

    def create(self, path: str, mode: int, flags: int = os.O_WRONLY) -> int:
        faults = self._enter(path, hidden_is_enoent=False)
        if _matches(path, faults.get("enotconn_data")):
            raise fuse.FuseOSError(errno.ENOTCONN)
        if _matches(path, faults.get("enospc_write")):
            raise fuse.FuseOSError(errno.ENOSPC)
        return os.open(self._real(path), flags | os.O_CREAT | os.O_CLOEXEC, mode)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        faults = self._data(path)
        if _matches(path, faults.get("eio_read")):
            raise fuse.FuseOSError(errno.EIO)
        limit = _lookup(path, faults.get("eio_after_bytes"))
        if limit is not None and offset + size > limit:
            # The request touches the bad region: it fails as a whole, as a disk's would.
            # The kernel then asks again for less (a page), so every good byte is readable.
            raise fuse.FuseOSError(errno.EIO)
        short = _lookup(path, faults.get("short_read"))
        if short is not None:
            size = min(size, short)
        return os.pread(fh, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        faults = self._data(path)
        if _matches(path, faults.get("enospc_write")):
            raise fuse.FuseOSError(errno.ENOSPC)
        return os.pwrite(fh, data, offset)

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        faults = self._data(path)
        if _matches(path, faults.get("eio_fsync")):
            raise fuse.FuseOSError(errno.EIO)
        if datasync:
            os.fdatasync(fh)
        else:
            os.fsync(fh)
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0

    def release(self, path: str, fh: int) -> int:
        os.close(fh)
        return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("backing")
    parser.add_argument("mountpoint")
    parser.add_argument("control")
    parser.add_argument("--direct-io", action="store_true", help="bypass the page cache")
    parser.add_argument(
        "--cache-timeout",
        type=float,
        default=0.0,
        help="seconds the kernel may cache names and attributes [0]",
    )
    args = parser.parse_args(argv)
    # libfuse chdir("/")s: every path it will see later must be absolute now.
    backing, control = os.path.abspath(args.backing), os.path.abspath(args.control)
    operations = FaultFS(backing, control, args.direct_io, args.cache_timeout)
    try:
        fuse.FUSE(operations, os.path.abspath(args.mountpoint), foreground=True, fsname="faultfs")
    except RuntimeError as exc:  # libfuse's own exit status (also after SIGTERM)
        print(f"faultfs: libfuse returned {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
