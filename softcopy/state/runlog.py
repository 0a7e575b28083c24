"""The per-run log beside a copy: `DEST.softcopy/log.jsonl`, one JSON object per line.

Each run appends a `run_started` line, one line per file copied, re-copied, deleted or
given up on (the same objects as the `--json` per-file events), and a `run_ended` line.
`softcopy status` shows its last lines.

Bounded: when the log reaches `ROTATE_AT` bytes it is renamed to `log.1.jsonl` (replacing
the one before) and a new one is started, so the two together hold at most about twice
that. Lines are buffered and appended at most every `FLUSH_EVERY` seconds (or when the
buffer is full): a crash loses at most that much of the log, never anything of the copy.

Like every record, the log is opened relative to the records folder's descriptor with
O_NOFOLLOW (and must be a regular file), appended with O_APPEND, and renamed within the
folder: a link planted under either name is refused or replaced, never written through.
Writing the log never stops a copy: the first failure is logged once and the log is off
for the rest of the run.

An object store cannot append: there the log is one object rewritten whole, every
`OBJECT_FLUSH_EVERY` seconds rather than every second, and rotated like a file.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import time
from typing import Any

from ..errors import SoftcopyError
from ..names import json_record
from .records import LINK_PROBLEM, Records

log = logging.getLogger(__name__)

LOG = "log.jsonl"
OLDER = "log.1.jsonl"
ROTATE_AT = 8 * 1024 * 1024
FLUSH_EVERY = 1.0
IDLE_EVERY = 0.25  # with the copiers idle: a run waiting for its writer has its lines on disk
OBJECT_FLUSH_EVERY = 15.0  # each flush uploads the whole log (up to ROTATE_AT)
_BUFFER = 256 * 1024
_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class RunLog:
    """Appends lines to one records folder's log; thread-confined to its supervisor."""

    def __init__(self, records: Records, rotate_at: int = ROTATE_AT) -> None:
        self.records = records
        self.rotate_at = rotate_at
        # Records without a descriptor are objects: the log's body, rewritten whole.
        self._whole: bytearray | None = None if hasattr(records, "fd") else bytearray()
        self._read_whole = False
        self._every = FLUSH_EVERY if self._whole is None else OBJECT_FLUSH_EVERY
        self._lines: list[bytes] = []
        self._buffered = 0
        self._flushed_at = time.monotonic()
        self._size: int | None = None  # of the current log, once opened
        self._ends: tuple[tuple[str, str], str] | None = None  # add_file's paths, encoded
        self.broken = False

    def add(self, record: dict[str, Any]) -> None:
        """One line; appended at the next flush (at most FLUSH_EVERY seconds from now)."""
        if self.broken:
            return
        data = _line(record)
        self._lines.append(data)
        self._buffered += len(data)
        if self._buffered >= _BUFFER or time.monotonic() - self._flushed_at >= self._every:
            self.flush()

    def add_file(
        self,
        event: str,
        when: float,
        ends: tuple[str, str],
        key: str,
        fields: dict[str, Any],
    ) -> None:
        """`add({"schema": 1, "event": event, "time": when, "source": ends[0],
        "destination": ends[1], "key": key} | fields)`, byte for byte, without the record.

        A writer at full speed makes a line per chunk file: its JSON is written here from
        parts (the two paths encoded once per run), about a third of the cost of
        json.dumps of a record. Anything this does not spell exactly as json.dumps would
        (a value neither str nor int, a name that is not UTF-8) takes add()'s way."""
        if self.broken:
            return
        data = self._file_line(event, when, ends, key, fields)
        if data is None:
            record = {"event": event, "time": when, "source": ends[0], "destination": ends[1]}
            return self.add({"schema": 1} | record | {"key": key} | fields)
        self._lines.append(data)
        self._buffered += len(data)
        if self._buffered >= _BUFFER or time.monotonic() - self._flushed_at >= self._every:
            self.flush()

    def _file_line(
        self, event: str, when: float, ends: tuple[str, str], key: str, fields: dict[str, Any]
    ) -> bytes | None:
        if self._ends is None or self._ends[0] != ends:
            head = f',"source":{_text(ends[0])},"destination":{_text(ends[1])},"key":'
            self._ends = (ends, head)
        parts = ['{"schema":1,"event":', _text(event), ',"time":', repr(when), self._ends[1]]
        parts.append(_text(key))
        for name, value in fields.items():
            kind = type(value)
            if kind is str:
                parts.append(f",{_text(name)}:{_text(value)}")
            elif kind is int:
                parts.append(f",{_text(name)}:{value:d}")
            else:  # floats, bools, None, str and int subclasses: json.dumps' own way
                return None
        parts.append("}\n")
        try:
            return "".join(parts).encode("utf-8")
        except UnicodeEncodeError:  # surrogate escapes: add() writes names_hex
            return None

    def flush(self) -> None:
        self._flushed_at = time.monotonic()
        if self.broken or not self._lines:
            return
        data = b"".join(self._lines)
        self._lines.clear()
        self._buffered = 0
        try:
            self._append(data)
        except SoftcopyError as exc:  # an object store's refusal, already in words
            self.broken = True
            log.warning("cannot write the run log: %s; the copy goes on without it", exc)
        except OSError as exc:
            self.broken = True
            problem = LINK_PROBLEM if exc.errno == errno.ELOOP else exc.strerror or str(exc)
            log.warning(
                "cannot write the run log %s: %s; the copy goes on without it",
                self.records / LOG,
                problem,
            )

    def idle(self) -> None:
        """The copiers are idle: nothing to batch lines with. A file is appended to, at most
        every IDLE_EVERY (copiers that keep up with a fast writer fall idle many times a
        second, and each append opens the log); an object store's log waits for its
        interval (each flush uploads it whole). The caller calls again while idle, so the
        last lines are not left waiting."""
        every = IDLE_EVERY if self._whole is None else self._every
        if self._lines and time.monotonic() - self._flushed_at >= every:
            self.flush()

    def _append(self, data: bytes) -> None:
        if self._whole is not None:
            return self._rewrite(data)
        if self._size is not None and self._size >= self.rotate_at:
            # renameat within the folder: replaces a link at the older name, never follows it.
            os.rename(LOG, OLDER, src_dir_fd=self.records.fd, dst_dir_fd=self.records.fd)
        # O_NONBLOCK: a fifo planted under the name fails (ENXIO) instead of hanging.
        fd = os.open(LOG, _FLAGS, 0o644, dir_fd=self.records.fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, "it is not a regular file")
            os.set_blocking(fd, True)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            self._size = st.st_size + len(data)
        finally:
            os.close(fd)

    def _rewrite(self, data: bytes) -> None:
        whole = self._whole
        assert whole is not None
        if not self._read_whole:  # what earlier runs logged goes on being the log's start
            self._read_whole = True
            try:
                whole += self.records.read(LOG)
            except FileNotFoundError:
                pass
        if len(whole) >= self.rotate_at:
            self.records.write(OLDER, bytes(whole))
            whole.clear()
        whole += data
        self.records.write(LOG, bytes(whole))


# json.dumps' own string encoder (ensure_ascii=False): the same escapes, the same bytes.
_text = json.encoder.encode_basestring


def _line(record: dict[str, Any]) -> bytes:
    """Strict UTF-8 JSON whatever the names' bytes, like --json (names.json_record).

    The common case (names that are UTF-8) skips json_record's walk over the record,
    the larger part of the cost of a line: a name that is not fails to encode (its
    surrogate escapes), and only then is the record rewritten."""
    try:
        text = json.dumps(record, default=str, separators=(",", ":"), ensure_ascii=False)
        return (text + "\n").encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(json_record(record), default=str, separators=(",", ":"))
        return (text + "\n").encode("utf-8")


def read_tail(records: Records, lines: int = 20) -> list[dict[str, Any]]:
    """The log's last `lines` objects (oldest first); [] when there is none. For `status`:
    a line that is not JSON (a torn last line after a crash) is skipped."""
    out: list[dict[str, Any]] = []
    for name in (LOG, OLDER):
        try:
            tail = _tail(records, name, 512 * 1024)  # the tail only: a log is up to ROTATE_AT
        except FileNotFoundError:
            continue
        found = []
        for raw in tail.splitlines():
            try:
                found.append(json.loads(raw))
            except ValueError:
                continue
        out = found + out
        if len(out) >= lines:
            break
    return out[-lines:]


def _tail(records: Records, name: str, most: int) -> bytes:
    """The last `most` bytes of a record (an object store's is read whole)."""
    if not hasattr(records, "open_fd"):
        return records.read(name)[-most:]
    with os.fdopen(records.open_fd(name), "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - most))
        return f.read()
