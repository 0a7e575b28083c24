"""Where a packed copy goes: one archive file in a local folder, or one object in a bucket.

An archive is written as a stream and appears under its final name only complete:
locally under a temporary name in the same folder, then linked to the final name (link
fails if the name exists, so an archive is never replaced) and the temporary removed; in
an object store as one put or a multipart upload (s3_stream.py), which holds nothing
under the key until it is completed. A kill at any moment leaves at most a temporary
(removed by the next run, which holds the records' lock) or an unfinished upload (aborted
by the next run).

Reading back for verification goes to where the archive was written: the local file with
its cached pages dropped first (the re-read comes from the device, not from memory), or
the object downloaded again.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import ConfigError, DestinationBusy, SoftcopyError, from_os_error
from ..locations import is_object_store
from ..state.records import Records, open_directory, records_dir
from .base import SinkSpec
from .s3_stream import IN_FLIGHT, ObjectStream, abort_uploads_of

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def archive_output(location: str, spec: SinkSpec) -> LocalArchive | ObjectArchive:
    """The writer and reader of the archive at `location` (a path or s3://BUCKET/KEY)."""
    if is_object_store(location):
        return ObjectArchive(spec)
    return LocalArchive(Path(location))


class LocalArchive:
    """An archive file in a local (or mounted) folder."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.url = str(final)
        self.name = final.name
        self.temporary = f".{self.name}.{os.getpid()}.tmp"
        self._dfd = -1
        self._out: BinaryIO | None = None
        self.records: Records | None = None

    def open_records(self) -> Records:
        """The records folder (ARCHIVE.softcopy), created, locked against another run."""
        try:
            self.final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise from_os_error(exc, "create the archive's folder", self.final.parent) from exc
        self._dfd = open_directory(self.final.parent, "write archive in")
        records = Records.open(records_dir(self.final))
        assert records is not None
        if not records.lock():
            records.close()
            raise DestinationBusy(
                self.final, "pack to destination", "another softcopy is writing this archive"
            )
        self.records = records
        self._remove_stale_temporaries()
        return records

    def _remove_stale_temporaries(self) -> None:
        # Under the records' lock no other run writes this archive: any temporary of it
        # was left by a run that was killed.
        pattern = re.compile(r"^\." + re.escape(self.name) + r"\.\d+\.tmp$")
        for entry in os.scandir(self._dfd):
            if pattern.match(entry.name):
                try:
                    os.unlink(entry.name, dir_fd=self._dfd)
                except FileNotFoundError:
                    pass

    def exists(self) -> bool:
        try:
            os.stat(self.name, dir_fd=self._dfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise from_os_error(exc, "look at the archive", self.final) from exc
        return True

    def writer(self) -> BinaryIO:
        try:
            fd = os.open(self.temporary, _CREATE, 0o644, dir_fd=self._dfd)
        except OSError as exc:
            temporary = self.final.parent / self.temporary
            raise from_os_error(exc, "create the archive", temporary) from exc
        self._out = os.fdopen(fd, "wb", buffering=1 << 20)
        return self._out

    def commit(self) -> None:
        """Make the archive durable, then give it its final name (never over another)."""
        assert self._out is not None
        out, self._out = self._out, None
        try:
            out.flush()
            os.fsync(out.fileno())
            # Verification must read the device, not the pages just written.
            os.posix_fadvise(out.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError as exc:
            out.close()
            raise from_os_error(exc, "write the archive", self.final) from exc
        out.close()
        try:
            os.link(
                self.temporary,
                self.name,
                src_dir_fd=self._dfd,
                dst_dir_fd=self._dfd,
                follow_symlinks=False,
            )
        except FileExistsError as exc:
            raise ConfigError(
                self.final, "pack to destination", "it exists (softcopy never replaces an archive)"
            ) from exc
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                raise from_os_error(exc, "name the archive", self.final) from exc
            # No hard links here (some FUSE and FAT filesystems): checked, then renamed.
            if self.exists():
                raise ConfigError(
                    self.final, "pack to destination", "it exists (softcopy never replaces one)"
                ) from exc
            os.rename(self.temporary, self.name, src_dir_fd=self._dfd, dst_dir_fd=self._dfd)
        else:
            os.unlink(self.temporary, dir_fd=self._dfd)
        os.fsync(self._dfd)

    def abort(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        try:
            os.unlink(self.temporary, dir_fd=self._dfd)
        except OSError:
            pass

    def reader(self) -> BinaryIO:
        try:
            fd = os.open(self.name, _READ, dir_fd=self._dfd)
        except OSError as exc:
            raise from_os_error(exc, "read the archive", self.final) from exc
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        return os.fdopen(fd, "rb", buffering=1 << 20)

    def size(self) -> int:
        return os.stat(self.name, dir_fd=self._dfd, follow_symlinks=False).st_size

    def close(self) -> None:
        self.abort()
        if self.records is not None:
            self.records.close()
            self.records = None
        if self._dfd >= 0:
            os.close(self._dfd)
            self._dfd = -1


class ObjectArchive:
    """An archive object in a bucket, uploaded in parts as the stream is made."""

    def __init__(self, spec: SinkSpec) -> None:
        from .s3 import ObjectStore

        self.store = ObjectStore(spec)
        self.url = spec.location
        self.name = self.store.prefix.rsplit("/", 1)[-1]
        self.records: Any = None
        self._upload: ObjectStream | None = None

    @property
    def key(self) -> str:
        return self.store.prefix

    def open_records(self) -> Any:
        self.store.lock()  # ARCHIVE.softcopy/lock, by conditional put
        self.records = self.store.records
        self._abort_unfinished()
        return self.records

    def _abort_unfinished(self) -> None:
        abort_uploads_of(self.store.client, self.store.bucket, self.key)

    def exists(self) -> bool:
        from .s3 import botocore, is_missing

        try:
            self.store.client.head_object(Bucket=self.store.bucket, Key=self.key)
        except botocore.exceptions.ClientError as exc:
            if is_missing(exc):
                return False
            raise self._error(exc, "look at the archive") from exc
        return True

    def writer(self) -> BinaryIO:
        store = self.store
        checksum = store.settings.checksum
        in_flight = min(IN_FLIGHT, store.settings.concurrency)
        self._upload = ObjectStream(
            store.client, store.bucket, self.key, checksum, self._error, in_flight=in_flight
        )
        return self._upload  # type: ignore[return-value]

    def commit(self) -> None:
        assert self._upload is not None
        upload, self._upload = self._upload, None
        upload.complete()

    def abort(self) -> None:
        if self._upload is not None:
            upload, self._upload = self._upload, None
            upload.abort()

    def reader(self) -> BinaryIO:
        from .s3 import botocore

        try:
            answer = self.store.client.get_object(Bucket=self.store.bucket, Key=self.key)
        except botocore.exceptions.ClientError as exc:
            raise self._error(exc, "read the archive") from exc
        return answer["Body"]

    def size(self) -> int:
        return self.store.client.head_object(Bucket=self.store.bucket, Key=self.key)[
            "ContentLength"
        ]

    def _error(self, exc: BaseException, action: str) -> SoftcopyError:
        from .s3 import explain

        problem, _ = explain(exc, self.store.endpoint, self.store.bucket)
        return SoftcopyError(self.url, action, problem)

    def close(self) -> None:
        self.abort()
        self.store.release()
        self.store.close()


class ArchiveAt:
    """An archive written before, and its records, opened to be read (verify, unpack)."""

    def __init__(self, location: str, spec: SinkSpec | None) -> None:
        self.location = location
        self.name = location.rstrip("/").rsplit("/", 1)[-1]
        self._store: Any = None
        self._records: Any = None
        if is_object_store(location):
            from ..locations import RECORDS_SUFFIX
            from .s3 import ObjectRecords, ObjectStore

            assert spec is not None
            store = self._store = ObjectStore(spec)
            self._records = ObjectRecords(
                store.client, store.bucket, store.prefix + RECORDS_SUFFIX + "/", store.endpoint
            )
            self._archive: Any = _ReadOnlyObject(store, location)
        else:
            path = Path(os.path.abspath(location))
            self._archive = _ReadOnlyFile(path)
            self._path = path

    @property
    def records(self) -> Any:
        """The records (ARCHIVE.softcopy), read only; ConfigError when there are none."""
        if self._records is None:
            records = Records.open(records_dir(self._path), create=False, check_owner=False)
            if records is None:
                raise ConfigError(
                    records_dir(self._path), "read the archive's records", "they do not exist"
                )
            self._records = records
        return self._records

    def reader(self) -> BinaryIO:
        return self._archive.reader()

    def close(self) -> None:
        if self._records is not None and hasattr(self._records, "fd"):
            self._records.close()
        if self._store is not None:
            self._store.close()


class _ReadOnlyFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def reader(self) -> BinaryIO:
        try:
            dfd = open_directory(self.path.parent, "read archive in")
        except SoftcopyError:
            raise
        try:
            fd = os.open(self.path.name, _READ, dir_fd=dfd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ConfigError(
                    self.path, "read the archive", "it is a symbolic link, which softcopy "
                    "never follows",
                ) from exc  # fmt: skip
            raise from_os_error(exc, "read the archive", self.path) from exc
        finally:
            os.close(dfd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        return os.fdopen(fd, "rb", buffering=1 << 20)


class _ReadOnlyObject:
    def __init__(self, store: Any, location: str) -> None:
        self.store, self.location = store, location

    def reader(self) -> BinaryIO:
        from .s3 import botocore, explain

        try:
            return self.store.client.get_object(Bucket=self.store.bucket, Key=self.store.prefix)[
                "Body"
            ]
        except botocore.exceptions.ClientError as exc:
            problem, _ = explain(exc, self.store.endpoint, self.store.bucket)
            raise ConfigError(self.location, "read the archive", problem) from exc
