"""Interruptions with real signals: Ctrl-C, a copier killed, the supervisor killed; then resume."""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
from conftest import assert_same_tree, finish, run_softcopy, start_softcopy, tree_files, wait_for
from test_acquisition import SMALL, simulate

# No marker and a long settle: softcopy keeps running until the test decides.
ENDLESS = ("--settle", "600", "--scan-interval", "600")


@pytest.fixture
def unfinished(tmp_path: Path) -> tuple[Path, Path]:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, replace(SMALL, complete=False, timepoints=10))
    return src, dst


def copied_chunks(dst: Path) -> list[str]:
    return [k for k in tree_files(dst) if k.startswith("c/")] if dst.exists() else []


def copiers_of(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children()


def gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_ctrl_c_once_stops_cleanly_and_a_rerun_resumes(unfinished: tuple[Path, Path]) -> None:
    src, dst = unfinished
    proc = start_softcopy("copy", src, dst, "--sleep-time", "0.05", "--nprocs", "1", *ENDLESS)
    wait_for(lambda: copied_chunks(dst), what="a first chunk at the destination", proc=proc)
    proc.send_signal(signal.SIGINT)
    rc, _, err = finish(proc)
    assert rc == 1
    assert "run the same command again to resume" in err
    assert "Traceback" not in err
    assert not any(".softcopy-tmp." in k for k in tree_files(dst)), "temporary file left behind"
    (src / "complete").touch()
    again = run_softcopy("copy", src, dst)
    assert again.returncode == 0, again.stderr
    assert_same_tree(src, dst)


def test_a_killed_copier_is_replaced_and_its_work_redone(unfinished: tuple[Path, Path]) -> None:
    src, dst = unfinished
    proc = start_softcopy("copy", src, dst, "--sleep-time", "0.05", *ENDLESS)
    wait_for(lambda: copied_chunks(dst), what="a first chunk at the destination", proc=proc)
    victim = copiers_of(proc.pid)[0]
    victim.send_signal(signal.SIGKILL)
    wait_for(lambda: gone(victim), what="the copier to die")
    wait_for(
        lambda: tree_files(dst) == tree_files(src),
        what="the copy to complete after the kill",
        proc=proc,
    )
    assert len(copiers_of(proc.pid)) == 2, "the dead copier was not replaced"
    (src / "complete").touch()
    rc, _, err = finish(proc)
    assert rc == 0, err
    assert "ended unexpectedly" in err
    assert_same_tree(src, dst)


def test_killing_the_supervisor_kills_its_copiers_and_a_rerun_resumes(
    unfinished: tuple[Path, Path],
) -> None:
    src, dst = unfinished
    proc = start_softcopy("copy", src, dst, "--sleep-time", "0.05", *ENDLESS)
    wait_for(lambda: copied_chunks(dst), what="a first chunk at the destination", proc=proc)
    copiers = copiers_of(proc.pid)
    assert copiers
    os.kill(proc.pid, signal.SIGKILL)
    finish(proc)
    # No orphan may go on writing behind a dead supervisor's back.
    wait_for(lambda: all(gone(c) for c in copiers), timeout=10, what="the copiers to die")
    before = len(copied_chunks(dst))
    (src / "complete").touch()
    again = run_softcopy("copy", src, dst)
    assert again.returncode == 0, again.stderr
    assert_same_tree(src, dst)
    assert before > 0


def test_ctrl_c_twice_aborts_promptly(unfinished: tuple[Path, Path]) -> None:
    """Copiers pausing a minute after each file (--sleep-time) must not hold up a stop."""
    src, dst = unfinished
    proc = start_softcopy("copy", src, dst, "--sleep-time", "60", *ENDLESS)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    wait_for(lambda: copied_chunks(dst), what="a first chunk at the destination", proc=proc)
    copiers = copiers_of(proc.pid)
    proc.send_signal(signal.SIGINT)
    # Two signals sent back to back may arrive as one: wait until the first was handled.
    wait_for(lambda: any("stopping" in line for line in lines), what="the first Ctrl-C")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 1
    reader.join(10)
    err = "".join(lines)
    assert "Traceback" not in err
    wait_for(lambda: all(gone(c) for c in copiers), timeout=10, what="the copiers to die")
    assert not any(".softcopy-tmp." in k for k in tree_files(dst)), "temporary file left behind"
