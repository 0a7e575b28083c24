"""Files a user names on the command line (a targets file, a manifest): regular files only.

A FIFO would block the open or the read forever, a device (/dev/zero, /dev/urandom)
never ends; both are refused before a byte is read, and what is read is bounded.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from .errors import ConfigError

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def open_input(path: os.PathLike | str, action: str, missing: str | None = None) -> BinaryIO:
    """Open a user's file for reading; ConfigError unless it is a regular file.

    O_NONBLOCK: opening a FIFO no one writes to returns at once instead of hanging;
    a regular file ignores the flag.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise ConfigError(path, action, missing or os.strerror(exc.errno)) from None
    except OSError as exc:
        raise ConfigError(path, action, os.strerror(exc.errno or 0)) from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise ConfigError(path, action, f"it is {kind}, not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_input(path: os.PathLike | str, action: str, limit: int, what: str) -> bytes:
    """The whole of a user's regular file, refused when it is larger than `limit` bytes
    (`what` it should be, for the message)."""
    with open_input(path, action) as f:
        try:
            data = f.read(limit + 1)
        except OSError as exc:
            raise ConfigError(path, action, os.strerror(exc.errno or 0)) from exc
    if len(data) > limit:
        raise ConfigError(
            path, action, f"it is larger than {limit // (1 << 20)} MiB, too large for a {what}"
        )
    return data
