"""tar, both ways: a run folder written as one PAX stream, and a stream read back member by
member with the BLAKE3 of each file's contents.

Writing is reproducible: members sorted by their path bytes (a folder always before what
it holds), uid/gid 0 and empty user and group names (an archive says nothing about the
acquisition machine's accounts and the same folder gives the same bytes; a restore as
root then gives files to root, as `tar --no-same-owner` would for anyone else), mtimes
to the nanosecond in PAX `mtime` records, no atime or ctime. Names are bytes: a name that
is not UTF-8 goes into a PAX `path` record under `hdrcharset=BINARY`, which GNU tar reads
back byte for byte. Nothing is followed: the walk opens every folder from its parent's
descriptor with O_NOFOLLOW and compares what it opened with what it listed.
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

from blake3 import blake3

from ..errors import SoftcopyError, from_os_error
from ..names import shown

READ_BLOCK = 4 << 20
RECORD = 20 * tarfile.BLOCKSIZE  # GNU tar's and tarfile's record: the archive ends on one
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NOATIME = getattr(os, "O_NOATIME", 0)
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | _NOATIME
_OPEN_DIRS = 256

Keep = Callable[[str], bool]  # whether a path under the source is taken


class DamagedArchive(SoftcopyError):
    """The archive's bytes are wrong (a bad tar header, a failed checksum, a cut)."""


@dataclass(frozen=True)
class Member:
    path: str  # in the archive, "run0042/a/b"; surrogateescape str for non-UTF-8 bytes
    kind: str  # "file" | "dir" | "link"
    size: int
    mode: int  # permission bits
    mtime_ns: int
    target: str = ""  # a link's target
    blake3: str = ""  # hex, files only


@dataclass(frozen=True)
class Entry:
    """One thing to pack: its archive path, its path under the source, its lstat."""

    archive: bytes
    relative: bytes  # b"" for the run folder itself
    st: os.stat_result


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "link"
    return ""


class TreeDirs:
    """Folder descriptors by relative path, each opened from its parent's with O_NOFOLLOW,
    so no component of any path is ever a link followed."""

    def __init__(self, source: Path) -> None:
        self.source = source
        try:
            root = os.open(source, _DIR_FLAGS)
        except OSError as exc:
            raise _open_error(exc, source, os.lstat) from None
        self.root = root
        self.fds: dict[bytes, int] = {}

    def fd(self, relative: bytes) -> int:
        if not relative:
            return self.root
        found = self.fds.get(relative)
        if found is not None:
            return found
        if len(self.fds) >= _OPEN_DIRS:
            self.close_cached()
        parent, _, name = relative.rpartition(b"/")
        parent_fd = self.fd(parent)
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except OSError as exc:

            def lstat(n: bytes) -> os.stat_result:
                return os.stat(n, dir_fd=parent_fd, follow_symlinks=False)

            raise _open_error(exc, self.path(relative), lstat, name) from None
        self.fds[relative] = fd
        return fd

    def path(self, relative: bytes) -> str:
        return shown(os.fsdecode(os.path.join(os.fsencode(self.source), relative)))

    def close_cached(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def close(self) -> None:
        self.close_cached()
        os.close(self.root)


def _open_error(
    exc: OSError, where: object, lstat: Callable | None, name: object = None
) -> SoftcopyError:
    """O_DIRECTORY | O_NOFOLLOW on a link fails as "not a directory": say it is a link."""
    if exc.errno in (errno.ENOTDIR, errno.ELOOP) and lstat is not None:
        try:
            if stat.S_ISLNK(lstat(where if name is None else name).st_mode):
                exc = OSError(errno.ELOOP, os.strerror(errno.ELOOP))
        except OSError:
            pass
    return from_os_error(exc, "pack", where)


def _check_run_name(run_name: str) -> bytes:
    name = os.fsencode(run_name)
    if not name or b"/" in name or name in (b".", b".."):
        raise SoftcopyError(run_name, "pack as", "a run name is one path component")
    return name


def walk_tree(dirs: TreeDirs, run: bytes) -> tuple[list[Entry], list[str]]:
    try:
        root_st = os.stat(dirs.root)
    except OSError as exc:
        raise from_os_error(exc, "pack", dirs.source) from None
    entries = [Entry(run, b"", root_st)]
    skipped: list[str] = []
    stack = [b""]
    while stack:
        relative = stack.pop()
        fd = dirs.fd(relative)
        try:
            with os.scandir(fd) as it:
                listed = [(os.fsencode(e.name), e.stat(follow_symlinks=False)) for e in it]
        except OSError as exc:
            raise from_os_error(exc, "list", dirs.path(relative)) from None
        for name, st in listed:
            child = relative + b"/" + name if relative else name
            archive = run + b"/" + child
            kind = _kind(st.st_mode)
            if not kind:
                skipped.append(os.fsdecode(archive))
                continue
            entries.append(Entry(archive, child, st))
            if kind == "dir":
                stack.append(child)
    entries.sort(key=lambda e: e.archive)
    skipped.sort(key=os.fsencode)
    return entries, skipped


def select_entries(entries: list[Entry], keep: Keep | None) -> list[Entry]:
    """The entries `keep` takes by their path under the source (the run folder always):
    a file or link if kept, a folder if kept or if anything kept is inside it."""
    if keep is None:
        return entries
    chosen = [e for e in entries if not e.relative or keep(os.fsdecode(e.relative))]
    needed = set()
    for e in chosen:
        parent = e.relative.rpartition(b"/")[0]
        while parent and parent not in needed:
            needed.add(parent)
            parent = parent.rpartition(b"/")[0]
    taken = {e.relative for e in chosen} | needed
    return [e for e in entries if e.relative in taken or not e.relative]


def list_source(
    source: Path, run_name: str, keep: Keep | None = None
) -> tuple[list[Entry], list[str]]:
    """Everything under `source` to pack under `run_name/` (what `keep` takes), sorted by
    archive path bytes, never following a link (the run folder itself included), and the
    archive paths of what cannot be packed (fifos, sockets, devices), for warnings."""
    run = _check_run_name(run_name)
    dirs = TreeDirs(source)
    try:
        entries, skipped = walk_tree(dirs, run)
        return select_entries(entries, keep), skipped
    finally:
        dirs.close()


def _pax_time(ns: int) -> str:
    sign, ns = ("-" if ns < 0 else ""), abs(ns)
    return f"{sign}{ns // 10**9}.{ns % 10**9:09d}".rstrip("0")


def _ns_of(text: str) -> int:
    """Nanoseconds of a PAX time ("1700000000.123456789"), exactly (a float is not)."""
    sign = -1 if text.startswith("-") else 1
    whole, _, frac = text.lstrip("-").partition(".")
    return sign * (int(whole or "0") * 10**9 + int((frac + "000000000")[:9] or "0"))


def _header(path: str, kind: str, st: os.stat_result, size: int, target: str) -> bytes:
    info = tarfile.TarInfo(path)
    info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "link": tarfile.SYMTYPE}[kind]
    info.mode = stat.S_IMODE(st.st_mode)
    info.size = size
    info.linkname = target
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = st.st_mtime_ns // 10**9
    if st.st_mtime_ns % 10**9:
        info.pax_headers = {"mtime": _pax_time(st.st_mtime_ns)}
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns, a.st_ctime_ns) == (
        b.st_dev,
        b.st_ino,
        b.st_size,
        b.st_mtime_ns,
        b.st_ctime_ns,
    )


def open_source_file(name: bytes, dir_fd: int, where: str) -> int:
    try:
        return os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        # O_NOATIME is refused (EPERM) on another owner's file: read it without.
        if exc.errno != errno.EPERM or not _NOATIME:
            raise from_os_error(exc, "pack", where) from None
    try:
        return os.open(name, _FILE_FLAGS & ~_NOATIME, dir_fd=dir_fd)
    except OSError as exc:
        raise from_os_error(exc, "pack", where) from None


def changed_error(where: str) -> SoftcopyError:
    return SoftcopyError(where, "pack", "it changed while it was read (the source is not finished)")


def _write_file(
    stream: BinaryIO,
    dirs: TreeDirs,
    entry: Entry,
    path: str,
    pace: Callable[[int], None] | None,
) -> str:
    parent, _, name = entry.relative.rpartition(b"/")
    where = dirs.path(entry.relative)
    fd = open_source_file(name, dirs.fd(parent), where)
    try:
        before = os.fstat(fd)
        if not same_file(before, entry.st):
            raise changed_error(where)
        size = before.st_size
        stream.write(_header(path, "file", before, size, ""))
        digest = copy_blocks(fd, size, stream, where, pace)
        if not same_file(os.fstat(fd), before):
            raise changed_error(where)
        pad = -size % tarfile.BLOCKSIZE
        if pad:
            stream.write(bytes(pad))
        return digest
    finally:
        os.close(fd)


def copy_blocks(
    fd: int, size: int, stream: Any, where: str, pace: Callable[[int], None] | None
) -> str:
    """`size` bytes of an open source file into `stream`, read once; their BLAKE3.

    A file shorter than `size` has changed since it was listed (SoftcopyError)."""
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    hasher = blake3()
    done = 0
    while done < size:
        try:
            block = os.read(fd, min(READ_BLOCK, size - done))
        except OSError as exc:
            raise from_os_error(exc, "read", where) from None
        if not block:
            raise changed_error(where)  # shorter than its size
        hasher.update(block)
        stream.write(block)
        done += len(block)
        # What has been read is not read again: leave the page cache to acquisition.
        os.posix_fadvise(fd, 0, done, os.POSIX_FADV_DONTNEED)
        if pace is not None:
            pace(len(block))
    return hasher.hexdigest()


class _Tell:
    """Counts what tar wrote, for the padding of the last record."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream, self.size = stream, 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        self.stream.write(data)


def write_tar(
    stream: BinaryIO,
    source: Path,
    run_name: str,
    pace: Callable[[int], None] | None = None,
    keep: Keep | None = None,
) -> tuple[list[Member], list[str]]:
    """Write the whole tar of `source` under `run_name/` to `stream`; the members written
    (with each file's BLAKE3, computed on the one read) and the paths skipped.

    A file that changes while it is read raises SoftcopyError naming it. `pace(n)` is
    called after each block read.
    """
    run = _check_run_name(run_name)
    dirs = TreeDirs(source)
    members: list[Member] = []
    out = _Tell(stream)
    try:
        entries, skipped = walk_tree(dirs, run)
        for entry in select_entries(entries, keep):
            path = os.fsdecode(entry.archive)
            st = entry.st
            kind = _kind(st.st_mode)
            mode = stat.S_IMODE(st.st_mode)
            if kind == "file":
                digest = _write_file(out, dirs, entry, path, pace)  # type: ignore[arg-type]
                members.append(Member(path, kind, st.st_size, mode, st.st_mtime_ns, "", digest))
                continue
            target = ""
            if kind == "link":
                parent, _, name = entry.relative.rpartition(b"/")
                try:
                    target = os.fsdecode(os.readlink(name, dir_fd=dirs.fd(parent)))
                except OSError as exc:
                    raise from_os_error(exc, "read the link", dirs.path(entry.relative)) from None
            out.write(_header(path, kind, st, 0, target))
            members.append(Member(path, kind, 0, mode, st.st_mtime_ns, target))
    finally:
        dirs.close()
    end = out.size + 2 * tarfile.BLOCKSIZE
    out.write(bytes(2 * tarfile.BLOCKSIZE + -end % RECORD))
    return members, skipped


_REFUSED = {
    tarfile.LNKTYPE: "a hard link",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO",
    tarfile.CONTTYPE: "a contiguous file",
    tarfile.GNUTYPE_SPARSE: "a sparse file",
}


def tar_entries(stream: BinaryIO) -> Iterator[tuple[Member, BinaryIO | None]]:
    """Each member of a tar read as a stream, with a reader of a file's contents (read it
    before the next member; its Member has no BLAKE3 yet). Members of a type softcopy
    never writes are refused, named."""
    try:
        # Closed by the `with` below once it is open.
        tf = tarfile.open(  # noqa: SIM115
            fileobj=stream, mode="r|", encoding="utf-8", errors="surrogateescape"
        )
    except tarfile.TarError as exc:
        raise DamagedArchive("the archive", "read", f"it is not a tar archive ({exc})") from None
    with tf:
        while True:
            try:
                info = tf.next()
            except (tarfile.TarError, EOFError) as exc:
                raise DamagedArchive("the archive", "read", f"the tar is damaged ({exc})") from None
            if info is None:
                return
            member = member_of(info)
            reader = tf.extractfile(info) if member.kind == "file" else None
            yield member, reader  # type: ignore[misc]


def member_of(info: tarfile.TarInfo) -> Member:
    """The Member a tar header describes (no BLAKE3), or SoftcopyError for a type softcopy
    never writes."""
    if info.isreg():
        kind = "file"
    elif info.isdir():
        kind = "dir"
    elif info.issym():
        kind = "link"
    else:
        what = _REFUSED.get(info.type, f"of tar type {info.type!r}")
        raise SoftcopyError(shown(info.name), "read the member", f"it is {what}, never packed")
    pax_mtime = info.pax_headers.get("mtime")
    mtime_ns = _ns_of(pax_mtime) if pax_mtime else int(info.mtime) * 10**9
    size = info.size if kind == "file" else 0
    target = info.linkname if kind == "link" else ""
    return Member(info.name, kind, size, info.mode & 0o7777, mtime_ns, target)


def hash_reader(reader: BinaryIO, member: Member) -> str:
    """The BLAKE3 of a member's contents, read to its end."""
    hasher = blake3()
    try:
        for block in iter(lambda: reader.read(READ_BLOCK), b""):
            hasher.update(block)
    except (tarfile.TarError, EOFError) as exc:
        problem = f"the tar is damaged ({exc})"
        raise DamagedArchive(shown(member.path), "read the member", problem) from None
    return hasher.hexdigest()


def read_tar(stream: BinaryIO) -> Iterator[Member]:
    """The members of a tar read as a stream, each file's with the BLAKE3 of its contents."""
    for member, reader in tar_entries(stream):
        if reader is not None:
            member = replace(member, blake3=hash_reader(reader, member))
        yield member
