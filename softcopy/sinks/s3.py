"""An S3-compatible bucket as the destination: `s3://BUCKET/PREFIX` (boto3, low-level client).

Key mapping. Source key `K` becomes the object `PREFIX/<escape(K)>`. S3 keys are UTF-8
text; file names are bytes. `escape` writes every byte that is not part of valid UTF-8,
every ASCII control character (XML 1.0, which S3 answers in, cannot carry most of them)
and `%` itself as `%XX` (two upper-case hex digits); everything else is kept as it is.
Because `%` is always escaped the mapping is one-to-one and `unescape` reverses it: a
name with a `%` reads `%25` in the bucket, which is the price of copying every name.

Versions. An object is put in one request (or completed in one multipart request), so
it is atomic: nothing partial is ever visible and there are no temporaries. The source
version is stored as user metadata (`softcopy-mtime-ns`, `softcopy-size`). A listed or
HEADed object is `Version(size, mtime_ns, 0, ctime_ns)`: mtime_ns is the source mtime
from that metadata (LastModified, in ns, for an object softcopy did not write), and
ctime_ns is LastModified in ns, the upload's own time, which nobody can set. ListObjectsV2
does not return user metadata, so `listing()` HEADs every object, `concurrency` at a time:
one request per object, paid for a destination listing to be comparable with the source
(size and mtime) like a local one. LastModified alone would make every file look changed.

Compared first (`compare_first`), an object is read back and compared byte for byte:
the only proof a store gives of what it holds (its ETag is not always an MD5).

Integrity. The SHA-256 of the bytes read from the source is sent with every upload
(`x-amz-checksum-sha256`, per part for multipart uploads), so a store that checks it
refuses a corrupted body; option `checksum=md5` sends Content-MD5 instead (older stores),
`checksum=none` nothing. BLAKE3 of the same bytes, with `digest`, for the manifest.

Multipart resume. Above `multipart_threshold` a file goes up in parts. ListMultipartUploads
and ListParts do not return an upload's metadata, so which source version an upload is of
cannot be asked of the store: an `UploadNotes` remembers (object key, upload id, source
version, part size), written as a small object under the records prefix right after the
upload is created, so no local state is needed and a copier in any process finds it. A
put of the same version finds the note, lists the parts already on the server, and reuses
each whose size and checksum (ChecksumSHA256, or an MD5 ETag) match the bytes read from the
source now; the rest are uploaded. A note of another version: that upload is aborted.

Lock. `PREFIX.softcopy/lock` is created with `If-None-Match: *` (a conditional put: two
runs cannot both create it). It names host, boot and pid, and a thread renews it every
LEASE / 4 seconds with `If-Match` on its ETag. A lock whose holder is dead on this host, or
which was not renewed for LEASE seconds, is taken over with `If-Match` on the ETag read.
A run that loses its lock (taken over after a long silence) sets `lock_lost`. These
compare-and-swap steps are ObjectRecords' `create`, `replace` and `remove`, which a
watcher's claims on a bucket (service/claims.py) are made of too. A store
that ignores conditional headers cannot keep two runs apart: the lock then only says who
holds it (moto 5.2 honours If-None-Match and If-Match on PutObject and DeleteObject).

Options (spec options, plain strings, never credentials: the standard AWS chain finds those
in each process): endpoint_url, region, addressing_style, request_checksum_calculation and
response_checksum_validation (when_supported | when_required), checksum (sha256 | md5 |
none), multipart_threshold, part_size, concurrency, max_attempts, connect_timeout,
read_timeout, follow_links_inside.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import json
import logging
import os
import re
import socket
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, BinaryIO, Protocol

from ..errors import ConfigError, DestinationBusy, SoftcopyError
from ..locations import OBJECT_SCHEME, RECORDS_SUFFIX, parse_object_url
from ..sources.links import followed, followed_version
from ..sources.scan import (
    TEMP_PREFIX,
    DirListing,
    ScanResult,
    Version,
    is_temporary,
    version_of,
)
from ..units import parse_rate
from ..verify.hashing import new_hasher
from .base import (
    CHANGED,
    COPIED,
    DELETED,
    FAILED,
    SAME,
    SKIPPED,
    UNLIMITED,
    Capabilities,
    Outcome,
    SinkSpec,
    Space,
    Throttle,
)
from .local import slice_bytes

try:
    import boto3
    import botocore.config
    import botocore.exceptions
except ImportError:  # pragma: no cover - the optional extra is missing
    boto3 = None

log = logging.getLogger(__name__)

MIN_PART = 5 << 20  # S3's smallest part (but the last)
MAX_PARTS = 10_000
MAX_KEY_BYTES = 1024
LEASE = 120.0  # seconds a lock stays valid without renewal
_FIRST_WAIT = 15.0  # seconds the first request waits for an answer
_MTIME = "softcopy-mtime-ns"
_SIZE = "softcopy-size"
_BUSY = "another softcopy is already copying there"
NO_LINKS = "a symbolic link: object storage has none, so it is skipped"
NOT_FOLLOWED = (
    "a symbolic link that does not lead to a file inside the source: skipped (object "
    "storage has no links, and nothing outside the source is read)"
)

# ---- key mapping -------------------------------------------------------------------------

_NEEDS_ESCAPE = re.compile("[%\x00-\x1f\x7f\udc80-\udcff]")
_ESCAPED = re.compile(r"%([0-9A-Fa-f]{2})")


def _escape_char(match: re.Match) -> str:
    code = ord(match.group())
    return f"%{code - 0xDC00 if code >= 0xDC80 else code:02X}"


def escape(key: str) -> str:
    """The object name of a source key (surrogateescape str): valid UTF-8, one-to-one."""
    return _NEEDS_ESCAPE.sub(_escape_char, key)


def unescape(name: str) -> str:
    """The source key of an object name made by `escape`."""
    if "%" not in name:
        return name
    out = bytearray()
    last = 0
    for match in _ESCAPED.finditer(name):
        out += name[last : match.start()].encode("utf-8", "surrogateescape")
        out.append(int(match.group(1), 16))
        last = match.end()
    out += name[last:].encode("utf-8", "surrogateescape")
    return os.fsdecode(bytes(out))


# ---- settings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    endpoint_url: str = ""
    region: str = ""
    addressing_style: str = "auto"
    request_checksum_calculation: str = "when_supported"
    response_checksum_validation: str = "when_supported"
    checksum: str = "sha256"
    multipart_threshold: int = 64 << 20
    part_size: int = 16 << 20
    concurrency: int = 8
    max_attempts: int = 5
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    follow_links_inside: bool = False


_CHOICES = {
    "addressing_style": ("auto", "path", "virtual"),
    "request_checksum_calculation": ("when_supported", "when_required"),
    "response_checksum_validation": ("when_supported", "when_required"),
    "checksum": ("sha256", "md5", "none"),
}


def parse_settings(location: str, options: Iterable[tuple[str, str]]) -> Settings:
    """Settings from spec options; ConfigError naming the option and its value."""
    values: dict[str, Any] = {}
    fields = Settings.__dataclass_fields__
    for name, text in options:
        if name not in fields:
            raise ConfigError(location, "use destination", f"unknown object-store option {name!r}")
        try:
            values[name] = _parse_option(name, text)
        except ValueError as exc:
            raise ConfigError(location, f"use option {name}", str(exc)) from None
    settings = Settings(**values)
    if settings.part_size < MIN_PART:
        raise ConfigError(location, "use option part_size", "S3 parts are at least 5 MiB")
    return settings


def _parse_option(name: str, text: str) -> Any:
    if name in _CHOICES:
        if text not in _CHOICES[name]:
            raise ValueError(f"{text!r} is not one of {', '.join(_CHOICES[name])}")
        return text
    if name in ("multipart_threshold", "part_size"):
        return int(parse_rate(text))  # sizes read like rates: 64Mi, 8M, 1048576
    if name in ("concurrency", "max_attempts"):
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"{text!r} is not a whole number of at least 1")
        return int(text)
    if name in ("connect_timeout", "read_timeout"):
        value = float(text)
        if not value > 0:
            raise ValueError(f"{text!r} is not a positive number of seconds")
        return value
    if name == "follow_links_inside":
        if text.lower() not in ("true", "false"):
            raise ValueError(f"{text!r} is not true or false")
        return text.lower() == "true"
    return text


def make_client(settings: Settings, attempts: int | None = None) -> Any:
    """A low-level S3 client with its own connection pool; credentials from the AWS chain."""
    config = botocore.config.Config(
        retries={"mode": "standard", "max_attempts": attempts or settings.max_attempts},
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        max_pool_connections=settings.concurrency,
        request_checksum_calculation=settings.request_checksum_calculation,
        response_checksum_validation=settings.response_checksum_validation,
        s3={"addressing_style": settings.addressing_style},
    )
    kwargs: dict[str, Any] = {"config": config}
    if settings.endpoint_url:
        kwargs["endpoint_url"] = settings.endpoint_url
    if settings.region:
        kwargs["region_name"] = settings.region
    return boto3.session.Session().client("s3", **kwargs)


# ---- errors ------------------------------------------------------------------------------

_TRANSIENT_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
    "ServiceUnavailable", "RequestTimeTooSkewed",
}  # fmt: skip
_DENIED_CODES = {"AccessDenied", "AllAccessDisabled", "Forbidden", "403"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound", "NoSuchUpload"}
_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}


def error_code(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def is_missing(exc: BaseException) -> bool:
    return error_code(exc) in _MISSING_CODES


def _refused_condition(exc: BaseException) -> bool:
    """A conditional request the store refused: the version it named is not there (412;
    409 while another conditional write is under way; 404 when If-Match met no object)."""
    return error_code(exc) in _CONFLICT_CODES or is_missing(exc)


def explain(exc: BaseException, endpoint: str, bucket: str) -> tuple[str, int]:
    """What went wrong with a request, in words, and the errno the engine's retries read."""
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return (
            "no credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "~/.aws/credentials or AWS_PROFILE)",
            errno.EACCES,
        )
    unreachable = (
        botocore.exceptions.EndpointConnectionError,
        botocore.exceptions.ConnectTimeoutError,
    )
    if isinstance(exc, unreachable):
        return f"cannot reach the endpoint {endpoint} ({exc})", errno.EIO
    if isinstance(exc, botocore.exceptions.ReadTimeoutError):
        return (
            f"the endpoint {endpoint} took the connection but did not answer in time "
            "(an overloaded store, or a firewall or proxy in the way)",
            errno.EIO,
        )
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return f"{exc} (endpoint {endpoint})", errno.EIO
    code = error_code(exc)
    message = exc.response.get("Error", {}).get("Message", "") if code else str(exc)
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) if code else 0
    if code in ("NoSuchBucket",) or (code in ("404", "NotFound") and not message):
        return f"the bucket {bucket} does not exist at {endpoint}", errno.ENOENT
    if code == "InvalidAccessKeyId":
        return f"the access key id is not known to {endpoint} (wrong credentials)", errno.EACCES
    if code == "SignatureDoesNotMatch":
        return f"the secret access key is wrong for {endpoint} (wrong credentials)", errno.EACCES
    if code in _DENIED_CODES:
        return f"access denied by {endpoint}: {message or code}", errno.EACCES
    if code in ("QuotaExceeded", "EntityTooLarge"):
        return f"{code}: {message}", errno.EDQUOT
    if code in _TRANSIENT_CODES or status >= 500:
        return f"{code}: {message} (after retries, endpoint {endpoint})", errno.EIO
    return f"{code}: {message}" if message else code, 0


# ---- the lock, the records and the upload notes ------------------------------------------


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ObjectRecordFile:
    """One record by name, like state.records.RecordFile."""

    def __init__(self, folder: ObjectRecords, name: str) -> None:
        self.folder = folder
        self.name = name

    def __str__(self) -> str:
        return self.folder.url(self.name)

    def write_bytes(self, data: bytes | Iterable[bytes]) -> None:
        # A record written block by block (the size list) is one object: joined here.
        self.folder.write(self.name, data if isinstance(data, bytes) else b"".join(data))

    def read_bytes(self) -> bytes:
        return self.folder.read(self.name)

    def unlink(self) -> None:
        self.folder.unlink(self.name)

    def open_input(self, action: str, missing: str | None = None) -> BinaryIO:
        try:
            return io.BytesIO(self.folder.read(self.name))
        except FileNotFoundError:
            raise ConfigError(self, action, missing or "it does not exist") from None


class ObjectRecords:
    """The records folder twin: objects under `s3://BUCKET/PREFIX.softcopy/`.

    A put is atomic, so there are no temporaries and nothing to fsync.
    """

    def __init__(self, client: Any, bucket: str, prefix: str, endpoint: str) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix  # ends in "/"
        self.endpoint = endpoint

    def url(self, name: str) -> str:
        return f"{OBJECT_SCHEME}{self.bucket}/{self.prefix}{name}"

    def __truediv__(self, name: str) -> ObjectRecordFile:
        return ObjectRecordFile(self, name)

    def read(self, name: str) -> bytes:
        """The record's bytes; FileNotFoundError when absent."""
        return self.read_tagged(name)[0]

    def read_tagged(self, name: str) -> tuple[bytes, str]:
        """The record's bytes and the ETag of that version; FileNotFoundError when absent."""
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)
            return answer["Body"].read(), answer["ETag"]
        except botocore.exceptions.ClientError as exc:
            if is_missing(exc):
                raise FileNotFoundError(errno.ENOENT, "no such record", self.url(name)) from None
            raise self._error(exc, "read record", name) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise self._error(exc, "read record", name) from exc

    def write(self, name: str, data: bytes, **conditions: str) -> str:
        """Put the record in one request (atomic); its new ETag. With `conditions`
        (IfNoneMatch, IfMatch), a refused one is raised as the store's ClientError."""
        try:
            answer = self.client.put_object(
                Bucket=self.bucket,
                Key=self.prefix + name,
                Body=data,
                ChecksumSHA256=_b64(hashlib.sha256(data).digest()),
                **conditions,
            )
        except botocore.exceptions.ClientError as exc:
            if conditions and _refused_condition(exc):
                raise
            raise self._error(exc, "write record", name) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise self._error(exc, "write record", name) from exc
        return answer["ETag"]

    # Compare-and-swap on one record: what the lock and a watcher's claims are made of.
    # Two writers can never both succeed, which no exclusive file could promise on a store.

    def create(self, name: str, data: bytes) -> str | None:
        """Put the record only if the name is free (If-None-Match: *): its ETag, or None
        when another record has the name."""
        try:
            return self.write(name, data, IfNoneMatch="*")
        except botocore.exceptions.ClientError:
            return None

    def replace(self, name: str, data: bytes, etag: str) -> str | None:
        """Put the record only over the version `etag` (If-Match): its new ETag, or None
        when that version was replaced or removed meanwhile."""
        try:
            return self.write(name, data, IfMatch=etag)
        except botocore.exceptions.ClientError:
            return None

    def remove(self, name: str, etag: str) -> bool:
        """Delete the record only if it is still the version `etag`; False when it is not."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + name, IfMatch=etag)
        except botocore.exceptions.ClientError as exc:
            if _refused_condition(exc):
                return False
            raise self._error(exc, "remove record", name) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise self._error(exc, "remove record", name) from exc
        return True

    def has(self, name: str) -> bool:
        """Whether the record is there (a HEAD request)."""
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.prefix + name)
        except botocore.exceptions.ClientError as exc:
            if is_missing(exc):
                return False
            raise self._error(exc, "look for record", name) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise self._error(exc, "look for record", name) from exc
        return True

    def unlink(self, name: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + name)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise self._error(exc, "remove record", name) from exc

    def names(self, under: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + under
        )
        return [o["Key"][len(self.prefix) :] for page in pages for o in page.get("Contents", ())]

    def remove_stale_temporaries(self) -> None:
        """Nothing to do: an object put never leaves a temporary."""

    def close(self) -> None:
        """Nothing held: the sink owns the client."""

    def _error(self, exc: BaseException, action: str, name: str) -> SoftcopyError:
        problem, _ = explain(exc, self.endpoint, self.bucket)
        return SoftcopyError(self.url(name), action, problem)


@dataclass(frozen=True)
class UploadNote:
    """What a multipart upload is of, so a later put of the same version resumes it."""

    key: str  # the object key
    upload_id: str
    version: tuple[int, ...]
    part_size: int


class UploadNotes(Protocol):
    """Where upload notes are kept (in the bucket here; the journal could be another)."""

    def recall(self, object_key: str) -> UploadNote | None: ...
    def remember(self, note: UploadNote) -> None: ...
    def forget(self, object_key: str) -> None: ...


class BucketNotes:
    """Upload notes as small objects `uploads/<digest of the key>` in the records prefix."""

    def __init__(self, records: ObjectRecords) -> None:
        self.records = records

    @staticmethod
    def name(object_key: str) -> str:
        return "uploads/" + hashlib.sha256(object_key.encode()).hexdigest()[:40]

    def recall(self, object_key: str) -> UploadNote | None:
        try:
            data = json.loads(self.records.read(self.name(object_key)))
            note = UploadNote(
                data["key"], data["upload_id"], tuple(data["version"]), int(data["part_size"])
            )
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            return None  # a damaged note: its upload is aborted when the target finishes
        return note if note.key == object_key else None

    def remember(self, note: UploadNote) -> None:
        data = {"key": note.key, "upload_id": note.upload_id, "version": list(note.version)}
        data["part_size"] = note.part_size
        self.records.write(self.name(note.key), json.dumps(data).encode())

    def forget(self, object_key: str) -> None:
        self.records.unlink(self.name(object_key))


# ---- reading the source ------------------------------------------------------------------


class _Digests:
    """The hashes of the bytes read: SHA-256 (or MD5) for the store, BLAKE3 for the manifest."""

    def __init__(self, checksum: str, size: int, digest: bool) -> None:
        self.checksum = checksum
        self.blake = new_hasher(size) if digest else None

    def part(self) -> Any:
        if self.checksum == "sha256":
            return hashlib.sha256()
        if self.checksum == "md5":
            return hashlib.md5(usedforsecurity=False)
        return None


def _read_range(
    fd: int, offset: int, size: int, throttle: Throttle | None, hashers: list[Any]
) -> bytearray:
    """`size` bytes from `offset`, a slice per throttle grant; fewer at an early end of file.

    Read into one buffer of the final size, and handed to the upload as it is: a 16 MiB
    object is not copied twice more on its way (appends, then bytes())."""
    out = bytearray(size)
    view = memoryview(out)
    step = slice_bytes(throttle) if throttle else 1 << 20
    done = 0
    while done < size:
        want = min(step, size - done)
        if throttle:
            throttle(want)
        got = os.preadv(fd, [view[done : done + want]], offset + done)
        if not got:
            break
        for h in hashers:
            h.update(view[done : done + got])
        done += got
    view.release()
    if done < size:
        del out[done:]
    return out


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _checksum_args(checksum: str, hasher: Any) -> dict[str, str]:
    if checksum == "sha256":
        return {"ChecksumSHA256": _b64(hasher.digest())}
    if checksum == "md5":
        return {"ContentMD5": _b64(hasher.digest())}
    return {}


def _current_version(path: str) -> Version | None:
    try:
        return version_of(os.lstat(path))
    except (FileNotFoundError, NotADirectoryError):
        return None


def _ns(when: Any) -> int:
    """A datetime from botocore in ns (S3 times have second, at best millisecond, precision)."""
    return round(when.timestamp() * 1000) * 1_000_000


@dataclass
class _Source:
    """The file a put reads: its path, the version opened, how to tell it has not changed."""

    path: str
    version: Version
    current: Callable[[], object]
    expected: object


# ---- the sink ----------------------------------------------------------------------------


class ObjectStore:
    """A bucket and prefix; every put is one atomic upload. See the module docstring."""

    capabilities = Capabilities(
        atomic_rename=False,
        links=False,
        deletes=True,
        partial_writes=False,
        flush=False,
        free_space=False,
        listing=True,
        identity_lock=False,
    )

    def __init__(self, spec: SinkSpec) -> None:
        if boto3 is None:
            raise ConfigError(
                spec.location, "use destination", "object storage needs boto3: "
                "pip install 'softcopy[s3]'",
            )  # fmt: skip
        self.spec = spec
        self.bucket, self.prefix = parse_object_url(spec.location)
        self.settings = parse_settings(spec.location, spec.options)
        self.records: ObjectRecords | None = None
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._notes: UploadNotes | None = None
        self._lock_etag = ""
        self._lock_token = ""
        self._renewer: threading.Thread | None = None
        self._stop_renewing = threading.Event()
        self.lock_lost = ""  # why the lock was lost, when it was: the engine should stop
        self.puts_in_flight = self.settings.concurrency  # --s3-concurrency, per copier

    @classmethod
    def from_spec(cls, spec: SinkSpec) -> ObjectStore:
        return cls(spec)

    # -- plumbing

    @property
    def client(self) -> Any:
        if self._client is None:
            # A copier's puts in flight all ask at once at first: one client (its pool is
            # sized for them), not one each that all but one throw away (~0.2 CPU-s each).
            with self._client_lock:
                if self._client is None:
                    self._client = make_client(self.settings)
        return self._client

    @property
    def endpoint(self) -> str:
        return self.client.meta.endpoint_url

    def object_key(self, key: str) -> str:
        return f"{self.prefix}/{escape(key)}"

    def url(self, key: str = "") -> str:
        return (
            f"{OBJECT_SCHEME}{self.bucket}/{self.prefix}/{escape(key)}"
            if key
            else self.spec.location
        )

    def _records(self) -> ObjectRecords:
        return ObjectRecords(
            self.client, self.bucket, self.prefix + RECORDS_SUFFIX + "/", self.endpoint
        )

    def records_of(self, location: str) -> ObjectRecords:
        """The records of the copy at `location`, another prefix of this bucket (a run
        under a watcher's DEST_ROOT), on this store's client: a watcher keeps the claims
        of all its runs on one connection pool."""
        bucket, prefix = parse_object_url(location)
        if bucket != self.bucket:
            raise ValueError(f"{location} is not in the bucket {self.bucket}")
        return ObjectRecords(self.client, bucket, prefix + RECORDS_SUFFIX + "/", self.endpoint)

    @property
    def notes(self) -> UploadNotes:
        if self._notes is None:
            self._notes = BucketNotes(self._records())
        return self._notes

    def _refusal(self, exc: BaseException, action: str) -> ConfigError:
        problem, _ = explain(exc, self.endpoint, self.bucket)
        return ConfigError(self.spec.location, action, problem)

    def _failed(self, key: str, exc: BaseException) -> Outcome:
        problem, err = explain(exc, self.endpoint, self.bucket)
        return Outcome(key, FAILED, error=f"{problem} (object {self.url(key)})", errno=err)

    # -- lock, create, probe

    def lock(self) -> None:
        """Take `PREFIX.softcopy/lock` by conditional put; ConfigError when another holds it."""
        self._reachable()
        records = self._records()
        self._lock_token = uuid.uuid4().hex
        try:
            etag = records.create("lock", self._lock_body())
        except SoftcopyError as exc:
            raise ConfigError(self.spec.location, "copy to destination", exc.problem) from exc
        self._lock_etag = etag if etag is not None else self._take_over(records)
        self.records = records
        self._renewer = threading.Thread(target=self._renew, name="s3-lock", daemon=True)
        self._renewer.start()

    def _reachable(self) -> None:
        """The first request, on a client of few attempts and short waits: an endpoint that
        does not answer fails in under a minute, naming it (the sink's own client waits out
        a slow store: 5 attempts of up to 60 s)."""
        quick = replace(self.settings, read_timeout=min(self.settings.read_timeout, _FIRST_WAIT))
        client = make_client(quick, attempts=2)
        try:
            client.head_bucket(Bucket=self.bucket)
        except botocore.exceptions.ClientError:
            pass  # it answered: what it refuses, the requests that follow say in words
        except botocore.exceptions.BotoCoreError as exc:
            problem, _ = explain(exc, client.meta.endpoint_url, self.bucket)
            raise ConfigError(self.spec.location, "reach bucket", problem) from exc

    def _lock_body(self) -> bytes:
        holder = {"host": socket.gethostname(), "boot": _boot_id(), "pid": os.getpid()}
        holder.update(token=self._lock_token, renewed=time.time())
        return json.dumps(holder).encode()

    def _take_over(self, records: ObjectRecords) -> str:
        """Take a lock whose holder is gone (dead here, or silent for LEASE): its new ETag;
        else refuse."""
        holder: Any = {}
        etag = ""
        try:
            raw, etag = records.read_tagged("lock")
            holder = json.loads(raw)
        except (OSError, SoftcopyError, ValueError):
            pass  # gone meanwhile, unreadable or damaged: replaced if it is still that one
        if not isinstance(holder, dict) or not holder:
            stale = True
        else:
            here = holder.get("host") == socket.gethostname() and holder.get("boot") == _boot_id()
            stale = (here and not _alive(int(holder.get("pid", 0) or 0))) or (
                time.time() - float(holder.get("renewed", 0)) > LEASE
            )
        if not stale:
            who = f"pid {holder.get('pid')} on {holder.get('host')}"
            raise DestinationBusy(
                self.spec.location, "copy to destination", f"{_BUSY} ({who}, lock "
                f"{records.url('lock')})",
            )  # fmt: skip
        body = self._lock_body()
        taken = records.replace("lock", body, etag) if etag else records.create("lock", body)
        if taken is None:
            raise DestinationBusy(self.spec.location, "copy to destination", _BUSY)
        return taken

    def _renew(self) -> None:
        records = self._records()
        while not self._stop_renewing.wait(LEASE / 4):
            try:
                etag = records.replace("lock", self._lock_body(), self._lock_etag)
            except SoftcopyError:
                continue  # unreachable for now: the lease allows a few misses
            if etag is None:
                self.lock_lost = f"the lock {records.url('lock')} was taken by another softcopy"
                return
            self._lock_etag = etag

    def create(self) -> bool:
        """Nothing to make (a prefix exists once an object does); True when it holds objects."""
        try:
            answer = self.client.list_objects_v2(
                Bucket=self.bucket, Prefix=self.prefix + "/", MaxKeys=1
            )
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise self._refusal(exc, "list destination") from exc
        return answer.get("KeyCount", 0) > 0

    def probe(self) -> None:
        """The bucket exists, and we may list and write under the prefix; ConfigError if not.

        Its own client, with few attempts: an endpoint that refuses connections fails in
        seconds, one that never answers within a minute.
        """
        client = make_client(self.settings, attempts=3)
        endpoint = client.meta.endpoint_url
        probe = f"{self.prefix}/{TEMP_PREFIX}probe-{os.getpid()}"
        steps: list[tuple[str, Callable[[], object]]] = [
            ("list destination", lambda: client.list_objects_v2(
                Bucket=self.bucket, Prefix=self.prefix + "/", MaxKeys=1)),
            ("write to destination", lambda: client.put_object(
                Bucket=self.bucket, Key=probe, Body=b"")),
            ("delete in destination", lambda: client.delete_object(
                Bucket=self.bucket, Key=probe)),
        ]  # fmt: skip
        try:
            client.head_bucket(Bucket=self.bucket)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
                problem = f"the bucket {self.bucket} does not exist at {endpoint}"
                raise ConfigError(self.spec.location, "reach bucket", problem) from exc
            # A HEAD answer has no body to say why (403: wrong key, or no permission): the
            # listing below asks again and gets the reason in words.
        except botocore.exceptions.BotoCoreError as exc:
            problem, _ = explain(exc, endpoint, self.bucket)
            raise ConfigError(self.spec.location, "reach bucket", problem) from exc
        for action, step in steps:
            try:
                step()
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
                problem, _ = explain(exc, endpoint, self.bucket)
                raise ConfigError(self.spec.location, action, problem) from exc

    def peek(self) -> tuple[bool, ObjectRecords | None]:
        return self.create(), self._records()

    def foreign(self, src: str) -> str | None:
        """Objects under the prefix, none of whose top-level names is in the source."""
        start = self.prefix + "/"
        try:
            answer = self.client.list_objects_v2(
                Bucket=self.bucket, Prefix=start, Delimiter="/", MaxKeys=1000
            )
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise self._refusal(exc, "list destination") from exc
        names = {o["Key"][len(start) :] for o in answer.get("Contents", ())}
        names |= {p["Prefix"][len(start) :].rstrip("/") for p in answer.get("CommonPrefixes", ())}
        there = {unescape(n) for n in names if n}
        try:
            here = set(os.listdir(src))
        except OSError:
            return None  # the source's own checks say what is wrong with it
        if not there or there & here:
            return None
        listed = ", ".join(sorted(there)[:3]) + (
            f" and {len(there) - 3} more" if len(there) > 3 else ""
        )
        return (
            f"it holds objects of something else ({listed}), none of them in the source {src}, "
            f"and softcopy did not make them (no {self._records().url('target.json')}): give "
            "a prefix of its own to this copy"
        )

    def tidy(self) -> None:
        try:
            self.abort_stale_uploads()
        except (
            botocore.exceptions.ClientError,
            botocore.exceptions.BotoCoreError,
            SoftcopyError,
        ) as exc:
            # An unfinished upload costs storage, not correctness: said, and left.
            log.warning("%s: could not abort unfinished uploads: %s", self.spec.location, exc)

    def space(self) -> Space:
        """Unknown: a bucket has no free-space figure (quotas show up as a failed put)."""
        return Space(UNLIMITED, None, 1, self.bucket)

    # -- reading the destination

    def listing(self, exact: bool = True) -> ScanResult:
        """Every object under the prefix; `exact` False: versions from the listing alone
        (size, and the upload time as mtime), without a HEAD per object."""
        result = ScanResult()
        listed: list[tuple[str, Version]] = []
        for key, entry in self._listed():
            uploaded = _ns(entry["LastModified"])
            listed.append((key, Version(entry["Size"], uploaded, 0, uploaded)))
        files = [(k, v) for k, v in listed if not is_temporary(k.rpartition("/")[2])]
        result.temporary = [k for k, _ in listed if is_temporary(k.rpartition("/")[2])]
        if not exact:
            result.files = dict(files)
            return result
        keys = [k for k, _ in files]
        with ThreadPoolExecutor(self.settings.concurrency) as pool:
            for key, version in zip(keys, pool.map(self.version, keys), strict=True):
                if version is not None:  # deleted since it was listed
                    result.files[key] = version
        return result

    def objects(self) -> dict[str, tuple[int, str]]:
        """Every object under the prefix, by source key: (size, ETag), from the listing
        alone. An ETag changes when the object is written again (any upload, any tool)."""
        return {key: (entry["Size"], entry["ETag"]) for key, entry in self._listed()}

    def _listed(self) -> list[tuple[str, dict]]:
        """The listing of the prefix: (source key, the store's entry) per object."""
        start = self.prefix + "/"
        found = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start
            )
            for page in pages:
                for entry in page.get("Contents", ()):
                    if not entry["Key"].endswith("/"):  # another tool's "directory" marker
                        found.append((unescape(entry["Key"][len(start) :]), entry))
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise self._refusal(exc, "list destination") from exc
        return found

    def listings(self, exact: bool = True) -> Iterator[DirListing]:
        # One listing of the prefix is paged anyway; with `exact`, versions come from HEADs.
        whole = self.listing(exact)
        yield DirListing(whole.files, sorted(whole.links), [], whole.temporary)

    def link_target(self, key: str) -> str | None:
        return None

    def version(self, key: str) -> Version | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except botocore.exceptions.ClientError as exc:
            if is_missing(exc):
                return None
            raise self._refusal(exc, "examine object") from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise self._refusal(exc, "examine object") from exc
        return _version_of_head(head)

    def open(self, key: str) -> BinaryIO:
        """The object's bytes, streamed (FileNotFoundError when absent)."""
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))["Body"]
        except botocore.exceptions.ClientError as exc:
            if is_missing(exc):
                raise FileNotFoundError(errno.ENOENT, "no such object", self.url(key)) from None
            raise self._refusal(exc, "read object") from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise self._refusal(exc, "read object") from exc
        # Buffered over the body itself: botocore's own `with` hands out the raw stream.
        return io.BufferedReader(_Download(body), 1 << 20)

    def flush(self) -> None:
        """Nothing to do: a completed upload is durable when the store answers."""

    # -- writing

    def put(
        self,
        src_root: str,
        key: str,
        compare_first: bool = False,
        fsync: bool = False,
        digest: bool = False,
        throttle: Throttle | None = None,
    ) -> Outcome:
        """Upload the source's current version of `key` in one atomic step (or delete it)."""
        path = os.path.join(src_root, key)
        okey = self.object_key(key)
        if len(okey.encode()) > MAX_KEY_BYTES:
            problem = f"its object key would be {len(okey.encode())} bytes; S3 allows 1024"
            return Outcome(key, FAILED, error=problem, errno=errno.ENAMETOOLONG)
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return self.delete(key)
        except OSError as exc:
            return Outcome(key, FAILED, error=_describe(exc), errno=exc.errno or 0)
        try:
            opened = self._open_source(src_root, key, path, st)
        except (FileNotFoundError, NotADirectoryError):
            return Outcome(key, CHANGED)  # replaced or deleted since the lstat: look again
        except OSError as exc:
            return Outcome(key, FAILED, error=_describe(exc), errno=exc.errno or 0)
        if isinstance(opened, Outcome):
            return Outcome(
                key, opened.status, opened.version, error=opened.error, errno=opened.errno
            )
        fd, source = opened
        try:
            if compare_first:
                same = self._compare(key, okey, fd, source, digest)
                if same is not None:
                    return same
            if source.version.size >= self.settings.multipart_threshold:
                return self._put_multipart(key, okey, fd, source, digest, throttle)
            return self._put_single(key, okey, fd, source, digest, throttle)
        except OSError as exc:
            return Outcome(key, FAILED, error=_describe(exc), errno=exc.errno or 0)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            return self._failed(key, exc)
        finally:
            os.close(fd)

    def _open_source(
        self, src_root: str, key: str, path: str, st: os.stat_result
    ) -> tuple[int, _Source] | Outcome:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        if stat.S_ISLNK(st.st_mode):
            if not self.settings.follow_links_inside:
                return Outcome("", SKIPPED, version_of(st), error=NO_LINKS, errno=errno.ELOOP)
            found = followed(src_root, key)
            if found is None:
                return Outcome("", SKIPPED, version_of(st), error=NOT_FOLLOWED, errno=errno.ELOOP)
            real = found[0]
            fd = os.open(real, flags)  # every link on the way resolved: one swapped in is ELOOP
            version = followed_version(st, os.fstat(fd))

            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                return Outcome("", CHANGED)
            # Unchanged: the link leads to the same file, at the version opened.
            return fd, _Source(path, version, lambda: followed(src_root, key), (real, version))
        if not stat.S_ISREG(st.st_mode):
            return Outcome("", FAILED, error="not a regular file", errno=errno.EINVAL)
        fd = os.open(path, flags)  # O_NOFOLLOW: a link swapped in since the lstat is ELOOP
        version = version_of(os.fstat(fd))

        def current() -> object:
            return _current_version(path)

        expected = version
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return Outcome("", FAILED, error="not a regular file", errno=errno.EINVAL)
        return fd, _Source(path, version, current, expected)

    def _metadata(self, version: Version) -> dict[str, str]:
        return {_MTIME: str(version.mtime_ns), _SIZE: str(version.size)}

    def _put_single(
        self, key: str, okey: str, fd: int, source: _Source, digest: bool, throttle: Throttle | None
    ) -> Outcome:
        size = source.version.size
        digests = _Digests(self.settings.checksum, size, digest)
        part = digests.part()
        hashers = [h for h in (part, digests.blake) if h is not None]
        data = _read_range(fd, 0, size, throttle, hashers)
        # What we read must still be the version under the source name: else it is stale.
        checked = time.time_ns()
        if source.current() != source.expected:
            return Outcome(key, CHANGED)
        if len(data) != size:
            return _short(key, len(data), size)
        self.client.put_object(
            Bucket=self.bucket,
            Key=okey,
            Body=data,
            Metadata=self._metadata(source.version),
            **_checksum_args(self.settings.checksum, part),
        )
        hexdigest = digests.blake.hexdigest() if digests.blake else ""
        return Outcome(key, COPIED, source.version, size, digest=hexdigest, checked_ns=checked)

    def _part_size(self, size: int) -> int:
        return max(self.settings.part_size, -(-size // MAX_PARTS))

    def _put_multipart(
        self, key: str, okey: str, fd: int, source: _Source, digest: bool, throttle: Throttle | None
    ) -> Outcome:
        size = source.version.size
        part_size = self._part_size(size)
        upload_id, have = self._resumable(okey, source.version, part_size)
        if not upload_id:
            extra = {"ChecksumAlgorithm": "SHA256"} if self.settings.checksum == "sha256" else {}
            upload_id = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=okey, Metadata=self._metadata(source.version), **extra
            )["UploadId"]
            self.notes.remember(UploadNote(okey, upload_id, tuple(source.version), part_size))
        digests = _Digests(self.settings.checksum, size, digest)
        parts = []
        done = reused_bytes = 0
        for number in range(1, -(-size // part_size) + 1):
            part = digests.part()
            hashers = [h for h in (part, digests.blake) if h is not None]
            want = min(part_size, size - done)
            data = _read_range(fd, done, want, throttle, hashers)
            if len(data) != want:
                break
            done += want
            sha = _b64(part.digest()) if self.settings.checksum == "sha256" else ""
            reused = _reusable(have.get(number), data, sha)
            if reused is not None:
                parts.append(reused)
                reused_bytes += want
                continue
            answer = self.client.upload_part(
                Bucket=self.bucket,
                Key=okey,
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
                **_checksum_args(self.settings.checksum, part),
            )
            entry = {"PartNumber": number, "ETag": answer["ETag"]}
            if sha:  # a store that checks it needs each part's checksum again to complete
                entry["ChecksumSHA256"] = sha
            parts.append(entry)
        checked = time.time_ns()
        if source.current() != source.expected:
            self._abort(okey, upload_id)  # parts of a stale version: of no use to anyone
            return Outcome(key, CHANGED)
        if done != size:
            return _short(key, done, size)
        self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=okey, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
        self._forget(okey)
        hexdigest = digests.blake.hexdigest() if digests.blake else ""
        return Outcome(
            key,
            COPIED,
            source.version,
            size,
            digest=hexdigest,
            checked_ns=checked,
            resumed=reused_bytes,
        )

    def _resumable(
        self, okey: str, version: Version, part_size: int
    ) -> tuple[str, dict[int, dict]]:
        """The upload of this version already begun, and its parts by number; ("", {}) if none."""
        note = self.notes.recall(okey)
        if note is None:
            return "", {}
        if note.version != tuple(version) or note.part_size != part_size:
            self._abort(okey, note.upload_id)
            return "", {}
        try:
            pages = self.client.get_paginator("list_parts").paginate(
                Bucket=self.bucket, Key=okey, UploadId=note.upload_id
            )
            have = {p["PartNumber"]: p for page in pages for p in page.get("Parts", ())}
        except botocore.exceptions.ClientError as exc:
            if is_missing(exc):  # completed or aborted since the note was written
                self._forget(okey)
                return "", {}
            raise
        return note.upload_id, have

    def _abort(self, okey: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=okey, UploadId=upload_id)
        except botocore.exceptions.ClientError as exc:
            if not is_missing(exc):
                raise
        self._forget(okey)

    def _forget(self, okey: str) -> None:
        try:
            self.notes.forget(okey)
        except SoftcopyError:
            pass  # a stale note names an upload that is gone: ignored when recalled

    def abort_stale_uploads(self) -> int:
        """Abort every unfinished multipart upload under the prefix (the target is finished)."""
        aborted = 0
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=self.prefix + "/"
        )
        for page in pages:
            for upload in page.get("Uploads", ()):
                self._abort(upload["Key"], upload["UploadId"])
                aborted += 1
        records = self._records()
        for name in records.names("uploads/"):
            records.unlink(name)
        return aborted

    def _compare(
        self, key: str, okey: str, fd: int, source: _Source, digest: bool
    ) -> Outcome | None:
        """SAME when the object holds the source's bytes (read back to be sure); else None."""
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=okey)
        except botocore.exceptions.ClientError as exc:
            if is_missing(exc):
                return None
            raise
        size = source.version.size
        if answer["ContentLength"] != size:
            answer["Body"].close()
            return None
        hasher = new_hasher(size) if digest else None
        offset = 0
        body = answer["Body"]
        try:
            for chunk in body.iter_chunks(1 << 20):
                if os.pread(fd, len(chunk), offset) != chunk:
                    return None
                if hasher is not None:
                    hasher.update(chunk)
                offset += len(chunk)
        finally:
            body.close()
        if offset != size:
            return None
        if answer.get("Metadata", {}).get(_MTIME) != str(source.version.mtime_ns):
            # Same bytes, another mtime: a server-side copy onto itself sets it atomically.
            self.client.copy_object(
                Bucket=self.bucket,
                Key=okey,
                CopySource={"Bucket": self.bucket, "Key": okey},
                CopySourceIfMatch=answer["ETag"],
                Metadata=self._metadata(source.version),
                MetadataDirective="REPLACE",
            )
        checked = time.time_ns()
        if source.current() != source.expected:
            return Outcome(key, CHANGED)
        hexdigest = hasher.hexdigest() if hasher else ""
        return Outcome(key, SAME, source.version, digest=hexdigest, checked_ns=checked)

    def delete(self, key: str) -> Outcome:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            return self._failed(key, exc)
        return Outcome(key, DELETED)

    def remove_temporaries(self, keys: Iterable[str]) -> None:
        """Only softcopy's own (a probe's, were it interrupted); never a writer's."""
        for key in keys:
            if key.rpartition("/")[2].startswith(TEMP_PREFIX):
                self.delete(key)

    def discard_partial(self, keys: Iterable[str]) -> None:
        """An unfinished put is an unfinished multipart upload: abort it, quietly."""
        for key in keys:
            okey = self.object_key(key)
            try:
                note = self.notes.recall(okey)
                if note is not None:
                    self._abort(okey, note.upload_id)
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError):
                pass
            except SoftcopyError:
                pass

    def write_markers(self, src_root: str, keys: list[str], digest: bool) -> dict[str, str]:
        """Each marker uploaded in order, each complete before the next begins."""
        digests = {}
        for key in keys:
            outcome = self.put(src_root, key, digest=digest)
            if outcome.status != COPIED:
                problem = outcome.error or {
                    DELETED: "it is gone from the source",
                    CHANGED: "it changed at the source while it was uploaded",
                }.get(outcome.status, outcome.status)
                raise SoftcopyError(self.url(key), "write completion marker", problem)
            digests[key] = outcome.digest
        return digests

    def release(self) -> None:
        """Nothing to drop: the client's connection pool is worth keeping between batches."""

    def close(self) -> None:
        self._stop_renewing.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        if self.records is not None:
            try:
                self.records.remove("lock", self._lock_etag)  # not if another took it over
            except SoftcopyError:
                pass  # unreachable: the lease runs out by itself
            self.records = None


class _Download(io.RawIOBase):
    """An object's body as a raw stream that closes its connection with it."""

    def __init__(self, body: Any) -> None:
        self.body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.body.close()
        super().close()


def _version_of_head(head: Mapping[str, Any]) -> Version:
    modified = _ns(head["LastModified"])
    mtime = head.get("Metadata", {}).get(_MTIME, "")
    return Version(
        int(head["ContentLength"]), int(mtime) if mtime.isdigit() else modified, 0, modified
    )


def _reusable(listed: dict | None, data: bytes, sha: str) -> dict | None:
    """The part already on the server, when its bytes are the ones just read from the source.

    `sha`: the base64 SHA-256 of `data` when uploads carry one, else "".
    """
    if listed is None or listed.get("Size") != len(data):
        return None
    entry = {"PartNumber": listed["PartNumber"], "ETag": listed["ETag"]}
    if sha:
        entry["ChecksumSHA256"] = sha
    if listed.get("ChecksumSHA256"):
        wanted = sha or _b64(hashlib.sha256(data).digest())
        return entry if listed["ChecksumSHA256"] == wanted else None
    # No checksum listed (moto lists none): an ETag that is a plain MD5 of the part will do.
    etag = listed["ETag"].strip('"')
    if re.fullmatch(r"[0-9a-f]{32}", etag) and etag == hashlib.md5(data).hexdigest():
        return entry
    return None  # nothing to compare with: upload it again


def _short(key: str, got: int, size: int) -> Outcome:
    problem = f"read {got} of {size} bytes from the source (short read)"
    return Outcome(key, FAILED, error=problem, errno=errno.EIO)


def _describe(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{os.strerror(exc.errno) if exc.errno else exc}{where}"
