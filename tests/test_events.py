"""Lost events, made deterministic: softcopy is frozen (SIGSTOP) while the tree changes.

Periodic scans are pushed out to 600 s, so only the recovery path under test
(new directory: watch then scan; queue overflow: full rescan; no watches at
all: scans) can make the copy complete.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import (
    assert_same_tree,
    finish,
    softcopy_cmd,
    start,
    start_softcopy,
    tree_files,
    wait_for,
)
from test_acquisition import SMALL, simulate

QUEUE_LIMIT = Path("/proc/sys/fs/inotify/max_queued_events")
ENDLESS = ("--settle", "600", "--scan-interval", "600")


def has_inotify(pid: int) -> bool:
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        return any(os.readlink(fd_dir / fd) == "anon_inode:inotify" for fd in os.listdir(fd_dir))
    except OSError:
        return False


def stopped(pid: int) -> bool:
    """SIGSTOP is asynchronous: wait until the kernel reports the process stopped."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


@pytest.fixture
def unfinished(tmp_path: Path) -> tuple[Path, Path]:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, replace(SMALL, complete=False))
    return src, dst


def stop_and_finish(proc: subprocess.Popen, src: Path) -> str:
    (src / "complete").touch()
    rc, _, err = finish(proc)
    assert rc == 0, err
    return err


def test_files_in_a_directory_created_while_frozen_are_found(unfinished) -> None:
    src, dst = unfinished
    proc = start_softcopy("copy", src, dst, *ENDLESS)
    wait_for(lambda: tree_files(dst) == tree_files(src), what="the initial copy", proc=proc)
    proc.send_signal(signal.SIGSTOP)
    wait_for(lambda: stopped(proc.pid), what="softcopy to stop")
    # Nested directories and their files exist before any watch on them can:
    # the kernel generates no event for these files at all.
    for i in range(5):
        (src / "logs" / "run" / str(i)).mkdir(parents=True)
        (src / "logs" / "run" / str(i) / "frame.txt").write_text(f"frame {i}")
    proc.send_signal(signal.SIGCONT)
    wait_for(
        lambda: tree_files(dst) == tree_files(src),
        what="files in the new directories",
        proc=proc,
    )
    stop_and_finish(proc, src)
    assert_same_tree(src, dst)


@pytest.mark.alone  # the queue limit is the kernel's: every new inotify instance gets it
@pytest.mark.skipif(not os.access(QUEUE_LIMIT, os.W_OK), reason="needs a writable inotify sysctl")
def test_queue_overflow_triggers_a_full_rescan(unfinished) -> None:
    src, dst = unfinished
    original = QUEUE_LIMIT.read_text()
    QUEUE_LIMIT.write_text("16")
    try:
        # The limit is copied into an inotify instance when it is created.
        proc = start_softcopy("copy", src, dst, *ENDLESS)
        wait_for(lambda: has_inotify(proc.pid), what="softcopy's inotify instance")
    finally:
        QUEUE_LIMIT.write_text(original)
    wait_for(lambda: tree_files(dst) == tree_files(src), what="the initial copy", proc=proc)
    proc.send_signal(signal.SIGSTOP)
    wait_for(lambda: stopped(proc.pid), what="softcopy to stop")
    for i in range(100):  # far more than 16 events while nobody reads
        (src / f"extra-{i}.txt").write_text(str(i))
    proc.send_signal(signal.SIGCONT)
    wait_for(lambda: tree_files(dst) == tree_files(src), what="the files after overflow", proc=proc)
    err = stop_and_finish(proc, src)
    assert "overflowed" in err
    assert_same_tree(src, dst)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")
def test_without_any_inotify_watch_scans_still_complete_the_copy(tmp_path: Path) -> None:
    """A user namespace with a watch limit of 0: no event ever arrives."""
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, replace(SMALL, complete=False))
    inner = shlex.join(softcopy_cmd("copy", src, dst, "--scan-interval", "0.3"))
    script = f"echo 0 > /proc/sys/user/max_inotify_watches && exec {inner}"
    probe = subprocess.run(["unshare", "-U", "-r", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("user namespaces are not available")
    proc = start(["unshare", "-U", "-r", "sh", "-c", script])
    wait_for(lambda: tree_files(dst) == tree_files(src), what="the copy by scanning", proc=proc)
    (src / "late.txt").write_text("written after the first scans")
    wait_for(lambda: (dst / "late.txt").exists(), what="a late file", proc=proc)
    (src / "complete").touch()
    rc, _, err = finish(proc)
    assert rc == 0, err
    assert "watch limit reached" in err
    assert_same_tree(src, dst)
