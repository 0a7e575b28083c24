"""Exception tree: each error names the path, the action and the problem, and its exit code."""

from __future__ import annotations

import errno
import os

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

# errno values that may clear up on their own (network mounts, busy devices).
RETRYABLE_ERRNOS = frozenset(
    {errno.EIO, errno.ETIMEDOUT, errno.ESTALE, errno.EAGAIN, errno.ENOTCONN, errno.EINTR}
)

_ADVICE = {
    errno.ENOSPC: "the filesystem is full (bytes or inodes); free space and run again to resume",
    errno.EDQUOT: "the disk quota is exhausted; free space and run again to resume",
    errno.EACCES: "permission denied; check the owner and mode of this path and its parents",
    errno.EPERM: "operation not permitted; check the owner and mode of this path",
    errno.EROFS: "the filesystem is mounted read-only",
    errno.ENOENT: "it does not exist",
    errno.ENOTDIR: "a component of the path is not a directory",
    errno.ELOOP: "it is a symbolic link, which softcopy never follows",
}


class SoftcopyError(Exception):
    """A failure the user can act on: `cannot <action> <path>: <problem>`."""

    exit_code = EXIT_FAILED

    def __init__(self, path: object, action: str, problem: str) -> None:
        self.path = str(path)
        self.action = action
        self.problem = problem
        super().__init__(f"cannot {action} {self.path}: {problem}")


class ConfigError(SoftcopyError):
    """Bad command line, targets file or target definition (exit 2)."""

    exit_code = EXIT_USAGE


class DestinationBusy(ConfigError):
    """Another softcopy holds the destination's lock (exit 2 from the command line; a
    watcher waits for it, as for a lock left by a process on another host that died)."""


class MetadataError(SoftcopyError):
    """Zarr metadata that is missing or does not parse (exit 2: fix the input, not the run)."""

    exit_code = EXIT_USAGE


def from_os_error(exc: OSError, action: str, path: object | None = None) -> SoftcopyError:
    """Translate an OSError at the I/O boundary into a SoftcopyError with advice."""
    where = path if path is not None else (exc.filename or "?")
    advice = _ADVICE.get(exc.errno or 0)
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    problem = f"{reason} ({advice})" if advice else reason
    return SoftcopyError(where, action, problem)


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in RETRYABLE_ERRNOS
