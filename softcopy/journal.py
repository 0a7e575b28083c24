"""The local SQLite record: each target's state, and which source version of each file was copied.

Only the supervisor writes it, one connection per target thread. A row in
`files` is written only after the destination filesystem was flushed, so the
journal never claims a file that a power cut could still take away; a file
copied but not yet recorded is compared, not trusted, on resume.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from .errors import ConfigError
from .scan import Version

SCHEMA = """
CREATE TABLE IF NOT EXISTS targets (
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
    bytes_pending INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS files (
    target INTEGER NOT NULL REFERENCES targets(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    digest TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (target, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS failures (
    target INTEGER NOT NULL REFERENCES targets(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    error TEXT NOT NULL,
    PRIMARY KEY (target, key)
) WITHOUT ROWID;
"""


def default_state_dir() -> Path:
    """$XDG_STATE_HOME/softcopy: local to this machine, never the destination's filesystem."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(base) / "softcopy"


def open_db(state_dir: Path) -> sqlite3.Connection:
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(state_dir / "journal.sqlite", timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk when it returns. Commits are per checkpoint
        # (seconds apart), so this costs nothing that shows.
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(SCHEMA)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(
            state_dir,
            "open journal in state directory",
            f"{exc}; choose another with --state-dir (a local, writable directory)",
        ) from exc
    return db


class Journal:
    """One target's records."""

    def __init__(self, state_dir: Path, source: str, destination: str) -> None:
        self.db = open_db(state_dir)
        now = time.time()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            row = self.db.execute(
                "SELECT id, source FROM targets WHERE destination = ?", (destination,)
            ).fetchone()
            if row is not None and row[1] != source:
                # Another source into the same destination: its records say nothing here.
                self.db.execute("DELETE FROM targets WHERE id = ?", (row[0],))
                row = None
            if row is None:
                cur = self.db.execute(
                    "INSERT INTO targets (destination, source, state, started, updated)"
                    " VALUES (?, ?, 'waiting', ?, ?)",
                    (destination, source, now, now),
                )
                self.id = int(cur.lastrowid or 0)
            else:
                self.id = int(row[0])
                self.db.execute(
                    "UPDATE targets SET state='waiting', reason='', error='', started=?, updated=?"
                    " WHERE id=?",
                    (now, now, self.id),
                )

    def close(self) -> None:
        self.db.close()

    def copied_files(self) -> dict[str, tuple[Version, str]]:
        """What earlier runs copied, by the source version copied, with its BLAKE3 if taken."""
        rows = self.db.execute(
            "SELECT key, size, mtime_ns, ino, digest FROM files WHERE target = ?", (self.id,)
        )
        return {key: (Version(size, mtime, ino), digest) for key, size, mtime, ino, digest in rows}

    def set_state(self, state: str, reason: str = "", error: str = "") -> None:
        self.db.execute(
            "UPDATE targets SET state=?, reason=?, error=?, updated=? WHERE id=?",
            (state, reason, error, time.time(), self.id),
        )

    def checkpoint(
        self,
        copied: Iterable[tuple[str, Version, str]],
        deleted: Iterable[str],
        failures: dict[str, str],
        progress: dict[str, int],
    ) -> None:
        """Record, in one transaction, what is now durable at the destination."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(
                "INSERT OR REPLACE INTO files (target, key, size, mtime_ns, ino, digest)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                ((self.id, k, v.size, v.mtime_ns, v.ino, d) for k, v, d in copied),
            )
            self.db.executemany(
                "DELETE FROM files WHERE target = ? AND key = ?", ((self.id, k) for k in deleted)
            )
            self.db.execute("DELETE FROM failures WHERE target = ?", (self.id,))
            self.db.executemany(
                "INSERT INTO failures (target, key, error) VALUES (?, ?, ?)",
                ((self.id, k, e) for k, e in failures.items()),
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


def read_status(state_dir: Path) -> list[dict]:
    """Every target the journal knows, for `softcopy status`."""
    if not (state_dir / "journal.sqlite").exists():
        return []
    db = open_db(state_dir)
    try:
        db.row_factory = sqlite3.Row
        targets = [dict(r) for r in db.execute("SELECT * FROM targets ORDER BY updated DESC")]
        for t in targets:
            files, nbytes = db.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM files WHERE target = ?", (t["id"],)
            ).fetchone()
            t["files_done"], t["bytes_done"] = files, nbytes
            t["failures"] = {
                r["key"]: r["error"]
                for r in db.execute("SELECT key, error FROM failures WHERE target = ?", (t["id"],))
            }
        return targets
    finally:
        db.close()


def read_copied_files(
    state_dir: Path, destination: str, source: str
) -> dict[str, tuple[Version, str]]:
    """What the journal says was copied to `destination`, opened read-only (for --dry-run)."""
    path = state_dir / "journal.sqlite"
    if not path.exists():
        return {}
    # immutable: not even SQLite's -shm and -wal files may appear. Rows still in a
    # crashed run's WAL are not seen, which only turns "trust" into "compare".
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro&immutable=1", uri=True, timeout=30)
    try:
        row = db.execute(
            "SELECT id FROM targets WHERE destination = ? AND source = ?", (destination, source)
        ).fetchone()
        if row is None:
            return {}
        rows = db.execute(
            "SELECT key, size, mtime_ns, ino, digest FROM files WHERE target = ?", (row[0],)
        )
        return {k: (Version(s, m, i), d) for k, s, m, i, d in rows}
    except sqlite3.Error:
        return {}
    finally:
        db.close()
