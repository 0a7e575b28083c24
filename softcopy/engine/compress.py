"""A compressed copy (`--compress gzip|zstd`): the run folder, each chosen file as FILE.gz.

Like a packed copy (pack.py, sharing finished.py), the source is read once, after the
end rules say its writer is done, at idle priority and paced. Every file matching a
`--compress-include` glob (every file when none is given; never a marker or sentinel)
is written as FILE.gz or FILE.zst, others as they are, folders made, links copied as
links (never followed); fifos, sockets and devices are left out, each named.

Each file is written under `.NAME.<pid>.tmp` in its folder, fsync'd, given the source's
mode and mtime, then renamed to its name, and a line appended to DEST.softcopy/
compressed.jsonl with the source's version and both digests: a rerun (a kill at any
moment leaves temporaries only, which it removes under the records' lock) trusts that
line for a file whose source version and destination file are still those recorded,
and does not compress it again, and removes a file it wrote that the copy no longer
has (the source lost it, another method or globs) while it is as written. The markers
are written last.

Then every destination entry is read back (stored.check_destination) and the records
written: entries.jsonl, manifest.b3 (the stored files, `b3sum --check` in DEST),
originals.b3 (the original bytes under the original names, `b3sum --check` after
`gunzip -r` or `zstd -d --rm`), summary.json, and last certificate.json.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import logging
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from blake3 import blake3

from ..archives.formats import Packing
from ..archives.members import (
    Entry,
    TreeDirs,
    changed_error,
    copy_blocks,
    open_source_file,
    same_file,
    select_entries,
    walk_tree,
)
from ..archives.pipeline import DEFAULT_LEVEL, DEFAULT_THREADS, packer
from ..config import TargetConfig
from ..errors import ConfigError, DestinationBusy, SoftcopyError, from_os_error
from ..locations import is_object_store
from ..names import json_record, name_from_json, shown
from ..sources.scan import Version
from ..sources.select import Selection
from ..state.records import LINK_PROBLEM, Records, describe, open_directory, records_dir
from ..states import State
from ..verify.compare import Verification
from ..verify.manifest import CERTIFICATE, MANIFEST, format_line
from .claim import previous_target, source_identity
from .end import _iso, write_certificate_to, write_json, write_summary
from .events import Summary
from .finish import end_record
from .finished import FinishedJob, run_job
from .observe import SourceView
from .stop import StopSignal
from .stored import ENTRIES, SUFFIX, Stored, check_destination, format_stored

log = logging.getLogger("softcopy")

DONE = "compressed.jsonl"
ORIGINALS = "originals.b3"
TARGET = "target.json"
_STALE = (CERTIFICATE, MANIFEST, ORIGINALS, ENTRIES, "summary.json")
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMPORARY = re.compile(rb"^\.(.+)\.\d+\.tmp$")


def compress_target(
    cfg: TargetConfig,
    stop: StopSignal | None = None,
    events: Callable[[dict], None] | None = None,
    run_rate: tuple[str, float] | None = None,
) -> Summary:
    job = _Compress
    if is_object_store(str(cfg.destination)):
        # Into a bucket: compress_bucket.py, which builds on this module.
        from .compress_bucket import CompressToBucket

        job = CompressToBucket
    return run_job(job(cfg, stop or StopSignal(), events, run_rate))


class _Plan:
    """One source entry and what it becomes at the destination."""

    def __init__(self, entry: Entry, compression: str) -> None:
        self.entry, self.compression = entry, compression
        self.stored = entry.relative + os.fsencode(SUFFIX.get(compression, ""))


def _version(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class _Compress(FinishedJob):
    verb = "compress"

    def __init__(
        self,
        cfg: TargetConfig,
        stop: StopSignal,
        events: Callable[[dict], None] | None,
        run_rate: tuple[str, float] | None,
    ) -> None:
        super().__init__(cfg, stop, events, run_rate, str(cfg.destination))
        self.method = str(cfg.compress)
        self.level = cfg.level if cfg.level is not None else DEFAULT_LEVEL.get(self.method, 1)
        self.packing = Packing(self.method, self.level, cfg.threads)
        self.markers = Selection(
            cfg.complete_marker, cfg.sentinels + cfg.sentinel_fallbacks, (), ()
        )
        self.include = tuple(cfg.compress_include)
        self.dest = Path(self.location)
        self.records: Records | None = None
        self.done: dict[str, dict] = {}  # compressed.jsonl: what earlier runs finished
        self.done_lines: list[dict] = []  # every line, a file compressed twice included
        self.reused = 0
        self._late: list[_Plan] = []  # markers and sentinels: written after verification
        self.written = 0  # bytes stored by this run (not by the runs before)

    # ---- before ------------------------------------------------------------------------

    def _run(self) -> None:
        kind = self._begin()
        if self.cfg.dry_run:
            return self._dry_run()
        records = self._open_records()
        self.records = records
        try:
            self._claim(records)
            self._tidy(records)
            self._open_journal()
            assert self.journal is not None
            view = self._finished_source(kind, records, _STALE, "the copy")
            if view is None:
                return
            self._state(State.COPYING)
            entries, skipped = self._compress(view)
            self._state(State.VERIFYING)
            self._verify(entries)
            entries += self._publish_markers()
            self._count(entries)
            self._write_records(records, entries, skipped)
            files = [e for e in entries if e.kind == "file"]
            copied = [(e.path, Version(e.stored_size, e.mtime_ns, 0, 0), "") for e in files]
            self.journal.checkpoint(copied, [], {}, {"files_copied": len(files)})
            self._state(State.DONE)
        finally:
            self._close_records()

    # The destination's own steps: a local folder here, a bucket in compress_bucket.py.

    def _open_records(self) -> Records:
        """DEST.softcopy, created and locked against another run."""
        try:
            self.dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise from_os_error(exc, "create the destination's folder", self.dest.parent) from exc
        records = Records.open(records_dir(self.dest))
        assert records is not None
        if not records.lock():
            records.close()
            raise DestinationBusy(
                self.dest, "compress to destination", "another softcopy is writing it"
            )
        return records

    def _tidy(self, records: Records) -> None:
        records.remove_stale_temporaries()

    def _close_records(self) -> None:
        if self.records is not None:
            self.records.close()
            self.records = None

    def _claim(self, records: Records) -> None:
        """Ours: a destination missing or empty, or one whose records say it is the
        compressed copy of this source; anything else is refused before it is touched."""
        if self._owned(previous_target(records)):
            self._read_done(records)
            return
        held = self._held_names()
        if held:
            raise self._foreign(held)
        records.unlink(DONE)
        identity = source_identity(self.src)
        record = {"source": self.src, "source_identity": identity, "compressed": self.method}
        write_json(records / TARGET, json_record(record))

    def _owned(self, previous: dict | None) -> bool:
        """Whether the destination's target record says it is this source's compressed copy."""
        if not (isinstance(previous, dict) and previous.get("compressed")):
            return False
        same = previous.get("source") == self.src
        return same and previous.get("source_identity") in (None, source_identity(self.src))

    def _held_names(self) -> list[str]:
        """What the destination folder holds (nothing when it does not exist)."""
        if os.path.islink(self.dest):
            raise ConfigError(self.dest, "compress to destination", LINK_PROBLEM)
        try:
            with os.scandir(self.dest) as it:
                return sorted(e.name for e in it)
        except FileNotFoundError:
            return []
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                raise ConfigError(
                    self.dest, "compress to destination", describe(self.dest)
                ) from exc
            raise from_os_error(exc, "list the destination", self.dest) from exc

    def _foreign(self, held: list[str]) -> ConfigError:
        more = f" and {len(held) - 3} more" if len(held) > 3 else ""
        return ConfigError(
            self.location, "compress to destination", f"it holds {', '.join(map(shown, held[:3]))}"
            f"{more}, and its records do not say it is softcopy's compressed copy of "
            f"{self.src}: choose an empty or new destination",
        )  # fmt: skip

    # ---- a dry run -----------------------------------------------------------------------

    def _dry_run(self) -> None:
        """What compressing now would do, per file, from read-only looks; the refusals of
        a real run."""
        if not self._look():
            held = self._held_names()
            if held:
                raise self._foreign(held)
        src_dirs = TreeDirs(Path(self.src))
        try:
            plans, _ = self._listed(src_dirs)
        finally:
            src_dirs.close()
        planned = []
        for plan in plans + self._late:
            if not stat.S_ISREG(plan.entry.st.st_mode):
                continue
            key = os.fsdecode(plan.entry.relative)
            action = "compress" if plan.compression else "copy"
            if self._would_reuse(key, plan):
                action = "trust"
            planned.append((key, action, plan.entry.st.st_size))
        self._plan(sorted(planned, key=lambda p: os.fsencode(p[0])))

    def _look(self) -> bool:
        """Read-only: whether the destination is this source's compressed copy (then what
        its earlier runs finished is read)."""
        records = Records.open(records_dir(self.dest), create=False, check_owner=False)
        if records is None:
            return False
        try:
            owned = self._owned(previous_target(records))
            if owned:
                self._read_done(records)
            return owned
        finally:
            records.close()

    def _would_reuse(self, key: str, plan: _Plan) -> bool:
        record = self._done_of(key, plan)
        if record is None:
            return False
        try:
            st = os.lstat(self.dest / os.fsdecode(plan.stored))
        except OSError:
            return False
        return record.get("stored_version") == _version(st)

    def _read_done(self, records: Records) -> None:
        try:
            data = records.read(DONE)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise from_os_error(exc, "read records", records / DONE) from exc
        self._take_done(data)

    def _take_done(self, data: bytes) -> None:
        """Lines of what earlier runs finished; a later line of a file wins."""
        for line in data.splitlines():
            try:
                record = json.loads(line)
                self.done[name_from_json(record, record["original"])] = record
                self.done_lines.append(record)
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by a kill: that file is compressed again

    # ---- compressing -------------------------------------------------------------------

    def _compression_of(self, key: str) -> str:
        if self.markers.is_marker(key):
            return ""  # a marker or sentinel keeps its name: what watches for it must see it
        if not self.include or any(fnmatch.fnmatchcase(key, g) for g in self.include):
            return self.method
        return ""

    def _listed(self, src_dirs: TreeDirs) -> tuple[list[_Plan], list[str]]:
        """What the source holds and what each becomes, the markers and sentinels set
        apart in `_late`; and the names of what is not copied."""
        listed, skipped = walk_tree(src_dirs, b".")
        skipped = [s[2:] for s in skipped]
        for name in skipped:
            log.warning("%s: %s: not copied (not a file, directory or link)", self.src, name)
        plans = self._plans(select_entries(listed, self.keep)[1:])
        # Markers and sentinels only after verification: whoever waits for one at the
        # destination must find the rest there, checked (as a copy publishes them).
        self._late = [p for p in plans if self._is_marker(p)]
        return [p for p in plans if not self._is_marker(p)], skipped

    def _compress(self, view: SourceView) -> tuple[list[Stored], list[str]]:
        self._start_pacing(view)
        src_dirs = TreeDirs(Path(self.src))
        try:
            plans, skipped = self._listed(src_dirs)
            dst_fd = self._open_destination()
            dst_dirs = TreeDirs(self.dest)
            os.close(dst_fd)
            try:
                entries = self._write_all(plans, src_dirs, dst_dirs)
                keep = {os.fsdecode(p.stored) for p in self._late}
                self._remove_outdated(entries, dst_dirs, keep)
            finally:
                dst_dirs.close()
            self._check_unchanged(view)
        finally:
            src_dirs.close()
        return entries, skipped

    def _count(self, entries: list[Stored]) -> None:
        files = [e for e in entries if e.kind == "file"]
        self.summary.files_at_source = len(files)
        self.summary.bytes_at_source = sum(e.size for e in files)
        self.summary.files_copied = len(files) - self.reused
        self.summary.files_already_there = self.reused
        self.summary.bytes_copied = self.written

    def _plans(self, listed: list[Entry]) -> list[_Plan]:
        plans = []
        for entry in listed:
            key = os.fsdecode(entry.relative)
            regular = stat.S_ISREG(entry.st.st_mode)
            plans.append(_Plan(entry, self._compression_of(key) if regular else ""))
        names: dict[bytes, bytes] = {}
        for plan in plans:
            other = names.setdefault(plan.stored, plan.entry.relative)
            if other != plan.entry.relative:
                raise ConfigError(
                    Path(self.src) / os.fsdecode(other), "compress", "its compressed name "
                    f"{shown(os.fsdecode(plan.stored))} is another file's at the source: "
                    "leave one out of --compress-include",
                )  # fmt: skip
        return plans

    def _open_destination(self) -> int:
        try:
            os.mkdir(self.dest, 0o755)
        except FileExistsError:
            pass
        except OSError as exc:
            raise from_os_error(exc, "create the destination", self.dest) from exc
        return open_directory(self.dest, "compress into")

    def _dir_fd(self, dst_dirs: TreeDirs, relative: bytes, cleaned: set[bytes], plans: dict) -> int:
        try:
            fd = dst_dirs.fd(relative)
        except SoftcopyError:
            where = self.dest / os.fsdecode(relative)
            raise ConfigError(where, "compress into", describe(where)) from None
        if relative not in cleaned:
            cleaned.add(relative)
            self._remove_temporaries(fd, plans.get(relative, set()))
        return fd

    def _remove_temporaries(self, fd: int, names: set[bytes]) -> None:
        # Under the records' lock nobody else writes here: a temporary of a name this
        # folder is to hold was left by a run that was killed.
        for entry in os.scandir(fd):
            name = os.fsencode(entry.name)
            match = _TEMPORARY.match(name)
            if match and match.group(1) in names and name not in names:
                os.unlink(name, dir_fd=fd)

    def _write_all(
        self, plans: list[_Plan], src_dirs: TreeDirs, dst_dirs: TreeDirs
    ) -> list[Stored]:
        names: dict[bytes, set[bytes]] = {}
        for plan in plans:
            parent, _, name = plan.stored.rpartition(b"/")
            names.setdefault(parent, set()).add(name)
        cleaned: set[bytes] = set()
        entries = []
        for plan in plans:
            entry = plan.entry
            parent, _, name = plan.stored.rpartition(b"/")
            pfd = self._dir_fd(dst_dirs, parent, cleaned, names)
            mode = stat.S_IMODE(entry.st.st_mode)
            key = os.fsdecode(entry.relative)
            stored = os.fsdecode(plan.stored)
            if stat.S_ISDIR(entry.st.st_mode):
                try:
                    os.mkdir(name, 0o700, dir_fd=pfd)
                except FileExistsError:
                    pass
                self._dir_fd(dst_dirs, entry.relative, cleaned, names)
                entries.append(Stored(stored, key, "dir", 0, mode, entry.st.st_mtime_ns))
            elif stat.S_ISLNK(entry.st.st_mode):
                target = self._link(src_dirs, entry, pfd, name)
                entries.append(Stored(stored, key, "link", 0, mode, entry.st.st_mtime_ns, target))
            else:
                entries.append(self._file(src_dirs, plan, pfd, name))
        # Folders last, deepest first: writing into them changed their mtimes, and a
        # read-only one could not have been written into.
        for e in sorted(
            (e for e in entries if e.kind == "dir"), key=lambda e: e.path, reverse=True
        ):
            fd = dst_dirs.fd(os.fsencode(e.path))
            os.fchmod(fd, e.mode)
            os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
        dst_dirs.fd(b"")
        os.fsync(dst_dirs.root)
        return sorted(entries, key=lambda e: os.fsencode(e.path))

    def _is_marker(self, plan: _Plan) -> bool:
        return self.markers.is_marker(os.fsdecode(plan.entry.relative))

    def _publish_markers(self) -> list[Stored]:
        """The markers and sentinels, written and checked once the rest is verified."""
        if not self._late:
            return []
        src_dirs, dst_dirs = TreeDirs(Path(self.src)), TreeDirs(self.dest)
        try:
            markers = self._write_all(self._late, src_dirs, dst_dirs)
        finally:
            dst_dirs.close()
            src_dirs.close()
        self._verify(markers, extras=False)  # the rest was verified just before
        return markers

    def _remove_outdated(self, entries: list[Stored], dst_dirs: TreeDirs, keep: set[str]) -> None:
        """Files an earlier run wrote that this copy no longer has (the source lost them,
        or --compress or its globs changed): removed while they are as that run left them,
        since nobody else wrote them; anything else stays, and verification names it."""
        wanted = {e.path for e in entries} | keep
        for record in self.done_lines:
            path = os.fsencode(name_from_json(record, str(record.get("path", ""))))
            if not path or os.fsdecode(path) in wanted:
                continue
            parent, _, name = path.rpartition(b"/")
            try:
                fd = dst_dirs.fd(parent)
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and record.get("stored_version") == _version(st):
                    os.unlink(name, dir_fd=fd)
                    log.info(
                        "%s: removed %s, no longer in the copy",
                        self.location,
                        shown(os.fsdecode(path)),
                    )
            except (OSError, SoftcopyError):
                continue

    def _link(self, src_dirs: TreeDirs, entry: Entry, pfd: int, name: bytes) -> str:
        parent, _, src_name = entry.relative.rpartition(b"/")
        where = src_dirs.path(entry.relative)
        try:
            target = os.readlink(src_name, dir_fd=src_dirs.fd(parent))
        except OSError as exc:
            raise from_os_error(exc, "read the link", where) from None
        try:
            if os.readlink(name, dir_fd=pfd) == target:
                return os.fsdecode(target)
        except OSError:
            pass
        tmp = b".%s.%d.tmp" % (name, os.getpid())
        try:
            os.symlink(target, tmp, dir_fd=pfd)
            ns = entry.st.st_mtime_ns
            os.utime(tmp, ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)
            os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
        except OSError as exc:
            _unlink(tmp, pfd)
            raise from_os_error(exc, "make the link", self.dest / os.fsdecode(name)) from None
        return os.fsdecode(target)

    def _reusable(self, key: str, plan: _Plan, pfd: int, name: bytes) -> Stored | None:
        """What an earlier run wrote of this file, if source and destination are as then."""
        record = self._done_of(key, plan)
        if record is None:
            return None
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except OSError:
            return None
        if record.get("stored_version") != _version(st):
            return None
        return _stored_of(record)

    def _done_of(self, key: str, plan: _Plan) -> dict | None:
        """The record of an earlier run's copy of the file, if made of the source as it
        is now, in the same way."""
        record = self.done.get(key)
        if record is None or record.get("source_version") != _version(plan.entry.st):
            return None
        if record.get("compression") != plan.compression or record.get("level") != self.level:
            return None
        return record

    def _file(self, src_dirs: TreeDirs, plan: _Plan, pfd: int, name: bytes) -> Stored:
        entry = plan.entry
        key = os.fsdecode(entry.relative)
        reused = self._reusable(key, plan, pfd, name)
        if reused is not None:
            self.reused += 1
            self._pace(0)
            return reused
        parent, _, src_name = entry.relative.rpartition(b"/")
        where = src_dirs.path(entry.relative)
        fd = open_source_file(src_name, src_dirs.fd(parent), where)
        tmp = b".%s.%d.tmp" % (name, os.getpid())
        try:
            before = os.fstat(fd)
            if not same_file(before, entry.st):
                raise changed_error(where)
            try:
                out_fd = os.open(tmp, _CREATE, 0o600, dir_fd=pfd)
            except OSError as exc:
                raise from_os_error(exc, "create", self.dest / os.fsdecode(tmp)) from None
            try:
                out = os.fdopen(out_fd, "wb", buffering=0, closefd=False)
                digest, counted = self._stream(fd, out, before.st_size, plan.compression, where)
                os.fchmod(out_fd, stat.S_IMODE(before.st_mode))
                os.utime(out_fd, ns=(before.st_atime_ns, before.st_mtime_ns))
                os.fsync(out_fd)
            finally:
                os.close(out_fd)
            if not same_file(os.fstat(fd), before):
                raise changed_error(where)
            os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
        except BaseException:
            _unlink(tmp, pfd)
            raise
        finally:
            os.close(fd)
        stored = Stored(
            os.fsdecode(plan.stored), key, "file", before.st_size, stat.S_IMODE(before.st_mode),
            before.st_mtime_ns, "", digest, counted.size, counted.blake3, plan.compression,
        )  # fmt: skip
        self.written += counted.size
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        self._record_done(stored, before, st)
        return stored

    def _stream(self, fd: int, out: Any, size: int, compression: str, where: str) -> tuple:
        """The file's bytes through the compressor into the writable `out`: (original
        BLAKE3, Counted of the bytes as stored)."""
        packing = self.packing if compression else Packing("")
        with packer(out, packing) as (stream, counted):
            digest = copy_blocks(fd, size, stream, where, self._pace)
        return digest, counted

    def _record_done(self, stored: Stored, source: os.stat_result, dest: os.stat_result) -> None:
        """One line appended (and synced) to compressed.jsonl: the file is finished."""
        assert self.records is not None
        line = self._done_line(stored, source, _version(dest))
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(DONE, flags, 0o644, dir_fd=self.records.fd)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise from_os_error(exc, "write record", self.records / DONE) from exc

    def _done_line(self, stored: Stored, source: os.stat_result, held: list) -> bytes:
        """What a rerun trusts: the source's version, how it was written, and `held`, the
        version of what it was written to (ours when it is still that)."""
        record = {
            **asdict(stored),
            "level": self.level,
            "source_version": _version(source),
            "stored_version": held,
        }
        return json.dumps(json_record(record), separators=(",", ":")).encode() + b"\n"

    # ---- verification and records ------------------------------------------------------

    def _verify(self, entries: list[Stored], extras: bool = True) -> None:
        self._read = 0
        # Markers a run before published stay until they are written again, just after.
        late = frozenset(os.fsdecode(p.stored) for p in self._late) if extras else frozenset()
        result = self._check(entries, extras, late)
        if result.findings:
            shown_ = "; ".join(str(f) for f in result.findings[:5])
            more = len(result.findings) - 5
            shown_ += f" (and {more} more)" if more > 0 else ""
            raise SoftcopyError(self.location, "verify the compressed copy", shown_)

    def _check(self, entries: list[Stored], extras: bool, besides: frozenset[str]) -> Verification:
        return check_destination(self.dest, entries, pace=None, extras=extras, besides=besides)

    def _write_records(self, records: Records, entries: list[Stored], skipped: list[str]) -> None:
        records.write(ENTRIES, format_stored(entries))
        files = [e for e in entries if e.kind == "file"]
        manifest = "".join(format_line(e.stored_blake3, e.path) for e in files)
        manifest_bytes = manifest.encode("utf-8", "surrogateescape")
        records.write(MANIFEST, manifest_bytes)
        originals = "".join(format_line(e.blake3, e.original) for e in files)
        originals_bytes = originals.encode("utf-8", "surrogateescape")
        records.write(ORIGINALS, originals_bytes)
        packed = [e for e in files if e.compression]
        ending = end_record(self.summary.end_rule, self.summary.reason, self.cfg.trust_guessed_end)
        record = {
            "source": self.src,
            "destination": self.location,
            "started": _iso(self._wall_started),
            "finished": _iso(time.time()),
            "finished_because": self.summary.reason,
            **ending,
            "verification": "blake3",
            "verified": "decompressed",
            "files": len(files),
            "bytes": sum(e.size for e in files),
            "links": sum(1 for e in entries if e.kind == "link"),
            "directories": sum(1 for e in entries if e.kind == "dir"),
            "manifest": MANIFEST,
            "manifest_blake3": blake3(manifest_bytes).hexdigest(),
            "originals": ORIGINALS,
            "originals_blake3": blake3(originals_bytes).hexdigest(),
            "entries": ENTRIES,
            "skipped": skipped,
            **self._filters(),
            "compressed": {
                "method": self.method,
                "level": self.level,
                "threads": self.cfg.threads or DEFAULT_THREADS[self.method],
                "include": list(self.include),
                "files_compressed": len(packed),
                "bytes_original": sum(e.size for e in packed),
                "bytes_stored": sum(e.stored_size for e in packed),
                "files_reused": self.reused,
            },
        }
        write_summary(records, self.summary)
        write_certificate_to(records, record)


def _stored_of(record: dict) -> Stored | None:
    fields = {k: record[k] for k in Stored.__dataclass_fields__ if k in record}
    try:
        fields |= {k: name_from_json(record, record[k]) for k in ("path", "original", "target")}
        return Stored(**fields)
    except (KeyError, TypeError):
        return None


def _unlink(name: bytes, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass
