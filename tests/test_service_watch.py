"""`softcopy watch` from the outside: real watchers in subprocesses, real runs appearing in the
root (a tensorstore writer, scripts filling Illumina- and ONT-like folders), the journal read
through `status --json`, sd_notify on a real datagram socket, HTTP with a real client."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from conftest import (
    DEADLINE,
    finish,
    run_softcopy,
    start,
    start_simulator,
    start_softcopy,
    wait_for,
)

from softcopy.state.runs import read_runs

# Every wait in these tests is a condition with a deadline; these only make the service
# reach its conditions sooner.
FAST = (
    "--retry-delay", "0.2", "--lease", "2", "--scan-interval", "1", "--nprocs", "1",
    "--ready-age", "0.3",
)  # fmt: skip
ILLUMINA = ("--preset", "illumina", "--sentinel-min-age", "0.5")

# An Illumina instrument: cycles of base calls, RunInfo.xml, then RTAComplete.txt and
# CopyComplete.txt last (one right after the other: the fallback must not end it first).
ILLUMINA_WRITER = textwrap.dedent(
    """
    import os, sys, time
    run = sys.argv[1]
    os.makedirs(run)
    for cycle in range(1, 5):
        d = os.path.join(run, "Data", "Intensities", "BaseCalls", "L001", f"C{cycle}.1")
        os.makedirs(d)
        for tile in (1, 2):
            with open(os.path.join(d, f"L001_{tile}.cbcl"), "wb") as f:
                f.write(os.urandom(30000)); f.flush(); time.sleep(0.05); f.write(os.urandom(999))
        time.sleep(0.2)
    open(os.path.join(run, "RunInfo.xml"), "w").write("<RunInfo Version='6'/>\\n")
    open(os.path.join(run, "RTAComplete.txt"), "w").write("RTA 3.4.4\\n")
    open(os.path.join(run, "CopyComplete.txt"), "w").close()
    """
)

# MinKNOW: reads in batches under fastq_pass/ and pod5/, final_summary_*.txt at the very end.
ONT_WRITER = textwrap.dedent(
    """
    import gzip, os, sys, time
    run = sys.argv[1]
    for sub in ("fastq_pass/barcode01", "fastq_fail/barcode01", "pod5"):
        os.makedirs(os.path.join(run, sub))
    for batch in range(4):
        name = f"FAL12345_pass_barcode01_abcdef_{batch}"
        with gzip.open(os.path.join(run, "fastq_pass", "barcode01", name + ".fastq.gz"), "wb") as f:
            f.write(b"@read\\nACGT\\n+\\nIIII\\n" * 500)
        with open(os.path.join(run, "pod5", f"FAL12345_abcdef_{batch}.pod5"), "wb") as f:
            f.write(os.urandom(40000))
        time.sleep(0.2)
    open(os.path.join(run, "sequencing_summary_FAL12345_abcdef.txt"), "w").write("read_id\\n")
    open(os.path.join(run, "final_summary_FAL12345_abcdef.txt"), "w").write("instrument=MN1\\n")
    """
)


def watch_args(src: Path, dst: Path, state: Path, *extra: object) -> list[object]:
    return ["watch", src, dst, "--state-dir", state, *FAST, *extra]


def start_watch(src: Path, dst: Path, state: Path, *extra: object, **kw) -> subprocess.Popen:
    return start_softcopy(*watch_args(src, dst, state, *extra), **kw)


def status_runs(state: Path) -> dict[str, dict]:
    """The runs as `softcopy status --json` shows them, by name."""
    result = run_softcopy("status", "--json", "--state-dir", state)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return {r["run"]: r for r in records if r.get("type") == "run"}


def journal_states(state: Path) -> dict[str, str]:
    """Read-only look at the journal: cheap enough to poll (status --json is a process)."""
    return {r["run"]: r["state"] for r in read_runs(state)}


def wait_states(
    state: Path, wanted: dict[str, str | tuple[str, ...]], proc: subprocess.Popen | None = None
) -> None:
    def reached() -> bool:
        states = journal_states(state)
        return all(
            states.get(run) in ((want,) if isinstance(want, str) else want)
            for run, want in wanted.items()
        )

    wait_for(reached, what=f"runs {wanted} in {state}", proc=proc)


def stop(proc: subprocess.Popen) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGTERM)
    return finish(proc)


def make_run(
    path: Path, files: dict[str, bytes], sentinel: str | None = "CopyComplete.txt"
) -> None:
    for key, data in files.items():
        (path / key).parent.mkdir(parents=True, exist_ok=True)
        (path / key).write_bytes(data)
    if sentinel:
        (path / sentinel).write_text("")


def finished_run(path: Path) -> None:
    make_run(path, {"RunInfo.xml": b"<RunInfo/>\n", "Data/L001/C1.1/L001_1.cbcl": os.urandom(5000)})


def assert_verified(src: Path, dst: Path) -> None:
    result = run_softcopy("verify", src, dst)
    assert result.returncode == 0, f"{src} and {dst} differ:\n{result.stdout}\n{result.stderr}"


def zarr_with_broken_metadata(path: Path) -> bytes:
    """A finished v2 archive whose .zarray is not JSON; returns the good .zarray."""
    rc, _, err = finish(
        start_simulator(path, "--format", "v2", "--timepoints", "2", "--interval", "0",
                        "--shape", "1,8,8", "--chunks", "1,8,8", "--complete")
    )  # fmt: skip
    assert rc == 0, err
    good = (path / ".zarray").read_bytes()
    (path / ".zarray").write_text("{not json")
    return good


def one_paragraph_error(stderr: str) -> None:
    text = stderr.strip()
    assert text.startswith("softcopy: error: "), stderr
    assert "Traceback" not in stderr, stderr
    assert "\n\n" not in text, f"more than one paragraph:\n{stderr}"


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path, Path]:
    src, dst, state = tmp_path / "instrument", tmp_path / "archive", tmp_path / "state"
    src.mkdir()
    return src, dst, state


# ------------------------------------------------------------------ runs appearing while running


def test_a_zarr_run_and_an_illumina_run_appearing_while_watching_are_copied(roots) -> None:
    src, dst, state = roots
    watcher = start_watch(src, dst, state, *ILLUMINA)
    wait_for(dst.is_dir, what="watcher up", proc=watcher)
    writer = start_simulator(src / "acq1.zarr", "--format", "v3", "--timepoints", "6",
                             "--interval", "0.3", "--complete")  # fmt: skip
    filler = start([sys.executable, "-c", ILLUMINA_WRITER, str(src / "240101_M01_0001_A")])
    for proc in (writer, filler):
        rc, _, err = finish(proc)
        assert rc == 0, err
    wait_states(state, {"acq1.zarr": "done", "240101_M01_0001_A": "done"}, proc=watcher)

    runs = status_runs(state)
    assert runs["acq1.zarr"]["kind"] == "zarr"
    assert runs["240101_M01_0001_A"]["kind"] == "directory"
    assert "CopyComplete.txt" in runs["240101_M01_0001_A"]["finished_because"]
    for name in runs:
        assert_verified(src / name, dst / name)
    rc, _, err = stop(watcher)
    assert rc == 0, err


def test_an_ont_run_appearing_while_watching_is_copied(roots) -> None:
    src, dst, state = roots
    watcher = start_watch(src, dst, state, "--preset", "ont", "--sentinel-min-age", "0.5")
    wait_for(dst.is_dir, what="watcher up", proc=watcher)
    name = "20240101_1200_MN12345_FAL12345_abcdef"
    filler = start([sys.executable, "-c", ONT_WRITER, str(src / name)])
    rc, _, err = finish(filler)
    assert rc == 0, err
    wait_states(state, {name: "done"}, proc=watcher)
    assert "final_summary" in status_runs(state)[name]["finished_because"]
    assert_verified(src / name, dst / name)
    rc, _, err = stop(watcher)
    assert rc == 0, err


def test_run_folders_of_two_instruments_end_by_their_own_sentinel_globs(roots) -> None:
    """One watcher, `--sentinel` repeated: each run ends by whichever of its globs it writes."""
    src, dst, state = roots
    sentinels = ("--kind", "directory", "--sentinel", "CopyComplete.txt",
                 "--sentinel", "final_summary_*.txt", "--sentinel-min-age", "0.5")  # fmt: skip
    watcher = start_watch(src, dst, state, *sentinels)
    wait_for(dst.is_dir, what="watcher up", proc=watcher)
    fillers = [
        start([sys.executable, "-c", ILLUMINA_WRITER, str(src / "illumina_run")]),
        start([sys.executable, "-c", ONT_WRITER, str(src / "ont_run")]),
    ]
    for proc in fillers:
        rc, _, err = finish(proc)
        assert rc == 0, err
    wait_states(state, {"illumina_run": "done", "ont_run": "done"}, proc=watcher)
    runs = status_runs(state)
    assert "CopyComplete.txt" in runs["illumina_run"]["finished_because"]
    assert "final_summary_FAL12345_abcdef.txt" in runs["ont_run"]["finished_because"]
    for name in runs:
        assert_verified(src / name, dst / name)
    rc, _, err = stop(watcher)
    assert rc == 0, err


# --------------------------------------------------------------------------------------- --once


def test_once_exits_0_when_every_run_present_is_done(roots) -> None:
    src, dst, state = roots
    for name in ("run_a", "run_b"):
        finished_run(src / name)
    rc, _, err = finish(start_watch(src, dst, state, "--once", *ILLUMINA))
    assert rc == 0, err
    runs = status_runs(state)
    assert {n: r["state"] for n, r in runs.items()} == {"run_a": "done", "run_b": "done"}
    for name in runs:
        assert_verified(src / name, dst / name)


def test_once_exits_1_on_a_failed_run_and_retry_puts_it_back(roots) -> None:
    src, dst, state = roots
    finished_run(src / "good_run")
    good_zarray = zarr_with_broken_metadata(src / "broken.zarr")
    once = ("--once", "--max-attempts", "2", *ILLUMINA)

    rc, _, err = finish(start_watch(src, dst, state, *once))
    assert rc == 1, err
    runs = status_runs(state)
    assert runs["good_run"]["state"] == "done"
    failed = runs["broken.zarr"]
    assert failed["state"] == "failed"
    assert failed["attempts"] == 2
    assert ".zarray" in failed["error"] and "JSON" in failed["error"], failed["error"]

    result = run_softcopy("retry", "broken.zarr", "--state-dir", state)
    assert result.returncode == 0, result.stderr
    back = status_runs(state)["broken.zarr"]
    assert (back["state"], back["attempts"]) == ("waiting", 0)

    (src / "broken.zarr" / ".zarray").write_bytes(good_zarray)
    rc, _, err = finish(start_watch(src, dst, state, *once))
    assert rc == 0, err
    runs = status_runs(state)
    assert {n: r["state"] for n, r in runs.items()} == {"good_run": "done", "broken.zarr": "done"}
    assert runs["broken.zarr"]["error"] is None
    assert_verified(src / "broken.zarr", dst / "broken.zarr")


def test_retry_of_a_run_that_did_not_fail_is_refused(roots) -> None:
    src, dst, state = roots
    finished_run(src / "run_a")
    rc, _, err = finish(start_watch(src, dst, state, "--once", *ILLUMINA))
    assert rc == 0, err
    for name in ("run_a", "no_such_run"):
        result = run_softcopy("retry", name, "--state-dir", state)
        assert result.returncode != 0
        one_paragraph_error(result.stderr)
        assert name in result.stderr
    assert status_runs(state)["run_a"]["state"] == "done"


# ----------------------------------------------------------------------------------- status


RUN_FIELDS = ("run", "source", "destination", "state", "attempts", "finished_because", "files",
              "bytes", "started", "ended", "error", "certificate")  # fmt: skip


def _iso(text: str) -> datetime:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", text), text
    return datetime.fromisoformat(text)


def test_status_json_of_a_done_run_has_every_field(roots) -> None:
    src, dst, state = roots
    finished_run(src / "run_a")
    rc, _, err = finish(start_watch(src, dst, state, "--once", "--hash", *ILLUMINA))
    assert rc == 0, err
    record = status_runs(state)["run_a"]
    missing = [f for f in RUN_FIELDS if f not in record]
    assert not missing, f"status --json lacks {missing}: {record}"
    assert record["run"] == "run_a"
    assert record["source"] == str(src / "run_a")
    assert record["destination"] == str(dst / "run_a")
    assert (record["state"], record["attempts"], record["error"]) == ("done", 1, None)
    assert "CopyComplete.txt" in record["finished_because"]
    assert _iso(record["started"]) <= _iso(record["ended"])
    certificate = Path(record["certificate"])
    assert certificate == dst / "run_a.softcopy" / "certificate.json"
    content = json.loads(certificate.read_text())
    assert content["source"] == record["source"]
    assert content["destination"] == record["destination"]
    assert content["finished_because"] == record["finished_because"]


def test_status_files_and_bytes_count_the_whole_run(roots) -> None:
    src, dst, state = roots
    make_run(src / "run_a", {"a.bin": b"a" * 1000, "b.bin": b"b" * 2000}, sentinel=None)
    (src / "run_a" / "CopyComplete.txt").write_bytes(b"done\n")
    rc, _, err = finish(start_watch(src, dst, state, "--once", *ILLUMINA))
    assert rc == 0, err
    record = status_runs(state)["run_a"]
    assert (record["files"], record["bytes"]) == (3, 3005)
    certificate = json.loads(Path(record["certificate"]).read_text())
    assert (certificate["files"], certificate["bytes"]) == (3, 3005)


def test_status_json_of_a_waiting_run_has_nulls_not_guesses(roots) -> None:
    src, dst, state = roots
    (src / "run_a").mkdir()
    watcher = start_watch(src, dst, state, *ILLUMINA, "--max-runs", "1")
    wait_states(state, {"run_a": "copying"}, proc=watcher)
    (src / "run_b").mkdir()
    wait_states(state, {"run_b": "waiting"}, proc=watcher)
    record = status_runs(state)["run_b"]
    assert all(f in record for f in RUN_FIELDS), record
    assert record["attempts"] == 0
    assert record["started"] is None and record["ended"] is None
    assert record["certificate"] is None and record["finished_because"] is None
    assert record["error"] is None
    rc, _, err = stop(watcher)
    assert rc == 0, err


# ----------------------------------------------------------------------------- what is a run


def test_files_directly_under_the_root_are_not_runs(roots) -> None:
    src, dst, state = roots
    (src / "notes.txt").write_text("the operator's notes")
    (src / "SampleSheet.csv").write_text("[Header]\n")
    (src / ".hidden_run").mkdir()
    finished_run(src / ".hidden_run")
    finished_run(src / "run_a")
    os.symlink(src / "run_a", src / "link_to_run")
    rc, _, err = finish(start_watch(src, dst, state, "--once", *ILLUMINA))
    assert rc == 0, err
    assert list(status_runs(state)) == ["run_a"]
    assert sorted(p.name for p in dst.iterdir()) == ["run_a", "run_a.softcopy"]


def test_pattern_selects_runs(roots) -> None:
    src, dst, state = roots
    for name in ("240101_A", "240102_B", "scratch", "old_240101"):
        finished_run(src / name)
    rc, _, err = finish(
        start_watch(src, dst, state, "--once", *ILLUMINA, "--pattern", "2401*", "--pattern",
                    "old_*")
    )  # fmt: skip
    assert rc == 0, err
    assert sorted(status_runs(state)) == ["240101_A", "240102_B", "old_240101"]
    assert not (dst / "scratch").exists()


def test_depth_2_copies_instrument_run_to_the_same_layout(roots) -> None:
    src, dst, state = roots
    finished_run(src / "NovaSeq" / "240101_A")
    finished_run(src / "MiSeq" / "240102_B")
    (src / "MiSeq" / "readme.txt").write_text("a file at the instrument level")
    (src / "stray.txt").write_text("a file at the root")
    rc, _, err = finish(
        start_watch(src, dst, state, "--once", *ILLUMINA, "--depth", "2", "--pattern",
                    "NovaSeq/*", "--pattern", "MiSeq/*")
    )  # fmt: skip
    assert rc == 0, err
    runs = status_runs(state)
    assert sorted(runs) == ["MiSeq/240102_B", "NovaSeq/240101_A"]
    for name, record in runs.items():
        assert record["destination"] == str(dst / name)
        assert_verified(src / name, dst / name)
    assert not (dst / "MiSeq" / "readme.txt").exists()
    assert not (dst / "stray.txt").exists()


def test_depth_2_with_a_pattern_on_the_path_selects_one_instrument(roots) -> None:
    src, dst, state = roots
    finished_run(src / "NovaSeq" / "240101_A")
    finished_run(src / "MiSeq" / "240102_B")
    rc, _, err = finish(
        start_watch(src, dst, state, "--once", *ILLUMINA, "--depth", "2", "--pattern", "MiSeq/*")
    )
    assert rc == 0, err
    assert list(status_runs(state)) == ["MiSeq/240102_B"]
    assert not (dst / "NovaSeq").exists()


# --------------------------------------------------------------------------------- vanishing


def test_a_run_vanishing_while_waiting_is_forgotten_not_failed(roots) -> None:
    src, dst, state = roots
    (src / "run_1").mkdir()  # no sentinel yet: it is copied live for as long as the test needs
    watcher = start_watch(src, dst, state, *ILLUMINA, "--max-runs", "1")
    wait_states(state, {"run_1": "copying"}, proc=watcher)
    finished_run(src / "run_2")
    wait_states(state, {"run_2": "waiting"}, proc=watcher)
    shutil.rmtree(src / "run_2")
    wait_for(lambda: "run_2" not in journal_states(state), what="run_2 forgotten", proc=watcher)
    assert "run_2" not in status_runs(state)
    assert not (dst / "run_2").exists() and not (dst / "run_2.softcopy").exists()

    finished_run(src / "run_1")
    wait_states(state, {"run_1": "done"}, proc=watcher)
    rc, _, err = stop(watcher)
    assert rc == 0, err
    assert re.search(r"run run_2: .*forgotten", err), err
    assert "failed" not in err


def test_a_run_vanishing_mid_copy_is_failed_naming_it(roots) -> None:
    src, dst, state = roots
    make_run(src / "run_1", {f"Data/f{i}.bin": os.urandom(20000) for i in range(3)}, None)
    # An idle timeout no wait here reaches: on a slow machine, 10 s could pass before the
    # first copies, and the run would be verifying (ended by its quiet) when it vanishes.
    watcher = start_watch(src, dst, state, "--kind", "directory", "--idle-timeout", "600")
    wait_for(lambda: (dst / "run_1" / "Data" / "f2.bin").exists(), what="copy under way",
             proc=watcher)  # fmt: skip
    assert journal_states(state) == {"run_1": "copying"}
    shutil.rmtree(src / "run_1")
    wait_states(state, {"run_1": ("failed", "done")}, proc=watcher)
    record = status_runs(state)["run_1"]
    assert record["state"] == "failed"
    assert str(src / "run_1") in record["error"], record["error"]
    rc, _, err = stop(watcher)
    assert rc == 0, err


# -------------------------------------------------------------------------------- bad input


def _read_only_dir(path: Path) -> Iterator[Path]:
    path.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("mount is not installed")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)],
                          capture_output=True, text=True)  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs: {made.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


BAD_INPUT = {
    "root missing": lambda t: (["watch", t / "nowhere", t / "dst"],
                                [str(t / "nowhere"), "does not exist"]),
    "dest inside source": lambda t: (["watch", t / "src", t / "src" / "copies"],
                                     [str(t / "src" / "copies"), "inside"]),
    "source inside dest": lambda t: (["watch", t / "dst" / "src", t / "dst"],
                                     [str(t / "dst"), "inside"]),
    "preset zarr with a sentinel": lambda t: (
        ["watch", t / "src", t / "dst", "--preset", "zarr", "--sentinel", "CopyComplete.txt"],
        ["--preset zarr", "--sentinel"]),
    "preset illumina with kind zarr": lambda t: (
        ["watch", t / "src", t / "dst", "--preset", "illumina", "--kind", "zarr"],
        ["--preset illumina", "--kind zarr"]),
    "hook program missing": lambda t: (
        ["watch", t / "src", t / "dst", "--on-done", "no-such-program-here --flag"],
        ["--on-done", "no-such-program-here"]),
    "hook not executable": lambda t: (
        ["watch", t / "src", t / "dst", "--on-failed", f"{t / 'hook.sh'} arg"],
        ["--on-failed", str(t / "hook.sh"), "not executable"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_exit_2_before_anything_starts(tmp_path: Path, case: str) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "dst" / "src").mkdir(parents=True)
    (tmp_path / "src" / "run_a").mkdir()
    (tmp_path / "hook.sh").write_text("#!/bin/sh\nexit 0\n")
    args, says = BAD_INPUT[case](tmp_path)
    state = tmp_path / "state"
    result = run_softcopy(*args, "--state-dir", state, *FAST)
    assert result.returncode == 2, result.stderr
    one_paragraph_error(result.stderr)
    for text in says:
        assert text in result.stderr, f"{text!r} not in {result.stderr!r}"
    for path in ("dst/run_a", "dst/run_a.softcopy", "src/copies", "dst/src/copies"):
        assert not (tmp_path / path).exists(), f"{path} made before the refusal"
    assert not (state / "journal.sqlite").exists() or not read_runs(state)


def test_a_port_in_use_is_exit_2_naming_it(roots, busy_port: int) -> None:
    src, dst, state = roots
    finished_run(src / "run_a")
    result = run_softcopy(*watch_args(src, dst, state, "--http", f"127.0.0.1:{busy_port}"))
    assert result.returncode == 2, result.stderr
    one_paragraph_error(result.stderr)
    assert f"127.0.0.1:{busy_port}" in result.stderr and "in use" in result.stderr
    assert not dst.exists()
    assert not read_runs(state)


@pytest.mark.parametrize("where", ["itself", "below"])
def test_an_unwritable_state_dir_is_exit_2_naming_it(roots, tmp_path: Path, where: str) -> None:
    src, dst, _ = roots
    finished_run(src / "run_a")
    for readonly in _read_only_dir(tmp_path / "ro"):
        state = readonly if where == "itself" else readonly / "softcopy"
        result = run_softcopy(*watch_args(src, dst, state))
        assert result.returncode == 2, result.stderr
        one_paragraph_error(result.stderr)
        assert str(state) in result.stderr and "--state-dir" in result.stderr
        assert not dst.exists()


# ------------------------------------------------------------------------------ service manners


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    # sun_path is 108 bytes: pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="scn") as short:
        path = os.path.join(short, "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.settimeout(DEADLINE)
            yield sock, path


def _datagrams_until(sock: socket.socket, got: list[str], done) -> None:
    """Receive datagrams (one field a line) into `got` until done(got); the socket's timeout
    bounds each wait."""
    while not done(got):
        try:
            got.extend(sock.recv(65536).decode().splitlines())
        except TimeoutError:
            pytest.fail(f"no more datagrams; received so far: {got}")


STATUS_LINE = re.compile(r"STATUS=(\d+) waiting, (\d+) copying, (\d+) done, (\d+) failed")


def test_sd_notify_ready_status_watchdog_and_stopping(roots, notify_socket) -> None:
    src, dst, state = roots
    sock, path = notify_socket
    finished_run(src / "run_a")
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"}
    env.pop("WATCHDOG_PID", None)
    watcher = start_watch(src, dst, state, *ILLUMINA, env=env)
    got: list[str] = []

    def one_done(lines: list[str]) -> bool:
        return any((m := STATUS_LINE.fullmatch(x)) and m[3] == "1" for x in lines)

    _datagrams_until(sock, got, lambda g: one_done(g) and g.count("WATCHDOG=1") >= 2)
    assert got[0] == "READY=1", got
    statuses = [STATUS_LINE.fullmatch(x) for x in got if x.startswith("STATUS=")]
    assert statuses and all(statuses), got
    assert statuses[-1].groups() == ("0", "0", "1", "0"), got
    assert "STOPPING=1" not in got

    watcher.send_signal(signal.SIGTERM)
    _datagrams_until(sock, got, lambda g: "STOPPING=1" in g)
    rc, _, err = finish(watcher)
    assert rc == 0, err


SERVING = re.compile(r"serving /status and /metrics at http://127\.0\.0\.1:(\d+)/")


def _get(port: int, path: str) -> tuple[str, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=DEADLINE) as reply:
        assert reply.status == 200
        return reply.headers["Content-Type"], reply.read()


def _served_runs(src: Path, dst: Path, state: Path, *extra: str) -> tuple[subprocess.Popen, int]:
    """A watcher serving HTTP, once two runs are done and one failed."""
    finished_run(src / "run_a")
    finished_run(src / "run_b")
    zarr_with_broken_metadata(src / "broken.zarr")
    log = state.parent / "watch.log"
    # Port 0: the system picks a free one, and the watcher says which (no race for a port).
    watcher = start_watch(src, dst, state, *ILLUMINA, "--max-attempts", "1", "--http",
                          "127.0.0.1:0", "--log-file", log, *extra)  # fmt: skip
    wait_states(state, {"run_a": "done", "run_b": "done", "broken.zarr": "failed"}, proc=watcher)
    found = SERVING.search(log.read_text())
    assert found, log.read_text()
    return watcher, int(found[1])


def test_http_status_is_what_status_json_shows(roots) -> None:
    src, dst, state = roots
    watcher, port = _served_runs(src, dst, state)
    ctype, body = _get(port, "/status")
    assert ctype.startswith("application/json")
    served = json.loads(body)
    assert isinstance(served, list)
    shown = status_runs(state)
    assert sorted(served, key=lambda r: r["run"]) == sorted(shown.values(), key=lambda r: r["run"])
    rc, _, err = stop(watcher)
    assert rc == 0, err


def test_http_metrics_counts_runs_by_state(roots) -> None:
    src, dst, state = roots
    watcher, port = _served_runs(src, dst, state)
    try:
        ctype, body = _get(port, "/metrics")
    finally:
        rc, _, err = stop(watcher)
    assert rc == 0, err
    text = body.decode()
    assert ctype.startswith("text/plain")
    samples = dict(re.findall(r'^softcopy_runs\{state="(\w+)"\} (\d+)$', text, re.M))
    done = sum(r["state"] == "done" for r in status_runs(state).values())
    assert samples["done"] == str(done) == "2", text
    assert samples["failed"] == "1" and samples["copying"] == samples["waiting"] == "0", text
    copied = re.search(r"^softcopy_files_copied_total (\d+)$", text, re.M)
    assert copied and int(copied[1]) >= 2, text
    assert re.search(r"^softcopy_run_failures_total 1$", text, re.M), text


# ------------------------------------------------------------------------------------- logs


# Lines about the service itself, not about one run.
SERVICE_LINES = re.compile(r"softcopy: (watching |stopping: )")


def test_every_log_line_about_a_run_names_it(roots, tmp_path: Path) -> None:
    src, dst, state = roots
    finished_run(src / "alpha_run")
    zarr_with_broken_metadata(src / "beta.zarr")
    (src / "gamma_run").mkdir()
    (src / "gamma_run" / "RTAComplete.txt").write_text("")  # ends by the fallback
    failing_hook = tmp_path / "hook.sh"
    failing_hook.write_text("#!/bin/sh\necho not today >&2\nexit 3\n")
    failing_hook.chmod(0o755)
    rc, _, err = finish(
        start_watch(src, dst, state, "--once", *ILLUMINA, "--max-attempts", "2", "--on-done",
                    str(failing_hook), "--on-failed", str(failing_hook))
    )  # fmt: skip
    assert rc == 1, err
    names = ("alpha_run", "beta.zarr", "gamma_run")
    lines = err.splitlines()
    for name in names:
        assert any(name in line for line in lines), f"nothing about {name}:\n{err}"
    assert any("hook" in line for line in lines), err
    unnamed = [x for x in lines if not SERVICE_LINES.match(x) and not any(n in x for n in names)]
    assert not unnamed, "log lines that do not name their run:\n" + "\n".join(unnamed)


@pytest.mark.parametrize("users", [None, "3"])
def test_a_hook_gets_the_users_blas_threads_not_softcopys(roots, tmp_path: Path, users) -> None:
    # softcopy runs numpy's OpenBLAS on one thread (its idle threads spin on the writer's
    # CPUs); a hook is the user's program and gets the user's setting, or none.
    src, dst, state = roots
    finished_run(src / "alpha_run")
    seen = tmp_path / "seen"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "${{OPENBLAS_NUM_THREADS-unset}}" > "{seen}"\n')
    hook.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if users is not None:
        env["OPENBLAS_NUM_THREADS"] = users
    rc, _, err = finish(
        start_watch(src, dst, state, "--once", *ILLUMINA, "--on-done", hook, env=env)
    )
    assert rc == 0, err
    assert seen.read_text() == f"{users or 'unset'}\n"
