"""Throttles measured by behaviour: rates never exceeded, priorities set, pauses under load.

Speed is never a pass condition here (the machine is shared); a rate limit's
promise is an upper bound, which a slow machine can only keep more easily.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
from conftest import (
    assert_same_tree,
    finish,
    start_disk_load,
    start_softcopy,
    tree_files,
    wait_for,
)
from test_acquisition import SMALL, simulate

from softcopy.sources.pressure import block_device, io_scheduler
from softcopy.throttle import create_bucket
from softcopy.units import parse_rate


@pytest.mark.parametrize(
    ("text", "rate"),
    [("200M", 200e6), ("1.5G", 1.5e9), ("800k", 800e3), ("100Mi", 100 * 2**20), ("5MB/s", 5e6),
     (1000, 1000.0), ("42", 42.0)],
)  # fmt: skip
def test_parse_rate(text, rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["fast", "", "-5M", "0", "12X", True, None])
def test_parse_rate_rejects(text) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text)


def test_a_targets_file_names_a_bad_rate(tmp_path: Path) -> None:
    from softcopy.config import load_targets
    from softcopy.errors import ConfigError

    (tmp_path / "t.yaml").write_text("targets:\n  - {source: a, destination: b, max_rate: fast}\n")
    with pytest.raises(ConfigError, match=r"targets\[0\]\.max_rate: .*'fast' is not a rate"):
        load_targets(tmp_path / "t.yaml")


GRANTS = """
import sys, time
from softcopy.throttle import RateLimit
limit = RateLimit(sys.argv[1], float(sys.argv[2]))
for _ in range(int(sys.argv[3])):
    limit.acquire(int(sys.argv[4]))
"""


def test_processes_sharing_a_bucket_never_exceed_its_rate() -> None:
    rate, grants, size, procs = 4e6, 20, 100_000, 3  # 6 MB at 4 MB/s: at least ~1.4 s
    bucket = create_bucket()
    try:
        started = time.monotonic()
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", GRANTS, bucket, str(rate), str(grants), str(size)]
            )
            for _ in range(procs)
        ]
        assert all(w.wait(60) == 0 for w in workers)
        elapsed = time.monotonic() - started
    finally:
        os.unlink(bucket)
    total = procs * grants * size
    # GCRA: total <= rate * (elapsed + burst); the burst is 0.1 s.
    assert total <= rate * (elapsed + 0.1) * 1.001, f"{total / elapsed / 1e6:.2f} MB/s > 4 MB/s"


def test_max_rate_holds_for_a_whole_copy(tmp_path: Path) -> None:
    spec = replace(SMALL, timepoints=20, shape=(2, 128, 256), chunks=(1, 128, 256), compress=False)
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, spec)
    total = sum(tree_files(src).values())  # ~2.6 MB
    rate = 1e6
    targets = tmp_path / "t.yaml"
    targets.write_text(
        f"targets:\n  - {{source: {src}, destination: {dst}, max_rate: 1M, nprocs: 2}}\n"
    )
    started = time.monotonic()
    proc = start_softcopy("run", targets)
    rc, _, err = finish(proc)
    elapsed = time.monotonic() - started
    assert rc == 0, err
    assert_same_tree(src, dst)
    assert total <= rate * (elapsed + 0.1), f"{total / elapsed / 1e6:.2f} MB/s over 1 MB/s"


def test_a_run_wide_max_rate_is_shared_by_all_targets(tmp_path: Path) -> None:
    spec = replace(SMALL, timepoints=12, shape=(2, 128, 256), chunks=(1, 128, 256), compress=False)
    lines = ["targets:"]
    total = 0
    for i in range(2):
        src = tmp_path / f"src{i}.zarr"
        simulate(src, spec)
        total += sum(tree_files(src).values())
        lines += [f"  - source: {src}", f"    destination: {tmp_path / f'dst{i}.zarr'}"]
    (tmp_path / "t.yaml").write_text("\n".join(lines) + "\n")
    # The shared budget is a file in the temporary directory: a private one, so another
    # test's run (another xdist worker) cannot add or remove one meanwhile.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    started = time.monotonic()
    proc = start_softcopy(
        "run", tmp_path / "t.yaml", "--max-rate", "1M", env={**os.environ, "TMPDIR": str(tmp)}
    )
    rc, _, err = finish(proc)
    elapsed = time.monotonic() - started
    assert rc == 0, err
    # Two targets, one budget: together never above 1 MB/s (each alone could be).
    assert total <= 1e6 * (elapsed + 0.1), f"{total / elapsed / 1e6:.2f} MB/s over 1 MB/s"
    assert list(tmp.iterdir()) == [], "the budget file is left behind"


def test_copiers_run_at_idle_io_and_lowest_cpu_priority(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, replace(SMALL, complete=False))
    proc = start_softcopy("copy", src, dst, "--settle", "600")
    wait_for(lambda: tree_files(dst) == tree_files(src), what="the copy", proc=proc)
    copiers = psutil.Process(proc.pid).children()
    assert copiers
    for copier in copiers:
        assert copier.nice() == 19
        assert copier.ionice().ioclass == psutil.IOPRIO_CLASS_IDLE
    assert psutil.Process(proc.pid).nice() == 0, "the supervisor itself stays responsive"


# ---- adaptive back-off --------------------------------------------------------------------


@pytest.fixture
def loop_source(tmp_path: Path):
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        pytest.skip("needs root and mkfs.ext4 for a loop-mounted source disk")
    image, mnt = tmp_path / "acq.img", tmp_path / "acq"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(400 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    if subprocess.run(["mount", "-o", "loop", str(image), str(mnt)]).returncode:
        pytest.skip("cannot loop-mount")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.alone
def test_copiers_pause_while_the_source_disk_is_busy(tmp_path: Path, loop_source: Path) -> None:
    """A writer hammers the acquisition disk with O_DIRECT writes: softcopy pauses until
    it stops, then finishes. (It measures its own loop device, never the root disk.)"""
    src, dst = loop_source / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, replace(SMALL, complete=False))  # cannot finish until the test says so
    load = start_disk_load(loop_source)
    targets = tmp_path / "t.yaml"
    targets.write_text(
        f"targets:\n  - {{source: {src}, destination: {dst}, busy_utilisation: 0.3, settle: 600}}\n"
    )
    proc = start_softcopy("run", targets)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    # Only copying waits for a busy disk: keep giving it something to copy until it pauses.
    work = iter(range(10**6))

    def paused() -> bool:
        waiting = [p for p in src.glob("work-*.txt") if not (dst / p.name).exists()]
        if len(waiting) < 2:  # a little work at a time, not thousands of files
            (src / f"work-{next(work)}.txt").write_text("more")
        return any("pausing copiers" in line for line in lines)

    wait_for(paused, what="a pause")
    load.kill()
    load.wait()
    wait_for(lambda: any("resuming" in line for line in lines), what="the copiers to resume")
    (src / "complete").touch()
    assert proc.wait(timeout=90) == 0, "".join(lines)
    reader.join(10)
    assert any("resuming" in line for line in lines)
    assert_same_tree(src, dst)
    scheduler = io_scheduler(block_device(str(src)) or "")
    warned = any("ignores I/O priority classes" in line for line in lines)
    assert warned == (scheduler in ("none", "kyber")), (scheduler, warned)
