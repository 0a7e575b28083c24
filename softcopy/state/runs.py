"""The service's runs in the journal (table `runs`, view `runs_v1`): what `watch` found,
where each run is, and what happened to it; read by `status` and downstream tools.

Only the service's main thread writes here (one connection); copies themselves keep
their records in `targets` and `files` as for `copy`. Nothing about a run is kept in
the service's memory once it ended: the journal is the list.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..names import shown
from .journal import (
    JOURNAL,
    _inspect,
    _translate,
    from_db,
    open_db,
    process_start,
    read_status,
    to_db,
)

# A run's states, in the order it goes through them (`released`: its source was freed).
WAITING, COPYING, VERIFYING, DONE, RETRY, FAILED, RELEASED = (
    "waiting",
    "copying",
    "verifying",
    "done",
    "retry",
    "failed",
    "released",
)
RUN_STATES = (WAITING, COPYING, VERIFYING, DONE, RETRY, FAILED, RELEASED)
ACTIVE_STATES = frozenset({WAITING, COPYING, VERIFYING, RETRY})

_NAMES = ("source_root", "run", "source", "destination")  # stored with to_db: bytes names
_TIMES = ("discovered", "started", "ended", "next_attempt", "released")


class RunBook:
    """The service's connection to the journal."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / JOURNAL
        # Opened where the service is made (an unwritable state directory fails there),
        # used by the thread that runs it.
        self.db = open_db(state_dir, any_thread=True)

    def close(self) -> None:
        self.db.close()

    def get(self, root: str, run: str) -> dict[str, Any] | None:
        with self._guard("read runs in journal"):
            self.db.row_factory = sqlite3.Row
            row = self.db.execute(
                "SELECT * FROM runs WHERE source_root = ? AND run = ?", (to_db(root), to_db(run))
            ).fetchone()
            return None if row is None else _decoded(dict(row))

    def add(self, root: str, run: str, source: str, destination: str, kind: str) -> dict[str, Any]:
        """The run's row, made `waiting` if it is new."""
        with self._guard("record run in journal"), self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                "INSERT OR IGNORE INTO runs (source_root, run, source, destination, kind, state,"
                " discovered) VALUES (?, ?, ?, ?, ?, 'waiting', ?)",
                (to_db(root), to_db(run), to_db(source), to_db(destination), kind, time.time()),
            )
        found = self.get(root, run)
        assert found is not None
        return found

    def update(self, root: str, run: str, **fields: Any) -> None:
        if not fields:
            return
        names = ", ".join(f"{k} = ?" for k in fields)
        values = [to_db(v) if k in _NAMES and isinstance(v, str) else v for k, v in fields.items()]
        with self._guard("record run in journal"), self.db:
            self.db.execute(
                f"UPDATE runs SET {names} WHERE source_root = ? AND run = ?",
                (*values, to_db(root), to_db(run)),
            )

    def forget(self, root: str, run: str) -> None:
        with self._guard("record run in journal"), self.db:
            self.db.execute(
                "DELETE FROM runs WHERE source_root = ? AND run = ?", (to_db(root), to_db(run))
            )

    def active(self, root: str) -> list[dict[str, Any]]:
        """Runs of `root` not yet ended, in the order they were found."""
        with self._guard("read runs in journal"):
            self.db.row_factory = sqlite3.Row
            rows = self.db.execute(
                "SELECT * FROM runs WHERE source_root = ? AND state IN (?, ?, ?, ?) ORDER BY id",
                (to_db(root), *sorted(ACTIVE_STATES)),
            )
            return [_decoded(dict(r)) for r in rows]

    def counts(self, root: str) -> dict[str, int]:
        with self._guard("read runs in journal"):
            rows = self.db.execute(
                "SELECT state, count(*) FROM runs WHERE source_root = ? GROUP BY state",
                (to_db(root),),
            )
            return {state: n for state, n in rows}

    def done_before(self, root: str, ended_before: float) -> list[dict[str, Any]]:
        """Runs of `root` done (not released) that ended before `ended_before`."""
        with self._guard("read runs in journal"):
            self.db.row_factory = sqlite3.Row
            rows = self.db.execute(
                "SELECT * FROM runs WHERE source_root = ? AND state = 'done' AND ended < ?"
                " ORDER BY ended",
                (to_db(root), ended_before),
            )
            return [_decoded(dict(r)) for r in rows]

    def _guard(self, action: str) -> Any:
        return _Guard(self.path, action)


class _Guard:
    def __init__(self, path: Path, action: str) -> None:
        self.path, self.action = path, action

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, sqlite3.Error):
            raise _translate(self.path, self.action, exc) from exc


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    for name in _NAMES:
        row[name] = from_db(row[name])
    return row


def iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def run_record(row: dict[str, Any]) -> dict[str, Any]:
    """A run as `status --json`, `/status` and the hooks show it (times in ISO 8601)."""
    record = {
        "type": "run",
        "run": row["run"],
        "source": row["source"],
        "destination": row["destination"],
        "state": row["state"],
        "attempts": row["attempts"],
        "finished_because": row["finished_because"] or None,
        "end_rule": row["end_rule"] or None,
        "safe_to_free": None if row["safe_to_free"] is None else bool(row["safe_to_free"]),
        "files": row["files"],
        "bytes": row["bytes"],
        "error": row["error"] or None,
        "certificate": row["certificate"],
        "source_root": row["source_root"],
        "kind": row["kind"],
        "owner": row["owner"] or None,
        "hook": None
        if not row["hook_command"]
        else {
            "command": row["hook_command"],
            "exit_code": row["hook_exit_code"],
            "error": row["hook_error"] or None,
            "output": row["hook_output"],
        },
        "released_to": row["released_to"],
    }
    for name in _TIMES:
        record[name] = iso(row[name])
    return record


def read_runs(state_dir: Path) -> list[dict[str, Any]]:
    """Every run the journal knows, read-only (a journal before version 2 has none)."""
    path = state_dir / JOURNAL
    if not path.exists() or path.stat().st_size == 0:
        return []
    db, version = _inspect(path)
    try:
        if version is None or version < 2:
            return []
        db.row_factory = sqlite3.Row
        return [_decoded(dict(r)) for r in db.execute("SELECT * FROM runs ORDER BY id")]
    except sqlite3.Error as exc:
        raise _translate(path, "read journal", exc) from exc
    finally:
        db.close()


def retry_run(state_dir: Path, name: str) -> list[dict[str, Any]]:
    """Put failed runs named `name` (their path under the root, or their source) back in
    the queue; the rows changed. Raises when no failed run has that name."""
    db = open_db(state_dir)
    try:
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.row_factory = sqlite3.Row
            rows = [
                _decoded(dict(r))
                for r in db.execute(
                    "SELECT * FROM runs WHERE run = ? OR source = ?", (to_db(name), to_db(name))
                )
            ]
            failed = [r for r in rows if r["state"] == FAILED]
            if not failed:
                states = ", ".join(sorted({f"{r['run']}: {r['state']}" for r in rows}))
                raise ConfigError(
                    state_dir / JOURNAL,
                    f"retry run {name}",
                    f"no failed run of that name in the journal ({states})"
                    if rows
                    else "the journal has no run of that name (give its path under the "
                    "source root, as `softcopy status` shows it, or its source path)",
                )
            for r in failed:
                db.execute(
                    "UPDATE runs SET state = 'waiting', attempts = 0, next_attempt = NULL,"
                    " error = '' WHERE id = ?",
                    (r["id"],),
                )
    except sqlite3.Error as exc:
        raise _translate(state_dir / JOURNAL, f"retry run {name}", exc) from exc
    finally:
        db.close()
    return failed


def record_release(state_dir: Path, destination: str, record: dict[str, Any]) -> None:
    """The source of the copy at `destination` was freed: say so in the journal (the
    target, and the run if a service copied it). `record`: at least `to` (or None)."""
    db = open_db(state_dir)
    now = time.time()
    try:
        with db:
            db.execute("BEGIN IMMEDIATE")
            dst = to_db(destination)
            db.execute(
                "UPDATE targets SET state = 'released', updated = ? WHERE destination = ?",
                (now, dst),
            )
            db.execute(
                "UPDATE runs SET state = 'released', released = ?, released_to = ?"
                " WHERE destination = ?",
                (now, record.get("to"), dst),
            )
    except sqlite3.Error as exc:
        raise _translate(state_dir / JOURNAL, "record release in journal", exc) from exc
    finally:
        db.close()


# ---- forgetting: `softcopy forget` and `softcopy status --prune` ---------------------------

# What `--prune` removes: entries that ended, however they ended (`interrupted`: a target
# whose process is gone). A run waiting for a retry is not finished.
FINISHED_TARGETS = frozenset({"done", "failed", "released", "interrupted"})
FINISHED_RUNS = frozenset({DONE, FAILED, RELEASED})


def candidates(name: str) -> set[str]:
    """The forms a user may type one path in: as given, absolute, and with links resolved
    (the journal holds destinations as made absolute when the copy started)."""
    found = {name, os.path.abspath(name)}
    try:
        found.add(os.path.realpath(name))
    except OSError:
        pass
    return found


def matching(
    targets: list[dict[str, Any]], runs: list[dict[str, Any]], name: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The targets (by destination or source) and runs (by name, source or destination)
    that `name` names, and the targets of those runs' copies."""
    paths = candidates(name)
    chosen_runs = [
        r for r in runs if r["run"] == name or r["source"] in paths or r["destination"] in paths
    ]
    copies = {r["destination"] for r in chosen_runs}
    chosen = [
        t
        for t in targets
        if t["destination"] in paths or t["source"] in paths or t["destination"] in copies
    ]
    return chosen, chosen_runs


def run_running(row: dict[str, Any]) -> bool:
    """A run some watcher may be copying now: copying or verifying, and its watcher not
    provably gone (one on another host cannot be checked from here)."""
    if row["state"] not in (COPYING, VERIFYING):
        return False
    host, _, pid = str(row["owner"]).rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        return process_start(int(pid)) is not None
    return bool(row["owner"])


def forget(state_dir: Path, name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Remove from the journal the targets and runs `name` names (a destination, a source,
    or a run's name), with their files and failures; (targets, runs) removed. Refused,
    removing nothing, when one is running or when nothing has that name. The copy and its
    records are left as they are: a later run of it compares what it finds, not trusts."""
    path = state_dir / JOURNAL
    targets, runs = matching(read_status(state_dir), read_runs(state_dir), name)
    if not targets and not runs:
        raise ConfigError(
            name,
            "forget",
            f"the journal ({path}) has no target or run of that name (give a destination "
            "or source path, or a run's name, as `softcopy status` shows them)",
        )
    busy = [t["destination"] for t in targets if t["state"] not in FINISHED_TARGETS]
    busy += [r["destination"] for r in runs if run_running(r)]
    if busy:
        problem = f"it is running ({shown(busy[0])}); stop it first, or wait until it ends"
        raise ConfigError(name, "forget", problem)
    _delete(path, f"forget {name}", targets, runs)
    return targets, runs


def prune(
    state_dir: Path, older_than: float, now: float | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Remove finished targets and runs whose last activity is more than `older_than`
    seconds ago; (targets, runs) removed. A target whose copy belongs to a run that stays
    keeps its records, so a retry still trusts what it copied."""
    path = state_dir / JOURNAL
    if not path.exists() or path.stat().st_size == 0:
        return [], []
    cutoff = (time.time() if now is None else now) - older_than
    every_run = read_runs(state_dir)
    runs = [
        r
        for r in every_run
        if r["state"] in FINISHED_RUNS and (r["ended"] or r["discovered"]) < cutoff
    ]
    kept = {r["destination"] for r in every_run} - {r["destination"] for r in runs}
    targets = [
        t
        for t in read_status(state_dir)
        if t["state"] in FINISHED_TARGETS and t["updated"] < cutoff and t["destination"] not in kept
    ]
    if targets or runs:
        _delete(path, "prune journal", targets, runs)
    return targets, runs


def _delete(
    path: Path, action: str, targets: list[dict[str, Any]], runs: list[dict[str, Any]]
) -> None:
    db = open_db(path.parent)
    try:
        with db:
            db.execute("BEGIN IMMEDIATE")
            # Only rows unchanged since they were judged: a copy that started again since
            # (its row updated) keeps its records. Files and failures go with their
            # target (ON DELETE CASCADE).
            db.executemany(
                "DELETE FROM targets WHERE id = ? AND updated = ?",
                ((t["id"], t["updated"]) for t in targets),
            )
            db.executemany(
                "DELETE FROM runs WHERE id = ? AND state = ?",
                ((r["id"], r["state"]) for r in runs),
            )
    except sqlite3.Error as exc:
        raise _translate(path, action, exc) from exc
    finally:
        db.close()
