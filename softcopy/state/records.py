"""softcopy's records folder beside a copy (DEST.softcopy): opened once, never through a link.

Every read and write is relative to the folder's own descriptor, with O_NOFOLLOW,
so a link planted in the folder (or the folder itself being a link) can never
make softcopy read or write anything outside the source and destination trees.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from ..errors import ConfigError, SoftcopyError, from_os_error

LOCK = "lock"
LINK_PROBLEM = "it is a symbolic link, which softcopy never follows; remove it"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# `.NAME.<pid>.tmp` now; `.NAME.tmp` from softcopy before temporaries were per writer.
_TEMPORARY = re.compile(r"^\..+?(\.(\d+))?\.tmp$")


def records_dir(destination: Path) -> Path:
    """softcopy's own records live beside the copy, never inside it."""
    return destination.parent / f"{destination.name}.softcopy"


def describe(path: Path | str) -> str:
    """What is wrong with a path that should be a real directory of ours, for an error."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return os.strerror(exc.errno or 0)
    if stat.S_ISLNK(st.st_mode):
        return LINK_PROBLEM
    if not stat.S_ISDIR(st.st_mode):
        return "it exists and is not a directory"
    return "it changed while softcopy opened it"


def open_directory(path: Path | str, action: str) -> int:
    """A descriptor of `path` itself, which must be a real directory (never a link)."""
    try:
        return os.open(path, _DIR_FLAGS)
    except OSError as exc:
        # O_DIRECTORY | O_NOFOLLOW on a link fails with ENOTDIR, on some kernels ELOOP.
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            raise ConfigError(path, action, describe(path)) from exc
        raise from_os_error(exc, action, path) from exc


class RecordFile:
    """One record by name, so `records / "summary.json"` reads like a path."""

    def __init__(self, folder: Records, name: str) -> None:
        self.folder = folder
        self.name = name

    def __str__(self) -> str:
        return os.path.join(self.folder.path, self.name)

    def write_bytes(self, data: bytes | Iterable[bytes]) -> None:
        self.folder.write(self.name, data)

    def read_bytes(self) -> bytes:
        return self.folder.read(self.name)

    def unlink(self) -> None:
        self.folder.unlink(self.name)

    def open_input(self, action: str, missing: str | None = None) -> BinaryIO:
        """For reading, like inputs.open_input, but never through a link; ConfigError if not."""
        try:
            return os.fdopen(self.folder.open_fd(self.name), "rb")
        except FileNotFoundError as exc:
            raise ConfigError(self, action, missing or os.strerror(exc.errno)) from None
        except OSError as exc:
            problem = LINK_PROBLEM if exc.errno == errno.ELOOP else exc.strerror or str(exc)
            raise ConfigError(self, action, problem) from exc


class Records:
    """The records folder, held open for the whole run."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self._held: list[int] = []

    @classmethod
    def open(cls, path: Path, create: bool = True, check_owner: bool = True) -> Records | None:
        """Open (with `create`, first make) the folder; None when it is missing and not made.

        Refused, with the reason: a link, not a directory, or (with `check_owner`)
        a directory another user owns, where softcopy's writes could be redirected.
        """
        action = "write records in" if create else "read records in"
        if create:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                os.mkdir(path, 0o755)
            except FileExistsError:
                pass
            except OSError as exc:
                raise from_os_error(exc, "create records folder", exc.filename or path) from exc
        try:
            fd = open_directory(path, action)
        except SoftcopyError:
            if not create and not os.path.lexists(path):
                return None
            raise
        st = os.fstat(fd)
        if check_owner and st.st_uid != os.geteuid():
            os.close(fd)
            raise ConfigError(
                path,
                action,
                f"it is owned by uid {st.st_uid}, not by uid {os.geteuid()} that softcopy runs "
                "as; softcopy keeps its records only in a folder of its own user",
            )
        return cls(path, fd)

    def __truediv__(self, name: str) -> RecordFile:
        return RecordFile(self, name)

    def write(self, name: str, data: bytes | Iterable[bytes]) -> None:
        """Atomically: a private temporary, fsync, rename onto the name, fsync the folder.

        `data`: the bytes, or blocks of them (a record too large to hold whole, written
        as it is read). rename replaces whatever is at the name, a link included, never a
        link's target.
        """
        tmp = f".{name}.{os.getpid()}.tmp"  # one per writer: two never share one
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            self.unlink(tmp)  # a stale one, or a link under its name: removed, not followed
            fd = os.open(tmp, flags, 0o644, dir_fd=self.fd)
            try:
                for block in (data,) if isinstance(data, bytes | bytearray) else data:
                    view = memoryview(block)
                    while view:
                        view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            os.fsync(self.fd)
        except OSError as exc:
            try:
                os.unlink(tmp, dir_fd=self.fd)
            except OSError:
                pass
            raise from_os_error(exc, "write record", self / name) from exc

    def read(self, name: str) -> bytes:
        """The record's bytes; FileNotFoundError when absent; OSError(ELOOP) for a link."""
        with os.fdopen(self.open_fd(name), "rb") as f:
            return f.read()

    def open_fd(self, name: str) -> int:
        """A record opened for reading; a link (ELOOP) or anything but a file is refused."""
        # O_NONBLOCK: a fifo planted under a record's name must not hang the open.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        fd = os.open(name, flags, dir_fd=self.fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, "it is not a regular file", str(self / name))
        os.set_blocking(fd, True)
        return fd

    def has(self, name: str) -> bool:
        """Whether a record of that name is there (a link counts, and is not followed)."""
        try:
            os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except OSError:
            return False
        return True

    def unlink(self, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise from_os_error(exc, "remove record", self / name) from exc

    def lock(self) -> bool:
        """flock the `lock` file (created, never through a link); False when another holds it."""
        try:
            fd = os.open(
                LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=self.fd
            )
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a link, dangling or not, planted as the lock
                raise ConfigError(self / LOCK, "lock", LINK_PROBLEM) from exc
            raise from_os_error(exc, "lock", self / LOCK) from exc
        self._held.append(fd)
        return lock_fd(fd)

    def hold(self, fd: int) -> None:
        """Keep another descriptor (a lock) open until the records close."""
        self._held.append(fd)

    def remove_stale_temporaries(self) -> None:
        """Temporaries of writers that died (any pid but ours), links among them."""
        mine = str(os.getpid())
        for name in os.listdir(self.fd):
            match = _TEMPORARY.match(name)
            if match and match.group(2) != mine:
                self.unlink(name)

    def close(self) -> None:
        for fd in [*self._held, self.fd]:
            os.close(fd)
        self._held.clear()
        self.fd = -1


def lock_fd(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def write_file(path: Path | RecordFile, data: bytes | Iterable[bytes]) -> None:
    """Atomically write a record, or a file in a folder that must be a real one of ours."""
    if not isinstance(path, Path):  # a record (of a local or an object-store folder)
        path.write_bytes(data)
        return
    folder = Records.open(Path(path).parent, create=False)
    if folder is None:
        raise ConfigError(Path(path).parent, "write records in", "it does not exist")
    try:
        folder.write(Path(path).name, data)
    finally:
        folder.close()
