"""The local SQLite record: each target's state, and which source version of each file was copied.

Only the supervisor writes it, one connection per target thread. A row in
`files` is written only after the destination filesystem was flushed, so the
journal never claims a file that a power cut could still take away; a file
copied but not yet recorded is compared, not trusted, on resume.

Names (keys, source and destination paths) are bytes on Linux; Python hands them
over as `str` with undecodable bytes surrogate-escaped. A name whose bytes are
valid UTF-8 is stored as TEXT, any other as a BLOB of its bytes: one
representation per name, so primary keys stay unique, and journals written
before names could be BLOBs need no rewrite.

The schema is versioned (`PRAGMA user_version`, with softcopy's
`application_id`). A journal of an older version is migrated in one
transaction; one from a newer softcopy, or a database that is not a softcopy
journal, is refused and never written.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..sources.scan import Version
from ..states import RUNNING_STATES

log = logging.getLogger("softcopy")

JOURNAL = "journal.sqlite"
SCHEMA_VERSION = 2
APPLICATION_ID = 0x53434A4C  # "SCJL": tells a softcopy journal from any other SQLite file

# Version 0 is the journal before it had a version: these tables, no ctime_ns, no owner.
SCHEMA = """
CREATE TABLE targets (
    id INTEGER PRIMARY KEY,
    destination TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    started REAL NOT NULL,
    updated REAL NOT NULL,
    files_copied INTEGER NOT NULL DEFAULT 0,
    bytes_copied INTEGER NOT NULL DEFAULT 0,
    files_pending INTEGER NOT NULL DEFAULT 0,
    bytes_pending INTEGER NOT NULL DEFAULT 0,
    host TEXT NOT NULL DEFAULT '',
    boot_id TEXT NOT NULL DEFAULT '',
    pid INTEGER NOT NULL DEFAULT 0,
    pid_started INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE files (
    target INTEGER NOT NULL REFERENCES targets(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    digest TEXT NOT NULL DEFAULT '',
    ctime_ns INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (target, key)
) WITHOUT ROWID;
CREATE TABLE failures (
    target INTEGER NOT NULL REFERENCES targets(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    error TEXT NOT NULL,
    PRIMARY KEY (target, key)
) WITHOUT ROWID;
"""

# Version 2: the service's runs (softcopy watch). `runs_v1` is the read-only interface for
# downstream tools (docs/service.md): its columns only ever grow; a change that would
# alter one gets a new view (runs_v2) beside it.
RUNS_SCHEMA = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    source_root TEXT NOT NULL,
    run TEXT NOT NULL,
    source TEXT NOT NULL,
    destination TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    finished_because TEXT NOT NULL DEFAULT '',
    end_rule TEXT NOT NULL DEFAULT '',
    safe_to_free INTEGER,
    files INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    discovered REAL NOT NULL,
    started REAL,
    ended REAL,
    next_attempt REAL,
    error TEXT NOT NULL DEFAULT '',
    certificate TEXT,
    owner TEXT NOT NULL DEFAULT '',
    hook_command TEXT NOT NULL DEFAULT '',
    hook_exit_code INTEGER,
    hook_error TEXT NOT NULL DEFAULT '',
    hook_output TEXT NOT NULL DEFAULT '',
    released REAL,
    released_to TEXT,
    UNIQUE (source_root, run)
);
CREATE INDEX runs_by_destination ON runs (destination);
CREATE INDEX runs_by_state ON runs (source_root, state);
CREATE VIEW runs_v1 AS SELECT
    run, source_root, source, destination, kind, state, attempts, finished_because, end_rule,
    safe_to_free, files, bytes,
    strftime('%Y-%m-%dT%H:%M:%SZ', discovered, 'unixepoch') AS discovered,
    strftime('%Y-%m-%dT%H:%M:%SZ', started, 'unixepoch') AS started,
    strftime('%Y-%m-%dT%H:%M:%SZ', ended, 'unixepoch') AS ended,
    strftime('%Y-%m-%dT%H:%M:%SZ', next_attempt, 'unixepoch') AS next_attempt,
    error, certificate, owner, hook_command, hook_exit_code, hook_error, hook_output,
    strftime('%Y-%m-%dT%H:%M:%SZ', released, 'unixepoch') AS released, released_to
FROM runs;
"""

# What a journal of version 0 has; anything else under that version is not ours.
_V0_COLUMNS = {
    "targets": {
        "id", "destination", "source", "state", "reason", "error", "started", "updated",
        "files_copied", "bytes_copied", "files_pending", "bytes_pending",
    },
    "files": {"target", "key", "size", "mtime_ns", "ino", "digest"},
    "failures": {"target", "key", "error"},
}  # fmt: skip

# Statements each migration runs, before the columns it adds.
_CREATES: dict[int, str] = {1: RUNS_SCHEMA}

# Columns each migration adds: (table, column, definition). Rows of version 0 have
# ctime_ns 0, which matches no current version: they are compared on resume, never
# trusted. Their owner is unknown (pid 0).
_MIGRATIONS: dict[int, list[tuple[str, str, str]]] = {
    0: [
        ("files", "ctime_ns", "INTEGER NOT NULL DEFAULT 0"),
        ("targets", "host", "TEXT NOT NULL DEFAULT ''"),
        ("targets", "boot_id", "TEXT NOT NULL DEFAULT ''"),
        ("targets", "pid", "INTEGER NOT NULL DEFAULT 0"),
        ("targets", "pid_started", "INTEGER NOT NULL DEFAULT 0"),
    ],
    1: [],
}


RESET_ADVICE = (
    "run the same `softcopy copy`, `softcopy run` or `softcopy watch` command again with "
    "--reset-journal to "
    "move it aside (journal.sqlite.damaged-<time>) and start a new journal: files already at "
    "the destination are then compared with the source, byte for byte, not trusted"
)

_ELSEWHERE = "choose another with --state-dir (a local, writable directory)"

# SQLite result codes (the low byte of an extended code) that mean the file is not sound.
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26

_checked: set[tuple[int, int, int]] = set()  # (dev, ino, mtime_ns) that passed quick_check
_checked_lock = threading.Lock()


class JournalDamaged(ConfigError):
    """The journal's file is corrupt or not a softcopy journal: --reset-journal sets it aside."""


def default_state_dir() -> Path:
    """$XDG_STATE_HOME/softcopy: local to this machine, never the destination's filesystem."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(base) / "softcopy"


# ---- names ------------------------------------------------------------------------------


def to_db(name: str) -> str | bytes:
    """A name as the journal stores it: TEXT when its bytes are UTF-8, else those bytes."""
    if name.isascii():  # nearly every chunk key: no round trip through bytes
        return name
    raw = os.fsencode(name)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def from_db(value: str | bytes) -> str:
    """The name back as os.scandir gives it (surrogate-escaped where not UTF-8)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


# ---- the process that runs a target -----------------------------------------------------


def process_start(pid: int) -> int | None:
    """Clock ticks after boot at which `pid` started (/proc/PID/stat field 22); None if
    there is no such process or it is a zombie (it has ended)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    if fields[0] == b"Z":
        return None
    return int(fields[19])


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def owner_alive(host: str, boot: str, pid: int, started: int) -> bool | None:
    """Is the process recorded as running a target still that process? None: cannot tell
    (not recorded, or on another host)."""
    if not pid or host != socket.gethostname():
        return None
    if boot and boot != boot_id():
        return False  # this machine restarted since
    return process_start(pid) == started


# ---- opening ----------------------------------------------------------------------------


def _is_damage(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc)
    return "malformed" in text or "not a database" in text


def _translate(path: Path, action: str, exc: sqlite3.Error) -> ConfigError:
    if _is_damage(exc):
        return JournalDamaged(path, action, f"it is damaged ({exc}); {RESET_ADVICE}")
    return ConfigError(path, action, f"{exc}; {_ELSEWHERE}")


def _refuse_links(path: Path) -> None:
    """softcopy's own records are never written through a link."""
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if name.is_symlink():
            raise ConfigError(
                name,
                "open journal",
                "it is a symbolic link, which softcopy never writes through; "
                "remove it or choose another --state-dir",
            )


def _schema_version(db: sqlite3.Connection, path: Path) -> int | None:
    """The journal's schema version; None for an empty database. Raises for a journal
    of a newer softcopy or a database that is not a softcopy journal."""
    app = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = {
        name
        for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    _check_identity(path, app, version)
    if app == APPLICATION_ID:
        if version >= 1 and {"targets", "files", "failures"} <= tables:
            return version
    elif version == 0:
        if not tables:
            return None
        if tables == set(_V0_COLUMNS) and all(
            _V0_COLUMNS[t] <= _columns(db, t) for t in _V0_COLUMNS
        ):
            return 0
    raise _foreign(path, f"application id {app}, version {version}, tables {sorted(tables)}")


def _check_identity(path: Path, app: int, version: int) -> None:
    """Refuse, from the header alone, a journal of a newer softcopy or another program."""
    if app == APPLICATION_ID and version > SCHEMA_VERSION:
        raise ConfigError(
            path,
            "open journal",
            f"it was written by a newer softcopy (journal version {version}; this softcopy "
            f"reads versions up to {SCHEMA_VERSION}); use that softcopy, or give this one "
            "another --state-dir",
        )
    if app not in (0, APPLICATION_ID) or (app == 0 and version != 0):
        raise _foreign(path, f"application id {app}, version {version}")


def _foreign(path: Path, what: str) -> JournalDamaged:
    return JournalDamaged(
        path,
        "open journal",
        f"it is an SQLite database but not a softcopy journal ({what}); move it away, give "
        f"another --state-dir, or {RESET_ADVICE}",
    )


def _read_header(path: Path) -> tuple[int, int]:
    """(application_id, user_version) from the file's first 100 bytes, without SQLite:
    refusing a journal must not even leave a -wal or -shm beside it."""
    try:
        with open(path, "rb") as f:
            head = f.read(100)
    except OSError as exc:
        raise ConfigError(path, "read journal", exc.strerror or str(exc)) from exc
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        raise JournalDamaged(
            path, "open journal", f"it is not an SQLite database (no SQLite header); {RESET_ADVICE}"
        )
    return int.from_bytes(head[68:72], "big", signed=True), int.from_bytes(
        head[60:64], "big", signed=True
    )


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def _quick_check(db: sqlite3.Connection, path: Path) -> None:
    """Corrupt pages fail here, at open, rather than mid-copy (0.15 s per million files)."""
    st = path.stat()
    stamp = (st.st_dev, st.st_ino, st.st_mtime_ns)
    with _checked_lock:
        if stamp in _checked:
            return
    problems = [" ".join(row[0].split()) for row in db.execute("PRAGMA quick_check(3)")]
    if problems != ["ok"]:
        raise JournalDamaged(
            path, "open journal", f"it is damaged ({'; '.join(problems)}); {RESET_ADVICE}"
        )
    with _checked_lock:
        _checked.add(stamp)


def _inspect(path: Path, immutable: bool = False) -> tuple[sqlite3.Connection, int | None]:
    """A read-only connection to an existing journal that passed the checks, and its
    version. Reading never writes: a refused journal is left exactly as it was."""
    _refuse_links(path)
    app, version = _read_header(path)
    _check_identity(path, app, version)
    # Not (yet) ours: read as it is, so that even a refused file gains no -wal or -shm.
    if app != APPLICATION_ID and not os.path.exists(f"{path}-wal"):
        immutable = True
    flags = "mode=ro&immutable=1" if immutable else "mode=ro"
    db = sqlite3.connect(f"{path.absolute().as_uri()}?{flags}", uri=True, timeout=30)
    try:
        version = _schema_version(db, path)
        _quick_check(db, path)
    except sqlite3.Error as exc:
        db.close()
        raise _translate(path, "open journal", exc) from exc
    except BaseException:
        db.close()
        raise
    return db, version


# Targets of one `run` open the journal at the same moment from their threads; creating
# it and switching it to WAL takes locks SQLite reports as "locked" without waiting.
_OPEN_LOCK = threading.Lock()
_OPEN_PATIENCE = 30.0


def open_db(state_dir: Path, any_thread: bool = False) -> sqlite3.Connection:
    """A read-write connection to the journal, created or migrated to SCHEMA_VERSION.

    `any_thread`: opened in one thread, used (one thread at a time) in another."""
    deadline = time.monotonic() + _OPEN_PATIENCE
    delay = 0.01
    while True:
        try:
            with _OPEN_LOCK:
                return _open_db(state_dir, any_thread)
        except ConfigError as exc:
            # Another process creating or migrating it: wait, as a busy timeout would.
            locked = isinstance(exc.__cause__, sqlite3.OperationalError) and "locked" in str(
                exc.__cause__
            )
            if not locked or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def _open_db(state_dir: Path, any_thread: bool = False) -> sqlite3.Connection:
    path = state_dir / JOURNAL
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        problem = exc.strerror or str(exc)
        raise ConfigError(state_dir, "create state directory", f"{problem}; {_ELSEWHERE}") from exc
    _refuse_links(path)
    if path.exists() and path.stat().st_size > 0:
        probe, _ = _inspect(path)
        probe.close()
    try:
        db = sqlite3.connect(
            path, timeout=30, isolation_level=None, check_same_thread=not any_thread
        )
    except sqlite3.Error as exc:
        raise _translate(path, "open journal", exc) from exc
    try:
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk when it returns. Commits are per checkpoint
        # (seconds apart), so this costs nothing that shows.
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        with db:
            db.execute("BEGIN IMMEDIATE")
            # Read again under the write lock: another process may have just created
            # or migrated it.
            _upgrade(db, _schema_version(db, path))
    except sqlite3.Error as exc:
        db.close()
        raise _translate(path, "open journal", exc) from exc
    except BaseException:
        db.close()
        raise
    return db


def _upgrade(db: sqlite3.Connection, version: int | None) -> None:
    """Create the schema, or migrate it step by step; inside the caller's transaction."""
    if version is None:
        _execute_all(db, SCHEMA + RUNS_SCHEMA)
    else:
        for step in range(version, SCHEMA_VERSION):
            _execute_all(db, _CREATES.get(step, ""))
            for table, column, definition in _MIGRATIONS[step]:
                if column not in _columns(db, table):
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _execute_all(db: sqlite3.Connection, script: str) -> None:
    # Statement by statement: executescript would commit the caller's transaction.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def reset(state_dir: Path) -> Path:
    """Move the journal and its -wal and -shm aside; returns where the journal went."""
    path = state_dir / JOURNAL
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = state_dir / f"{JOURNAL}.damaged-{stamp}"
    n = 1
    while aside.exists() or aside.is_symlink():
        aside = state_dir / f"{JOURNAL}.damaged-{stamp}-{n}"
        n += 1
    # The -wal and -shm keep their suffixes, so SQLite finds them next to the set-aside
    # file if someone opens it to see what it still holds.
    for suffix in ("-wal", "-shm", ""):
        try:
            os.rename(f"{path}{suffix}", f"{aside}{suffix}")
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ConfigError(
                f"{path}{suffix}", "move damaged journal aside", exc.strerror or str(exc)
            ) from exc
    return aside


@contextmanager
def _state_dir_locked(state_dir: Path) -> Iterator[None]:
    """One reset at a time, across threads and processes: a second one must find the new
    journal sound, not move it aside too."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _open_or_reset(state_dir: Path, reset_damaged: bool) -> sqlite3.Connection:
    if not reset_damaged:
        return open_db(state_dir)
    try:
        with _state_dir_locked(state_dir):
            try:
                db = open_db(state_dir)
            except JournalDamaged as exc:
                aside = reset(state_dir)
                log.warning(
                    "%s: %s; moved it aside to %s and started a new journal: files already "
                    "at the destination are compared with the source, not trusted",
                    exc.path,
                    exc.problem.split(";")[0],
                    aside,
                )
                return open_db(state_dir)
    except OSError as exc:
        raise ConfigError(state_dir, "lock state directory", exc.strerror or str(exc)) from exc
    log.info("%s: the journal is sound; --reset-journal left it in place", state_dir / JOURNAL)
    return db


class Journal:
    """One target's records."""

    def __init__(
        self, state_dir: Path, source: str, destination: str, reset_damaged: bool = False
    ) -> None:
        self.path = state_dir / JOURNAL
        self.broken: ConfigError | None = None
        # The target's (started, updated) as this opening found them, before it changed
        # them: a destination side begun before this opening (early_match.py) read the same
        # pair, or a run came between.
        self.previous: tuple | None = None
        self.db = _open_or_reset(state_dir, reset_damaged)
        src, dst = to_db(source), to_db(destination)
        owner = (socket.gethostname(), boot_id(), os.getpid(), process_start(os.getpid()) or 0)
        now = time.time()
        with self._guard("record target in journal"), self.db:
            self.db.execute("BEGIN IMMEDIATE")
            row = self.db.execute(
                "SELECT id, source, started, updated FROM targets WHERE destination = ?", (dst,)
            ).fetchone()
            if row is not None and row[1] != src:
                # Another source into the same destination: its records say nothing here.
                self.db.execute("DELETE FROM targets WHERE id = ?", (row[0],))
                row = None
            if row is None:
                cur = self.db.execute(
                    "INSERT INTO targets (destination, source, state, started, updated)"
                    " VALUES (?, ?, 'waiting', ?, ?)",
                    (dst, src, now, now),
                )
                self.id = int(cur.lastrowid or 0)
            else:
                self.id = int(row[0])
                self.previous = (row[2], row[3])
                self.db.execute(
                    "UPDATE targets SET state='waiting', reason='', error='', started=?, updated=?"
                    " WHERE id=?",
                    (now, now, self.id),
                )
            self.db.execute(
                "UPDATE targets SET host=?, boot_id=?, pid=?, pid_started=? WHERE id=?",
                (*owner, self.id),
            )

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        """SQLite errors become one clear error naming the journal; after the first, the
        journal is left alone, so the error that stopped the run is the one reported."""
        try:
            yield
        except sqlite3.Error as exc:
            self.broken = _translate(self.path, action, exc)
            raise self.broken from exc

    def close(self) -> None:
        self.db.close()

    def copied_files(self) -> dict[str, tuple[Version, str]]:
        """What earlier runs copied, by the source version copied, with its BLAKE3 if taken."""
        with self._guard("read journal"):
            return _copied(self.db, self.id)

    def copied_of(self, keys: list[str]) -> dict[str, tuple[Version, str]]:
        """copied_files() for these keys only: a rerun asks a directory's worth at a time."""
        with self._guard("read journal"):
            return _copied_of(self.db, self.id, keys)

    def holds(self, files: int) -> bool:
        """Whether earlier runs recorded at least `files` copied files (a large rerun)."""
        with self._guard("read journal"):
            row = self.db.execute(
                "SELECT 1 FROM files WHERE target = ? LIMIT 1 OFFSET ?", (self.id, files - 1)
            ).fetchone()
        return row is not None

    def set_state(self, state: str, reason: str = "", error: str = "") -> None:
        if self.broken is not None:
            return
        with self._guard("record state in journal"):
            self.db.execute(
                "UPDATE targets SET state=?, reason=?, error=?, updated=? WHERE id=?",
                (state, to_db(reason), to_db(error), time.time(), self.id),
            )

    def checkpoint(
        self,
        copied: Iterable[tuple[str, Version, str]],
        deleted: Iterable[str],
        failures: dict[str, str],
        progress: dict[str, int],
    ) -> None:
        """Record, in one transaction, what is now durable at the destination."""
        if self.broken is not None:
            return
        with self._guard("record copied files in journal"), self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(
                "INSERT OR REPLACE INTO files (target, key, size, mtime_ns, ino, ctime_ns, digest)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    (self.id, to_db(k), v.size, v.mtime_ns, v.ino, v.ctime_ns, d)
                    for k, v, d in copied
                ),
            )
            self.db.executemany(
                "DELETE FROM files WHERE target = ? AND key = ?",
                ((self.id, to_db(k)) for k in deleted),
            )
            self.db.execute("DELETE FROM failures WHERE target = ?", (self.id,))
            self.db.executemany(
                "INSERT INTO failures (target, key, error) VALUES (?, ?, ?)",
                ((self.id, to_db(k), to_db(e)) for k, e in failures.items()),
            )
            self.db.execute(
                "UPDATE targets SET updated=?, files_copied=?, bytes_copied=?, files_pending=?,"
                " bytes_pending=? WHERE id=?",
                (
                    time.time(),
                    progress.get("files_copied", 0),
                    progress.get("bytes_copied", 0),
                    progress.get("files_pending", 0),
                    progress.get("bytes_pending", 0),
                    self.id,
                ),
            )


def _copied(db: sqlite3.Connection, target: int) -> dict[str, tuple[Version, str]]:
    # A journal of version 0 read without migrating (status, --dry-run) has no ctime_ns.
    ctime = "ctime_ns" if "ctime_ns" in _columns(db, "files") else "0"
    rows = db.execute(
        f"SELECT key, size, mtime_ns, ino, {ctime}, digest FROM files WHERE target = ?", (target,)
    )
    # A rerun reads every row: streamed (no list of them all beside the dict), Versions made
    # without NamedTuple's argument handling, UTF-8 keys (nearly all) taken as they come.
    make = tuple.__new__
    return {
        (k if k.__class__ is str else from_db(k)): (make(Version, (s, m, i, c)), d)
        for k, s, m, i, c, d in rows
    }


# Keys per query: under SQLite's oldest limit on parameters (999), with the target's. Fewer
# queries of more keys each were a quarter of a rerun's lookup time over 500.
_LOOKUP = 998


def _copied_of(
    db: sqlite3.Connection, target: int, keys: list[str]
) -> dict[str, tuple[Version, str]]:
    make = tuple.__new__
    return {
        (k if k.__class__ is str else from_db(k)): (make(Version, (size, m, ino, c)), d)
        for k, size, m, ino, c, d in copied_rows(db, target, keys)
    }


def copied_rows(db: sqlite3.Connection, target: int, keys: list[str]) -> list[tuple]:
    """(key as stored, size, mtime_ns, ino, ctime_ns, digest) of those keys the journal has
    rows for, in no order; a key stored as bytes (not UTF-8) comes back as bytes."""
    out: list[tuple] = []
    for i in range(0, len(keys), _LOOKUP):
        # Nearly every key is ASCII, stored as it is: no encoding round trip for those.
        chunk = [k if k.isascii() else to_db(k) for k in keys[i : i + _LOOKUP]]
        out += db.execute(
            "SELECT key, size, mtime_ns, ino, ctime_ns, digest FROM files"
            f" WHERE target = ? AND key IN ({','.join('?' * len(chunk))})",
            (target, *chunk),
        ).fetchall()
    return out


def copied_at(db: sqlite3.Connection, target: int, keys: list[str]) -> list[tuple]:
    """(size, mtime_ns, ino, ctime_ns, digest) of each of `keys`, in their order, None in
    every field where the journal has no row. No key comes back: no string per row, and no
    dict to find the rows by."""
    out: list[tuple] = []
    for i in range(0, len(keys), _LOOKUP):
        chunk = [k if k.isascii() else to_db(k) for k in keys[i : i + _LOOKUP]]
        # Positions within the chunk are literals: one statement text per chunk size, so
        # SQLite prepares it once.
        values = ",".join([f"({j},?)" for j in range(len(chunk))])
        rows = db.execute(
            "SELECT v.column1, f.size, f.mtime_ns, f.ino, f.ctime_ns, f.digest FROM"
            f" (VALUES {values}) AS v LEFT JOIN files AS f ON f.target = ? AND f.key = v.column2",
            (*chunk, target),
        ).fetchall()
        # The join runs in the order of its values; nothing promises it, so it is checked.
        if [r[0] for r in rows] != list(range(len(chunk))):
            rows.sort()
        out += [r[1:] for r in rows]
    return out


_NO_ROW = (None, None, None, None, None)


def copied_in(
    db: sqlite3.Connection, target: int, directory: str, names: list[str]
) -> list[tuple] | None:
    """copied_at for files `names` of `directory` (not the root), read as one range of the
    journal's keys, which is sorted by them: a walk along the index instead of a search per
    key. None where the range cannot stand in for the keys: a name that is not ASCII (the
    journal may hold its key as bytes, outside a range of text) or a range holding far more
    rows than names (a subtree below it): copied_at then."""
    prefix = directory + "/"
    if not directory or not (prefix + "".join(names)).isascii():
        return None
    limit = 2 * len(names) + 64
    # Every key that starts with "d/" sorts from "d/" up to "d0" ("0" follows "/").
    rows = db.execute(
        "SELECT key, size, mtime_ns, ino, ctime_ns, digest FROM files"
        " WHERE target = ? AND key >= ? AND key < ? LIMIT ?",
        (target, prefix, directory + "0", limit),
    ).fetchall()
    if len(rows) >= limit:
        return None
    cut = len(prefix)
    found = {r[0][cut:]: r[1:] for r in rows}
    get = found.get
    return [get(n, _NO_ROW) for n in names]


def is_current(path: Path) -> bool:
    """Whether `path` is a journal of this softcopy's schema, none of its files a link: one
    a reader may open before a `Journal` has (reading one to be refused, or migrated, would
    leave a -wal and -shm beside it)."""
    if any(os.path.islink(p) for p in (path, f"{path}-wal", f"{path}-shm")):
        return False
    try:
        return _read_header(path) == (APPLICATION_ID, SCHEMA_VERSION)
    except ConfigError:
        return False


def open_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection to a journal that a `Journal` of another process holds open
    (a rerun's destination side, engine/prematch.py): it never writes, never migrates."""
    return sqlite3.connect(f"file:{urllib.parse.quote(os.fspath(path))}?mode=ro", uri=True)


def read_status(state_dir: Path) -> list[dict[str, Any]]:
    """Every target the journal knows, for `softcopy status`; read-only, never migrates.

    A target recorded as running whose process is gone (ended, or its pid now another
    process's) is shown `interrupted`, with `recorded_state` saying what it was doing.
    """
    path = state_dir / JOURNAL
    if not path.exists() or path.stat().st_size == 0:
        return []
    db, version = _inspect(path)
    try:
        if version is None:
            return []
        db.row_factory = sqlite3.Row
        targets = [dict(r) for r in db.execute("SELECT * FROM targets ORDER BY updated DESC")]
        for t in targets:
            for name in ("source", "destination", "reason", "error"):
                t[name] = from_db(t[name])
            files, nbytes = db.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM files WHERE target = ?", (t["id"],)
            ).fetchone()
            t["files_done"], t["bytes_done"] = files, nbytes
            t["failures"] = {
                from_db(r["key"]): from_db(r["error"])
                for r in db.execute("SELECT key, error FROM failures WHERE target = ?", (t["id"],))
            }
            _judge_owner(t)
        return targets
    except sqlite3.Error as exc:
        raise _translate(path, "read journal", exc) from exc
    finally:
        db.close()


def _judge_owner(t: dict[str, Any]) -> None:
    owner = (t.get("host", ""), t.get("boot_id", ""), t.get("pid", 0), t.get("pid_started", 0))
    t.pop("boot_id", None)
    t.pop("pid_started", None)
    t["running"] = None
    if t["state"] not in RUNNING_STATES:
        t["running"] = False
        return
    alive = owner_alive(*owner)
    t["running"] = alive
    if alive is False:
        t["recorded_state"] = t["state"]
        t["state"] = "interrupted"


def read_copied_files(
    state_dir: Path, destination: str, source: str, reset_damaged: bool = False
) -> dict[str, tuple[Version, str]]:
    """What the journal says was copied to `destination`, opened read-only (for --dry-run).

    A damaged journal is the same error as for a real run; with `reset_damaged` it
    vouches for nothing, as the new journal a real run would start.
    """
    path = state_dir / JOURNAL
    if not path.exists() or path.stat().st_size == 0:
        return {}
    # immutable: not even SQLite's -shm and -wal files may appear. Rows still in a
    # crashed run's WAL are not seen, which only turns "trust" into "compare".
    try:
        db, version = _inspect(path, immutable=True)
    except JournalDamaged:
        if reset_damaged:
            return {}
        raise
    try:
        if version is None:
            return {}
        row = db.execute(
            "SELECT id FROM targets WHERE destination = ? AND source = ?",
            (to_db(destination), to_db(source)),
        ).fetchone()
        return {} if row is None else _copied(db, row[0])
    except sqlite3.Error as exc:
        error = _translate(path, "read journal", exc)
        if reset_damaged and isinstance(error, JournalDamaged):
            return {}
        raise error from exc
    finally:
        db.close()
