"""Coarse timestamps: a version republished within one timestamp tick is never certified stale.

On ext4 made with 128-byte inodes, timestamps have whole seconds. A writer that
publishes a key twice within one second by temporary file and rename gets the
first version's inode back, so size, mtime, inode and ctime all repeat. The
tests make exactly that happen (and check that it did) while softcopy is
stopped with SIGSTOP, so softcopy's next look sees a version identical in every
field to the one it copied, with other bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from blake3 import blake3
from conftest import finish, start_softcopy, wait_for

from softcopy.engine.racy import Granularity, proven_after_ns
from softcopy.sources.scan import Version

ZARRAY = {"zarr_format": 2, "shape": [4], "chunks": [2], "dtype": "<u1", "fill_value": 0}


# ---- the rule, as pure functions ------------------------------------------------------


def test_granularity_narrows_with_evidence_and_stops_at_the_clock() -> None:
    g = Granularity(clock_ns=4_000_000)
    assert g.ns == 2_000_000_000, "no evidence yet: as cautious as FAT"
    g.observe(1_796_115_271_000_000_000)  # an odd second: not FAT
    assert g.ns == 1_000_000_000 and not g.settled
    g.observe(1_796_115_272_000_000_000)
    assert g.ns == 1_000_000_000, "whole seconds again: still one second"
    g.observe(1_796_115_272_123_456_789)  # nanoseconds: the kernel clock is the limit
    assert g.ns == 4_000_000 and g.settled


def test_unknown_timestamps_are_not_evidence() -> None:
    g = Granularity(clock_ns=1)
    g.observe(0)
    assert g.ns == 2_000_000_000 and g.samples == 0


def test_a_version_is_proven_only_after_its_newest_tick() -> None:
    second = 1_000_000_000
    v = Version(10, 5 * second + 300, 7, 6 * second + 100)  # ctime newer than mtime
    assert proven_after_ns(v, second) == 7 * second
    assert proven_after_ns(v, second, margin_ns=4) == 7 * second + 4
    assert proven_after_ns(v, 1) == 6 * second + 101


# ---- the break, end to end on a filesystem with one-second timestamps -----------------


@pytest.fixture
def coarse_fs(tmp_path: Path) -> Iterator[Path]:
    """A loop-mounted ext4 with 128-byte inodes: whole-second timestamps."""
    if os.geteuid() != 0 or not shutil.which("mkfs.ext4"):
        pytest.skip("needs root and mkfs.ext4 for a loop mount")
    image, mnt = tmp_path / "coarse.img", tmp_path / "coarse"
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-I", "128", str(image)], check=True,
                   capture_output=True)  # fmt: skip
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot loop-mount: {mounted.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _publish(path: Path, data: bytes) -> Version:
    tmp = path.with_name(path.name + ".__lock")  # tensorstore's temporary name
    tmp.write_bytes(data)
    os.rename(tmp, path)
    st = os.lstat(path)
    return Version(st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def _rewrite_in_place(path: Path, data: bytes) -> Version:
    before = os.lstat(path)
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime restored
    st = os.lstat(path)
    return Version(st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def _start_of_a_second() -> None:
    # Leaves most of a second for publish, copy, and republish within one tick.
    while time.time() % 1 > 0.05:
        time.sleep(0.005)


@pytest.mark.parametrize("how", ["republish", "in-place"])
@pytest.mark.parametrize("hashed", [False, True], ids=["sizes", "blake3"])
def test_a_same_second_change_is_copied_not_certified(
    coarse_fs: Path, tmp_path: Path, how: str, hashed: bool
) -> None:
    src, dst = coarse_fs / "src.zarr", tmp_path / "dst.zarr"
    src.mkdir()
    (src / ".zarray").write_text(json.dumps(ZARRAY))
    (src / "1").write_bytes(b"other chunk")
    args = ["copy", src, dst, "--settle", "60", "--scan-interval", "300"]
    proc = start_softcopy(*args, *(["--hash"] if hashed else []))
    wait_for(lambda: (dst / "1").exists(), what="the copy to start", proc=proc)
    first, second, third = b"A" * 64, b"B" * 64, b"C" * 64
    for _attempt in range(10):
        key = src / "0"
        _start_of_a_second()
        v1 = _publish(key, first)
        wait_for(
            lambda: (dst / "0").exists() and (dst / "0").read_bytes() == first,
            what="version 1 copied",
            proc=proc,
        )
        os.kill(proc.pid, signal.SIGSTOP)  # softcopy sees nothing of what follows...
        try:
            if how == "republish":
                _publish(key, second)
                v3 = _publish(key, third)  # the inode of version 1 comes back
            else:
                v3 = _rewrite_in_place(key, third)
        finally:
            os.kill(proc.pid, signal.SIGCONT)  # ...until it looks again
        if v3 == v1:
            break  # every field of the version repeats: the case under test
        # The second ended between the writes: try again within a fresh one.
        wait_for(lambda: (dst / "0").read_bytes() == third, what="a plain change copied",
                 proc=proc)  # fmt: skip
        key.unlink()
        wait_for(lambda: not (dst / "0").exists(), what="the deletion", proc=proc)
    else:
        pytest.skip("could not make a version repeat within one second in 10 attempts")
    (src / "complete").write_text("")
    code, _, err = finish(proc)
    assert code == 0, err
    assert (dst / "0").read_bytes() == third, "a stale version was kept and certified"
    certificate = json.loads((tmp_path / "dst.zarr.softcopy" / "certificate.json").read_text())
    assert certificate["end"]["proven"] is True
    if hashed:
        manifest = (tmp_path / "dst.zarr.softcopy" / "manifest.b3").read_text().splitlines()
        assert f"{blake3(third).hexdigest()}  0" in manifest


def test_a_copy_compared_again_after_its_tick_counts_once_as_copied(tmp_path: Path) -> None:
    """A file whose mtime is ahead of the copy (here set 2 s into the future, as a clock
    skewed between writer and file server would) is copied, then compared again once its
    tick has passed: the summary counts it once, as copied, not also as already there."""
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    src.mkdir()
    (src / ".zarray").write_text(json.dumps(ZARRAY))
    (src / "0").write_bytes(b"chunk zero")
    (src / "1").write_bytes(b"chunk one")
    ahead = time.time_ns() + 2_000_000_000
    os.utime(src / "0", ns=(ahead, ahead))
    (src / "complete").write_text("")
    proc = start_softcopy("copy", "--json", src, dst)
    code, out, err = finish(proc)
    assert code == 0, err
    summary = next(e for e in map(json.loads, out.splitlines()) if e["event"] == "summary")
    assert summary["files_copied"] == 3, summary  # .zarray, 0, 1 (the marker apart)
    assert summary["files_already_there"] == 0, summary
    assert (dst / "0").read_bytes() == b"chunk zero"
