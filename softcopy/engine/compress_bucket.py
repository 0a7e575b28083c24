"""A compressed copy into a bucket: `--compress` with DEST `s3://BUCKET/PREFIX`.

As compress.py, the bucket's way. Each file becomes the object PREFIX/NAME.gz (or .zst,
or NAME as it is), uploaded as it is compressed (sinks/s3_stream.py): nothing is under
its key until the upload is complete, and it is completed only if the source did not
change while it was read. An object carries the source's mtime, size and mode as
metadata (`softcopy-mtime-ns`, `softcopy-size`, `softcopy-mode`). A bucket has no
folders and no links: folders are not recorded, and links are left out, each named in
the log and in the certificate's `skipped` (as a plain copy to a bucket does).

Resume. An object cannot be appended to, so what is finished is written in batches,
DEST.softcopy/compressed/<run>-<n>.jsonl, every 64 files or 10 seconds and at the end;
each line holds the object's size and ETag as uploaded. A rerun trusts a line whose
source version is the file's now and whose object still has that size and ETag; what a
kill lost since the last batch is compressed again. The lock is the store's
(DEST.softcopy/lock, by conditional puts); under it, a killed run's unfinished uploads
are aborted before anything is written.

Verification downloads every object again, decompresses it, compares both digests
(stored.check_bucket), and finds anything extra under the prefix. The records are the
local copy's: entries.jsonl, manifest.b3, originals.b3, summary.json, certificate.json.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..archives.members import TreeDirs, changed_error, open_source_file, same_file
from ..errors import ConfigError, SoftcopyError
from ..names import json_record, name_from_json, shown
from ..sinks.base import spec_of
from ..sinks.s3 import MAX_KEY_BYTES, NO_LINKS, ObjectRecords, ObjectStore, explain
from ..sinks.s3_stream import IN_FLIGHT, ObjectStream
from ..verify.compare import Verification
from .claim import previous_target, source_identity
from .compress import TARGET, _Compress, _Plan, _stored_of
from .observe import SourceView
from .stored import Stored, check_bucket

log = logging.getLogger("softcopy")

DONE_PREFIX = "compressed/"
_BATCH_FILES = 64
_BATCH_SECONDS = 10.0


class CompressToBucket(_Compress):
    def __init__(self, *args: Any) -> None:  # as _Compress's
        super().__init__(*args)
        cfg = self.cfg
        self.store = ObjectStore(spec_of(cfg))
        self.held: dict[str, tuple[int, str]] = {}  # what the prefix holds: (size, ETag)
        self._pending: list[bytes] = []
        self._batch = 0
        self._batch_name = f"{DONE_PREFIX}{time.time_ns()}-{os.getpid()}"
        self._flushed_at = time.monotonic()

    # ---- the records, the lock, the claim --------------------------------------------

    def _open_records(self) -> Any:
        self.store.lock()  # ConfigError, naming the holder, when another run has it
        return self.store.records

    def _tidy(self, records: Any) -> None:
        self.store.tidy()  # a killed run's unfinished uploads

    def _close_records(self) -> None:
        self.records = None
        self.store.close()

    def _claim(self, records: Any) -> None:
        """Ours: an empty prefix, or one whose records say it is the compressed copy of
        this source; anything else is refused before an object is written."""
        if self._owned(previous_target(records)):
            self._read_done(records)
            return
        if self.store.create():  # True: the prefix holds objects
            raise self._foreign_prefix(records)
        for name in records.names(DONE_PREFIX):
            records.unlink(name)
        record = {
            "source": self.src,
            "source_identity": source_identity(self.src),
            "compressed": self.method,
        }
        records.write(TARGET, _json(json_record(record)))

    def _foreign_prefix(self, records: ObjectRecords) -> ConfigError:
        return ConfigError(
            self.location, "compress to destination", "it holds objects, and its records "
            f"({records.url('target.json')}) do not say it is softcopy's compressed copy "
            f"of {self.src}: choose an empty or new prefix",
        )  # fmt: skip

    def _look(self) -> bool:
        records = self.store.records_of(self.location)
        owned = self._owned(previous_target(records))
        if owned:
            self._read_done(records)
        elif self.store.create():
            raise self._foreign_prefix(records)
        self.held = self.store.objects() if owned else {}
        return True  # a foreign prefix was refused just above

    def _would_reuse(self, key: str, plan: _Plan) -> bool:
        return self._reusable_object(key, os.fsdecode(plan.stored), plan) is not None

    def _read_done(self, records: ObjectRecords) -> None:
        for name in sorted(records.names(DONE_PREFIX)):  # by time: a later line wins
            try:
                self._take_done(records.read(name))
            except FileNotFoundError:
                continue

    # ---- compressing -----------------------------------------------------------------

    def _compress(self, view: SourceView) -> tuple[list[Stored], list[str]]:
        self._start_pacing(view)
        src_dirs = TreeDirs(Path(self.src))
        try:
            plans, skipped = self._listed(src_dirs)
            self._late = self._files_only(self._late, skipped)
            self.held = self.store.objects()
            entries = [self._put(src_dirs, plan) for plan in self._files_only(plans, skipped)]
            self._flush_done(force=True)
            self._remove_outdated_objects(entries, {os.fsdecode(p.stored) for p in self._late})
            self._check_unchanged(view)
        finally:
            src_dirs.close()
        return sorted(entries, key=lambda e: os.fsencode(e.path)), skipped

    def _files_only(self, plans: list[_Plan], skipped: list[str]) -> list[_Plan]:
        """The files: a bucket has no folders to make, and no links."""
        files = []
        for plan in plans:
            mode = plan.entry.st.st_mode
            if stat.S_ISREG(mode):
                files.append(plan)
            elif stat.S_ISLNK(mode):
                name = os.fsdecode(plan.entry.relative)
                log.warning("%s: %s: %s", self.src, shown(name), NO_LINKS)
                skipped.append(name)
        return files

    def _put(self, src_dirs: TreeDirs, plan: _Plan) -> Stored:
        if self.store.lock_lost:
            raise SoftcopyError(self.location, "compress", self.store.lock_lost)
        entry = plan.entry
        key, path = os.fsdecode(entry.relative), os.fsdecode(plan.stored)
        reused = self._reusable_object(key, path, plan)
        if reused is not None:
            self.reused += 1
            self._pace(0)
            return reused
        okey = self.store.object_key(path)
        if len(okey.encode()) > MAX_KEY_BYTES:
            raise SoftcopyError(
                self.store.url(path), "compress to destination", f"its object key would be "
                f"{len(okey.encode())} bytes; S3 allows {MAX_KEY_BYTES}",
            )  # fmt: skip
        parent, _, src_name = entry.relative.rpartition(b"/")
        where = src_dirs.path(entry.relative)
        fd = open_source_file(src_name, src_dirs.fd(parent), where)
        try:
            before = os.fstat(fd)
            if not same_file(before, entry.st):
                raise changed_error(where)
            mode = stat.S_IMODE(before.st_mode)
            metadata = {
                "softcopy-mtime-ns": str(before.st_mtime_ns),
                "softcopy-size": str(before.st_size),
                "softcopy-mode": f"{mode:o}",
            }
            settings = self.store.settings
            out = ObjectStream(
                self.store.client, self.store.bucket, okey, settings.checksum,
                self._error_of(path), metadata, min(IN_FLIGHT, settings.concurrency),
            )  # fmt: skip
            try:
                digest, counted = self._stream(fd, out, before.st_size, plan.compression, where)
                if not same_file(os.fstat(fd), before):
                    raise changed_error(where)
                etag = out.complete()
            except BaseException:
                out.abort()
                raise
        finally:
            os.close(fd)
        stored = Stored(
            path, key, "file", before.st_size, mode, before.st_mtime_ns, "", digest,
            counted.size, counted.blake3, plan.compression,
        )  # fmt: skip
        self.written += counted.size
        self.held[path] = (counted.size, etag)
        self._pending.append(self._done_line(stored, before, [counted.size, etag]))
        self._flush_done()
        return stored

    def _error_of(self, path: str) -> Callable[[BaseException, str], SoftcopyError]:
        def error(exc: BaseException, action: str) -> SoftcopyError:
            problem, _ = explain(exc, self.store.endpoint, self.store.bucket)
            return SoftcopyError(self.store.url(path), action, problem)

        return error

    def _reusable_object(self, key: str, path: str, plan: _Plan) -> Stored | None:
        """What an earlier run uploaded of this file, if source and object are as then."""
        record = self._done_of(key, plan)
        if record is None or list(self.held.get(path, ())) != record.get("stored_version"):
            return None
        return _stored_of(record)

    def _flush_done(self, force: bool = False) -> None:
        """The batch of finished files written as one record (a bucket cannot append)."""
        if not self._pending:
            return
        due = time.monotonic() - self._flushed_at >= _BATCH_SECONDS
        if not (force or due or len(self._pending) >= _BATCH_FILES):
            return
        assert self.records is not None
        self.records.write(f"{self._batch_name}-{self._batch:06d}.jsonl", b"".join(self._pending))
        self._pending.clear()
        self._batch += 1
        self._flushed_at = time.monotonic()

    def _remove_outdated_objects(self, entries: list[Stored], keep: set[str]) -> None:
        """Objects an earlier run uploaded that this copy no longer has (the source lost
        them, or --compress or its globs changed): removed while they are as uploaded,
        since nobody else wrote them; anything else stays, and verification names it."""
        wanted = {e.path for e in entries} | keep
        for record in self.done_lines:
            path = name_from_json(record, str(record.get("path", "")))
            if not path or path in wanted:
                continue
            if list(self.held.get(path, ())) != record.get("stored_version"):
                continue
            outcome = self.store.delete(path)
            if outcome.error:
                log.warning(
                    "%s: could not remove %s: %s", self.location, shown(path), outcome.error
                )
                continue
            self.held.pop(path, None)
            log.info("%s: removed %s, no longer in the copy", self.location, shown(path))

    def _publish_markers(self) -> list[Stored]:
        if not self._late:
            return []
        src_dirs = TreeDirs(Path(self.src))
        try:
            markers = [self._put(src_dirs, plan) for plan in self._late]
        finally:
            src_dirs.close()
        self._flush_done(force=True)
        self._verify(markers, extras=False)  # the rest was verified just before
        return markers

    # ---- verification ------------------------------------------------------------------

    def _check(self, entries: list[Stored], extras: bool, besides: frozenset[str]) -> Verification:
        return check_bucket(self.store, entries, extras=extras, besides=besides)


def _json(record: dict) -> bytes:
    import json

    return (json.dumps(record, indent=2) + "\n").encode()
