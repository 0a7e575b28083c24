"""A watcher whose run's destination another softcopy is writing: it waits, and the wait
is not a failed attempt (a run taken over from a watcher that died on another host waits
for that watcher's lock to run out the same way)."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import finish, run_softcopy, start_softcopy, wait_for

RUN = ("--kind", "directory", "--sentinel", "CopyComplete.txt", "--sentinel-min-age", "0")


def test_a_locked_destination_is_waited_for_not_failed(tmp_path: Path) -> None:
    root, dest_root = tmp_path / "root", tmp_path / "dest"
    run = root / "run0042"
    run.mkdir(parents=True)
    (run / "reads.bin").write_bytes(os.urandom(6 << 20))
    (run / "CopyComplete.txt").write_text("")
    # Copied by hand at 1 MB/s: its lock is held for at least five seconds.
    by_hand = start_softcopy(
        "copy", *RUN, "--max-rate", "1M", "--state-dir", tmp_path / "hand", run,
        dest_root / "run0042",
    )  # fmt: skip
    wait_for(
        lambda: (dest_root / "run0042.softcopy" / "lock").exists(),
        what="the copy by hand to hold its lock",
        proc=by_hand,
    )
    # One attempt allowed: were the wait counted as one, the run would fail.
    watcher = run_softcopy(
        "watch", root, dest_root, "--once", *RUN[2:], "--max-attempts", "1",
        "--retry-delay", "0.5", "--nprocs", "1",
    )  # fmt: skip
    assert finish(by_hand)[0] == 0
    assert watcher.returncode == 0, watcher.stderr
    assert "another softcopy is already copying there; trying again" in watcher.stderr
    assert "failed" not in watcher.stderr
    assert run_softcopy("verify", run, dest_root / "run0042").returncode == 0
