"""Who copies a run: a claim record in the run's records, beside its copy.

The claim lives with the destination, not in the journal: the journal is local to one
host (SQLite must not live on a network filesystem), the destination is what two hosts
share. It is renewed while its owner works and removed when it stops.

- In a records folder, a claim is made by linking a complete private file to
  `claim.json` (link fails if the name exists, on local filesystems and NFSv3+ alike, and
  the record is whole the moment it has its name). A file cannot be replaced only if it
  is still the one read, so every later change (renewal, takeover, release) happens
  under a second exclusive record, `claim.takeover`, with the claim read again under it.
- In an object store (`PREFIX.softcopy/claim.json`), the store compares and swaps: the
  claim is put with If-None-Match: *, and every later change is conditional on the
  ETag of the version read (If-Match), so two takers cannot both win and a renewal never
  overwrites the claim of whoever took it over. The engine's lock on a bucket is made the
  same way (sinks/s3.py ObjectRecords).

A claim whose owner is gone is taken over:
- same host: its process is dead (pid and start time, boot id), at once;
- another host: its lease ran out, judged by *this* host's clock from when this host
  first saw the claim unchanged, so the two hosts' clocks never have to agree.

What this does not guarantee across hosts: an owner stalled (SIGSTOP, a frozen VM)
for longer than the lease loses its claim while it still believes it holds it; it
finds out at its next renewal and stops its copy, but the two may overlap for up to
one renewal interval. The engine's lock on the destination (flock, or the bucket's
conditional lock object) keeps them apart where the destination can.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, from_os_error
from ..state.journal import boot_id, owner_alive, process_start
from ..state.records import Records

if TYPE_CHECKING:  # boto3 is loaded only for an object-store destination
    from ..sinks.s3 import ObjectRecords

log = logging.getLogger("softcopy")

CLAIM = "claim.json"
TAKEOVER = "claim.takeover"


def _owner() -> dict[str, Any]:
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "boot_id": boot_id(),
        "pid": pid,
        "pid_started": process_start(pid) or 0,
    }


def owner_text(record: dict[str, Any]) -> str:
    return f"pid {record.get('pid')} on {record.get('host')}"


@dataclass
class Claim:
    """A claim this process holds. Renewed from one thread, released from another: the
    lock keeps the two apart (a release must never meet this process's own renewal)."""

    store: _Folder | _Objects
    record: dict[str, Any]
    tag: str = ""  # in an object store: the ETag of the claim as this process last wrote it
    _lock: threading.Lock = field(default_factory=threading.Lock)
    released: bool = False

    @property
    def records(self) -> Records | ObjectRecords:
        """The run's records, where the claim is (the watcher keeps its hooks record there)."""
        return self.store.records

    @property
    def token(self) -> str:
        return self.record["token"]

    def renew(self) -> bool:
        """Renew the lease; False when the claim was taken over (stop copying)."""
        with self._lock:
            if self.released:
                return True
            return self.store.renew(self)

    def release(self) -> None:
        """Remove the claim if it is still ours (never the claim of whoever took it over);
        the records close."""
        with self._lock:
            if self.released:
                return
            self.released = True
            try:
                self.store.release(self)
            finally:
                self.store.close()


@dataclass
class Busy:
    """Another owner holds the run: who, and since when this host saw it unchanged."""

    owner: str
    why: str


@dataclass
class Observations:
    """What this host saw of claims held elsewhere: claim path -> (token, renewals, first
    seen by the monotonic clock). Entries go when the claim does."""

    seen: dict[str, tuple[str, int, float]] = field(default_factory=dict)

    def unchanged_for(self, key: str, record: dict[str, Any], now: float) -> float:
        mark = (str(record.get("token")), _int(record.get("renewals")))
        before = self.seen.get(key)
        if before is None or before[:2] != mark:
            self.seen[key] = (*mark, now)
            return 0.0
        return now - before[2]

    def forget(self, key: str) -> None:
        self.seen.pop(key, None)


def claim(
    folder: Path | ObjectRecords,
    source: str,
    lease: float,
    observations: Observations,
    now: float | None = None,
) -> Claim | Busy:
    """Claim the run whose records are `folder`: a records folder (made if missing), or an
    object store's records prefix (sinks/s3.py `ObjectStore.records_of`)."""
    now = time.monotonic() if now is None else now
    store = _open(folder)
    key = str(store.records / CLAIM)
    try:
        record = {
            **_owner(),
            "token": uuid.uuid4().hex,
            "source": source,
            "lease_seconds": lease,
            "claimed": _now_iso(),
            "renewed": _now_iso(),
            "renewals": 0,
        }
        # Read first: a watcher that keeps finding a run held elsewhere writes nothing.
        current, tag = store.read()
        if current is None:
            made = store.create(record)
            if made is not None:
                observations.forget(key)
                return Claim(store, record, made)
            current, tag = store.read()
        if current is None:  # removed meanwhile: try again next time
            store.close()
            return Busy("unknown", "a claim record is being removed")
        gone = _gone(current, lease, observations.unchanged_for(key, current, now))
        if not gone:
            store.close()
            if current.get("damaged"):
                return Busy(
                    "unknown",
                    f"its claim record {key} is damaged ({current['damaged']}); "
                    f"taken over once unchanged for --lease {lease:g} s",
                )
            return Busy(owner_text(current), "it holds the claim")
        taken = store.take_over(current, tag, record)
        if taken is None:
            store.close()
            return Busy(owner_text(current), "another watcher is taking over its claim")
        log.warning(
            "%s: took over the claim of %s (%s)", key.rpartition("/")[0], owner_text(current), gone
        )
        observations.forget(key)
        return Claim(store, record, taken)
    except BaseException:
        store.close()
        raise


def _open(folder: Path | ObjectRecords) -> _Folder | _Objects:
    if isinstance(folder, str | os.PathLike):
        records = Records.open(Path(folder), create=True)
        assert records is not None
        return _Folder(records)
    return _Objects(folder)


def _gone(record: dict[str, Any], lease: float, unchanged: float) -> str:
    """Why the claim's owner is gone ("" while it may be alive)."""
    alive = _alive(record)
    if alive is False:
        return "its process is gone"
    if alive and _int(record.get("pid")) == os.getpid():
        # This very process, which holds no claim on the run now (it would not ask): one
        # left behind by an attempt that ended without releasing it.
        return "it is this process's own claim, left behind"
    if alive is True:
        return ""
    if unchanged >= lease:
        return f"its lease was not renewed for {unchanged:.0f} s (--lease {lease:g})"
    return ""


class _Folder:
    """Claims in a records folder: made exclusive by link(2), changed under `claim.takeover`.
    A tag is always "" here: a file has no version to compare with."""

    def __init__(self, records: Records) -> None:
        self.records = records

    def read(self) -> tuple[dict[str, Any] | None, str]:
        return _read(self.records, CLAIM), ""

    def create(self, record: dict[str, Any]) -> str | None:
        return "" if _create(self.records, CLAIM, record) else None

    def take_over(self, stale: dict[str, Any], tag: str, record: dict[str, Any]) -> str | None:
        guard = {**_owner(), "token": record["token"], "taking_over": stale.get("token")}
        if not _create(self.records, TAKEOVER, guard):
            holder = _read(self.records, TAKEOVER)
            if holder is None or not _takeover_abandoned(self.records, holder):
                return None
            self.records.unlink(TAKEOVER)
            if not _create(self.records, TAKEOVER, guard):
                return None
        try:
            current = _read(self.records, CLAIM)
            if current is not None and (
                current.get("token"),
                current.get("renewals"),
            ) != (stale.get("token"), stale.get("renewals")):
                return None  # renewed or taken over since we judged it
            self.records.write(CLAIM, _encode(record))
            return ""
        finally:
            self.records.unlink(TAKEOVER)

    def renew(self, held: Claim) -> bool:
        """Under the takeover record, as a takeover is: a renewal can never overwrite the
        claim of a watcher that took this one over meanwhile."""
        guard = {**_owner(), "token": held.token, "renewing": True}
        if not _create(self.records, TAKEOVER, guard):
            return True  # someone is taking over: the next renewal will know who won
        try:
            current = _read(self.records, CLAIM)
            if current is None or current.get("token") != held.token:
                return False
            held.record["renewals"] += 1
            held.record["renewed"] = _now_iso()
            self.records.write(CLAIM, _encode(held.record))
            return True
        finally:
            self.records.unlink(TAKEOVER)

    def release(self, held: Claim) -> None:
        guard = {**_owner(), "token": held.token, "releasing": True}
        # Another process's takeover takes milliseconds: wait it out briefly.
        for _ in range(50):
            if _create(self.records, TAKEOVER, guard):
                try:
                    current = _read(self.records, CLAIM)
                    if current is not None and current.get("token") == held.token:
                        self.records.unlink(CLAIM)
                finally:
                    self.records.unlink(TAKEOVER)
                return
            time.sleep(0.02)
        log.warning("%s: not released: a takeover is in progress", self.records.path)

    def close(self) -> None:
        if self.records.fd >= 0:
            self.records.close()


class _Objects:
    """Claims as an object: made by a conditional put, every change conditional on the
    ETag read. A tag is that ETag (the claim read, or the one this process wrote)."""

    def __init__(self, records: ObjectRecords) -> None:
        self.records = records

    def read(self) -> tuple[dict[str, Any] | None, str]:
        try:
            raw, etag = self.records.read_tagged(CLAIM)
        except FileNotFoundError:
            return None, ""
        return _parsed(raw, etag), etag

    def create(self, record: dict[str, Any]) -> str | None:
        return self.records.create(CLAIM, _encode(record))

    def take_over(self, stale: dict[str, Any], tag: str, record: dict[str, Any]) -> str | None:
        # Over the very version judged stale: a renewal or another taker since then wins.
        return self.records.replace(CLAIM, _encode(record), tag)

    def renew(self, held: Claim) -> bool:
        record = {**held.record, "renewals": held.record["renewals"] + 1, "renewed": _now_iso()}
        etag = self.records.replace(CLAIM, _encode(record), held.tag)
        if etag is None:
            return False
        held.record, held.tag = record, etag
        return True

    def release(self, held: Claim) -> None:
        self.records.remove(CLAIM, held.tag)  # refused when another holds it now: theirs

    def close(self) -> None:
        """Nothing held: the watcher's store owns the client."""


def _takeover_abandoned(records: Records, holder: dict[str, Any]) -> bool:
    """A takeover takes milliseconds: one whose taker died is stale. Same host: by its
    process; another host: once its record is far older than any takeover could take."""
    alive = _alive(holder)
    if alive is not None:
        return not alive
    try:
        st = os.stat(TAKEOVER, dir_fd=records.fd, follow_symlinks=False)
    except OSError:
        return True
    return time.time() - st.st_mtime > 600


def _create(records: Records, name: str, record: dict[str, Any]) -> bool:
    """Give `name` to a complete record, only if the name is free."""
    tmp = f".{name}.{record['host']}.{record['pid']}.{record['token']}.new"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o644, dir_fd=records.fd)
        try:
            os.write(fd, _encode(record))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, name, src_dir_fd=records.fd, dst_dir_fd=records.fd, follow_symlinks=False)
        except FileExistsError:
            return False
        os.fsync(records.fd)
        return True
    except OSError as exc:
        raise from_os_error(exc, "claim run", records / name) from exc
    finally:
        try:
            os.unlink(tmp, dir_fd=records.fd)
        except OSError:
            pass


def _alive(record: dict[str, Any]) -> bool | None:
    """owner_alive of a record that may hold anything (another version, a damaged file)."""
    return owner_alive(
        str(record.get("host", "")),
        str(record.get("boot_id", "")),
        _int(record.get("pid")),
        _int(record.get("pid_started")),
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _read(records: Records, name: str) -> dict[str, Any] | None:
    """The record; None when absent."""
    try:
        fd = records.open_fd(name)
        with os.fdopen(fd, "rb") as f:
            raw = f.read(1 << 20)
            st = os.fstat(f.fileno())
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(
                records / name,
                "read claim",
                "it is a symbolic link, which softcopy never follows in its records; remove it",
            ) from exc
        raise from_os_error(exc, "read claim", records / name) from exc
    return _parsed(raw, f"{st.st_size}:{st.st_mtime_ns}")


def _parsed(raw: bytes, stamp: str) -> dict[str, Any]:
    """A record that is not a JSON object (cut short, empty, written by something else) is
    a claim of an unknown owner whose version (`stamp`) stands for its token: unchanged
    for the lease, it is taken over."""
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data
    except ValueError as exc:
        problem = "empty" if not raw else f"not a claim record: {str(exc)[:80]}"
        return {"damaged": problem, "token": f"damaged:{stamp}"}


def _encode(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, indent=2) + "\n").encode()


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
