"""Crashes, full disks and power cuts, for real: SIGKILL, tmpfs limits, a shutdown ioctl."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import sqlite3
import subprocess
from dataclasses import replace
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
from test_acquisition import SMALL, simulate

ROOT = os.geteuid() == 0
BIG = replace(SMALL, timepoints=12, shape=(2, 128, 128), chunks=(1, 64, 64), compress=False)


def journal_state(state_dir: Path, dst: Path) -> str | None:
    db_path = state_dir / "softcopy" / "journal.sqlite"
    if not db_path.exists():
        return None
    db = sqlite3.connect(db_path, timeout=5)
    try:
        row = db.execute("SELECT state FROM targets WHERE destination = ?", (str(dst),)).fetchone()
        return row[0] if row else None
    except sqlite3.OperationalError:
        return None  # schema not there yet
    finally:
        db.close()


def journaled_files(state_dir: Path) -> dict[str, tuple[int, int]]:
    db = sqlite3.connect(state_dir / "softcopy" / "journal.sqlite")
    try:
        return {k: (s, m) for k, s, m in db.execute("SELECT key, size, mtime_ns FROM files")}
    finally:
        db.close()


def summary(dst: Path) -> dict:
    return json.loads((dst.parent / f"{dst.name}.softcopy" / "summary.json").read_text())


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return Path(os.environ["XDG_STATE_HOME"])


def test_status_reports_the_journal(tmp_path: Path, state: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, SMALL)
    assert run_softcopy("copy", src, dst).returncode == 0
    out = run_softcopy("status", "--json")
    assert out.returncode == 0, out.stderr
    (record,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert record["state"] == "done" and record["destination"] == str(dst)
    assert record["files_done"] == len(tree_files(src)) - 1  # the marker is not journaled
    assert record["failures"] == {} and record["files_pending"] == 0
    text = run_softcopy("status").stdout
    assert "done" in text and str(dst) in text


def test_status_while_running_and_after_an_interruption(tmp_path: Path, state: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, replace(SMALL, complete=False))
    proc = start_softcopy("copy", src, dst, "--settle", "600", "--scan-interval", "600")
    wait_for(lambda: journal_state(state, dst) == "copying", what="state copying", proc=proc)
    proc.send_signal(signal.SIGINT)
    assert finish(proc)[0] == 1
    assert journal_state(state, dst) == "interrupted"
    assert "interrupted" in run_softcopy("status").stdout


def test_kill_9_mid_copy_resumes_without_recopying(tmp_path: Path, state: Path) -> None:
    """The re-copy fraction after SIGKILL: files already at the destination are not
    written again, whether or not the journal had recorded them yet."""
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, BIG)
    total = sum(tree_files(src).values())
    proc = start_softcopy("copy", src, dst, "--sleep-time", "0.02")
    wait_for(
        lambda: sum(1 for k in tree_files(dst) if k.startswith("c/")) >= 20,
        what="a third of the chunks",
        proc=proc,
    )
    os.kill(proc.pid, signal.SIGKILL)
    finish(proc)
    before = {k: v for k, v in tree_files(dst).items() if ".softcopy-tmp." not in k}
    assert before, "nothing was copied before the kill"
    result = run_softcopy("copy", src, dst)
    assert result.returncode == 0, result.stderr
    assert_same_tree(src, dst)
    again = summary(dst)
    new_bytes = total - sum(before.values())
    recopied = again["bytes_copied"] - new_bytes
    assert recopied <= 0.05 * total, f"re-copied {recopied} of {total} bytes"


def test_kill_9_mid_verification_then_resume(tmp_path: Path, state: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, replace(BIG, timepoints=40))
    proc = start_softcopy("copy", src, dst, "--hash")
    wait_for(lambda: journal_state(state, dst) == "verifying", what="verification", proc=proc)
    os.kill(proc.pid, signal.SIGKILL)
    finish(proc)
    side = tmp_path / "dst.zarr.softcopy"
    if journal_state(state, dst) != "done":  # killed in time: nothing may claim success
        assert not (side / "certificate.json").exists()
        assert not (dst / "complete").exists()
    result = run_softcopy("copy", src, dst, "--hash")
    assert result.returncode == 0, result.stderr
    assert " 0 copied" in result.stdout
    assert (side / "certificate.json").exists()
    assert_same_tree(src, dst)


def test_journal_survives_repeated_kills(tmp_path: Path, state: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, BIG)
    # No back-off: on a busy shared disk (the rest of the suite, CI) pausing made the five
    # copies outlast the test's deadline, and pausing is not what this test is about.
    fast = ("--no-backoff",)
    for round_ in range(4):
        proc = start_softcopy("copy", src, dst, "--sleep-time", "0.01", *fast)
        wait_for(lambda n=round_: len(tree_files(dst)) > 10 * (n + 1), what="progress", proc=proc)
        os.kill(proc.pid, signal.SIGKILL)
        finish(proc)
    db = sqlite3.connect(state / "softcopy" / "journal.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    # Everything the journal claims is really there, with the size it claims.
    for key, (size, mtime) in journaled_files(state).items():
        st = (dst / key).stat()
        assert (st.st_size, st.st_mtime_ns) == (size, mtime), key
    assert run_softcopy("copy", src, dst, *fast).returncode == 0
    assert_same_tree(src, dst)


# ---- full destination ------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    if not ROOT:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()

    def mount(options: str, remount: bool = False) -> Path:
        flags = ["-o", f"remount,{options}"] if remount else ["-o", options]
        done = subprocess.run(
            ["mount", "-t", "tmpfs", *flags, "tmpfs", str(mnt)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount tmpfs: {done.stderr.decode().strip()}")
        return mnt

    yield mount
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.parametrize("limit", ["size=1200k", "nr_inodes=40"], ids=["bytes", "inodes"])
def test_out_of_space_mid_copy_is_clear_and_resumable(tmp_path: Path, small_tmpfs, limit) -> None:
    """The source grows past the space left while softcopy runs."""
    src = tmp_path / "src.zarr"
    simulate(src, replace(BIG, timepoints=2, complete=False))
    mnt = small_tmpfs(limit)
    dst = mnt / "dst.zarr"
    proc = start_softcopy("copy", src, dst, "--settle", "600", "--scan-interval", "600")
    wait_for(lambda: tree_files(dst) == tree_files(src), what="the first part", proc=proc)
    more = tmp_path / "more.zarr"
    simulate(more, replace(BIG, timepoints=24, complete=False))  # 1.5 MB: more than fits
    for key in sorted(
        k for k in tree_files(more) if k.startswith("c/") and k not in tree_files(src)
    ):
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(more / key, src / key)
    rc, _, err = finish(proc)
    assert rc == 1, err
    assert "is full" in err and str(mnt) in err and "resume" in err
    assert "Traceback" not in err
    leftovers = [k for k in tree_files(dst) if ".softcopy-tmp." in k]
    assert leftovers == [], "partial files left behind"
    small_tmpfs("size=64m,nr_inodes=10000", remount=True)
    (src / "complete").touch()
    result = run_softcopy("copy", src, dst)
    assert result.returncode == 0, result.stderr
    assert_same_tree(src, dst)


def test_preflight_refuses_a_copy_that_cannot_fit(tmp_path: Path, small_tmpfs) -> None:
    src = tmp_path / "src.zarr"
    simulate(src, BIG)
    mnt = small_tmpfs("size=512k")
    result = run_softcopy("copy", src, mnt / "dst.zarr")
    assert result.returncode == 1
    assert "free at least" in result.stderr and str(mnt) in result.stderr
    assert "Traceback" not in result.stderr


# ---- power cut ----------------------------------------------------------------------------

EXT4_IOC_SHUTDOWN = 0x8004587D  # also XFS_IOC_GOINGDOWN
SHUTDOWN_NOLOGFLUSH = 2


@pytest.fixture
def loop_ext4(tmp_path: Path):
    """A journaled ext4 on a loop device: the root filesystem must never be shut down."""
    if not ROOT or shutil.which("mkfs.ext4") is None:
        pytest.skip("needs root and mkfs.ext4")
    image, mnt = tmp_path / "disk.img", tmp_path / "disk"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(128 << 20)
    if subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], capture_output=True).returncode:
        pytest.skip("mkfs.ext4 failed")

    def mount() -> Path:
        done = subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot loop-mount: {done.stderr.decode().strip()}")
        return mnt

    def unmount() -> None:
        subprocess.run(["umount", str(mnt)], capture_output=True)

    yield mount, unmount
    unmount()


def power_cut(mnt: Path) -> None:
    fd = os.open(mnt, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, SHUTDOWN_NOLOGFLUSH.to_bytes(4, "little"))
    finally:
        os.close(fd)


def test_power_cut_loses_nothing_reported_done(tmp_path: Path, state: Path, loop_ext4) -> None:
    mount, unmount = loop_ext4
    src = tmp_path / "src.zarr"
    simulate(src, BIG)
    dst = mount() / "dst.zarr"
    assert run_softcopy("copy", src, dst).returncode == 0
    power_cut(dst.parent)  # the instant after "done": no log flush, no writeback
    unmount()
    mount()
    assert_same_tree(src, dst)
    assert (dst / "complete").exists()


def test_power_cut_mid_copy_the_journal_claims_only_durable_files(
    tmp_path: Path, state: Path, loop_ext4
) -> None:
    mount, unmount = loop_ext4
    src = tmp_path / "src.zarr"
    simulate(src, BIG)
    dst = mount() / "dst.zarr"
    proc = start_softcopy("copy", src, dst, "--sleep-time", "0.02")
    wait_for(
        lambda: len(journaled_files(state)) >= 10 if journal_state(state, dst) else False,
        what="a journal checkpoint",
        proc=proc,
    )
    power_cut(dst.parent)
    os.kill(proc.pid, signal.SIGKILL)
    finish(proc)
    unmount()
    mount()
    claimed = journaled_files(state)
    assert claimed
    for key in claimed:
        path = dst / key
        assert path.exists(), f"journal claims {key}, which the power cut took away"
        assert path.read_bytes() == (src / key).read_bytes(), f"{key} is not whole"
    result = run_softcopy("copy", src, dst)
    assert result.returncode == 0, result.stderr
    assert_same_tree(src, dst)
