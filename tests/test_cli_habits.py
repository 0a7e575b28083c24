"""Options where rsync and rclone users type them: -v/-q/--log-file/--log-level before or
after the command (every command), -n for --dry-run, -P for --progress, --stats."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import DEADLINE, met_before, run_softcopy, softcopy_cmd
from test_acquisition import SMALL, simulate

from softcopy.cli import COMMANDS

STAMPED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) ")
TABLE_HEADER = "lag med/max"  # a column of the live table's header only


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("archive") / "acq.zarr"
    simulate(path, SMALL)
    return path


@pytest.fixture
def src(archive: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "acq.zarr"
    shutil.copytree(archive, copy, symlinks=True)
    return copy


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_before_or_after_the_command(src: Path, tmp_path: Path, where: str) -> None:
    args = ["copy", src, tmp_path / "d"]
    result = run_softcopy(*(["-v", *args] if where == "before" else [*args, "-v"]))
    assert result.returncode == 0, result.stderr
    assert any(STAMPED.match(line) and " DEBUG " in line for line in result.stderr.splitlines())

    missing = [*args[:1], tmp_path / "missing.zarr", tmp_path / "e"]
    plain = run_softcopy(*missing)
    traced = run_softcopy(*missing, "--verbose")
    assert plain.returncode == traced.returncode == 2
    assert "Traceback" not in plain.stderr and "Traceback" in traced.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_leaves_warnings_and_errors_only(src: Path, tmp_path: Path, where: str) -> None:
    args = ["copy", src, tmp_path / "d"]
    loud = run_softcopy(*args)
    quiet = run_softcopy(*(["-q", *args] if where == "before" else [*args, "-q"]))
    assert loud.returncode == quiet.returncode == 0, quiet.stderr
    assert "copying to" in loud.stderr and "copying to" not in quiet.stderr
    failed = run_softcopy("copy", tmp_path / "missing.zarr", tmp_path / "e", "-q")
    assert failed.returncode == 2 and "softcopy: error: cannot " in failed.stderr


def test_verbose_and_quiet_together_are_a_usage_error(src: Path, tmp_path: Path) -> None:
    result = run_softcopy("-q", "copy", src, tmp_path / "d", "-v")
    assert result.returncode == 2
    assert "-v/--verbose and -q/--quiet contradict each other" in result.stderr
    assert not (tmp_path / "d").exists()


def test_log_file_after_the_command_appends_stamped_lines(src: Path, tmp_path: Path) -> None:
    log = tmp_path / "softcopy.log"
    log.write_text("an earlier line\n")
    for _ in (1, 2):
        result = run_softcopy("copy", src, tmp_path / "d", "-q", "--log-file", log)
        assert result.returncode == 0, result.stderr
        assert "copying to" not in result.stderr  # -q quiets stderr, not the file
    lines = log.read_text().splitlines()
    assert lines[0] == "an earlier line"
    assert all(STAMPED.match(line) for line in lines[1:]), lines
    assert sum("finished" in line for line in lines) == 2, lines  # both runs, appended


def test_log_file_says_how_the_run_ended_even_with_q(src: Path, tmp_path: Path) -> None:
    """A run from cron is read from its log: the summary, a failure and an error are there
    (what stderr shows, stamped), whether or not -q kept stderr quiet."""
    log = tmp_path / "softcopy.log"
    done = run_softcopy("copy", src, tmp_path / "d", "-q", "--log-file", log)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert re.search(r" INFO softcopy: done: .* verified", log.read_text()), log.read_text()
    # A destination holding a file the source lacks: copied, then verification fails.
    partial = tmp_path / "partial"
    (partial / "c").mkdir(parents=True)
    (partial / "notes.txt").write_text("mine")
    met_before(partial)  # copied into before: a finding of the copy, not a refusal up front
    failed = run_softcopy("copy", src, partial, "--log-file", log)
    assert failed.returncode == 1
    text = log.read_text()
    assert re.search(r" ERROR softcopy: failed: ", text), text
    assert re.search(r" ERROR softcopy:   extra: notes.txt", text), text
    refused = run_softcopy("copy", tmp_path / "missing", tmp_path / "e", "--log-file", log)
    assert refused.returncode == 2
    line = f" ERROR softcopy: error: cannot copy source {tmp_path / 'missing'}: it does not exist"
    assert line in log.read_text()
    assert all(STAMPED.match(x) for x in log.read_text().splitlines()), log.read_text()


def test_log_file_is_never_written_through_a_link(src: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    (tmp_path / "link.log").symlink_to(victim)
    result = run_softcopy("copy", src, tmp_path / "d", "--log-file", tmp_path / "link.log")
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"softcopy: error: cannot open log file {tmp_path / 'link.log'}: it is a symbolic link"
    ), result.stderr
    assert victim.read_text() == "keep\n" and not (tmp_path / "d").exists()


def test_log_level_after_the_command(src: Path, tmp_path: Path) -> None:
    warning = run_softcopy("copy", src, tmp_path / "d", "--log-level", "warning")
    assert warning.returncode == 0 and "copying to" not in warning.stderr
    debug = run_softcopy("copy", src, tmp_path / "e", "--log-level", "DEBUG")
    assert debug.returncode == 0 and "file grid" in debug.stderr  # a debug line
    bad = run_softcopy("copy", src, tmp_path / "f", "--log-level", "loud")
    assert bad.returncode == 2 and "'loud' is not one of" in bad.stderr


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_takes_the_logging_options(name: str, tmp_path: Path) -> None:
    result = run_softcopy(name, "--help")
    assert result.returncode == 0, result.stderr
    for option in ("-v, --verbose", "-q, --quiet", "--log-file FILE", "--log-level"):
        assert option in result.stdout, (name, option)


def test_status_takes_them_after_its_name(tmp_path: Path) -> None:
    log = tmp_path / "status.log"
    result = run_softcopy("status", "--log-level", "debug", "--log-file", log, "-v")
    assert result.returncode == 0, result.stderr
    assert log.exists()


def test_n_is_dry_run(src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "d"
    short, long = (run_softcopy("copy", flag, src, dst) for flag in ("-n", "--dry-run"))
    assert short.returncode == long.returncode == 0, short.stderr
    assert "dry run: nothing was written" in short.stdout

    def steady(text: str) -> list[str]:  # free space and inodes move between the two runs
        return [line for line in text.splitlines() if "free" not in line and "inodes" not in line]

    assert steady(short.stdout) == steady(long.stdout)
    assert not dst.exists()


def test_P_forces_the_table_without_a_terminal(src: Path, tmp_path: Path) -> None:
    forced = run_softcopy("copy", src, tmp_path / "d", "-P")
    auto = run_softcopy("copy", src, tmp_path / "e")
    assert forced.returncode == auto.returncode == 0, forced.stderr
    assert TABLE_HEADER in forced.stderr and TABLE_HEADER not in auto.stderr
    quiet_forced = run_softcopy("copy", src, tmp_path / "f", "-q", "-P")
    assert TABLE_HEADER in quiet_forced.stderr


def on_a_terminal(*args: object) -> tuple[int, str]:
    """softcopy with stderr on a pseudo-terminal (stdout a pipe): the exit code and what
    the terminal showed."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(softcopy_cmd(*args), stdout=subprocess.PIPE, stderr=secondary)
    os.close(secondary)
    shown = b""
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        ready, _, _ = select.select([primary], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the last holder of the terminal closed it
                break
            if not chunk:
                break
            shown += chunk
        elif proc.poll() is not None:
            break
    os.close(primary)
    try:
        rc = proc.wait(timeout=DEADLINE)
    finally:
        proc.stdout.close()  # type: ignore[union-attr]
    return rc, shown.decode("utf-8", "replace")


def test_quiet_on_a_terminal_shows_no_table(src: Path, tmp_path: Path) -> None:
    rc, shown = on_a_terminal("copy", src, tmp_path / "d")
    assert rc == 0 and TABLE_HEADER in shown  # the default on a terminal: the check can fail
    rc, shown = on_a_terminal("copy", src, tmp_path / "e", "-q")
    assert rc == 0 and TABLE_HEADER not in shown, shown


def stats_block(text: str) -> dict[str, str]:
    lines = text.splitlines()
    start = lines.index("") + 1
    return dict(line.split(": ", 1) for line in lines[start:])


def test_stats_at_the_end(src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "d"
    first = run_softcopy("copy", src, dst, "--stats")
    assert first.returncode == 0, first.stderr
    block = stats_block(first.stdout)
    assert list(block) == [
        "Targets", "Files at the source", "Files copied", "Files deleted",
        "Files already there", "Elapsed", "Rate",
    ]  # fmt: skip
    assert block["Targets"] == "1 (1 verified)"
    files = block["Files at the source"].split()[0]
    assert int(files) > 0 and block["Files copied"].startswith(f"{files} (")
    assert block["Files already there"] == "0"
    assert re.fullmatch(r"\d+\.\d s", block["Elapsed"]) and block["Rate"].endswith("/s")

    # Once more: nothing to copy. With --json the block goes to stderr, stdout stays JSON.
    again = run_softcopy("copy", src, dst, "--stats", "--json")
    assert again.returncode == 0, again.stderr
    assert all(json.loads(line) for line in again.stdout.splitlines())
    block = stats_block(again.stderr[again.stderr.index("done: ") :])
    assert block["Files copied"] == "0 (0 B)" and block["Files already there"] == files

    plain = run_softcopy("copy", src, dst)
    assert "Files copied" not in plain.stdout + plain.stderr


def test_stats_sums_the_targets_of_a_run(src: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.zarr"
    shutil.copytree(src, other, symlinks=True)
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        f"targets:\n  - source: {src}\n    destination: {tmp_path / 'a'}\n"
        f"  - source: {other}\n    destination: {tmp_path / 'b'}\n"
    )
    result = run_softcopy("run", targets, "--stats")
    assert result.returncode == 0, result.stderr
    block = stats_block(result.stdout)
    one = stats_block(run_softcopy("copy", src, tmp_path / "c", "--stats").stdout)
    each = int(one["Files copied"].split()[0])
    assert block["Targets"] == "2 (2 verified)"
    assert block["Files copied"].startswith(f"{2 * each} (")
