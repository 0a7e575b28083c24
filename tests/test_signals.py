"""Interruptions with real signals: Ctrl-C, a hang-up, a copier killed, the supervisor killed;
then resume."""

from __future__ import annotations

import fcntl
import json
import os
import platform
import select
import signal
import subprocess
import termios
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
from conftest import (
    DEADLINE,
    assert_same_tree,
    finish,
    run_softcopy,
    softcopy_cmd,
    start_softcopy,
    tree_files,
    wait_for,
)
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
    rc = proc.wait(timeout=20)
    reader.join(10)
    assert rc == 1, "".join(lines)
    reader.join(10)
    err = "".join(lines)
    assert "Traceback" not in err
    wait_for(lambda: all(gone(c) for c in copiers), timeout=10, what="the copiers to die")
    assert not any(".softcopy-tmp." in k for k in tree_files(dst)), "temporary file left behind"


# ---- a hang-up, and signals at any moment ---------------------------------------------


def directory_source(root: Path, files: int = 40, complete: bool = False) -> Path:
    root.mkdir()
    for i in range(files):
        (root / f"f{i:02d}").write_bytes(os.urandom(2000))
    if complete:
        (root / "complete").touch()
    return root


def journal_record(dst: Path) -> dict | None:
    out = run_softcopy("status", "--json")
    assert out.returncode == 0, out.stderr
    found = [json.loads(line) for line in out.stdout.splitlines()]
    return next((r for r in found if r["destination"] == str(dst)), None)


class Terminal:
    """A pseudo-terminal whose slave is softcopy's stdin, stdout, stderr and controlling
    terminal (softcopy leads its own session, as a login shell's job would)."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        self.slave: int | None = slave
        self.output = bytearray()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self.proc: subprocess.Popen | None = None

    def start(self, *args: object) -> subprocess.Popen:
        assert self.slave is not None
        self.proc = subprocess.Popen(
            softcopy_cmd(*args),
            stdin=self.slave,
            stdout=self.slave,
            stderr=self.slave,
            start_new_session=True,
            # after setsid: the terminal on fd 0 becomes the session's controlling terminal
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(self.slave)
        self.slave = None
        self._reader.start()
        return self.proc

    def _read(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:  # EIO: no process has the slave open any more
                    return
                if not data:
                    return
                self.output += data

    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def hang_up(self) -> None:
        """Close the terminal: the kernel hangs it up and sends SIGHUP to the session."""
        self._stop.set()
        self._reader.join(10)
        os.close(self.master)
        self.master = -1

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._stop.set()
        if self._reader.is_alive():
            self._reader.join(10)
        for fd in (self.master, self.slave):
            if fd is not None and fd >= 0:
                os.close(fd)


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    term = Terminal()
    try:
        yield term
    finally:
        term.close()


def assert_stopped_cleanly(proc: subprocess.Popen, dst: Path, copiers: list) -> None:
    assert proc.wait(timeout=DEADLINE) == 1
    wait_for(lambda: all(gone(c) for c in copiers), timeout=10, what="the copiers to die")
    assert not any(".softcopy-tmp." in k for k in tree_files(dst)), "temporary file left behind"
    record = journal_record(dst)
    assert record is not None and record["state"] == "interrupted", record
    assert "recorded_state" not in record  # the run said so itself, not status for it
    assert run_softcopy("status").stdout.startswith("interrupted ")


def test_the_terminal_going_away_stops_cleanly(tmp_path: Path, terminal: Terminal) -> None:
    src = directory_source(tmp_path / "src")
    dst = tmp_path / "dst"
    proc = terminal.start(
        "copy", "--kind", "directory", "--ready-age", "0", "--nprocs", "1",
        "--sleep-time", "0.1", src, dst,
    )  # fmt: skip
    wait_for(lambda: tree_files(dst), what="a first file at the destination", proc=proc)
    copiers = copiers_of(proc.pid)
    assert copiers
    terminal.hang_up()
    assert_stopped_cleanly(proc, dst, copiers)
    (src / "complete").touch()
    again = run_softcopy("copy", "--kind", "directory", "--ready-age", "0", src, dst)
    assert again.returncode == 0, again.stderr
    assert_same_tree(src, dst)


def test_sighup_on_a_live_terminal_stops_like_ctrl_c(tmp_path: Path, terminal: Terminal) -> None:
    src = directory_source(tmp_path / "src")
    dst = tmp_path / "dst"
    proc = terminal.start(
        "copy", "--kind", "directory", "--ready-age", "0", "--nprocs", "1",
        "--sleep-time", "0.1", src, dst,
    )  # fmt: skip
    wait_for(lambda: tree_files(dst), what="a first file at the destination", proc=proc)
    copiers = copiers_of(proc.pid)
    # To the whole process group, as a terminal's hang-up: copiers finish their file.
    os.killpg(proc.pid, signal.SIGHUP)
    assert_stopped_cleanly(proc, dst, copiers)
    wait_for(lambda: "run the same command again" in terminal.text(), what="the last line")
    assert "stopping after the files in flight" in terminal.text()
    assert "ended unexpectedly" not in terminal.text()  # no copier had to be replaced
    assert "Traceback" not in terminal.text()


def caught(pid: int, sig: int) -> bool:
    """Has the process installed a handler for `sig` (softcopy's own, for SIGHUP)?"""
    with open(f"/proc/{pid}/status") as f:
        mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return bool(mask >> (sig - 1) & 1)


_WRITE = {"x86_64": 1, "aarch64": 64}.get(platform.machine())


def blocked_writing_stdout(pid: int) -> bool:
    """The main thread is in write(1, ...): the summary is being printed."""
    try:
        with open(f"/proc/{pid}/syscall") as f:
            fields = f.read().split()
    except OSError:
        return False
    return fields[:2] == [str(_WRITE), "0x1"]


def full_pipe() -> tuple[int, int]:
    """A pipe that already holds all it can: the first write to it blocks."""
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
    os.set_blocking(w, False)
    try:
        while True:
            os.write(w, b"." * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(w, True)  # the child shares the file description
    return r, w


def drain(fd: int, into: bytearray) -> None:
    while chunk := os.read(fd, 65536):
        into += chunk


@pytest.mark.parametrize("moment", ["start", "mid-copy", "summary"])
def test_ctrl_c_twice_exits_1_whenever_it_comes(tmp_path: Path, moment: str) -> None:
    """Two Ctrl-C back to back: 'interrupted, run again to resume', never 130."""
    if moment == "summary" and _WRITE is None:
        pytest.skip(f"write's syscall number on {platform.machine()} is not known here")
    src = directory_source(tmp_path / "src", complete=moment == "summary")
    dst = tmp_path / "dst"
    r, w = full_pipe() if moment == "summary" else (None, None)
    proc = subprocess.Popen(
        softcopy_cmd("copy", "--kind", "directory", "--ready-age", "0", src, dst),
        stdout=w if w is not None else subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out = bytearray()
    try:
        if w is not None:
            os.close(w)
        if moment == "start":  # as soon as softcopy's handlers are there
            wait_for(lambda: caught(proc.pid, signal.SIGHUP), what="the handlers", proc=proc)
        elif moment == "mid-copy":
            wait_for(lambda: tree_files(dst), what="a first file at the destination", proc=proc)
        else:
            wait_for(lambda: blocked_writing_stdout(proc.pid), what="the summary", proc=proc)
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        if r is not None:
            drain(r, out)
        stdout, stderr = proc.communicate(timeout=DEADLINE)
        out += stdout or b""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if r is not None:
            os.close(r)
    assert proc.returncode == 1, stderr.decode()
    assert b"Traceback" not in stderr
    assert not any(".softcopy-tmp." in k for k in tree_files(dst)), "temporary file left behind"
    if moment == "summary":
        assert b"done: " in out  # the summary itself is whole


def test_a_command_run_in_process_leaves_the_caller_s_signals_alone(tmp_path: Path) -> None:
    """A blocked signal mask is inherited by every process started later: a command run
    in-process (as tests, or a service, do) must not leave it blocked. It did once, and
    every later softcopy in the test run ignored Ctrl-C."""
    from click.testing import CliRunner

    from softcopy.cli import main

    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    CliRunner().invoke(main, ["run", str(tmp_path / "missing.yaml")])
    after = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert after == before
