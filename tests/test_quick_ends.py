"""No needless waits at the end: quiet time is measured from the newest change the source
shows (not from softcopy's start), an old source counts as finished, and a busy disk delays
only copying, never a rerun with nothing to copy."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import assert_same_tree, run_softcopy, start_disk_load, wait_for
from test_acquisition import SMALL, simulate
from test_throttle import loop_source  # noqa: F401 (a fixture)

from softcopy.engine.finish import Observed, Rules, duration, end_of, end_record
from softcopy.engine.observe import newest_change_ns
from softcopy.sources.pressure import DiskPressure


def certificate(dst: Path) -> dict:
    return json.loads((dst.parent / f"{dst.name}.softcopy" / "certificate.json").read_text())


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def tree_newest(root: Path) -> float:
    """What softcopy reads: max(mtime, ctime) over every file, link and directory."""
    stamps = []
    for entry in [root, *root.rglob("*")]:
        st = entry.lstat()
        stamps.append(max(st.st_mtime_ns, st.st_ctime_ns))
    return max(stamps) / 1e9


def quiet_for(root: Path, seconds: float) -> None:
    """ctime cannot be set back: wait (on a condition, with a deadline) until it is old."""
    wait_for(lambda: time.time() - tree_newest(root) > seconds, what=f"{root} quiet {seconds} s")


def detail_seconds(detail: str) -> float:
    """The quiet time an end's reason states ("... nothing changed for 3.1 s ...")."""
    number, unit = detail.split("changed for ")[1].split(" (")[0].split()
    return float(number) * {"s": 1, "min": 60, "h": 3600, "days": 86400}[unit]


# ---- quiet time from the source's own times ---------------------------------------------


def test_a_source_quiet_since_before_the_start_settles_at_once(tmp_path: Path) -> None:
    """Every chunk present, no marker, quiet for longer than --settle before softcopy
    starts: the settle rule holds on the first look; its quiet time is the source's."""
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, replace(SMALL, complete=False))
    quiet_for(src, 3.0)
    result = run_softcopy("copy", src, dst, "--settle", "2", "--finished-after", "0", "--json")
    assert result.returncode == 0, result.stderr
    assert_same_tree(src, dst)
    end = certificate(dst)["end"]
    assert end["rule"] == "settle" and end["proven"] is False
    # Measured from the source's newest change: at least the 3 s it was quiet before the
    # start (measured from softcopy's start it would say about 2 s, after a 2 s wait).
    assert detail_seconds(end["detail"]) >= 3.0, end["detail"]
    assert "waiting" not in {e["event"] for e in events(result.stdout)}


def test_the_idle_timeout_counts_the_quiet_before_the_start(tmp_path: Path) -> None:
    """A plain folder has no expected set: --idle-timeout ends it, from its own times."""
    src, dst = tmp_path / "run", tmp_path / "copy"
    src.mkdir()
    (src / "a.txt").write_text("a")
    quiet_for(src, 3.0)
    result = run_softcopy(
        "copy", src, dst, "--kind", "directory", "--idle-timeout", "2", "--finished-after", "0"
    )
    assert result.returncode == 0, result.stderr
    end = certificate(dst)["end"]
    assert end["rule"] == "idle_timeout"
    assert detail_seconds(end["detail"]) >= 3.0, end["detail"]


def test_a_deletion_is_a_change_seen_in_its_directory(tmp_path: Path) -> None:
    """Deleting a file changes only its parent's ctime: the listing's newest change has it."""
    root = tmp_path / "src"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a").write_text("a")
    (root / "sub" / "b").write_text("b")
    quiet_for(root, 0.2)
    files_newest = max(newest_change_ns(str(root)) / 1e9, 0)
    (root / "sub" / "b").unlink()
    after = newest_change_ns(str(root)) / 1e9
    assert after > files_newest + 0.1, "the deletion must count as a change"


def test_a_writer_temporary_file_being_written_is_a_change(tmp_path: Path) -> None:
    """A temporary file's appends change no directory: its own times must count."""
    root = tmp_path / "src"
    root.mkdir()
    temp = root / "c.0.__lock"
    temp.write_text("x")
    quiet_for(root, 0.2)
    before = newest_change_ns(str(root)) / 1e9
    with open(temp, "a") as f:
        f.write("more")
    assert newest_change_ns(str(root)) / 1e9 > before + 0.1


# ---- an old source is finished ------------------------------------------------------------


@pytest.mark.parametrize("trust", [False, True])
def test_an_old_archive_with_fill_value_holes_counts_as_finished(
    tmp_path: Path, trust: bool
) -> None:
    """30 % of chunks never written and no marker: it would never settle. Older than
    --finished-after when softcopy starts, it is finished: a guessed end, said so."""
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, replace(SMALL, complete=False, holes=0.3))
    quiet_for(src, 1.5)
    args = ["--trust-guessed-end"] if trust else []
    result = run_softcopy("copy", src, dst, "--settle", "600", "--finished-after", "1", *args)
    assert result.returncode == 0, result.stderr
    assert_same_tree(src, dst)
    cert = certificate(dst)
    assert cert["end"]["rule"] == "old_source" and cert["end"]["proven"] is False
    assert "older than --finished-after 1 s" in cert["end"]["detail"]
    assert detail_seconds(cert["end"]["detail"]) >= 1.5
    assert cert["safe_to_free"] is trust, "a guess frees the source only when trusted"
    assert "was guessed" in result.stderr


def test_an_old_source_stops_counting_once_it_changes() -> None:
    """Old at the start but written since: a live acquisition after a long pause."""
    rules = Rules("complete", 10, idle_timeout=None, settle=5, finished_after=3600)
    base = dict(
        markers={}, longest_pause=0.0, all_expected_present=False, temp_count=0,
        has_expected_set=True,
    )  # fmt: skip
    end = end_of(rules, Observed(quiet=7300, quiet_at_start=7200, **base))
    assert end is not None and end.rule == "old_source" and end.confirm
    assert end.reason == "nothing in the source changed for 2 h (older than --finished-after 1 h)"
    assert end_of(rules, Observed(quiet=2, quiet_at_start=7200, **base)) is None
    assert end_of(rules, Observed(quiet=7300, quiet_at_start=60, **base)) is None, "not at start"
    off = replace(rules, finished_after=0)
    assert end_of(off, Observed(quiet=7300, quiet_at_start=7200, **base)) is None
    assert end_record("old_source", end.reason, False)["safe_to_free"] is False


def test_durations_read_as_people_say_them() -> None:
    assert [duration(s) for s in (1.5, 90, 3600, 7200, 5 * 86400)] == [
        "1.5 s", "1.5 min", "1 h", "2 h", "5 days",
    ]  # fmt: skip


# ---- a busy disk delays only copying ------------------------------------------------------


@pytest.mark.alone
def test_a_busy_disk_does_not_delay_a_rerun_with_nothing_to_copy(
    tmp_path: Path,
    loop_source: Path,  # noqa: F811
) -> None:
    """Other jobs keep the source disk busy: a rerun of a finished copy (everything
    journaled), and one that must compare everything (its journal lost), never pause."""
    src, dst = loop_source / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, replace(SMALL, shape=(2, 16, 16)))
    first = run_softcopy("copy", src, dst, "--no-backoff")
    assert first.returncode == 0, first.stderr
    load = start_disk_load(loop_source)
    try:
        # softcopy's own measure sees the disk busy, so a run with work to copy would pause.
        pressure = DiskPressure(str(src), busy_utilisation=0.3)
        wait_for(lambda: (pressure.update(), pressure.busy())[1], what="a busy source disk")
        again = run_softcopy("copy", src, dst, "--busy-utilisation", "0.3", "--json")
        lost = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "lost"))
        compared = run_softcopy("copy", src, dst, "--busy-utilisation", "0.3", "--json", env=lost)
        still_busy = (pressure.update(), pressure.busy())[1]
    finally:
        load.kill()
        load.wait()
        subprocess.run(["sync"], check=False)
    assert still_busy, "the disk went quiet meanwhile: the test proves nothing"
    for run in (again, compared):
        assert run.returncode == 0, run.stderr
        names = [e["event"] for e in events(run.stdout)]
        assert "paused" not in names, run.stderr
        (summary,) = [e for e in events(run.stdout) if e["event"] == "summary"]
        assert summary["files_copied"] == 0 and summary["state"] == "done", summary
    assert_same_tree(src, dst)
