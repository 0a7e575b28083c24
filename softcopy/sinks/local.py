"""A local directory as the destination: copy_one per file, LocalDirectory for the rest.

Copy one file: temporary name, kernel copy, byte count and source re-check, rename.
Runs inside copier processes, so it imports nothing heavier than the standard
library. Never follows a link: sources are opened with O_NOFOLLOW, destination
directories are walked with O_NOFOLLOW from the destination root, so nothing
is written through a link planted in the destination tree.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import stat
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from blake3 import blake3

from ..errors import ConfigError, DestinationBusy, SoftcopyError, from_os_error
from ..sources.scan import (
    TEMP_PREFIX,
    DirListing,
    ScanResult,
    Version,
    iter_dirs,
    scan_tree,
    stat_key,
    version_of,
)
from ..state.records import Records, describe, lock_fd, open_directory, records_dir
from ..throttle import slice_size
from ..verify.hashing import new_hasher
from .base import (
    CHANGED,
    COPIED,
    DELETED,
    FAILED,
    SAME,
    Capabilities,
    Outcome,
    SinkSpec,
    Space,
    Throttle,
)

_KERNEL_COPY_FALLBACK = {errno.EXDEV, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.EBADF}
_COMPARE_BLOCK = 1 << 20
# Large enough to amortise syscalls, small enough to stay in L2 while hashed;
# a small chunk file is read whole in one call.
_COPY_BLOCK = 1 << 20


class DirCache:
    """Open destination directories, walked component by component without following links."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._fds: dict[str, int] = {}
        self._device: int | None = None

    def device(self) -> int:
        """st_dev of the destination root (asked once per batch)."""
        if self._device is None:
            self._device = os.fstat(self.open("", create=False)).st_dev
        return self._device

    def open(self, rel_dir: str, create: bool) -> int:
        fd = self._fds.get(rel_dir)
        if fd is not None:
            return fd
        if not rel_dir:
            # The root too: config resolved it, so a link here was swapped in mid-run.
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(self.root, flags)
        else:
            parent, _, name = rel_dir.rpartition("/")
            parent_fd = self.open(parent, create)
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                fd = os.open(name, flags, dir_fd=parent_fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(name, 0o755, dir_fd=parent_fd)
                except FileExistsError:
                    pass
                fd = os.open(name, flags, dir_fd=parent_fd)
        self._fds[rel_dir] = fd
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._device = None


# Longest file name, in bytes, on every filesystem softcopy writes to (ext4, XFS, btrfs,
# tmpfs, NFS): a source name that fits there must have a temporary name that fits.
NAME_MAX = 255
_HASHED_SUFFIX = ".long"
_HASHED = re.compile(r"[0-9a-f]{40}" + re.escape(_HASHED_SUFFIX))


def temp_name(name: str) -> str:
    """The temporary name of a basename: `.softcopy-tmp.<name>`, or, when that would be
    longer than NAME_MAX bytes, `.softcopy-tmp.<digest of the name>.long`.

    Stable per key: a retry or a resumed run overwrites the same temporary file
    instead of leaving one behind per attempt. One-to-one: a short name that looks
    like a digest form is hashed too, so two names never share a temporary file
    (two copiers would publish each other's bytes).
    """
    raw = os.fsencode(name)
    looks_hashed = name.endswith(_HASHED_SUFFIX) and _HASHED.fullmatch(name) is not None
    if len(raw) + len(TEMP_PREFIX) <= NAME_MAX and not looks_hashed:
        return TEMP_PREFIX + name
    import hashlib  # rare: a copier loads OpenSSL only for a name this long

    return TEMP_PREFIX + hashlib.blake2b(raw, digest_size=20).hexdigest() + _HASHED_SUFFIX


# (source device, destination device) pairs where copy_file_range gave EXDEV or
# similar: across filesystems it always will, so ask once, not once per file.
_NO_CFR: set[tuple[int, int]] = set()
# Copier processes clear their umask, so a file is created with its final mode
# and needs no fchmod; anywhere else (tests, the marker) the mode is set after.
_EXACT_MODES = False


def clear_umask() -> None:
    global _EXACT_MODES
    os.umask(0)
    _EXACT_MODES = True


def slice_bytes(throttle: Throttle) -> int:
    """How much to ask a throttle for at once (its rate, if it tells)."""
    rate = getattr(throttle, "rate", None)
    return slice_size(rate) if rate else 1 << 20


def _kernel_copy(
    fd_in: int, fd_out: int, size: int, devices: tuple[int, int], throttle: Throttle | None
) -> int:
    """Copy up to `size` bytes; returns bytes copied (less when the source shrank)."""
    done = 0
    use_cfr = devices not in _NO_CFR
    step = slice_bytes(throttle) if throttle else 1 << 30
    while done < size:
        want = min(size - done, step)
        if throttle:
            throttle(want)
        if use_cfr:
            try:
                n = os.copy_file_range(fd_in, fd_out, want, done, done)
            except OSError as exc:
                if exc.errno not in _KERNEL_COPY_FALLBACK:
                    raise
                use_cfr = False  # across filesystems: EXDEV; sendfile works there
                _NO_CFR.add(devices)
                # sendfile writes at fd_out's own offset; copy_file_range left it at 0.
                os.lseek(fd_out, done, os.SEEK_SET)
                continue
        else:
            n = os.sendfile(fd_out, fd_in, done, want)
        if n == 0:
            break
        done += n
    if done < size:
        # A kernel copy may stop where read() would go on: splice from a FUSE file in
        # direct_io mode takes the first short read for the end of the file, and returns
        # 0 from then on. Finish through userspace; a real end of file still ends it.
        done = _pread_copy(fd_in, fd_out, done, size)
    return done


def _pread_copy(fd_in: int, fd_out: int, offset: int, size: int) -> int:
    """Copy [offset, size) with pread/pwrite, going on after short reads; returns the end."""
    while offset < size:
        data = os.pread(fd_in, min(size - offset, _COPY_BLOCK), offset)
        if not data:
            break
        view = memoryview(data)
        while view:
            n = os.pwrite(fd_out, view, offset)
            view = view[n:]
            offset += n
    return offset


def _hashing_copy(fd_in: int, fd_out: int, size: int, throttle: Throttle | None) -> tuple[int, str]:
    """Read once, hash what was read, write it: the digest is of the bytes copied."""
    hasher = new_hasher(size)
    done = 0
    block = min(max(size, 1), _COPY_BLOCK, slice_bytes(throttle) if throttle else _COPY_BLOCK)
    while done < size:
        if throttle:
            throttle(min(block, size - done))
        data = os.pread(fd_in, min(block, size - done), done)
        if not data:
            break
        hasher.update(data)
        view = memoryview(data)
        while view:  # a short write is not an error by itself, only a reason to go on
            view = view[os.write(fd_out, view) :]
        done += len(data)
    return done, hasher.hexdigest()


def _same_content(fd_a: int, fd_b: int, size: int, hasher: blake3 | None) -> bool:
    offset = 0
    while offset < size:
        a = os.pread(fd_a, _COMPARE_BLOCK, offset)
        b = os.pread(fd_b, _COMPARE_BLOCK, offset)
        if a != b or not a:
            return False
        if hasher is not None:
            hasher.update(a)
        offset += len(a)
    return True


def copy_one(
    src_root: str,
    dst_dirs: DirCache,
    key: str,
    compare_first: bool = False,
    fsync: bool = False,
    digest: bool = False,
    throttle: Throttle | None = None,
) -> Outcome:
    """Bring the destination's `key` up to the source's current version, or report why not.

    With `digest`, the source is read through userspace once and its BLAKE3 is
    reported; otherwise the kernel copies (copy_file_range, sendfile).
    """
    src_path = os.path.join(src_root, key)
    rel_dir, _, name = key.rpartition("/")
    try:
        st = os.lstat(src_path)
    except (FileNotFoundError, NotADirectoryError):
        return _delete(dst_dirs, key, rel_dir, name)
    except PermissionError as exc:
        where = os.path.dirname(src_path)
        return Outcome(key, FAILED, error=_no_permission(where, "search"), errno=exc.errno)
    except OSError as exc:
        # A network mount that dropped (ENOTCONN, ESTALE, EIO): a failure of this key,
        # retried by the supervisor, never an exception that kills the copier.
        return Outcome(key, FAILED, error=_describe(exc, key), errno=exc.errno or 0)
    try:
        if stat.S_ISLNK(st.st_mode):
            return _copy_link(src_path, dst_dirs, key, rel_dir, name, st)
        if not stat.S_ISREG(st.st_mode):
            return Outcome(key, FAILED, error="not a regular file", errno=errno.EINVAL)
        return _copy_file(
            src_path, dst_dirs, key, rel_dir, name, compare_first, fsync, digest, throttle
        )
    except OSError as exc:
        return Outcome(key, FAILED, error=_describe(exc, key), errno=exc.errno or 0)


def _describe(exc: OSError, key: str) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    if isinstance(exc, PermissionError):
        return (
            f"permission denied at the destination{where}: softcopy needs write and "
            "search permission on every destination directory"
        )
    return f"{os.strerror(exc.errno) if exc.errno else exc}{where}"


def _no_permission(path: str, what: str) -> str:
    """Name the file, the permission that is missing, and who has it."""
    try:
        st = os.lstat(path)
        has = f"; it has mode {stat.filemode(st.st_mode)}, owner uid {st.st_uid} gid {st.st_gid}"
    except OSError:
        has = ""
    return (
        f"permission denied: {what} permission is missing on {path}{has} "
        f"(softcopy runs as uid {os.getuid()})"
    )


def _copy_file(
    src_path: str,
    dst_dirs: DirCache,
    key: str,
    rel_dir: str,
    name: str,
    compare_first: bool,
    fsync: bool,
    digest: bool,
    throttle: Throttle | None,
) -> Outcome:
    try:
        fd_in = os.open(src_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return Outcome(key, CHANGED)  # replaced or deleted since the lstat: look again
    except PermissionError as exc:
        return Outcome(key, FAILED, error=_no_permission(src_path, "read"), errno=exc.errno)
    try:
        st = os.fstat(fd_in)
        version = version_of(st)
        dfd = dst_dirs.open(rel_dir, create=True)
        if compare_first:
            hasher = new_hasher(st.st_size) if digest else None
            if _matches_existing(fd_in, dfd, name, st, hasher):
                # Same bytes as the version opened, which must still be the current one.
                checked = time.time_ns()
                if _current_version(src_path) != version:
                    return Outcome(key, CHANGED)
                hexdigest = hasher.hexdigest() if hasher else ""
                return Outcome(key, SAME, version, digest=hexdigest, checked_ns=checked)
        tmp = temp_name(name)
        fd_out = _create_temp(tmp, dfd, stat.S_IMODE(st.st_mode) if _EXACT_MODES else 0o600)
        try:
            if digest:
                copied, hexdigest = _hashing_copy(fd_in, fd_out, st.st_size, throttle)
            else:
                devices = (st.st_dev, dst_dirs.device())
                copied = _kernel_copy(fd_in, fd_out, st.st_size, devices, throttle)
                hexdigest = ""
            if not _EXACT_MODES:
                os.fchmod(fd_out, stat.S_IMODE(st.st_mode))
            os.utime(fd_out, ns=(st.st_atime_ns, st.st_mtime_ns))
            if fsync:
                os.fsync(fd_out)
        finally:
            os.close(fd_out)
        # The file we read must still be the one under the source name, unchanged:
        # otherwise a newer version exists (or is being written) and ours is stale.
        checked = time.time_ns()
        if _current_version(src_path) != version:
            _unlink_quietly(tmp, dfd)
            return Outcome(key, CHANGED)
        if copied != st.st_size:
            # Same file, fewer bytes than it has: a short read (a network or FUSE
            # filesystem ending a read early, or an I/O error mid-file). Never publish it.
            _unlink_quietly(tmp, dfd)
            problem = f"read {copied} of {st.st_size} bytes from the source (short read)"
            return Outcome(key, FAILED, error=problem, errno=errno.EIO)
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        # What we read is in the page cache; the writer needs that memory more than we do.
        os.posix_fadvise(fd_in, 0, 0, os.POSIX_FADV_DONTNEED)
        return Outcome(key, COPIED, version, copied, digest=hexdigest, checked_ns=checked)
    except OSError:
        _unlink_quietly(temp_name(name), dst_dirs, rel_dir)
        raise
    finally:
        os.close(fd_in)


def _create_temp(tmp: str, dfd: int, mode: int) -> int:
    """Create the temporary file afresh (O_EXCL): a stale one from a crash would keep its mode."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(tmp, flags, mode, dir_fd=dfd)
    except FileExistsError:
        os.unlink(tmp, dir_fd=dfd)
        return os.open(tmp, flags, mode, dir_fd=dfd)


def _matches_existing(
    fd_in: int, dfd: int, name: str, st: os.stat_result, hasher: blake3 | None
) -> bool:
    """A destination file populated by other means counts only if its bytes are the same."""
    try:
        fd_old = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    except OSError:
        return False
    try:
        old = os.fstat(fd_old)
        if not stat.S_ISREG(old.st_mode) or old.st_size != st.st_size:
            return False
        if not _same_content(fd_in, fd_old, st.st_size, hasher):
            return False
    finally:
        os.close(fd_old)
    os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dfd, follow_symlinks=False)
    os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dfd, follow_symlinks=False)
    return True


def _copy_link(
    src_path: str, dst_dirs: DirCache, key: str, rel_dir: str, name: str, st: os.stat_result
) -> Outcome:
    target = os.readlink(src_path)
    dfd = dst_dirs.open(rel_dir, create=True)
    tmp = temp_name(name)
    _unlink_quietly(tmp, dfd)
    os.symlink(target, tmp, dir_fd=dfd)
    checked = time.time_ns()
    if _current_version(src_path) != version_of(st):
        _unlink_quietly(tmp, dfd)
        return Outcome(key, CHANGED)
    os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    return Outcome(key, COPIED, version_of(st), 0, checked_ns=checked)


def _current_version(src_path: str) -> Version | None:
    try:
        return version_of(os.lstat(src_path))
    except FileNotFoundError:
        return None


def _delete(dst_dirs: DirCache, key: str, rel_dir: str, name: str) -> Outcome:
    try:
        dfd = dst_dirs.open(rel_dir, create=False)
        os.unlink(name, dir_fd=dfd)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as exc:
        return Outcome(key, FAILED, error=_describe(exc, key), errno=exc.errno or 0)
    return Outcome(key, DELETED)


def _unlink_quietly(name: str, dfd_or_cache: int | DirCache, rel_dir: str = "") -> None:
    try:
        if isinstance(dfd_or_cache, DirCache):
            dfd = dfd_or_cache.open(rel_dir, create=False)
        else:
            dfd = dfd_or_cache
        os.unlink(name, dir_fd=dfd)
    except OSError:
        pass


# ---- the destination as a whole: a local directory (sinks.base.Sink) ---------------------

_BUSY = "another softcopy is already copying there"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class LocalDirectory:
    """A POSIX directory: temporary name and rename, flock, syncfs, records beside it."""

    capabilities = Capabilities(
        atomic_rename=True,
        links=True,
        deletes=True,
        partial_writes=True,
        flush=True,
        free_space=True,
        listing=True,
        identity_lock=True,
        local_paths=True,
    )
    lock_lost = ""  # an flock is held until the process ends
    puts_in_flight = 1  # a local disk is not helped by more: copiers are the parallelism

    def __init__(self, root: str) -> None:
        self.root = root
        self.spec = SinkSpec("local", root)
        self.dirs = DirCache(root)
        self.records: Records | None = None
        self._fd = -1  # the directory itself, locked by identity (create)

    @classmethod
    def from_spec(cls, spec: SinkSpec) -> LocalDirectory:
        return cls(spec.location)

    def lock(self) -> None:
        """One softcopy per records folder: taken before anything else touches it or its journal.

        The directory itself is locked too, by identity, once it exists (create): a
        second name for it (a link, a bind mount) has another records folder, but not
        another directory.
        """
        dst = Path(self.root)
        if os.path.lexists(dst) and (dst.is_symlink() or not dst.is_dir()):
            raise ConfigError(dst, "use destination", describe(dst))
        records = records_dir(dst)
        try:
            self.records = Records.open(records)
        except SoftcopyError as exc:
            if exc.action != "create records folder":
                raise  # a problem of the records folder itself: it names that folder
            # The user gave DEST: name it, and the records folder second.
            raise type(exc)(
                dst, "copy to destination", f"{exc.problem}; softcopy could not create its "
                f"records folder {records} beside it",
            ) from exc  # fmt: skip
        if not self.records.lock():
            raise DestinationBusy(dst, "copy to destination", _BUSY)

    def create(self) -> bool:
        dst = Path(self.root)
        assert self.records is not None, "lock() first"
        try:
            dst.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise from_os_error(exc, "create destination", exc.filename or dst) from exc
        self._lock_identity()
        with os.scandir(self._fd) as entries:
            return next(entries, None) is not None

    def _lock_identity(self) -> None:
        """flock the destination directory itself: every name of it meets the same lock."""
        assert self.records is not None
        self._fd = open_directory(self.root, "copy to destination")
        self.records.hold(self._fd)
        if not lock_fd(self._fd):
            raise DestinationBusy(
                self.root, "copy to destination", f"{_BUSY} (under another name for this "
                "directory: a symbolic link or a bind mount)",
            )  # fmt: skip

    def probe(self) -> None:
        """Fail once, up front, when the destination cannot take files (read-only, permissions)."""
        probe = f"{TEMP_PREFIX}probe-{os.getpid()}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            # Relative to the locked destination: never through a link put in its place.
            fd = os.open(probe, flags, 0o600, dir_fd=self._fd)
            os.close(fd)
            os.unlink(probe, dir_fd=self._fd)
        except OSError as exc:
            raise from_os_error(exc, "write to destination", self.root) from exc

    def peek(self) -> tuple[bool, Records | None]:
        dst = Path(self.root)
        holds = dst.is_dir() and any(dst.iterdir())
        return holds, Records.open(records_dir(dst), create=False)

    def foreign(self, src: str) -> str | None:
        # Only the engine asks: copiers never load the configuration (and click with it).
        from ..config import unrelated_destination

        return unrelated_destination(Path(src), Path(self.root))

    def tidy(self) -> None:
        """Nothing: a put's only leftover, its temporary, is in the listing (and removed)."""

    def space(self) -> Space:
        # A destination not made yet (a dry run) will be made in its nearest existing parent.
        probe = Path(self.root)
        while not probe.exists():
            probe = probe.parent
        st = os.statvfs(probe)
        inodes = st.f_favail if st.f_files else None
        return Space(st.f_bavail * st.f_frsize, inodes, st.f_frsize or 1, _mount_point(str(probe)))

    def listing(self, exact: bool = True) -> ScanResult:
        return scan_tree(self.root)

    def listings(self, exact: bool = True) -> Iterator[DirListing]:
        for rel, listing in iter_dirs(self.root):
            # One that cannot be listed: an empty listing whose error names it.
            yield (
                listing if isinstance(listing, DirListing) else DirListing(errors=[(rel, listing)])
            )

    def link_target(self, key: str) -> str | None:
        try:
            return os.readlink(os.path.join(self.root, key))
        except OSError:
            return None

    def version(self, key: str) -> Version | None:
        return stat_key(self.root, key)

    def open(self, key: str) -> BinaryIO:
        """The file at `key` for reading, reached without following any link."""
        rel_dir, _, name = key.rpartition("/")
        dirs = DirCache(self.root)
        try:
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
            return os.fdopen(os.open(name, flags, dir_fd=dirs.open(rel_dir, create=False)), "rb")
        finally:
            dirs.close()

    def flush(self) -> None:
        """Flush the destination filesystem before anything says the copy is done."""
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.syncfs(fd) != 0:
                os.sync()
        finally:
            os.close(fd)

    def put(
        self,
        src_root: str,
        key: str,
        compare_first: bool = False,
        fsync: bool = False,
        digest: bool = False,
        throttle: Throttle | None = None,
    ) -> Outcome:
        return copy_one(src_root, self.dirs, key, compare_first, fsync, digest, throttle)

    def delete(self, key: str) -> Outcome:
        rel_dir, _, name = key.rpartition("/")
        return _delete(self.dirs, key, rel_dir, name)

    def remove_temporaries(self, keys: Iterable[str]) -> None:
        try:
            for key in keys:
                rel_dir, _, name = key.rpartition("/")
                if name.startswith(TEMP_PREFIX):  # a crashed run's partial file, not a writer's
                    _unlink_quietly(name, self.dirs, rel_dir)
        finally:
            self.dirs.close()

    def discard_partial(self, keys: Iterable[str]) -> None:
        try:
            for key in keys:
                rel_dir, _, name = key.rpartition("/")
                # Through directories opened without following links, like every write.
                _unlink_quietly(temp_name(name), self.dirs, rel_dir)
        finally:
            self.dirs.close()

    def write_markers(self, src_root: str, keys: list[str], digest: bool) -> dict[str, str]:
        digests = {}
        for key in keys:
            dirs = DirCache(self.root)  # afresh: nothing cached from before the verification
            try:
                outcome = copy_one(src_root, dirs, key, fsync=True, digest=digest)
            finally:
                dirs.close()
            if outcome.status != COPIED:
                where = os.path.join(self.root, key)
                problem = outcome.error
                if os.path.isdir(where) and not os.path.islink(where):
                    problem = (
                        "a directory is where the marker goes; softcopy does not remove "
                        "directories: remove it and run again"
                    )
                raise SoftcopyError(where, "write completion marker", problem)
            digests[key] = outcome.digest  # "" without digest: counted, not in the manifest
        if keys:
            self.flush()
        return digests

    def release(self) -> None:
        self.dirs.close()

    def close(self) -> None:
        self.dirs.close()
        if self.records is not None:
            self.records.close()  # and with it both locks
            self.records = None
        self._fd = -1


def _mount_point(path: str) -> str:
    path = os.path.abspath(path)
    dev = os.stat(path).st_dev
    while path != os.path.dirname(path):
        parent = os.path.dirname(path)
        if os.stat(parent).st_dev != dev:
            return path
        path = parent
    return path
