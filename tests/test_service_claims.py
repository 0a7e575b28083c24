"""`softcopy watch` claims, takeovers and hooks, black-box: real watchers in subprocesses
racing on the same roots, killed with real signals, with claims written by hand as a
watcher on another host (or a live process of ours) would hold them."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    assert_same_tree,
    finish,
    run_softcopy,
    start,
    start_simulator,
    start_softcopy,
    tree_files,
    wait_for,
)

from softcopy.service.hooks import OUTPUT_TAIL

# Small timings so a test takes seconds: a bound on each wait is conftest's DEADLINE.
# No back-off: these tests are about claims, and the source's disk is shared with the
# rest of the suite, whose I/O would pause the copies for 30 s and then let them
# trickle (one batch every 5 s), past any deadline (test_ends.py and test_priority.py
# test the pausing).
FAST = ("--retry-delay", "0.2", "--sentinel-min-age", "0.5", "--scan-interval", "1",
        "--nprocs", "1", "--ready-age", "0.3", "--no-backoff")  # fmt: skip
# For finished runs only: a live acquisition stalled for a second on a busy machine must
# not be taken for its end.
IDLE = ("--idle-timeout", "1")
# A zarr acquisition still being written when a watcher is killed or stopped.
LIVE = ("--timepoints", "40", "--interval", "0.3", "--shape", "2,32,32", "--chunks",
        "1,16,16", "--complete")  # fmt: skip
# The same, shorter: held_acquisition keeps it from ending before the test lets it.
SHORT_LIVE = ("--timepoints", "16", *LIVE[2:])


# ---- making runs --------------------------------------------------------------------------


def run_folder(root: Path, name: str) -> Path:
    """An Illumina-like run folder, finished (its sentinel written last)."""
    run = root / name
    calls = run / "Data" / "Intensities" / "BaseCalls" / "L001"
    calls.mkdir(parents=True)
    (run / "RunInfo.xml").write_text(f"<RunInfo id='{name}'/>")
    for cycle in range(1, 4):
        (calls / f"C{cycle}.1.cbcl").write_bytes(os.urandom(20_000))
    (run / "CopyComplete.txt").write_text("")
    return run


def zarr_run(root: Path, name: str, *args: object) -> Path:
    """A finished zarr acquisition written by the real tensorstore writer."""
    path = root / name
    args = args or ("--timepoints", "3", "--interval", "0", "--shape", "2,32,32",
                    "--chunks", "1,16,16", "--complete")  # fmt: skip
    rc, _, err = finish(start_simulator(path, *args))
    assert rc == 0, err
    return path


def held_acquisition(path: Path) -> subprocess.Popen:
    """A live zarr acquisition, stopped (SIGSTOP) once its first files exist: it is still
    under way when the test sends SIGCONT, however slow the machine was meanwhile. Then
    it writes for seconds more (SHORT_LIVE), not for as long as a slow machine might need."""
    sim = start_simulator(path, *SHORT_LIVE)
    # Written files, not tensorstore's `key.__lock`: one stopped mid-write is never renamed
    # while the writer is held, and a test waiting for five copies would wait for ever.
    wait_for(lambda: written_files(path) >= 5, what="the acquisition's first files", proc=sim)
    sim.send_signal(signal.SIGSTOP)
    assert sim.poll() is None, "the acquisition ended before it was held"
    return sim


def copying_again(sim: subprocess.Popen, dst: Path, proc: subprocess.Popen) -> None:
    """Let the held acquisition go on, and return once the watcher copies what it writes:
    what comes next happens while both write."""
    before = copied_files(dst)
    sim.send_signal(signal.SIGCONT)
    wait_for(lambda: copied_files(dst) > before, what="the copy to go on", proc=proc)


def broken_zarr_run(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "zarr.json").write_text('{"zarr_format": 3, "node_type": "array", "shape": [')
    return path


# ---- reading what the watchers left -------------------------------------------------------


def statuses(state_dir: Path) -> dict[str, dict[str, Any]]:
    """`softcopy status --json` of a journal: run name -> its record."""
    done = run_softcopy("status", "--json", "--state-dir", state_dir)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return {r["run"]: r for r in records if r.get("type") == "run"}


def journal_runs(state_dir: Path) -> dict[str, str]:
    """Run -> state, read through the journal's documented view (`runs_v1`), as a
    downstream tool would: cheap enough to poll, unlike a `status` subprocess."""
    path = state_dir / "journal.sqlite"
    if not path.exists():
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return dict(db.execute("SELECT run, state FROM runs_v1"))
    except sqlite3.OperationalError:  # the schema is not made yet
        return {}
    finally:
        db.close()


def claim_path(dst_root: Path, run: str) -> Path:
    return dst_root / f"{run}.softcopy" / "claim.json"


def read_claim(dst_root: Path, run: str) -> dict[str, Any] | None:
    try:
        return json.loads(claim_path(dst_root, run).read_text())
    except (FileNotFoundError, ValueError):
        return None


def claimed_by(dst_root: Path, run: str, pid: int) -> bool:
    record = read_claim(dst_root, run)
    return record is not None and record.get("pid") == pid


def write_claim(dst_root: Path, run: str, record: dict[str, Any]) -> None:
    """As a watcher writes it: whole under its name at once (a reader never sees half)."""
    path = claim_path(dst_root, run)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".claim.test.new")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def process_start(pid: int) -> int:
    """/proc/PID/stat field 22: when the process started, in clock ticks after boot."""
    fields = _stat_fields(pid)
    assert fields is not None, f"no process {pid}"
    return int(fields[19])


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _stat_fields(pid: int) -> list[str] | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return data.rsplit(")", 1)[1].split()  # the name (field 2) may hold spaces


def running(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry))
    return found


def copied_files(dst: Path) -> int:
    return len(tree_files(dst)) if dst.is_dir() else 0


def written_files(src: Path) -> int:
    """Files a live zarr writer finished (its lockfiles left out)."""
    return sum(not key.endswith(".__lock") for key in tree_files(src)) if src.is_dir() else 0


def watch(src: Path, dst: Path, state_dir: Path, *args: object):
    return start_softcopy("watch", src, dst, "--state-dir", state_dir, *FAST, *args)


# ---- 1. two watchers racing ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("journals", ["one shared journal", "a journal each (two hosts)"])
def test_two_watchers_copy_every_run_exactly_once_and_run_each_hook_once(
    tmp_path: Path, journals: str
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    runs = [zarr_run(src, f"z{i}.zarr").name for i in range(3)]
    runs += [run_folder(src, f"RUN{i}").name for i in range(3)]
    hooklog = tmp_path / "hooks.log"
    shared = journals.startswith("one")
    state_dirs = [tmp_path / "st"] * 2 if shared else [tmp_path / "st-a", tmp_path / "st-b"]
    hook = f'echo "$SOFTCOPY_RUN $$" >> {shlex.quote(str(hooklog))}'
    procs = [
        watch(src, dst, state, "--once", "--preset", "illumina", "--max-runs", "1",
              "--lease", "2", *IDLE, "--on-done", hook)
        for state in state_dirs
    ]  # fmt: skip
    ended = [finish(proc) for proc in procs]
    for rc, _, err in ended:
        assert rc == 0, err
    logs = [err for _, _, err in ended]

    for run in runs:
        # Only one watcher started a copy of it, once.
        started = [err.count(f"run {run}: copying to ") for err in logs]
        assert sorted(started) == [0, 1], (run, started, logs)
        summary = json.loads((dst / f"{run}.softcopy" / "summary.json").read_text())
        assert summary["state"] == "done", summary
        assert summary["files_already_there"] == 0, summary
        assert summary["files_copied"] == summary["files_at_source"], summary
        assert_same_tree(src / run, dst / run)
        assert not claim_path(dst, run).exists(), f"{run}: claim left behind"
        if not shared:
            # The other watcher learned it was done from the certificate, without copying.
            other = logs[started.index(0)]
            assert f"run {run}: already copied and verified" in other, other

    # Every hook ran exactly once, by the hook's own log.
    lines = hooklog.read_text().splitlines()
    assert sorted(line.split()[0] for line in lines) == sorted(runs), lines

    # Every run is done in both watchers' view.
    for state in state_dirs:
        seen = statuses(state)
        assert sorted(seen) == sorted(runs), seen
        for run, record in seen.items():
            assert record["state"] == "done", record
            assert record["certificate"] == str(dst / f"{run}.softcopy" / "certificate.json")
            assert record["error"] is None, record


# ---- 2. SIGKILL of a watcher mid-run ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("second", ["started after the kill", "already running"])
def test_a_killed_watchers_run_is_taken_over_at_once_and_finished(
    tmp_path: Path, second: str
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    sim = held_acquisition(src / "live.zarr")
    first = watch(src, dst, tmp_path / "st-a")
    wait_for(lambda: claimed_by(dst, "live.zarr", first.pid), what="the first claim", proc=first)
    wait_for(lambda: copied_files(dst / "live.zarr") >= 5, what="a copy under way", proc=first)

    # A lease far longer than any wait here: only "its process is dead" can explain a
    # takeover before the deadline.
    state_b = tmp_path / ("st-b" if second == "already running" else "st-a")
    later = ("--once", "--lease", "600")
    other = None
    if second == "already running":
        other = watch(src, dst, state_b, *later)
        wait_for(lambda: "live.zarr" in journal_runs(state_b), what="B to find the run",
                 proc=other)  # fmt: skip
        assert claimed_by(dst, "live.zarr", first.pid), "B took a live watcher's claim"
    copiers = children(first.pid)
    assert copiers, "the watcher has no copier processes to leave behind"
    copying_again(sim, dst / "live.zarr", first)  # killed while it copies what is written
    first.send_signal(signal.SIGKILL)
    finish(first)
    # Nothing of the killed watcher's may go on writing beside its successor.
    wait_for(lambda: not any(map(running, copiers)), timeout=10, what="its copiers to die")
    assert sim.poll() is None, "the acquisition ended before the kill: nothing to take over"
    if other is None:
        other = watch(src, dst, state_b, *later)
    wait_for(lambda: claimed_by(dst, "live.zarr", other.pid), what="B's takeover", proc=other)

    assert finish(sim)[0] == 0
    rc, _, err = finish(other)
    assert rc == 0, err
    assert f"took over the claim of pid {first.pid} on {socket.gethostname()}" in err, err
    assert "its process is gone" in err, err
    assert_same_tree(src / "live.zarr", dst / "live.zarr")
    assert statuses(state_b)["live.zarr"]["state"] == "done"
    assert not claim_path(dst, "live.zarr").exists()


# ---- 3. claims of others ------------------------------------------------------------------


def foreign_claim(src: Path, run: str, renewals: int) -> dict[str, Any]:
    return {
        "host": "other-host.invalid",
        "boot_id": str(uuid.UUID(int=7)),
        "pid": 4242,
        "pid_started": 1,
        "token": "f" * 32,
        "source": str(src / run),
        "lease_seconds": 60,
        "claimed": "2026-01-01T00:00:00Z",
        "renewed": "2026-01-01T00:00:00Z",
        "renewals": renewals,
    }


@pytest.mark.slow
def test_another_hosts_claim_is_left_while_renewed_and_taken_over_once_it_stops(
    tmp_path: Path,
) -> None:
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "st"
    src.mkdir()
    run_folder(src, "RUN1")
    lease = 2.0
    write_claim(dst, "RUN1", foreign_claim(src, "RUN1", 0))
    proc = watch(src, dst, state, "--once", "--preset", "illumina", *IDLE, "--lease", lease)

    # The other host renews every 0.5 s: for 4 s after the watcher found the run (twice
    # its lease), the watcher must leave it alone.
    renewals, found_at = 0, None
    while found_at is None or time.monotonic() - found_at < 2 * lease:
        if found_at is None and "RUN1" in journal_runs(state):
            found_at = time.monotonic()
        assert proc.poll() is None, finish(proc)
        current = read_claim(dst, "RUN1")
        assert current is not None and current["token"] == "f" * 32, current
        assert not (dst / "RUN1").exists(), "copied a run another host holds"
        renewals += 1
        last_renewal = time.monotonic()  # before the write: the watcher sees it no sooner
        write_claim(dst, "RUN1", foreign_claim(src, "RUN1", renewals))
        time.sleep(0.5)  # the other host's renewal interval (not a wait for the watcher)
        assert time.monotonic() - last_renewal < lease, "this test stalled: cannot judge"

    def taken_over() -> bool:
        current = read_claim(dst, "RUN1")
        return current is None or current["token"] != "f" * 32

    wait_for(taken_over, what="the takeover of the unrenewed claim", proc=proc)
    # Judged by the watcher's own clock, from the last change it could have seen.
    assert time.monotonic() - last_renewal >= lease
    rc, _, err = finish(proc)
    assert rc == 0, err
    assert "copied by pid 4242 on other-host.invalid (it holds the claim)" in err, err
    assert "took over the claim of pid 4242 on other-host.invalid" in err, err
    assert "its lease was not renewed" in err, err
    assert statuses(state)["RUN1"]["state"] == "done"
    assert_same_tree(src / "RUN1", dst / "RUN1")


@pytest.mark.slow
def test_a_live_owner_on_this_host_is_never_taken_over(tmp_path: Path) -> None:
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "st"
    src.mkdir()
    run_folder(src, "RUN1")
    owner = start(["sleep", "600"])  # a process of ours holding the claim, never renewing
    record = {
        **foreign_claim(src, "RUN1", 0),
        "host": socket.gethostname(),
        "boot_id": boot_id(),
        "pid": owner.pid,
        "pid_started": process_start(owner.pid),
        "token": "0" * 32,
    }
    write_claim(dst, "RUN1", record)
    proc = watch(src, dst, state, "--once", "--preset", "illumina", *IDLE, "--lease", "1")
    wait_for(lambda: "RUN1" in journal_runs(state), what="the watcher to find the run",
             proc=proc)  # fmt: skip
    # Three unrenewed leases: a lease means nothing while the owner lives.
    window = time.monotonic() + 3.0
    while time.monotonic() < window:
        assert proc.poll() is None, finish(proc)
        assert read_claim(dst, "RUN1") == record
        assert not (dst / "RUN1").exists(), "copied a run a live process holds"
        time.sleep(0.05)

    owner.kill()
    owner.wait()
    rc, _, err = finish(proc)
    assert rc == 0, err
    assert f"copied by pid {owner.pid} on {socket.gethostname()}" in err, err
    assert f"took over the claim of pid {owner.pid}" in err and "its process is gone" in err
    assert statuses(state)["RUN1"]["state"] == "done"
    assert_same_tree(src / "RUN1", dst / "RUN1")


@pytest.mark.slow
def test_a_watcher_whose_claim_is_taken_stops_copying_and_leaves_the_new_claim(
    tmp_path: Path,
) -> None:
    """As when this watcher stalled past its lease and another host took the run over."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "st"
    src.mkdir()
    sim = start_simulator(src / "live.zarr", *LIVE)
    wait_for(lambda: (src / "live.zarr").is_dir(), what="the acquisition to start", proc=sim)
    lease = 2.0
    proc = watch(src, dst, state, "--once", "--lease", lease)
    wait_for(lambda: claimed_by(dst, "live.zarr", proc.pid), what="the claim", proc=proc)
    wait_for(lambda: copied_files(dst / "live.zarr") >= 5, what="a copy under way", proc=proc)

    renewals = 0
    write_claim(dst, "live.zarr", foreign_claim(src, "live.zarr", renewals))

    def stopped() -> bool:
        return journal_runs(state).get("live.zarr") == "waiting"

    while not stopped():  # the other host renews while this watcher notices and stops
        assert proc.poll() is None, finish(proc)
        renewals += 1
        write_claim(dst, "live.zarr", foreign_claim(src, "live.zarr", renewals))
        time.sleep(0.5)  # the other host's renewal interval
        assert renewals < 60, "the watcher never noticed that its claim was taken"
    # Stopped: from now on not a file of the copy may change while the other host holds it.
    before = tree_files(dst / "live.zarr")
    until = time.monotonic() + 2 * lease
    while time.monotonic() < until:
        assert proc.poll() is None, finish(proc)
        current = read_claim(dst, "live.zarr")
        assert current is not None and current["token"] == "f" * 32, current
        renewals += 1
        write_claim(dst, "live.zarr", foreign_claim(src, "live.zarr", renewals))
        time.sleep(0.5)
    assert tree_files(dst / "live.zarr") == before, "copied while another host held the run"

    # The other host is gone: after the lease this watcher takes the run back and ends it.
    assert finish(sim)[0] == 0
    rc, _, err = finish(proc)
    assert rc == 0, err
    assert "another watcher took over its claim; stopping this copy" in err, err
    assert "took over the claim of pid 4242 on other-host.invalid" in err, err
    assert_same_tree(src / "live.zarr", dst / "live.zarr")
    record = statuses(state)["live.zarr"]
    # Stopped, not failed: the lost attempt does not count.
    assert record["state"] == "done" and record["attempts"] == 1, record


DAMAGED_CLAIMS = {
    "empty": b"",
    "cut short": b'{"host": "other-host.invalid", "tok',
    "wrong types": b'{"host": "other-host.invalid", "pid": "x", "token": 1, "renewals": "y"}',
}


@pytest.mark.slow
@pytest.mark.parametrize("content", DAMAGED_CLAIMS.values(), ids=DAMAGED_CLAIMS.keys())
def test_a_damaged_claim_record_neither_holds_a_run_forever_nor_stops_the_service(
    tmp_path: Path, content: bytes
) -> None:
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "st"
    src.mkdir()
    run_folder(src, "RUN1")
    claim_path(dst, "RUN1").parent.mkdir(parents=True)
    claim_path(dst, "RUN1").write_bytes(content)
    proc = watch(src, dst, state, "--once", "--preset", "illumina", *IDLE, "--lease", "1")
    # Either is fine, not silence nor a crash: taken over once unchanged for the lease
    # (whoever wrote it wrote nothing since), or the run failed naming the record.
    rc, _, err = finish(proc, timeout=20)
    assert "internal error" not in err, err
    record = statuses(state)["RUN1"]
    if rc == 0:
        assert record["state"] == "done", record
        assert_same_tree(src / "RUN1", dst / "RUN1")
    else:
        assert rc == 1 and record["state"] == "failed", (rc, record, err)
        assert str(claim_path(dst, "RUN1")) in record["error"], record


# ---- 4. hooks that fail, hang and print ---------------------------------------------------


@pytest.mark.slow
def test_failing_hanging_and_chatty_hooks_never_change_a_runs_state(tmp_path: Path) -> None:
    src, dst, out = tmp_path / "src", tmp_path / "dst", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    for name in ("fail", "hang", "print"):
        run_folder(src, name)
    broken_zarr_run(src, "broken.zarr")
    o = shlex.quote(str(out))
    on_done = (
        f'echo "$SOFTCOPY_RUN" >> {o}/done.log; case "$SOFTCOPY_RUN" in '
        f"fail) exit 3;; "
        f"hang) sleep 60 & echo $! > {o}/sleep.pid; wait;; "
        f"print) head -c 1000000 /dev/zero | tr '\\0' x; echo; echo END-OF-OUTPUT;; esac"
    )
    on_failed = f'cat > {o}/failed.json; echo "$SOFTCOPY_RUN $SOFTCOPY_STATE" >> {o}/failed.log'
    hooks = ("--on-done", on_done, "--on-failed", on_failed, "--hook-timeout", "1")
    state = tmp_path / "st"
    args = ("--once", "--preset", "illumina", *IDLE, "--max-attempts", "1", *hooks)
    # Far less than the hang's 60 s: the hook must have been killed at its timeout.
    rc, _, err = finish(watch(src, dst, state, *args), timeout=45)
    assert rc == 1, err  # --once with a failed run

    seen = statuses(state)
    for name in ("fail", "hang", "print"):
        record = seen[name]
        assert record["state"] == "done", record
        assert record["attempts"] == 1 and record["error"] is None, record
        assert Path(record["certificate"]).is_file(), record
        assert record["hook"]["command"] == on_done, record
        assert_same_tree(src / name, dst / name)
    assert seen["fail"]["hook"]["exit_code"] == 3
    assert seen["fail"]["hook"]["error"] == "exit code 3"
    assert seen["hang"]["hook"]["exit_code"] is None
    assert "killed after 1 s (--hook-timeout)" in seen["hang"]["hook"]["error"]
    sleeper = int((out / "sleep.pid").read_text())
    wait_for(lambda: not running(sleeper), timeout=10, what="the hung hook's child to die")
    printed = seen["print"]["hook"]
    assert printed["exit_code"] == 0 and printed["error"] is None, printed
    assert printed["output"].endswith("x\nEND-OF-OUTPUT\n"), printed["output"][-100:]
    assert len(printed["output"].encode()) <= OUTPUT_TAIL

    failed = seen["broken.zarr"]
    assert failed["state"] == "failed" and "zarr.json" in failed["error"], failed
    assert failed["hook"]["command"] == on_failed and failed["hook"]["exit_code"] == 0, failed
    assert (out / "failed.log").read_text() == "broken.zarr failed\n"
    given = json.loads((out / "failed.json").read_text())
    assert given["run"] == "broken.zarr" and given["state"] == "failed", given
    assert given["error"] == failed["error"], given
    assert sorted((out / "done.log").read_text().split()) == ["fail", "hang", "print"]

    # A second watcher with its own journal (another host) finds each run done or failed
    # already: the records folder says the hooks ran, so none runs again.
    rc, _, err = finish(watch(src, dst, tmp_path / "st-2", *args), timeout=45)
    assert rc == 1, err
    assert sorted((out / "done.log").read_text().split()) == ["fail", "hang", "print"]
    assert (out / "failed.log").read_text() == "broken.zarr failed\n"
    again = statuses(tmp_path / "st-2")
    assert {n: r["state"] for n, r in again.items()} == {
        "fail": "done", "hang": "done", "print": "done", "broken.zarr": "failed",
    }  # fmt: skip


# ---- 5. SIGTERM during a copy -------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_mid_copy_releases_the_claim_and_the_run_resumes(tmp_path: Path) -> None:
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "st"
    src.mkdir()
    sim = held_acquisition(src / "live.zarr")
    first = watch(src, dst, state)
    wait_for(lambda: claimed_by(dst, "live.zarr", first.pid), what="the claim", proc=first)
    wait_for(lambda: copied_files(dst / "live.zarr") >= 5, what="a copy under way", proc=first)
    copying_again(sim, dst / "live.zarr", first)
    # The acquisition pauses (SIGSTOP) while the watcher stops, so that it is certainly
    # still under way when the run resumes, however long the stop takes on a busy machine.
    sim.send_signal(signal.SIGSTOP)
    first.send_signal(signal.SIGTERM)
    # A bound on a hang: the copy stops after the files in flight, which the engine waits
    # for at most 30 s.
    rc, _, err = finish(first, timeout=60)
    sim.send_signal(signal.SIGCONT)
    assert rc == 0, err
    assert sim.poll() is None, "the acquisition ended before the stop: nothing to resume"
    assert not claim_path(dst, "live.zarr").exists(), "claim kept after a graceful stop"
    record = statuses(state)["live.zarr"]
    assert record["state"] == "waiting" and record["error"] is None, record

    second = watch(src, dst, state, "--once")
    assert finish(sim)[0] == 0
    rc, _, err = finish(second)
    assert rc == 0, err
    assert_same_tree(src / "live.zarr", dst / "live.zarr")
    summary = json.loads((dst / "live.zarr.softcopy" / "summary.json").read_text())
    assert summary["files_already_there"] > 0, summary  # resumed, not started over
    record = statuses(state)["live.zarr"]
    assert record["state"] == "done" and record["attempts"] == 1, record
