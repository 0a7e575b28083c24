"""`softcopy status`: a run whose process is gone is interrupted, whatever the journal last said."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
from conftest import finish, run_softcopy, start_softcopy, tree_files, wait_for


def journal_path() -> Path:
    return Path(os.environ["XDG_STATE_HOME"]) / "softcopy" / "journal.sqlite"


def records() -> list[dict]:
    out = run_softcopy("status", "--json")
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def state_of(dst: Path) -> str | None:
    if not journal_path().exists():
        return None
    for record in records():
        if record["destination"] == str(dst):
            return record["state"]
    return None


@pytest.fixture
def killed_run(tmp_path: Path) -> tuple[Path, Path]:
    """A copy that was running (no end marker: it waits for more) and was SIGKILLed."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for i in range(40):
        (src / f"f{i:02d}").write_bytes(os.urandom(1000))
    proc = start_softcopy(
        "copy", "--kind", "directory", "--ready-age", "0", "--nprocs", "1", src, dst
    )
    wait_for(lambda: tree_files(dst) == tree_files(src), what="every file copied", proc=proc)
    wait_for(lambda: state_of(dst) == "copying", what="state copying", proc=proc)
    (record,) = records()
    assert record["running"] is True and record["pid"] == proc.pid
    assert run_softcopy("status").stdout.startswith("copying ")
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    return src, dst


def test_a_killed_run_is_shown_interrupted_with_when_it_was_last_seen(
    killed_run: tuple[Path, Path],
) -> None:
    _, dst = killed_run
    (record,) = records()
    assert record["state"] == "interrupted" and record["recorded_state"] == "copying"
    assert record["running"] is False and record["last_seen"] == record["updated"]
    text = run_softcopy("status").stdout
    assert text.startswith("interrupted ") and str(dst) in text
    assert "is gone; it was copying, last seen" in text
    # The journal itself is not rewritten by status: a rerun resumes from what it says.
    db = sqlite3.connect(journal_path())
    assert db.execute("SELECT state FROM targets").fetchone()[0] == "copying"
    db.close()


def test_a_pid_now_used_by_another_process_is_not_the_run(killed_run: tuple[Path, Path]) -> None:
    # Another process, alive, has the run's pid: its start time tells them apart.
    other = subprocess.Popen(["sleep", "60"])
    try:
        db = sqlite3.connect(journal_path())
        db.execute("UPDATE targets SET pid = ?", (other.pid,))
        db.commit()
        db.close()
        (record,) = records()
        assert record["state"] == "interrupted" and record["pid"] == other.pid
    finally:
        other.kill()
        other.wait()


def test_a_run_on_another_host_is_shown_as_it_said(killed_run: tuple[Path, Path]) -> None:
    db = sqlite3.connect(journal_path())
    db.execute("UPDATE targets SET host = 'acquisition-pc-2'")
    db.commit()
    db.close()
    (record,) = records()
    assert record["state"] == "copying" and record["running"] is None
    text = run_softcopy("status").stdout
    assert text.startswith("copying ") and "running on acquisition-pc-2" in text
