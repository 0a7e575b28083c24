"""Which runs are under a root: every directory at `depth` below it whose name matches.

A run is a Zarr archive (its name ends in `.zarr`, or it holds Zarr metadata at its
top) or, otherwise, a plain run folder. Hidden entries (a name starting with '.',
such as a run being released) and links are never runs: a link would lead outside
the tree. Listing is cheap (one directory per level), so a periodic listing is the
ground truth and inotify only says when to list sooner.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import stat
from dataclasses import dataclass

from inotify_simple import INotify
from inotify_simple import flags as F

from ..errors import ConfigError, from_os_error

log = logging.getLogger("softcopy")

ZARR_METADATA = (".zarray", ".zgroup", "zarr.json", ".zattrs")
RECORDS_SUFFIX = ".softcopy"


@dataclass(frozen=True)
class Found:
    run: str  # its path relative to the root, '/'-separated
    path: str
    kind: str  # "zarr" or "directory"
    ready: bool  # a Zarr run waits for its metadata before it is copied
    created: float  # ctime when first listed: the order runs are taken in


def is_zarr(path: str, name: str) -> tuple[bool, bool]:
    """(is a Zarr run, its metadata is there)."""
    has_metadata = any(os.path.lexists(os.path.join(path, m)) for m in ZARR_METADATA[:3])
    return name.endswith(".zarr") or has_metadata, has_metadata


def find_runs(root: str, depth: int, patterns: tuple[str, ...]) -> list[Found]:
    """The runs under `root` now, oldest first."""
    found: list[Found] = []
    _walk(root, "", depth, patterns, found)
    found.sort(key=lambda f: (f.created, f.run))
    return found


def _walk(root: str, rel: str, depth: int, patterns: tuple[str, ...], out: list[Found]) -> None:
    here = os.path.join(root, rel) if rel else root
    try:
        entries = list(os.scandir(here))
    except FileNotFoundError:
        if not rel:
            raise ConfigError(root, "watch source root", "it does not exist") from None
        return  # a level removed while listing: its runs are gone
    except OSError as exc:
        if not rel:
            raise from_os_error(exc, "list source root", root) from exc
        log.warning("%s: cannot list (%s); its runs are skipped", here, exc.strerror)
        return
    for entry in entries:
        name = entry.name
        if name.startswith(".") or name.endswith(RECORDS_SUFFIX):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            continue  # files under the root, and links, are not runs
        key = f"{rel}/{name}" if rel else name
        if depth > 1:
            _walk(root, key, depth - 1, patterns, out)
            continue
        if patterns and not any(_matches(key, name, p) for p in patterns):
            continue
        zarr, ready = is_zarr(entry.path, name)
        out.append(
            Found(key, entry.path, "zarr" if zarr else "directory", ready or not zarr, st.st_ctime)
        )


def _matches(key: str, name: str, pattern: str) -> bool:
    """A pattern with a '/' matches the run's path under the root; otherwise its name."""
    return fnmatch.fnmatchcase(key if "/" in pattern else name, pattern)


class RootWatcher:
    """inotify on the root and the levels above the runs: a new entry means "list now".

    Events never decide anything; they only shorten the wait for the next listing.
    """

    MASK = F.CREATE | F.MOVED_TO | F.DELETE | F.MOVED_FROM | F.ONLYDIR | F.DONT_FOLLOW

    def __init__(self, root: str, depth: int) -> None:
        self.root = root
        self.depth = depth
        self._inotify = INotify()
        self._watched: set[str] = set()
        self.refresh()

    def fileno(self) -> int:
        return self._inotify.fileno()

    def refresh(self) -> None:
        """Watch every level above the runs (levels appear and go as runs do)."""
        levels = [self.root]
        for _ in range(self.depth - 1):
            levels = [e.path for level in levels for e in _dirs(level)]
            levels_set = set(levels)
            for path in levels_set - self._watched:
                self._add(path)
        self._add(self.root)

    def _add(self, path: str) -> None:
        if path in self._watched:
            return
        try:
            self._inotify.add_watch(path, self.MASK)
            self._watched.add(path)
        except OSError as exc:
            log.debug("%s: not watched (%s); the periodic listing covers it", path, exc)

    def drain(self) -> bool:
        """True when something happened since the last call."""
        events = self._inotify.read(timeout=0)
        return bool(events)

    def close(self) -> None:
        self._inotify.close()


def _dirs(path: str) -> list[os.DirEntry]:
    try:
        return [
            e
            for e in os.scandir(path)
            if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
        ]
    except OSError:
        return []
