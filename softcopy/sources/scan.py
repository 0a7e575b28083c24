"""Walk a tree without following links: which files exist, and at which version."""

from __future__ import annotations

import errno
import os
import re
import stat
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter
from typing import NamedTuple, TypeVar

# Writers publish by renaming a temporary file onto the final name; the temporary
# names below never hold a finished file and are never copied.
#   tensorstore:  <name>.__lock, <name>_<16 hex>.__lock
#   zarr-python:  <stem>.<32 hex>.partial
#   softcopy:     .softcopy-tmp.<name> (our own, in the destination)
_WRITER_TEMP = re.compile(r"(\.__lock|\.[0-9a-f]{32}\.partial)$")
TEMP_PREFIX = ".softcopy-tmp."
_TEMP_ENDINGS = (".__lock", ".partial")
_VERSION_FIELDS = attrgetter("st_size", "st_mtime_ns", "st_ino", "st_ctime_ns")  # a Version's


class Version(NamedTuple):
    """What identifies one content of a file: a rename by the writer changes the inode.

    ctime is part of it because a writer can restore mtime after rewriting in
    place, but nobody can set ctime. On filesystems with coarse timestamps even
    all four can repeat (a reused inode within the same second): see racy.py.
    """

    size: int
    mtime_ns: int
    ino: int
    ctime_ns: int = 0


def version_of(st: os.stat_result) -> Version:
    return Version(st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def is_temporary(name: str) -> bool:
    """True for a writer's or softcopy's temporary file name (a basename)."""
    if name.startswith(TEMP_PREFIX):
        return True
    # str.endswith rules out nearly every name before the regular expression runs.
    return name.endswith(_TEMP_ENDINGS) and _WRITER_TEMP.search(name) is not None


def join_key(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


@dataclass
class ScanResult:
    """One full pass over a tree: every file and link, and how many temporary files remain."""

    files: dict[str, Version] = field(default_factory=dict)
    links: set[str] = field(default_factory=set)
    temporary: list[str] = field(default_factory=list)
    directories: list[str] = field(default_factory=list)
    errors: list[tuple[str, OSError]] = field(default_factory=list)
    # The newest max(mtime, ctime) in ns of the directories and links listed (the files'
    # are in their versions): a deletion or a rename changes only its directory's times.
    newest_other_ns: int = 0


def walk(
    root: str,
    rel: str = "",
    on_dir: Callable[[str], None] | None = None,
    on_error: Callable[[str, OSError], None] | None = None,
) -> Iterator[tuple[str, os.stat_result | None, bool]]:
    """Yield (key, lstat, is_temporary) for every non-directory below root/rel.

    Directories are reported to `on_dir` before their entries are listed, so a
    caller that adds an inotify watch there sees every later change: watch first,
    then list, and nothing falls between the two. Links are never followed. A
    directory that vanishes while we walk is skipped: the writer deleted it. A
    directory that cannot be listed (permissions) or a file that cannot be
    examined (I/O errors) goes to `on_error`, or raises without it.
    """
    stack = [rel]
    while stack:
        current = stack.pop()
        if on_dir is not None:
            on_dir(current)
        path = os.path.join(root, current) if current else root
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            if on_error is None or not current:
                raise
            on_error(current, exc)
            continue
        for entry in entries:
            key = join_key(current, entry.name)
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(key)
                    continue
                if is_temporary(entry.name):
                    yield key, None, True
                    continue
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as exc:
                # One file that cannot be examined (EIO, ENOTCONN on a network
                # mount) is that file's problem, not the whole scan's.
                if on_error is None:
                    raise
                on_error(key, exc)
                continue
            yield key, st, False


@dataclass
class DirListing:
    """One directory's entries, keyed by their keys below the tree's root."""

    files: dict[str, Version] = field(default_factory=dict)
    links: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    temporary: list[str] = field(default_factory=list)
    errors: list[tuple[str, OSError]] = field(default_factory=list)  # entries not examined
    newest_ns: int = 0  # newest max(mtime, ctime) of the directory itself and its links


_BELOW = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW


def list_dir(root: str, rel: str, files: dict[str, Version] | None = None) -> DirListing:
    """The entries of root/rel; OSError when the directory itself cannot be listed.

    `files`: a dict the files go into, as the listing's `files` (a whole tree's listing
    fills one dict, not one per directory and again into the whole).

    The directory is listed through a descriptor of its own, so each file's `lstat` is an
    `fstatat` on it and the kernel does not walk the whole path again per file (a quarter
    of the CPU of a listing). Directories below the root are opened with O_NOFOLLOW: one
    swapped for a link since its parent was listed is never entered (ELOOP). `d_type` tells
    directories apart without an `lstat` of their own.
    """
    path = os.path.join(root, rel) if rel else root
    # The root may be a link the user gave; nothing below it is followed.
    fd = os.open(path, _BELOW if rel else _BELOW & ~os.O_NOFOLLOW)
    out = DirListing() if files is None else DirListing(files)
    files, links, dirs, temporary = out.files, out.links, out.dirs, out.temporary
    is_reg, is_lnk = stat.S_ISREG, stat.S_ISLNK
    make = tuple.__new__  # a Version without NamedTuple's argument handling per file
    temp_search = _WRITER_TEMP.search
    try:
        st = os.fstat(fd)
        newest = max(st.st_mtime_ns, st.st_ctime_ns)
        with os.scandir(fd) as it:
            entries = list(it)
        prefix = f"{rel}/" if rel else ""
        for entry in entries:
            name = entry.name
            key = prefix + name
            try:
                if entry.is_dir(follow_symlinks=False):
                    dirs.append(key)
                    continue
                if name.startswith(TEMP_PREFIX) or (
                    name.endswith(_TEMP_ENDINGS) and temp_search(name) is not None
                ):
                    temporary.append(key)
                    continue
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as exc:
                # One file that cannot be examined (EIO, ENOTCONN on a network mount) is
                # that file's problem, not the whole listing's.
                out.errors.append((key, exc))
                continue
            mode = st.st_mode
            if is_reg(mode):
                files[key] = make(Version, (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns))
            elif is_lnk(mode):
                links.append(key)
                newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
            # sockets, fifos, devices: not data, never copied
    finally:
        os.close(fd)
    out.newest_ns = newest
    return out


@dataclass
class DirNames:
    """One directory's entries as `list_names` gives them: its files by name, their versions
    in one flat array; everything else keyed below the tree's root, as in DirListing."""

    names: list[str] = field(default_factory=list)
    versions: array = field(default_factory=lambda: array("q"))  # (size, mtime, ino, ctime)
    links: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    temporary: list[str] = field(default_factory=list)
    errors: list[tuple[str, OSError]] = field(default_factory=list)
    newest_ns: int = 0  # as DirListing's


def list_names(root: str, rel: str) -> DirNames:
    """list_dir for a caller that wants names and a flat array of versions, not a dict of
    keys: no key string, no Version and no dict entry per file (a sixth of a listing's
    work). The same entries, examined the same way."""
    path = os.path.join(root, rel) if rel else root
    fd = os.open(path, _BELOW if rel else _BELOW & ~os.O_NOFOLLOW)
    out = DirNames()
    names, links, dirs, temporary = out.names, out.links, out.dirs, out.temporary
    stats: list[os.stat_result] = []
    add, keep = names.append, stats.append
    is_reg, is_lnk = stat.S_ISREG, stat.S_ISLNK
    temp_search = _WRITER_TEMP.search
    try:
        st = os.fstat(fd)
        newest = max(st.st_mtime_ns, st.st_ctime_ns)
        with os.scandir(fd) as it:
            entries = list(it)
        prefix = f"{rel}/" if rel else ""
        for entry in entries:
            name = entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    dirs.append(prefix + name)
                    continue
                if name.startswith(TEMP_PREFIX) or (
                    name.endswith(_TEMP_ENDINGS) and temp_search(name) is not None
                ):
                    temporary.append(prefix + name)
                    continue
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as exc:
                out.errors.append((prefix + name, exc))
                continue
            mode = st.st_mode
            if is_reg(mode):
                add(name)
                keep(st)
            elif is_lnk(mode):
                links.append(prefix + name)
                newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
    finally:
        os.close(fd)
    # The four fields of every file at once, at C speed: a tuple per file was a sixth of this.
    out.versions = array("q", list(chain.from_iterable(map(_VERSION_FIELDS, stats))))
    out.newest_ns = newest
    return out


_Listed = TypeVar("_Listed", "DirListing", "DirNames")


def gone(exc: OSError) -> bool:
    """A directory that vanished or became something else while a tree was walked."""
    return isinstance(exc, FileNotFoundError | NotADirectoryError) or exc.errno == errno.ELOOP


def _chunk_order(key: str) -> tuple[int, str]:
    return len(key), key


def iter_dirs(
    root: str,
    rel: str = "",
    on_dir: Callable[[str], None] | None = None,
    files: dict[str, Version] | None = None,
) -> Iterator[tuple[str, DirListing | OSError]]:
    """(rel, listing) for every directory of root/rel, parents before their children;
    (rel, error) for one that cannot be listed. One vanished meanwhile is left out.

    `on_dir` sees each directory before it is listed: a caller that adds an inotify watch
    there sees every later change, and nothing falls between the two. `files`: as for
    `list_dir`, one dict for every directory's files.
    """
    return _walk(root, rel, on_dir, lambda current: list_dir(root, current, files))


def iter_dir_names(
    root: str, rel: str = "", on_dir: Callable[[str], None] | None = None
) -> Iterator[tuple[str, DirNames | OSError]]:
    """iter_dirs with each directory as `list_names` gives it."""
    return _walk(root, rel, on_dir, lambda current: list_names(root, current))


def _walk(
    root: str,
    rel: str,
    on_dir: Callable[[str], None] | None,
    list_one: Callable[[str], _Listed],
) -> Iterator[tuple[str, _Listed | OSError]]:
    stack = [rel]
    while stack:
        current = stack.pop()
        if on_dir is not None:
            on_dir(current)
        try:
            listing = list_one(current)
        except OSError as exc:
            if gone(exc):
                continue  # the writer deleted it (or swapped it for a link) while we walked
            if not current:
                raise
            yield current, exc
            continue
        # Popped in ascending order of (length, name), which for chunk directories is their
        # index: the ledger's sparse rows then grow at their end instead of being merged
        # below rows it already holds.
        stack += sorted(listing.dirs, key=_chunk_order, reverse=True)
        yield current, listing


def scan_tree(root: str, rel: str = "", on_dir: Callable[[str], None] | None = None) -> ScanResult:
    """A full listing of root/rel, whole: the source of truth that events only hint at.

    Callers that can take it directory by directory use `iter_dirs` and hold no listing.
    """
    result = ScanResult()
    files, links, temporary = result.files, result.links, result.temporary
    newest = 0
    for current, listing in iter_dirs(root, rel, on_dir, files):
        result.directories.append(current)
        if isinstance(listing, OSError):
            result.errors.append((current, listing))
            continue
        links.update(listing.links)
        temporary += listing.temporary
        result.errors += listing.errors
        newest = max(newest, listing.newest_ns)
    result.newest_other_ns = newest
    return result


def stat_key(root: str, key: str) -> Version | None:
    """The current version of one file, or None when it is gone (or is a directory).

    Any other error (EIO, ENOTCONN) raises: "cannot tell" is not "deleted".
    """
    try:
        st = os.lstat(os.path.join(root, key))
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
        return version_of(st)
    return None
