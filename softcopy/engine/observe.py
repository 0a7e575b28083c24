"""The engine's view of the source: full listings are the truth, events say where to look.

Every observation goes into the ledger; what changed is reported to the engine
(`on_change`), which keeps its own bookkeeping (copy lag, retries) about it. The
view also keeps what the end rules look at: markers, the time of the last change
and the longest pause between changes, writers' temporary files, and the
source's timestamp granularity (racy.py).

The last change is dated by the source itself where that makes an end sooner:
the first listing sets it from the newest change it shows (max of mtime and ctime
over files, directories and links), so a source quiet for an hour before softcopy
started is quiet for an hour, not for the seconds since the start. Later changes
are dated when they are seen; one that only the times show (a writer's temporary
file come and gone) by its own time. Never later than now: a clock ahead of ours
only delays an end.
"""

from __future__ import annotations

import gc
import itertools
import logging
import os
import stat
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path

from ..errors import MetadataError, SoftcopyError, from_os_error
from ..names import shown
from ..sources.kinds import SourceKind
from ..sources.links import followed
from ..sources.scan import DirListing, DirNames, Version, iter_dir_names, iter_dirs, stat_key
from ..sources.select import Selection
from ..sources.watch import TreeWatcher
from ..zarr.layout import ArrayLayout, metadata_kind
from .finish import Observed, Rules, end_of
from .ledger import Ledger
from .racy import Granularity

log = logging.getLogger(__name__)

_ARRAY_METADATA = ("zarr.json", ".zarray")
_NODE_METADATA = frozenset({"zarr.json", ".zarray", ".zgroup"})  # the files that make a node
# Files observed in one step: the ledger's per-call cost, not per file. A batch's keys and
# versions, and the ledger's temporaries for them, take about 400 B per file while they live,
# and that high-water mark stays. 8,192 cost 15 B per file of a 200,000-file listing's peak
# memory over 2,048; but each call may merge a sparse array's rows, and 2,048 made listing
# into the ledger 0.15 s slower on 200,000 files. 4,096 costs about half of each.
_BATCH = 4096


@dataclass
class _Taken:
    """What one listing found, beyond what went into the ledger."""

    changed: int = 0
    files: int = 0  # wanted files and links
    bytes: int = 0
    temporary: int = 0
    newest_ns: int = 0  # newest max(mtime, ctime) of files, directories, links, temporaries


# A file that exists but cannot be stat'ed: no real file has inode 0.
UNKNOWN_VERSION = Version(0, 0, 0, 0)


class SourceView:
    def __init__(
        self,
        root: str,
        kind: SourceKind,
        select: Selection,
        ledger: Ledger,
        on_change: Callable[[list[str], bool], None],
        scan_interval: float,
    ) -> None:
        self.src = root
        self.kind = kind
        self.select = select
        self.ledger = ledger
        self.on_change = on_change  # (keys, live): live is False for deletions
        self.scan_interval = scan_interval
        self.watcher: TreeWatcher | None = None
        # A link inside the source stands for the file it points to (--follow-links-inside,
        # a destination without links): its version is that file's (sources/links.py).
        self.follow_links = False
        # Files at the source root that say the writer is done (`complete`, sentinels):
        # never copied with the data, only last, after verification.
        self.markers: dict[str, Version] = {}
        self.temp_count = 0
        self.unreadable: dict[str, str] = {}  # directories the last scans could not list
        self.granularity = Granularity()
        self.last_change = time.monotonic()
        self.longest_pause = 0.0  # between two changes at the source
        self.newest_ns = 0  # the newest change the last full listing showed (wall clock)
        self.quiet_at_start = 0.0  # seconds the source was unchanged at the first listing
        self._first_change = -1.0
        self.next_scan = 0.0
        self.files_at_source = 0  # at the last whole listing, wanted keys only
        self.bytes_at_source = 0
        self._changes_seen = False
        self._said_unreadable: set[str] = set()
        self._bad_metadata: dict[str, tuple[Version | None, ...]] = {}
        self.identity: tuple[int, int] | None = None  # the source directory's (dev, ino)
        self.listed_at_ns = 0  # wall clock when the newest full listing began
        self.unchanged_since_listing = False  # no change seen since the newest full listing

    def full_scan(self, initial: bool = False) -> int:
        """List the whole source; returns how many keys changed. The source of truth.

        Taken in directory by directory: a listing of ten million files is never held.
        """
        self._root_identity(initial)
        self.ledger.begin_sweep()
        self.unreadable.clear()
        self.listed_at_ns = time.time_ns()
        on_dir = self.watcher.watch if self.watcher else None
        try:
            taken = self._absorb_tree("", on_dir, initial)
        except OSError as exc:
            raise from_os_error(exc, "scan source", self.src) from exc
        # A root that vanished mid-listing lists as empty: that must never read as "every
        # file was deleted", which would delete the copy's files too.
        self._root_identity(False)
        changed = taken.changed
        for key in self.ledger.end_sweep():
            changed += self.look(key)  # re-stat: it may have appeared after we listed it
        self.temp_count = taken.temporary
        self.files_at_source, self.bytes_at_source = taken.files, taken.bytes
        self._dated_by_source(taken.newest_ns, initial)
        self.next_scan = time.monotonic() + self.scan_interval
        self.unchanged_since_listing = True
        return changed

    def check_root(self) -> None:
        """Raise if the source directory is gone or another one since the first listing."""
        self._root_identity(False)

    def _root_identity(self, initial: bool) -> tuple[int, int]:
        """The source directory's (device, inode); raises once it is gone or another one."""
        try:
            st = os.stat(self.src)
        except FileNotFoundError:
            raise SoftcopyError(
                self.src,
                "copy source",
                "it vanished while it was being copied (deleted or moved away); the copy is "
                "left as it is and not certified",
            ) from None
        except OSError as exc:
            raise from_os_error(exc, "read source", self.src) from exc
        identity = (st.st_dev, st.st_ino)
        if initial or self.identity is None:
            self.identity = identity
        elif identity != self.identity:
            raise SoftcopyError(
                self.src,
                "copy source",
                "it was replaced while it was being copied (another directory now has its "
                "name); the copy is left as it is and not certified",
            )
        return identity

    def scan_subtree(self, rel: str) -> None:
        """A new directory: watch it, then list it, so no file falls between the two."""
        assert self.watcher is not None
        self._absorb_tree(rel, self.watcher.watch, initial=False)

    def on_events(self) -> None:
        assert self.watcher is not None
        for hint in self.watcher.read(0):
            if hint.kind == "rescan":
                self.full_scan()
            elif hint.kind == "dir":
                self.scan_subtree(hint.key)
                self.last_change = time.monotonic()
            else:
                self.look(hint.key)

    def look(self, key: str) -> int:
        """Stat one key and record what it is now; an error leaves our view as it was."""
        name = os.path.basename(key)
        try:
            version = stat_key(self.src, key)
        except OSError as exc:
            log.debug("%s: %s: cannot stat (%s); the next scan looks again", self.src, key, exc)
            return 0
        if self.follow_links and version is not None:
            found = followed(self.src, key)  # None for anything but a link it may follow
            if found is not None:
                version = found[1]
        if version is not None and not self.granularity.settled:
            self.granularity.observe_versions((version,))
        if self.select.is_marker(key):
            self.unchanged_since_listing = False  # its markers are not the ones listed
            if version is None:
                self.markers.pop(key, None)
            else:
                self.markers[key] = version
            return 0
        if not self.select.wanted(key):
            return 0
        if metadata_kind(name):
            self.refresh_node(os.path.dirname(key), strict=False)
        return self.observe(key, version)

    def observe(self, key: str, version: Version | None) -> int:
        if not self.ledger.observe(key, version):
            return 0
        self._changed([key], live=version is not None)
        return 1

    def refresh_node(self, rel: str, strict: bool) -> None:
        try:
            node = self.kind.node(self.src, rel)
        except MetadataError as exc:
            if strict:
                raise
            # Mid-acquisition a hand-written metadata file may be caught half-written;
            # keep the last good layout and say so once per version.
            try:
                seen = tuple(stat_key(self.src, os.path.join(rel, n)) for n in _ARRAY_METADATA)
            except OSError:
                seen = ()
            if self._bad_metadata.get(rel) != seen:
                log.warning("%s: %s; keeping the previous layout", self.src, exc)
                self._bad_metadata[rel] = seen
            return
        except OSError as exc:
            if strict:
                raise from_os_error(exc, "read metadata in", Path(self.src) / rel) from exc
            return
        if isinstance(node, ArrayLayout):
            if self.ledger.set_layout(node):
                log.debug("%s: array %r has file grid %s", self.src, rel, node.grid)
        elif rel in self.ledger.arrays:
            self.ledger.drop_array(rel)

    def _absorb_tree(self, rel: str, on_dir: Callable[[str], None] | None, initial: bool) -> _Taken:
        """Everything below rel into the ledger, a directory at a time (parents first, so
        each array's metadata is read before its chunk files arrive), in batches. Listed
        without keys (`iter_dir_names`): the ledger makes a key only for a file that changed."""
        taken = _Taken()
        batch: list[tuple[str, list[str], array]] = []
        whole = rel == ""  # the whole source, not one new directory's subtree
        since = 0  # files in the batch
        with _collector_paused():
            for current, listing in iter_dir_names(self.src, rel, on_dir):
                if isinstance(listing, OSError):
                    self._note_unreadable([(current, listing)])
                    continue
                before = taken.files
                taken.changed += self._absorb(
                    current, listing, initial, batch, taken, whole and not current
                )
                since += taken.files - before
                if since >= _BATCH:
                    taken.changed += self._observe_batch(batch)
                    since = 0
            taken.changed += self._observe_batch(batch)
        return taken

    def _absorb(
        self,
        current: str,
        listing: DirNames,
        initial: bool,
        batch: list,
        taken: _Taken,
        root: bool,
    ) -> int:
        """One directory's listing; its files join `batch` (observed in bulk by the caller)."""
        names, flat = listing.names, listing.versions
        # Metadata first, so chunk files land in their array's rows: looked up by name, a
        # few searches per directory instead of a test per file.
        if not _NODE_METADATA.isdisjoint(names):
            self.refresh_node(current, strict=initial)
        if not self.granularity.settled:  # settled within a few files: made lazily
            self.granularity.observe_versions(_versions(flat, range(len(names))))
        if root:  # where names are keys
            self.markers = {
                n: _version(flat, j) for j, n in enumerate(names) if self.select.is_marker(n)
            }
        select = self.select
        prefix = f"{current}/" if current else ""
        # Below the root, every file is wanted unless patterns say otherwise (Selection.wanted).
        if not current or select.sentinels or select.include or select.exclude:
            kept = [j for j, n in enumerate(names) if select.wanted(prefix + n)]
            if len(kept) < len(names):
                names = [names[j] for j in kept]
                flat = array("q", itertools.chain.from_iterable(_versions(flat, kept)))
        if names:
            batch.append((current, names, flat))
        taken.files += len(names)
        newest = max(taken.newest_ns, listing.newest_ns)
        versions = listing.versions
        if versions:  # every file's mtime and ctime, at C speed
            taken.bytes += sum(flat[0::4])
            newest = max(newest, max(versions[1::4]), max(versions[3::4]))
        if listing.temporary:
            newest = max(newest, *_temporary_times(self.src, listing.temporary))
            taken.temporary += len(listing.temporary)
        taken.newest_ns = newest
        self._note_unreadable(listing.errors)
        changed = 0
        for key in listing.links:
            taken.files += select.wanted(key)
            changed += self.look(key)
        return changed

    def _observe_batch(self, batch: list[tuple[str, list[str], array]]) -> int:
        keys = self.ledger.observe_names(batch)
        batch.clear()
        self._changed(keys)
        return len(keys)

    def _note_unreadable(self, errors: list[tuple[str, OSError]]) -> None:
        """A directory we cannot list is a failure of this target, named, not a crash."""
        for key, exc in errors:
            if not _is_dir(os.path.join(self.src, key)):
                # A file we cannot stat goes to a copier like any other, so it gets the
                # same retries, back-off and final failure as an error while copying;
                # unless it is not ours to copy (excluded, or a marker: copied last).
                if self.select.wanted(key):
                    self.observe(key, UNKNOWN_VERSION)
                continue
            error = f"cannot list directory: {os.strerror(exc.errno or 0)}"
            if key not in self._said_unreadable:  # once per run, not once per scan
                log.error(
                    "%s: %s/: %s; the next scan tries again", shown(self.src), shown(key), error
                )
                self._said_unreadable.add(key)
            self.unreadable[key + "/"] = error

    def end_rule(self, rules: Rules, now: float, count_expected: bool) -> tuple[str, str]:
        """(rule, reason) when the writer is done by `rules`, else ("", ""); `now` is
        monotonic. `count_expected`: look whether every expected chunk exists (a pass over
        the ledger, so the caller says when it is worth it)."""
        seen = Observed(
            markers=self.markers,
            quiet=now - self.last_change,
            longest_pause=self.longest_pause,
            all_expected_present=count_expected and self.ledger.all_expected_present(),
            temp_count=self.temp_count,
            has_expected_set=self.kind.has_expected_set,
            # An old source counts as finished only while nothing changed since the start.
            quiet_at_start=self.quiet_at_start if self.unchanged_since_start else 0.0,
        )
        end = end_of(rules, seen)
        if end is None:
            return "", ""
        if end.confirm:
            # Confirm with a fresh listing: events may have been lost.
            if self.full_scan() != 0:
                return "", ""
            if end.rule == "settle" and (self.temp_count or self.markers):
                return "", ""
        return end.rule, end.reason

    @property
    def unchanged_since_start(self) -> bool:
        """Nothing changed since the first listing (which dated the last change)."""
        return self.last_change == self._first_change

    def _dated_by_source(self, newest_ns: int, initial: bool) -> None:
        """Date the last change by the newest the listing shows, if that is later news."""
        if not initial and newest_ns <= self.newest_ns:
            return
        self.newest_ns = newest_ns
        now = time.monotonic()
        at = now - max(0.0, time.time() - newest_ns / 1e9)
        if initial:
            # The first listing's backlog is no change now: the source's own times say when.
            self.last_change = self._first_change = at
            self.quiet_at_start = now - at
            self._changes_seen = True
        elif at > self.last_change:  # something the events missed (a deletion, say)
            self.longest_pause = max(self.longest_pause, at - self.last_change)
            self.last_change = at

    def _changed(self, keys: list[str], live: bool = True) -> None:
        """Bookkeeping for keys whose source version just changed."""
        if not keys:
            return
        self.unchanged_since_listing = False
        now = time.monotonic()
        if self._changes_seen:
            self.longest_pause = max(self.longest_pause, now - self.last_change)
        self._changes_seen = True
        self.last_change = now
        self.on_change(keys, live)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a listing makes a version per file: it would
    pass over each of them, a sixth of the listing's time, and they make no cycle. Back on
    after (unless something else had it off), for every thread: the pause is seconds."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def newest_in(root: str, listing: DirListing) -> int:
    """The newest max(mtime, ctime) of everything one directory's listing holds, in ns.

    Two passes at C speed over the files' versions, not a Python loop per file; writers'
    temporary files (few) are stat'ed here: one being written changes no directory.
    """
    versions = listing.files.values()
    return max(
        listing.newest_ns,
        max(map(attrgetter("mtime_ns"), versions), default=0),
        max(map(attrgetter("ctime_ns"), versions), default=0),
        *_temporary_times(root, listing.temporary),
    )


def newest_change_ns(root: str) -> int:
    """The newest change a listing of the tree shows (what an end "quiet since" is dated by)."""
    return max(
        (newest_in(root, d) for _, d in iter_dirs(root) if isinstance(d, DirListing)), default=0
    )


def _version(flat: array, j: int) -> Version:
    return tuple.__new__(Version, flat[4 * j : 4 * j + 4])


def _versions(flat: array, positions: Iterable[int]) -> Iterator[Version]:
    """The versions at `positions` of a listing's flat array."""
    return (tuple.__new__(Version, flat[4 * j : 4 * j + 4]) for j in positions)


def _temporary_times(root: str, keys: Iterable[str]) -> list[int]:
    times = [0]
    for key in keys:
        try:
            st = os.lstat(os.path.join(root, key))
        except OSError:
            continue  # renamed onto its final name meanwhile: that file's times count
        times.append(max(st.st_mtime_ns, st.st_ctime_ns))
    return times


def _is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False
