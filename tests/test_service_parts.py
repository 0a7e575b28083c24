"""The service's parts on their own: presets, the fallback sentinel, run discovery,
claims (exclusive create, busy, takeover), durations and the journal's runs.

Real files, real processes (a dead pid is a real child that exited), real SQLite.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_softcopy

from softcopy.engine.finish import Observed, Rules, end_of
from softcopy.errors import ConfigError
from softcopy.presets import apply_preset
from softcopy.service.claims import CLAIM, Busy, Claim, Observations, claim
from softcopy.service.discover import find_runs
from softcopy.sources.scan import Version
from softcopy.state.journal import SCHEMA_VERSION, process_start
from softcopy.state.runs import RunBook, read_runs, record_release, retry_run, run_record
from softcopy.units import parse_duration

# ---- presets ------------------------------------------------------------------------


def test_a_preset_fills_in_what_is_not_given_and_yields_to_what_is() -> None:
    illumina = apply_preset({"preset": "illumina"}, "here")
    assert illumina["sentinels"] == ("CopyComplete.txt",)
    assert illumina["sentinel_fallbacks"] == ("RTAComplete.txt",)
    assert illumina["sentinel_min_age"] == 900.0 and illumina["kind"] == "directory"
    mine = apply_preset({"preset": "illumina", "sentinel_min_age": 5.0}, "here")
    assert mine["sentinel_min_age"] == 5.0
    # An explicit sentinel replaces the preset's rule, its fallback included.
    own = apply_preset({"preset": "illumina", "sentinels": ("Done.txt",)}, "here")
    assert own["sentinels"] == ("Done.txt",) and "sentinel_fallbacks" not in own
    assert apply_preset({"preset": "ont"}, "here")["sentinels"] == ("final_summary*.txt",)
    assert apply_preset({}, "here") == {}


@pytest.mark.parametrize(
    "options",
    [
        {"preset": "zarr", "sentinels": ("x",)},
        {"preset": "zarr", "sentinel_min_age": 3.0},
        {"preset": "zarr", "kind": "directory"},
        {"preset": "illumina", "kind": "zarr"},
        {"preset": "ont", "kind": "zarr"},
    ],
)
def test_a_preset_and_an_option_that_contradict_are_refused(options: dict) -> None:
    with pytest.raises(ConfigError) as err:
        apply_preset(options, "command line")
    assert "drop one of them" in str(err.value) and "command line" in str(err.value)


def test_contradicting_preset_on_the_command_line_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    done = run_softcopy(
        "copy", "--preset", "zarr", "--sentinel", "X", tmp_path / "run", tmp_path / "copy"
    )
    assert done.returncode == 2
    assert "--preset zarr" in done.stderr and "Traceback" not in done.stderr


# ---- the fallback sentinel ----------------------------------------------------------


def _observed(markers: dict[str, float], quiet: float, now: float) -> Observed:
    versions = {k: Version(1, int(t * 1e9), 1, int(t * 1e9)) for k, t in markers.items()}
    return Observed(versions, quiet, 0.0, False, 0, False, now_wall=now)


ILLUMINA = Rules("complete", 900.0, None, 5.0, ("RTAComplete.txt",))


def test_the_fallback_sentinel_needs_the_whole_run_quiet_as_long() -> None:
    now = 100_000.0
    # RTAComplete.txt old enough, but the run still changes: CopyComplete.txt may come.
    assert end_of(ILLUMINA, _observed({"RTAComplete.txt": now - 1000}, 10.0, now)) is None
    end = end_of(ILLUMINA, _observed({"RTAComplete.txt": now - 1000}, 950.0, now))
    assert end is not None and end.rule == "sentinel" and "fallback" in end.reason
    assert end.confirm  # a fresh listing must agree the run is quiet


def test_the_first_sentinel_ends_the_run_without_waiting_for_quiet() -> None:
    now = 100_000.0
    seen = _observed({"CopyComplete.txt": now - 901, "RTAComplete.txt": now - 5000}, 1.0, now)
    end = end_of(ILLUMINA, seen)
    assert end is not None and "'CopyComplete.txt'" in end.reason and not end.confirm
    assert end_of(ILLUMINA, _observed({"CopyComplete.txt": now - 100}, 1.0, now)) is None


def test_a_fallback_sentinel_ends_a_real_run_folder_only_once_it_is_quiet(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "a.bcl").write_bytes(b"x" * 100)
    (run / "RTAComplete.txt").write_text("done\n")
    done = run_softcopy(
        "copy",
        "--kind",
        "directory",
        "--sentinel",
        "CopyComplete.txt",
        "--sentinel-fallback",
        "RTAComplete.txt",
        "--sentinel-min-age",
        "1",
        "--ready-age",
        "0",
        "--state-dir",
        tmp_path / "state",
        run,
        tmp_path / "copy",
    )
    assert done.returncode == 0, done.stderr
    certificate = json.loads((tmp_path / "copy.softcopy" / "certificate.json").read_text())
    assert certificate["end"]["rule"] == "sentinel" and certificate["safe_to_free"]
    assert "fallback sentinel 'RTAComplete.txt'" in certificate["finished_because"]
    assert (tmp_path / "copy" / "RTAComplete.txt").exists()


# ---- discovery ----------------------------------------------------------------------


def test_runs_are_directories_at_depth_never_files_hidden_entries_or_links(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    (root / "plain").mkdir(parents=True)
    (root / "acq.zarr").mkdir()  # a zarr run before its metadata
    (root / "meta").mkdir()
    (root / "meta" / "zarr.json").write_text("{}")
    (root / ".hidden").mkdir()
    (root / "notes.txt").write_text("not a run")
    (root / "elsewhere").symlink_to(tmp_path)
    (root / "x.softcopy").mkdir()
    runs = {f.run: f for f in find_runs(str(root), 1, ())}
    assert set(runs) == {"plain", "acq.zarr", "meta"}
    assert (runs["plain"].kind, runs["plain"].ready) == ("directory", True)
    assert (runs["acq.zarr"].kind, runs["acq.zarr"].ready) == ("zarr", False)
    assert (runs["meta"].kind, runs["meta"].ready) == ("zarr", True)


def test_depth_and_patterns_choose_the_runs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for path in ("novaseq/251115_A", "novaseq/251116_B", "minion/run_C", "minion/other"):
        (root / path).mkdir(parents=True)
    assert {f.run for f in find_runs(str(root), 2, ())} == {
        "novaseq/251115_A",
        "novaseq/251116_B",
        "minion/run_C",
        "minion/other",
    }
    assert {f.run for f in find_runs(str(root), 2, ("25*",))} == {
        "novaseq/251115_A",
        "novaseq/251116_B",
    }
    assert {f.run for f in find_runs(str(root), 2, ("minion/*",))} == {
        "minion/run_C",
        "minion/other",
    }
    assert {f.run for f in find_runs(str(root), 1, ())} == {"novaseq", "minion"}


def test_a_missing_root_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        find_runs(str(tmp_path / "absent"), 1, ())
    assert "does not exist" in str(err.value)


# ---- claims -------------------------------------------------------------------------


def _dead_pid() -> tuple[int, int]:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    started = process_start(child.pid)
    assert started is not None
    child.kill()
    child.wait()
    return child.pid, started


def _write_claim(folder: Path, **fields: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "host": socket.gethostname(),
        "boot_id": "",
        "pid": 0,
        "pid_started": 0,
        "token": "theirs",
        "renewals": 0,
        **fields,
    }
    (folder / CLAIM).write_text(json.dumps(record))


def test_a_claim_is_exclusive_and_released(tmp_path: Path) -> None:
    folder = tmp_path / "run.softcopy"
    mine = claim(folder, "/src/run", 60.0, Observations())
    assert isinstance(mine, Claim)
    record = json.loads((folder / CLAIM).read_text())
    assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    assert mine.renew() and json.loads((folder / CLAIM).read_text())["renewals"] == 1
    mine.release()
    assert not (folder / CLAIM).exists()
    assert not [p for p in folder.iterdir() if p.name.endswith(".new")]
    assert mine.renew()  # released: the renewal thread's late call writes nothing
    assert not (folder / CLAIM).exists()


def test_a_live_owner_on_this_host_is_never_taken_over_whatever_its_lease(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "run.softcopy"
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_claim(folder, pid=owner.pid, pid_started=process_start(owner.pid))
        seen = Observations()
        assert isinstance(claim(folder, "/src/run", 1.0, seen, now=0.0), Busy)
        busy = claim(folder, "/src/run", 1.0, seen, now=1000.0)
        assert isinstance(busy, Busy) and str(owner.pid) in busy.owner
    finally:
        owner.kill()
        owner.wait()
    got = claim(folder, "/src/run", 1.0, Observations())  # now its process is gone
    assert isinstance(got, Claim)
    got.release()


def test_a_claim_this_process_left_behind_is_taken_back(tmp_path: Path) -> None:
    folder = tmp_path / "run.softcopy"
    left = claim(folder, "/src/run", 60.0, Observations())
    assert isinstance(left, Claim)
    left.records.close()  # an attempt that ended without releasing it
    again = claim(folder, "/src/run", 60.0, Observations())
    assert isinstance(again, Claim) and again.token != left.token
    again.release()
    assert not (folder / CLAIM).exists()


@pytest.mark.parametrize("content", ["", '{"host": "h", "tok', '{"pid": "x", "renewals": []}'])
def test_a_damaged_claim_record_is_taken_over_once_unchanged_for_the_lease(
    tmp_path: Path, content: str
) -> None:
    folder = tmp_path / "run.softcopy"
    folder.mkdir()
    (folder / CLAIM).write_text(content)
    seen = Observations()
    busy = claim(folder, "/src/run", 5.0, seen, now=100.0)
    assert isinstance(busy, Busy)
    if content.startswith('{"pid"'):
        assert "holds the claim" in busy.why  # a record, but of nobody alive we know
    else:
        assert "damaged" in busy.why and str(folder / CLAIM) in busy.why
    got = claim(folder, "/src/run", 5.0, seen, now=106.0)
    assert isinstance(got, Claim)
    got.release()


def test_a_claim_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path: Path) -> None:
    folder = tmp_path / "run.softcopy"
    pid, started = _dead_pid()
    _write_claim(folder, pid=pid, pid_started=started)
    got = claim(folder, "/src/run", 3600.0, Observations())
    assert isinstance(got, Claim)
    assert json.loads((folder / CLAIM).read_text())["token"] == got.token
    got.release()


def test_another_hosts_claim_is_taken_over_only_after_the_lease_unchanged(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "run.softcopy"
    _write_claim(folder, host="other-host.example", pid=4242, renewals=0)
    seen = Observations()
    assert isinstance(claim(folder, "/src/run", 10.0, seen, now=1000.0), Busy)
    assert isinstance(claim(folder, "/src/run", 10.0, seen, now=1009.0), Busy)
    # Renewed meanwhile: the lease counts again from when this host saw the change.
    _write_claim(folder, host="other-host.example", pid=4242, renewals=1)
    assert isinstance(claim(folder, "/src/run", 10.0, seen, now=1011.0), Busy)
    assert isinstance(claim(folder, "/src/run", 10.0, seen, now=1020.0), Busy)
    got = claim(folder, "/src/run", 10.0, seen, now=1021.5)
    assert isinstance(got, Claim)
    got.release()


def test_a_claim_taken_over_is_lost_at_the_next_renewal(tmp_path: Path) -> None:
    folder = tmp_path / "run.softcopy"
    mine = claim(folder, "/src/run", 60.0, Observations())
    assert isinstance(mine, Claim)
    _write_claim(folder, host="other-host.example", token="newer")
    assert not mine.renew()
    mine.release()  # not ours any more: left in place
    assert json.loads((folder / CLAIM).read_text())["token"] == "newer"


def test_a_takeover_in_progress_elsewhere_is_not_joined(tmp_path: Path) -> None:
    folder = tmp_path / "run.softcopy"
    pid, started = _dead_pid()
    _write_claim(folder, pid=pid, pid_started=started)
    # A live taker of this host (this very process) holds the takeover record.
    (folder / "claim.takeover").write_text(
        json.dumps(
            {
                "host": socket.gethostname(),
                "boot_id": "",
                "pid": os.getpid(),
                "pid_started": process_start(os.getpid()),
                "token": "taker",
            }
        )
    )
    assert isinstance(claim(folder, "/src/run", 60.0, Observations()), Busy)
    (folder / "claim.takeover").unlink()
    got = claim(folder, "/src/run", 60.0, Observations())
    assert isinstance(got, Claim)
    got.release()


def test_a_claim_record_that_is_a_link_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "run.softcopy"
    folder.mkdir()
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"host": "x", "token": "t"}))
    (folder / CLAIM).symlink_to(outside)
    with pytest.raises(ConfigError) as err:
        claim(folder, "/src/run", 60.0, Observations())
    assert "symbolic link" in str(err.value)
    assert json.loads(outside.read_text()) == {"host": "x", "token": "t"}


# ---- durations ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("45s", 45),
        ("30m", 1800),
        ("12h", 43200),
        ("7d", 604800),
        ("2w", 1209600),
        ("1.5h", 5400),
        (" 3D ", 259200),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "7x", "-1d", "nan", "inf", "seven days"])
def test_bad_durations_say_what_is_wrong(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


# ---- the journal's runs -------------------------------------------------------------


def test_runs_rows_the_view_retry_and_release(tmp_path: Path) -> None:
    book = RunBook(tmp_path)
    book.add("root", "r\udcff1", "root/r\udcff1", "dest/r\udcff1", "directory")
    book.update("root", "r\udcff1", state="failed", attempts=3, error="boom", ended=0.0)
    rows = read_runs(tmp_path)
    assert [r["run"] for r in rows] == ["r\udcff1"]  # a byte name, exactly
    record = run_record(rows[0])
    assert record["ended"] == "1970-01-01T00:00:00Z" and record["state"] == "failed"
    db = sqlite3.connect(tmp_path / "journal.sqlite")
    view = db.execute("SELECT run, state, attempts, ended FROM runs_v1").fetchall()
    assert view == [(os.fsencode("r\udcff1"), "failed", 3, "1970-01-01T00:00:00Z")]
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()
    with pytest.raises(ConfigError, match="no run of that name"):
        retry_run(tmp_path, "other")
    assert [r["run"] for r in retry_run(tmp_path, "r\udcff1")] == ["r\udcff1"]
    row = book.get("root", "r\udcff1")
    assert row is not None and (row["state"], row["attempts"]) == ("waiting", 0)
    with pytest.raises(ConfigError, match="no failed run"):
        retry_run(tmp_path, "r\udcff1")
    record_release(tmp_path, "dest/r\udcff1", {"to": None})
    row = book.get("root", "r\udcff1")
    assert row is not None and row["state"] == "released" and row["released"]
    book.close()


def test_a_journal_of_version_1_gains_the_runs_table(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "journal.sqlite")
    from softcopy.state.journal import APPLICATION_ID, SCHEMA

    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute("PRAGMA user_version = 1")
    db.execute(
        "INSERT INTO targets (destination, source, state, started, updated)"
        " VALUES ('/d', '/s', 'done', 1, 1)"
    )
    db.commit()
    db.close()
    assert read_runs(tmp_path) == []  # read-only: not migrated by a reader
    book = RunBook(tmp_path)
    book.add("root", "a", "root/a", "dest/a", "zarr")
    book.close()
    db = sqlite3.connect(tmp_path / "journal.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("SELECT destination FROM targets").fetchall() == [("/d",)]
    db.close()
    assert [r["run"] for r in read_runs(tmp_path)] == ["a"]


def test_retry_of_an_unknown_run_is_exit_2(tmp_path: Path) -> None:
    done = run_softcopy("retry", "nope", "--state-dir", tmp_path)
    assert done.returncode == 2 and "nope" in done.stderr and "Traceback" not in done.stderr


# ---- `run` with watch entries -------------------------------------------------------


def test_one_targets_file_copies_targets_and_watches_roots(tmp_path: Path) -> None:
    single = tmp_path / "single"
    single.mkdir()
    (single / "a.txt").write_text("a\n")
    (single / "Done.txt").write_text("done\n")
    root = tmp_path / "root"
    for name in ("run1", "run2"):
        (root / name).mkdir(parents=True)
        (root / name / "data.bin").write_bytes(os.urandom(1000))
        (root / name / "Done.txt").write_text("done\n")
    (tmp_path / "targets.yaml").write_text(
        "defaults:\n  kind: directory\n  sentinels: [Done.txt]\n  sentinel_min_age: 0\n"
        f"  ready_age: 0\n  hash: true\n  state_dir: {tmp_path / 'state'}\n"
        "targets:\n  - source: single\n    destination: out/single\n"
        "watch:\n  - source_root: root\n    destination_root: out/runs\n    once: true\n"
        "    max_runs: 1\n"
    )
    done = run_softcopy("run", tmp_path / "targets.yaml")
    assert done.returncode == 0, done.stderr
    for src, dst in (
        ("single", "out/single"),
        ("root/run1", "out/runs/run1"),
        ("root/run2", "out/runs/run2"),
    ):
        verified = run_softcopy("verify", "--hash", tmp_path / src, tmp_path / dst)
        assert verified.returncode == 0, verified.stderr
    states = {r["run"]: r["state"] for r in read_runs(tmp_path / "state")}
    assert states == {"run1": "done", "run2": "done"}


def test_a_watch_entry_with_an_unknown_option_is_refused(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "targets.yaml").write_text(
        "watch:\n  - source_root: root\n    destination_root: out\n    max_runz: 3\n"
    )
    done = run_softcopy("run", tmp_path / "targets.yaml")
    assert done.returncode == 2
    assert "watch[0].max_runz" in done.stderr and "Traceback" not in done.stderr
