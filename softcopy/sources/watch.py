"""inotify over a whole tree: turns kernel events into hints about which keys to look at.

Events say *when* to look, never *what* is true: the supervisor always stats the
path an event names, rescans a new directory after watching it, and rescans the
whole tree when the kernel queue overflowed.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
from dataclasses import dataclass

import inotify_simple
from inotify_simple import INotify
from inotify_simple import flags as F

from ..errors import SoftcopyError
from .scan import is_temporary, join_key

# inotify_simple finds libc with ctypes.util.find_library, which starts a process
# (`ldconfig -p`) in every run: 2-8 ms, far more on a busy machine. The running program's own
# symbols already hold libc's inotify calls. An inotify_simple without this global never reads it.
if getattr(inotify_simple, "_libc", None) is None:
    inotify_simple._libc = ctypes.CDLL(None, use_errno=True)

log = logging.getLogger(__name__)

# IN_MOVED_TO: tensorstore and zarr-python publish by rename.  IN_CLOSE_WRITE:
# in-place writers (a `complete` marker, logs).  IN_CREATE: directories, hard
# links (zarr-python's create-if-absent), symlinks.  IN_DELETE / IN_MOVED_FROM:
# chunks deleted when overwritten with the fill value, or on shrink.  IN_ATTRIB:
# a new mtime alone (utime after an in-place write, `cp -p`) is a new version.
WATCH_MASK = (
    F.CREATE
    | F.MOVED_TO
    | F.CLOSE_WRITE
    | F.DELETE
    | F.MOVED_FROM
    | F.ATTRIB
    | F.DELETE_SELF
    | F.MOVE_SELF
    | F.ONLYDIR
    | F.DONT_FOLLOW
)


@dataclass(frozen=True)
class Hint:
    """kind: "file" (look at key), "dir" (new directory: watch and scan it), "rescan" (all)."""

    kind: str
    key: str = ""


class TreeWatcher:
    def __init__(self, root: str) -> None:
        self.root = root
        try:
            self._inotify = INotify()
        except OSError as exc:
            raise SoftcopyError(
                root,
                "watch source",
                f"{os.strerror(exc.errno or 0)}: too many inotify instances are open for this "
                "user (fs.inotify.max_user_instances); close other watchers or raise the limit",
            ) from exc
        self._dirs: dict[int, str] = {}
        self._wds: dict[str, int] = {}
        self.unwatched = 0  # directories beyond the watch limit: only scans see them

    def fileno(self) -> int:
        return self._inotify.fileno()

    def close(self) -> None:
        self._inotify.close()

    def watch(self, rel: str) -> None:
        """Watch one directory (call before listing it)."""
        if rel in self._wds:
            return
        path = os.path.join(self.root, rel) if rel else self.root
        try:
            wd = self._inotify.add_watch(path, WATCH_MASK)
        except FileNotFoundError:
            return  # deleted before we got to it
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                # The per-user watch limit. Scans still find every file below this
                # directory, only later: slower, never wrong. Say so once.
                if not self.unwatched:
                    log.warning(
                        "%s: inotify watch limit reached (fs.inotify.max_user_watches); "
                        "new files in unwatched directories are found by the periodic "
                        "scan only; raise the limit with sysctl for lower lag",
                        path,
                    )
                self.unwatched += 1
                return
            if exc.errno == errno.ENOTDIR:
                return
            if exc.errno in (errno.EACCES, errno.EPERM):
                # inotify needs read permission, as listing does: the listing that
                # follows fails the same way and names this directory as a failure of
                # its own, while every other directory is watched and copied.
                return
            raise
        old = self._dirs.get(wd)
        if old is not None and old != rel and self._wds.get(old) == wd:
            # The same directory under a new name (it moved): its old name is free again.
            del self._wds[old]
        self._dirs[wd] = rel
        self._wds[rel] = wd

    def _forget(self, rel: str) -> None:
        """Stop watching rel and everything below it (it moved; it may be outside now)."""
        prefix = f"{rel}/" if rel else ""
        for name, wd in list(self._wds.items()):
            if name == rel or name.startswith(prefix):
                del self._wds[name]
                self._dirs.pop(wd, None)
                try:
                    self._inotify.rm_watch(wd)
                except OSError:
                    pass  # already gone: its IN_IGNORED is queued

    def read(self, timeout_ms: int = 0) -> list[Hint]:
        """The hints of every event queued, coalesced (see `coalesced`)."""
        return coalesced(self._read(timeout_ms))

    def _read(self, timeout_ms: int) -> list[Hint]:
        hints: list[Hint] = []
        for event in self._inotify.read(timeout=timeout_ms):
            if event.mask & F.Q_OVERFLOW:
                log.warning(
                    "inotify queue overflowed under %s; rescanning the whole tree", self.root
                )
                hints.append(Hint("rescan"))
                continue
            parent = self._dirs.get(event.wd)
            if event.mask & F.IGNORED:
                if parent is not None:
                    self._dirs.pop(event.wd, None)
                    if self._wds.get(parent) == event.wd:
                        del self._wds[parent]
                continue
            if parent is None:
                continue
            if event.mask & (F.DELETE_SELF | F.MOVE_SELF):
                if event.mask & F.MOVE_SELF:
                    # A watched directory moved: every key below it changed name. Its old
                    # names must not block watching a new directory there, and events from
                    # it must not be reported under them; the rescan watches it again if it
                    # is still in the tree.
                    self._forget(parent)
                    hints.append(Hint("rescan"))
                continue
            if not event.name or is_temporary(event.name):
                continue
            key = join_key(parent, event.name)
            if event.mask & F.ISDIR:
                if event.mask & (F.CREATE | F.MOVED_TO):
                    hints.append(Hint("dir", key))
                elif event.mask & F.MOVED_FROM:
                    hints.append(Hint("rescan"))
                continue
            hints.append(Hint("file", key))
        return hints


def coalesced(hints: list[Hint]) -> list[Hint]:
    """The hints of one read, each thing to look at once.

    Every hint is acted on after the whole read, so a later one adds nothing that an
    earlier one will not see: tensorstore's rename and its close name the same file
    (two hints, one look), a directory's scan lists what was made in it after it was
    made, and a rescan lists everything. A hint before the directory hint that covers
    it stays (a file deleted in a directory later made anew under the same name).
    """
    if len(hints) < 2:
        return hints
    if Hint("rescan") in hints:
        return [Hint("rescan")]
    out: list[Hint] = []
    seen: set[Hint] = set()
    scanned: set[str] = set()  # directories this read's hints list, whole
    for hint in hints:
        if hint in seen or (scanned and _below(hint.key, scanned)):
            continue
        seen.add(hint)
        out.append(hint)
        if hint.kind == "dir":
            scanned.add(hint.key)
    return out


def _below(key: str, dirs: set[str]) -> bool:
    """Whether key lies below one of dirs."""
    end = key.rfind("/")
    while end > 0:
        key = key[:end]
        if key in dirs:
            return True
        end = key.rfind("/")
    return False
