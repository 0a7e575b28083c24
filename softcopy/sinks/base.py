"""What the engine needs of a destination, so object storage or a tar stream can slot in.

A sink is one destination for one run. The engine drives it (lock, claim, probe,
space, listing, flush, markers, records); copier processes, separate interpreters,
rebuild it from a `SinkSpec` and only `put` files through it. Capabilities tell the
engine (and the contract tests) which promises a kind keeps by itself: without
`atomic_rename` a put must publish in one step some other way, without `deletes`
nothing is ever removed, and so on.

Imports only the standard library and modules below it: copiers import this.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Protocol

from ..sources.scan import Version

if TYPE_CHECKING:
    from ..config import TargetConfig
    from ..sources.scan import DirListing, ScanResult
    from ..state.records import RecordFile

Throttle = Callable[[int], None]

# Results of a put, one per key.
COPIED = "copied"  # destination now holds `version`
SAME = "same"  # destination already held identical bytes; only mode and mtime were set
DELETED = "deleted"  # source is gone and so is the destination file
CHANGED = "changed"  # the source changed while we copied; nothing was published
SKIPPED = "skipped"  # this kind cannot hold it (a link at an object store); nothing written
FAILED = "failed"


@dataclass(frozen=True)
class Outcome:
    key: str
    status: str
    version: Version | None = None
    nbytes: int = 0
    error: str = ""
    errno: int = 0
    digest: str = ""  # BLAKE3 of the bytes read from the source, when hashing
    # Wall clock (ns) taken just before the source was last seen unchanged: whether
    # `version` is proven depends on the filesystem's timestamp granularity (racy.py).
    checked_ns: int = 0
    # Of `nbytes`, what an interrupted earlier put had already uploaded (parts reused).
    resumed: int = 0


@dataclass(frozen=True)
class Capabilities:
    """What a kind of destination can do; the engine and the contract tests read these."""

    atomic_rename: bool  # publish by renaming a temporary onto the final name
    links: bool  # symbolic links are copied as links
    deletes: bool  # a file can be removed (an append-only stream cannot)
    partial_writes: bool  # a file is written in pieces (an object upload is one call)
    flush: bool  # a flush makes every put so far durable (syncfs)
    free_space: bool  # free bytes and inodes are known before copying
    listing: bool  # what the destination holds can be listed
    identity_lock: bool  # a second name of the same destination meets the same lock
    # A directory tree this machine opens by path: verification walks and reads both trees
    # directly (verify/compare.py) instead of through the sink.
    local_paths: bool = False


@dataclass(frozen=True)
class SinkSpec:
    """Everything a copier process needs to build the sink: plain, JSON-serialisable data."""

    kind: str
    location: str
    options: tuple[tuple[str, str], ...] = ()

    def as_dict(self) -> dict:
        return {"kind": self.kind, "location": self.location, "options": list(self.options)}

    @classmethod
    def from_dict(cls, data: dict) -> SinkSpec:
        options = tuple((str(k), str(v)) for k, v in data.get("options", ()))
        return cls(str(data["kind"]), str(data["location"]), options)


# Free bytes of a destination that has no figure for it (a bucket: quotas show as a failed put).
UNLIMITED = 1 << 62


@dataclass(frozen=True)
class Space:
    """Room left at the destination, and where that is, for messages."""

    free_bytes: int
    free_inodes: int | None  # None: no limit on the number of files
    block: int  # allocation unit: a small file takes at least this much
    mount: str  # the mount point (a bucket name for object storage)

    @property
    def where(self) -> str:
        return f"the destination filesystem (mounted at {self.mount})"


class RecordsFolder(Protocol):
    """softcopy's records beside the copy (state/records.Records for a local destination)."""

    def __truediv__(self, name: str) -> RecordFile: ...
    def read(self, name: str) -> bytes: ...
    def write(self, name: str, data: bytes) -> None: ...
    def has(self, name: str) -> bool: ...
    def unlink(self, name: str) -> None: ...
    def remove_stale_temporaries(self) -> None: ...
    def close(self) -> None: ...


class Sink(Protocol):
    """One destination. Errors the user can act on are SoftcopyError; a put never raises."""

    spec: SinkSpec
    capabilities: Capabilities
    records: RecordsFolder | None  # set by lock(), until close()
    lock_lost: str  # why the lock was lost while running ("" while it holds): stop then
    puts_in_flight: int  # puts a copier may have under way at once (threads)

    def lock(self) -> None:
        """Refuse a destination that is not one (a link, a file) and take the run's lock.

        ConfigError when another softcopy holds it. Before anything else is touched.
        """

    def create(self) -> bool:
        """Make the destination, take the identity lock; True when it already held entries."""

    def probe(self) -> None:
        """Fail once, up front (SoftcopyError), when the destination cannot take files."""

    def peek(self) -> tuple[bool, RecordsFolder | None]:
        """For a dry run, taking nothing: whether the destination holds anything, and its
        records to read (None when there are none)."""

    def foreign(self, src: str) -> str | None:
        """Why the destination cannot be a copy of `src` (it holds other things, none of them
        in the source, and no records say whose copy it is), or None."""

    def space(self) -> Space:
        """Free space now; for a destination not made yet, where it would be made."""

    def listing(self, exact: bool = True) -> ScanResult:
        """Every file (key -> Version), link and leftover temporary at the destination
        (`exact` as for listings)."""

    def listings(self, exact: bool = True) -> Iterator[DirListing]:
        """The same, a part at a time (a directory's), so nothing holds it whole; a part
        that cannot be listed is an empty listing whose `errors` name it. `exact` False:
        sizes are all the caller needs, so a store may give its own upload time as a file's
        mtime instead of asking for each object's recorded one."""

    def link_target(self, key: str) -> str | None:
        """What the link at `key` points to; None when it is not a link."""

    def version(self, key: str) -> Version | None:
        """The current version of what is at `key`, None when nothing is."""

    def open(self, key: str) -> BinaryIO:
        """The bytes at `key`, for verification (FileNotFoundError when absent)."""

    def flush(self) -> None:
        """Make every put so far durable before anything is recorded as copied."""

    def put(
        self,
        src_root: str,
        key: str,
        compare_first: bool = False,
        fsync: bool = False,
        digest: bool = False,
        throttle: Throttle | None = None,
    ) -> Outcome:
        """Bring `key` up to the source's current version (or delete it when gone)."""

    def delete(self, key: str) -> Outcome:
        """Remove `key`; DELETED also when it was not there."""

    def remove_temporaries(self, keys: Iterable[str]) -> None:
        """Remove leftover temporaries (keys from `listing().temporary`), quietly."""

    def discard_partial(self, keys: Iterable[str]) -> None:
        """Remove the temporaries of puts of these keys that never finished, quietly."""

    def write_markers(self, src_root: str, keys: list[str], digest: bool) -> dict[str, str]:
        """Publish the markers in order, durably, after everything else; key -> digest.

        Stops at the first that cannot be written (SoftcopyError), so a later one (the
        `complete` marker, last) never appears over an incomplete set.
        """

    def tidy(self) -> None:
        """After a verified copy: remove what only an interrupted put leaves behind where a
        listing does not show it (unfinished multipart uploads), quietly."""

    def release(self) -> None:
        """Drop cached handles (between batches); the sink reopens what it needs."""

    def close(self) -> None:
        """Release everything, locks included."""


# kind -> "module:class"; imported only when a sink of that kind is built, so a copier
# loads the code of its own kind only.
_KINDS = {
    "local": "softcopy.sinks.local:LocalDirectory",
    "s3": "softcopy.sinks.s3:ObjectStore",
}


def spec_of(cfg: TargetConfig) -> SinkSpec:
    """The spec of a target's destination, with its object-store options."""
    location = str(cfg.destination)
    if not location.startswith("s3://"):
        return spec_for(location)
    plain = cfg.s3_checksum == "sha256"
    options = {
        "multipart_threshold": str(cfg.multipart_threshold),
        "concurrency": str(cfg.s3_concurrency),
        "checksum": cfg.s3_checksum,
        "addressing_style": cfg.s3_addressing,
        "follow_links_inside": str(cfg.follow_links_inside).lower(),
        "read_timeout": repr(float(cfg.s3_timeout)),
        "connect_timeout": repr(min(10.0, float(cfg.s3_timeout))),
        # Stores that refuse checksum headers refuse boto3's own (CRC32, since 1.36) too:
        # with md5 or none, boto3 sends them only where an operation requires one.
        "request_checksum_calculation": "when_supported" if plain else "when_required",
        "response_checksum_validation": "when_supported" if plain else "when_required",
    }
    if cfg.s3_endpoint:
        options["endpoint_url"] = cfg.s3_endpoint
    return spec_for(location, options)


def spec_for(location: str, options: Mapping[str, str] | None = None) -> SinkSpec:
    """The spec of a destination as the user gave it: `s3://BUCKET/PREFIX`, or a directory.

    `options` (plain strings, never credentials) configure an object store; sorted, so
    the same destination always has the same spec.
    """
    if location.startswith("s3://"):
        return SinkSpec("s3", location, tuple(sorted((options or {}).items())))
    return SinkSpec("local", location)


def sink_from_spec(spec: SinkSpec) -> Sink:
    """Build the sink a spec describes (in a copier process, or in the engine).

    Each kind's class has `from_spec(spec)`: the spec is all a separate interpreter gets.
    """
    try:
        module_name, _, class_name = _KINDS[spec.kind].partition(":")
    except KeyError:
        raise ValueError(f"unknown kind of destination: {spec.kind!r}") from None
    return getattr(importlib.import_module(module_name), class_name).from_spec(spec)
