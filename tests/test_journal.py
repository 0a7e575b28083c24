"""The journal: names that are bytes, its schema version and migrations, damage and reset."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import pytest
from conftest import (
    assert_same_tree,
    finish,
    run_softcopy,
    start_softcopy,
    tree_files,
    wait_for,
)

from softcopy.sources.scan import Version
from softcopy.state.journal import APPLICATION_ID, SCHEMA_VERSION, Journal, read_copied_files

# The schema of the journal before it had a version (`git show 18041ac:softcopy/journal.py`).
OLD_SCHEMA = """
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

RAW = b"caf\xe9"  # Latin-1 "café": not UTF-8
NAMES = [RAW, b"d\xff\xfe/inner \x80", b"plain", "utf8-é".encode(), b"back\\slash"]


def journal_path() -> Path:
    return Path(os.environ["XDG_STATE_HOME"]) / "softcopy" / "journal.sqlite"


def state_dir() -> Path:
    return journal_path().parent


def make_tree(root: Path, names: list[bytes], size: int = 64, complete: bool = True) -> None:
    for i, name in enumerate(names):
        path = os.path.join(os.fsencode(root), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(bytes([i % 256]) * size)
    if complete:
        (root / "complete").touch()


def copy(src: Path, dst: Path, *args: object):
    # Names that are not UTF-8 come back on stdout as the bytes they are.
    return run_softcopy(
        "copy", "--kind", "directory", "--ready-age", "0", src, dst, *args,
        errors="surrogateescape",
    )  # fmt: skip


def one_error(result) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("softcopy: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr  # one paragraph, last
    return errors[0]


def file_digests(*paths: Path) -> dict[str, str | None]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None for p in paths
    }


def set_aside() -> list[Path]:
    """Journals moved aside by --reset-journal (without their -wal and -shm)."""
    found = state_dir().glob("journal.sqlite.damaged-*")
    return [p for p in found if not p.name.endswith(("-wal", "-shm"))]


def tamper(path: Path) -> None:
    """Other bytes, same size and mtime: only a comparison can tell."""
    st = path.stat()
    path.write_bytes(b"X" * st.st_size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def journal_files() -> list[Path]:
    p = journal_path()
    return [p, Path(f"{p}-wal"), Path(f"{p}-shm")]


# ---- names are bytes --------------------------------------------------------------------


def test_names_that_are_not_utf8_are_copied_journaled_trusted_and_deleted(tmp_path: Path) -> None:
    # The source and destination paths themselves are not UTF-8 either.
    src = tmp_path / os.fsdecode(b"src \xe9")
    dst = tmp_path / os.fsdecode(b"dst \xff")
    make_tree(src, NAMES, complete=False)
    raw_at = os.path.join(os.fsencode(src), RAW)
    proc = start_softcopy(
        "copy", "--kind", "directory", "--ready-age", "0", src, dst, errors="surrogateescape"
    )
    wait_for(lambda: tree_files(dst) == tree_files(src), what="every file copied", proc=proc)
    os.unlink(raw_at)  # deleted by the writer: deleted at the destination, and in the journal
    wait_for(
        lambda: not os.path.lexists(os.path.join(os.fsencode(dst), RAW)),
        what="the deletion copied",
        proc=proc,
    )
    (src / "complete").touch()
    rc, out, err = finish(proc)
    assert rc == 0, err
    assert "Traceback" not in err and "1 deleted" in out
    assert_same_tree(src, dst)

    journaled = read_copied_files(state_dir(), str(dst), str(src))
    keys = {os.fsdecode(n) for n in NAMES if n != RAW}
    assert set(journaled) == keys  # the marker is never journaled
    for key in keys:
        st = os.lstat(src / key)
        assert journaled[key][0] == Version(st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
    db = sqlite3.connect(journal_path())
    stored = dict(db.execute("SELECT key, typeof(key) FROM files"))
    db.close()
    assert stored[NAMES[1]] == "blob" and stored["plain"] == "text"
    assert stored["utf8-é"] == "text"  # one representation per name: UTF-8 is TEXT

    plan = copy(src, dst, "--dry-run")  # the journal vouches for every name, read back
    assert plan.returncode == 0, plan.stderr
    assert f"trusted:     {len(keys)} files" in plan.stdout, plan.stdout
    again = copy(src, dst)
    assert again.returncode == 0, again.stderr
    assert " 0 copied" in again.stdout

    out = run_softcopy("status", "--json", errors="surrogateescape")
    assert out.returncode == 0, out.stderr
    out.stdout.encode("utf-8")  # strictly valid UTF-8: no raw byte, no lone surrogate
    (record,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert record["destination"] == os.fsencode(str(dst)).decode("utf-8", "backslashreplace")
    assert bytes.fromhex(record["names_hex"][record["destination"]]) == os.fsencode(str(dst))
    assert bytes.fromhex(record["names_hex"][record["source"]]) == os.fsencode(str(src))
    assert record["state"] == "done" and record["files_done"] == len(keys)
    text = run_softcopy("status")  # strict decoding: the names are escaped, \\xe9
    assert text.returncode == 0 and "src \\xe9 -> " in text.stdout, text.stdout + text.stderr


def test_failures_with_names_that_are_not_utf8_are_kept_and_shown(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    key = os.fsdecode(b"sub/caf\xe9")
    journal = Journal(state_dir(), str(src), str(dst))
    journal.checkpoint([], [], {key: f"cannot read {src}/{key}: EIO"}, {})
    journal.set_state("failed", error=f"1 file failed: {key}")
    journal.close()

    out = run_softcopy("status", "--json")  # strict decoding: the output is UTF-8
    assert out.returncode == 0, out.stderr
    (record,) = [json.loads(line) for line in out.stdout.splitlines()]
    shown = "sub/caf\\xe9"
    assert record["failures"] == {shown: f"cannot read {src}/{shown}: EIO"}
    assert bytes.fromhex(record["names_hex"][shown]) == b"sub/caf\xe9"
    assert record["error"] == f"1 file failed: {shown}"
    text = run_softcopy("status")
    assert text.returncode == 0, text.stderr
    assert f"failed: {shown}: cannot read" in text.stdout
    # Read back through the journal itself: the very name, byte for byte.
    again = Journal(state_dir(), str(src), str(dst))
    (stored,) = again.db.execute("SELECT key FROM failures")
    again.close()
    assert stored[0] == b"sub/caf\xe9"


# ---- schema version and migrations ------------------------------------------------------


def old_journal(src: Path, dst: Path, with_ctime: bool) -> dict[str, Version]:
    """A journal as softcopy wrote it before the schema had a version, vouching for
    every file of `src` the way the old code recorded a copy."""
    path = journal_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(OLD_SCHEMA)
    if with_ctime:  # the column the lead added with an ALTER TABLE, still version 0
        db.execute("ALTER TABLE files ADD COLUMN ctime_ns INTEGER NOT NULL DEFAULT 0")
    db.execute(
        "INSERT INTO targets (destination, source, state, started, updated)"
        " VALUES (?, ?, 'done', 1.0, 2.0)",
        (str(dst), str(src)),
    )
    versions = {}
    for key in tree_files(src):
        if key == "complete":
            continue
        st = os.lstat(src / key)
        versions[key] = Version(st.st_size, st.st_mtime_ns, st.st_ino, 0)
        db.execute(
            "INSERT INTO files (target, key, size, mtime_ns, ino, digest)"
            " VALUES (1, ?, ?, ?, ?, ?)",
            (key, st.st_size, st.st_mtime_ns, st.st_ino, "ab" * 32),
        )
    db.execute("INSERT INTO failures (target, key, error) VALUES (1, 'gone', 'it vanished')")
    db.close()
    return versions


def pragma(name: str) -> int:
    db = sqlite3.connect(journal_path())
    try:
        return db.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        db.close()


@pytest.mark.parametrize("with_ctime", [False, True], ids=["head", "head+ctime"])
def test_a_journal_from_before_versions_is_read_then_migrated(
    tmp_path: Path, with_ctime: bool
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, [b"a", b"b/c", b"d"])
    first = copy(src, dst)
    assert first.returncode == 0, first.stderr
    tamper(dst / "b/c")
    for p in journal_files():
        p.unlink(missing_ok=True)
    versions = old_journal(src, dst, with_ctime)

    # status reads it as it is, and writes nothing (a migration is for a run to do).
    before = file_digests(journal_path())
    out = run_softcopy("status", "--json")
    assert out.returncode == 0, out.stderr
    (record,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert record["state"] == "done" and record["files_done"] == 3
    assert record["failures"] == {"gone": "it vanished"}
    assert pragma("user_version") == 0 and file_digests(journal_path()) == before
    # so does --dry-run: all three are at the destination, none vouched for (no ctime)
    plan = copy(src, dst, "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "to compare:  3 files" in plan.stdout and "trusted:     0 files" in plan.stdout

    journal = Journal(state_dir(), str(src), str(dst))
    rows = journal.copied_files()
    journal.close()
    assert rows == {k: (v, "ab" * 32) for k, v in versions.items()}
    assert pragma("user_version") == SCHEMA_VERSION
    assert pragma("application_id") == APPLICATION_ID

    # Rows without ctime match no current version: compared, never trusted.
    again = copy(src, dst)
    assert again.returncode == 0, again.stderr
    assert " 1 copied" in again.stdout, again.stdout  # the tampered file, found by comparing
    assert_same_tree(src, dst)
    plan = copy(src, dst, "--dry-run")
    assert "trusted:     3 files" in plan.stdout, plan.stdout  # the new rows are trusted


def test_a_journal_from_a_newer_softcopy_is_refused_and_left_alone(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, [b"a", b"b"])
    assert copy(src, dst).returncode == 0
    db = sqlite3.connect(journal_path())
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    before = file_digests(*journal_files())
    for result in (copy(src, dst), run_softcopy("status"), copy(src, dst, "--reset-journal")):
        error = one_error(result)
        assert str(journal_path()) in error and "newer softcopy" in error
    assert "newer softcopy" in one_error(copy(src, dst, "--dry-run"))
    assert file_digests(*journal_files()) == before


def test_a_database_that_is_not_a_journal_is_refused_then_set_aside(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, [b"a", b"b"])
    journal_path().parent.mkdir(parents=True)
    db = sqlite3.connect(journal_path())
    db.execute("CREATE TABLE songs (title TEXT)")
    db.execute("INSERT INTO songs VALUES ('la mer')")
    db.commit()
    db.close()
    before = file_digests(*journal_files())
    for result in (copy(src, dst), run_softcopy("status"), copy(src, dst, "--dry-run")):
        error = one_error(result)
        assert str(journal_path()) in error and "not a softcopy journal" in error
        assert "--reset-journal" in error
    assert file_digests(*journal_files()) == before
    assert not dst.exists()

    reset = copy(src, dst, "--reset-journal")
    assert reset.returncode == 0, reset.stderr
    assert_same_tree(src, dst)
    (aside,) = set_aside()
    assert sqlite3.connect(aside).execute("SELECT title FROM songs").fetchall() == [("la mer",)]


# ---- damage -----------------------------------------------------------------------------


def corrupt_middle(path: Path) -> None:
    """Garbage over a page in the middle of the file; the header (page 1) stays intact."""
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    pages = len(data) // page
    assert pages >= 3, "too small a journal to damage in the middle"
    middle = pages // 2 * page
    data[middle : middle + page] = bytes((i * 37 + 11) % 256 for i in range(page))
    path.write_bytes(bytes(data))


def test_a_damaged_journal_is_one_clear_error_until_reset(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    names = [f"dir{i // 50}/file-with-a-long-name-{i:04d}".encode() for i in range(400)]
    make_tree(src, names, size=16)
    assert copy(src, dst).returncode == 0
    assert not Path(f"{journal_path()}-wal").exists()  # all in the main file: closed cleanly
    corrupt_middle(journal_path())
    db = sqlite3.connect(journal_path())
    try:
        assert db.execute("PRAGMA quick_check").fetchone()[0] != "ok"  # really damaged
    except sqlite3.DatabaseError:
        pass
    finally:
        db.close()
    # A file the journal vouched for: after the reset it must be compared, and fixed.
    tamper(dst / names[7].decode())

    damaged = file_digests(journal_path())
    for result in (copy(src, dst), run_softcopy("status"), run_softcopy("status", "--json")):
        error = one_error(result)
        assert str(journal_path()) in error and "damaged" in error
        assert "--reset-journal" in error
    assert "damaged" in one_error(copy(src, dst, "--dry-run"))
    # A dry run with --reset-journal shows what the reset run would do, moving nothing.
    plan = copy(src, dst, "--dry-run", "--reset-journal")
    assert plan.returncode == 0, plan.stderr
    assert "trusted:     0 files" in plan.stdout
    assert f"to compare:  {len(names)} files" in plan.stdout
    assert file_digests(journal_path()) == damaged

    reset = copy(src, dst, "--reset-journal")
    assert reset.returncode == 0, reset.stderr
    assert "moved it aside" in reset.stderr
    assert " 1 copied" in reset.stdout, reset.stdout
    assert_same_tree(src, dst)
    (aside,) = set_aside()
    assert file_digests(aside)[str(aside)] == damaged[str(journal_path())]
    out = run_softcopy("status", "--json")
    assert out.returncode == 0, out.stderr
    (record,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert record["state"] == "done" and record["files_done"] == len(names)
    # A sound journal stays where it is, --reset-journal or not.
    kept = copy(src, dst, "--reset-journal")
    assert kept.returncode == 0, kept.stderr
    plan = copy(src, dst, "--dry-run")
    assert f"trusted:     {len(names)} files" in plan.stdout, plan.stdout
    assert len(set_aside()) == 1


def test_a_journal_that_is_a_link_is_never_written_through(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, [b"a"])
    elsewhere = tmp_path / "elsewhere.sqlite"
    elsewhere.write_bytes(b"")
    state_dir().mkdir(parents=True)
    journal_path().symlink_to(elsewhere)
    error = one_error(copy(src, dst))
    assert str(journal_path()) in error and "symbolic link" in error
    assert elsewhere.read_bytes() == b""
