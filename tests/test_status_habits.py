"""`status` as rsync and rclone users expect: one target or run in detail (with the tail of
its run log), `--state` filters, `--prune` for old finished entries, `forget` for one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import finish, run_softcopy, start_softcopy, tree_files, wait_for
from test_service_watch import ILLUMINA, finished_run, start_watch, zarr_with_broken_metadata

from softcopy.state.journal import read_status


def state_dir() -> Path:
    return Path(os.environ["XDG_STATE_HOME"]) / "softcopy"


def copy(src: Path, dst: Path) -> None:
    result = run_softcopy("copy", "--kind", "directory", "--no-progress", src, dst)
    assert result.returncode == 0, result.stderr


def make_source(path: Path, n: int = 3) -> Path:
    path.mkdir(parents=True)
    for i in range(n):
        (path / f"f{i}.dat").write_bytes(os.urandom(100 + i))
    (path / "complete").write_bytes(b"")
    return path


def status(*args: object, **kw) -> subprocess.CompletedProcess:
    return run_softcopy("status", *args, **kw)


def forget(*args: object) -> subprocess.CompletedProcess:
    """`softcopy forget`, through the real group. Until the lead registers the command in
    softcopy/cli/__init__.py's COMMANDS, it is added here the eager way, which the group
    still accepts; once registered this runs it as it is."""
    program = (
        "import sys\n"
        "from softcopy.cli import main\n"
        "from softcopy.cli.status import forget\n"
        "if 'forget' not in main.commands: main.add_command(forget)\n"
        "main(sys.argv[1:], prog_name='softcopy')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", program, "forget", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=90,
    )


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def two_copies(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    a, b = make_source(tmp_path / "a"), make_source(tmp_path / "b")
    copy(a, tmp_path / "copy_a")
    copy(b, tmp_path / "copy_b")
    return a, tmp_path / "copy_a", b, tmp_path / "copy_b"


def test_status_of_one_destination_shows_it_in_detail_with_its_log(two_copies) -> None:
    a, copy_a, _, copy_b = two_copies
    result = status(copy_a)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"done        {a} -> {copy_a}" in out, out
    assert str(copy_b) not in out, out
    assert "started " in out and "last activity " in out
    assert f"of {copy_a}.softcopy/log.jsonl:" in out, out
    # The run log's per-file lines: every file copied, by name.
    for key in ("f0.dat", "f1.dat", "f2.dat"):
        assert any("file_copied" in line and key in line for line in out.splitlines()), out
    # The same target by its source, and by a relative path from where it lies.
    assert status(a).stdout == out
    assert status(copy_a.name, cwd=copy_a.parent).stdout == out
    (record,) = json_lines(status(copy_a, "--json").stdout)
    assert record["destination"] == str(copy_a)
    assert {e["event"] for e in record["log"]} >= {"run_started", "file_copied"}


def test_status_of_a_name_the_journal_does_not_know_is_an_error(two_copies, tmp_path) -> None:
    result = status(tmp_path / "nothing here")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "nothing here" in result.stderr and "journal.sqlite" in result.stderr, result.stderr
    assert "no target or run of that name" in result.stderr
    # The name the user gave is what could not be shown; the journal is where it looked.
    said = f"softcopy: error: cannot show {tmp_path / 'nothing here'}: the journal ("
    assert result.stderr.startswith(said), result.stderr


def test_state_filter_prune_and_forget_cover_the_services_runs(tmp_path: Path) -> None:
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    src.mkdir()
    for name in ("run_a", "run_b"):
        finished_run(src / name)
    zarr_with_broken_metadata(src / "broken.zarr")
    rc, _, err = finish(start_watch(src, dst, state, "--once", "--max-attempts", "1", *ILLUMINA))
    assert rc == 1, err

    def runs(*args: object) -> dict[str, str]:
        result = status("--json", "--state-dir", state, *args)
        assert result.returncode == 0, result.stderr
        return {r["run"]: r["state"] for r in json_lines(result.stdout) if r["type"] == "run"}

    assert runs() == {"run_a": "done", "run_b": "done", "broken.zarr": "failed"}
    assert runs("--state", "failed") == {"broken.zarr": "failed"}
    assert runs("--state", "failed", "--state", "done") == runs()
    text = status("--state-dir", state, "--state", "failed").stdout
    assert "broken.zarr" in text and "run_a" not in text, text

    # One run in detail: the run, its copy's target, its copy's log.
    result = status("--state-dir", state, "run_a")
    assert result.returncode == 0, result.stderr
    assert "run run_a:" in result.stdout and "run_b" not in result.stdout
    assert f"{dst / 'run_a'}.softcopy/log.jsonl:" in result.stdout, result.stdout

    # Fresh entries are younger than the default 30 days: nothing pruned.
    result = status("--state-dir", state, "--prune")
    assert result.returncode == 0 and "pruned 0 targets and 0 runs" in result.stdout
    assert len(runs()) == 3

    result = forget("run_a", "--state-dir", state)
    assert result.returncode == 0, result.stderr
    assert "forgot run run_a (done)" in result.stdout
    assert f"forgot target {dst / 'run_a'} (done)" in result.stdout
    assert set(runs()) == {"run_b", "broken.zarr"}
    assert str(dst / "run_a") not in {t["destination"] for t in read_status(state)}
    assert tree_files(dst / "run_a"), "the copy itself stays"

    result = status("--state-dir", state, "--prune", "--older-than", "0s")
    assert result.returncode == 0, result.stderr
    assert "forgot run broken.zarr (failed)" in result.stdout
    assert runs() == {} and read_status(state) == []


def test_prune_and_forget_leave_a_running_copy_alone(tmp_path: Path, two_copies) -> None:
    src = make_source(tmp_path / "live")
    (src / "complete").unlink()  # no end marker: it copies and waits for more
    dst = tmp_path / "live_copy"
    proc = start_softcopy("copy", "--kind", "directory", "--ready-age", "0", src, dst)

    def live_state() -> str | None:
        return {t["destination"]: t["state"] for t in read_status(state_dir())}.get(str(dst))

    wait_for(lambda: live_state() == "copying", what="the copy running", proc=proc)

    result = status("--prune", "--older-than", "0s")
    assert result.returncode == 0, result.stderr
    assert "pruned 2 targets and 0 runs" in result.stdout, result.stdout
    assert [t["destination"] for t in read_status(state_dir())] == [str(dst)]

    result = forget(dst)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "it is running" in result.stderr and str(dst) in result.stderr, result.stderr
    assert live_state() == "copying"

    proc.send_signal(signal.SIGTERM)
    finish(proc)
    assert live_state() == "interrupted"
    result = forget(dst)
    assert result.returncode == 0, result.stderr
    assert read_status(state_dir()) == []


def test_forget_of_an_unknown_name_is_an_error(tmp_path: Path) -> None:
    result = forget(tmp_path / "never copied")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no target or run of that name" in result.stderr, result.stderr
    said = f"softcopy: error: cannot forget {tmp_path / 'never copied'}: the journal ("
    assert result.stderr.startswith(said), result.stderr


def test_older_than_without_prune_is_a_usage_error() -> None:
    result = status("--older-than", "7d")
    assert result.returncode == 2 and "--older-than goes with --prune" in result.stderr
