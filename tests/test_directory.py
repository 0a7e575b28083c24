"""Plain-directory targets (sequencer run folders) and sources that must be polled."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest
from conftest import (
    assert_same_tree,
    finish,
    run_softcopy,
    start,
    start_softcopy,
    tree_files,
    wait_for,
)
from test_acquisition import SMALL, simulate
from test_faults import FaultMount, _fuse_missing

# A sequencer writes in place: files grow while open, then a sentinel says "done".
RUN_FOLDER_WRITER = textwrap.dedent(
    """
    import os, sys, time
    root = sys.argv[1]
    os.makedirs(f"{root}/Data/Intensities/BaseCalls/L001", exist_ok=True)
    open(f"{root}/RunInfo.xml", "w").write("<RunInfo/>")
    for cycle in range(1, 6):
        d = f"{root}/Data/Intensities/BaseCalls/L001/C{cycle}.1"
        os.makedirs(d, exist_ok=True)
        with open(f"{d}/L001_1.cbcl", "wb") as f:
            for part in range(4):
                f.write(os.urandom(20000)); f.flush(); time.sleep(0.02)
        with open(f"{root}/RTAComplete.log", "a") as log:
            log.write(f"cycle {cycle}\\n")
    open(f"{root}/scratch.tmp", "w").write("not for the archive")
    open(f"{root}/CopyComplete.txt", "w").close()
    """
)


def targets_file(tmp_path: Path, src: Path, dst: Path, **options: object) -> Path:
    lines = [f"  - source: {src}", f"    destination: {dst}"]
    lines += [
        f"    {k}: {v!r}" if isinstance(v, str) else f"    {k}: {v}" for k, v in options.items()
    ]
    path = tmp_path / "targets.yaml"
    path.write_text("targets:\n" + "\n".join(lines).replace("'", '"') + "\n")
    return path


def test_a_run_folder_is_copied_and_finished_by_its_sentinel(tmp_path: Path) -> None:
    src, dst = tmp_path / "run", tmp_path / "copy"
    src.mkdir()
    targets = targets_file(
        tmp_path,
        src,
        dst,
        kind="directory",
        sentinels=["CopyComplete.txt"],
        sentinel_min_age=0.5,
        ready_age=0.3,
        exclude=["*.tmp"],
    )
    proc = start_softcopy("run", targets)
    writer = start(["python3", "-c", RUN_FOLDER_WRITER, str(src)])
    assert finish(writer)[0] == 0
    rc, _, err = finish(proc)
    assert rc == 0, err
    assert "sentinel 'CopyComplete.txt'" in err
    assert not (dst / "scratch.tmp").exists(), "excluded file copied"
    assert_same_tree(src, dst, ignore=("scratch.tmp",))
    # The sentinel is written last, after everything it vouches for.
    newest = max((dst / k).stat().st_ctime_ns for k in tree_files(dst) if k != "CopyComplete.txt")
    assert (dst / "CopyComplete.txt").stat().st_ctime_ns >= newest


def test_a_young_sentinel_does_not_finish_the_run(tmp_path: Path) -> None:
    src, dst = tmp_path / "run", tmp_path / "copy"
    src.mkdir()
    (src / "reads.fastq").write_text("@r1\nACGT\n+\nIIII\n")
    (src / "final_summary_ABC.txt").write_text("done")
    targets = targets_file(
        tmp_path,
        src,
        dst,
        kind="directory",
        sentinels=["final_summary_*.txt"],
        sentinel_min_age=3,
        ready_age=0,
    )
    started = time.time()
    result = run_softcopy("run", targets)
    assert result.returncode == 0, result.stderr
    # It waited until the sentinel was old enough (a lower bound: a slow machine only waits longer).
    assert time.time() - os.stat(src / "final_summary_ABC.txt").st_mtime >= 3
    assert time.time() - started >= 2.5
    assert_same_tree(src, dst)


def test_include_and_exclude_apply_to_copy_and_verification(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, SMALL)
    (src / "logs").mkdir()
    (src / "logs" / "debug.log").write_text("noise")
    targets = targets_file(tmp_path, src, dst, exclude=["logs/*"])
    result = run_softcopy("run", targets)
    assert result.returncode == 0, result.stderr
    assert not (dst / "logs").exists()
    assert_same_tree(src, dst, ignore=("logs/debug.log",))


def test_a_directory_is_never_taken_for_zarr_unless_asked(tmp_path: Path) -> None:
    src = tmp_path / "run"
    src.mkdir()
    (src / "a.txt").write_text("x")
    result = run_softcopy("copy", src, tmp_path / "copy")
    assert result.returncode == 2
    assert "no zarr metadata" in result.stderr and "--kind directory" in result.stderr


@pytest.fixture
def fuse_source(tmp_path: Path):
    why = _fuse_missing()
    if why:
        pytest.skip(why)
    fs = FaultMount(tmp_path, direct_io=False, cache_timeout=0.0)
    fs.backing.mkdir()
    yield fs
    fs.stop()


def test_a_source_behind_fuse_is_polled_and_writes_behind_the_mount_are_found(
    tmp_path: Path, fuse_source: FaultMount
) -> None:
    """Writes made to the backing store (like another NFS client's) raise no inotify event
    at the mount: softcopy must notice the filesystem type and poll."""
    backing_src = fuse_source.backing / "src.zarr"
    simulate(backing_src, SMALL.__class__(**{**SMALL.__dict__, "complete": False}))
    fuse_source.start()
    src, dst = fuse_source.mount / "src.zarr", tmp_path / "dst.zarr"
    targets = targets_file(tmp_path, src, dst, poll_interval=0.3, settle=600)
    proc = start_softcopy("run", targets)
    wait_for(lambda: tree_files(dst) == tree_files(backing_src), what="the first copy", proc=proc)
    (backing_src / "late.txt").write_text("written behind the mount")
    wait_for(lambda: (dst / "late.txt").exists(), what="a file only polling finds", proc=proc)
    (backing_src / "complete").touch()
    rc, _, err = finish(proc)
    assert rc == 0, err
    assert "polling every" in err and "fuse" in err
    assert_same_tree(backing_src, dst)


def test_a_rerun_after_a_file_was_deleted_at_the_source_deletes_it_and_ends(
    tmp_path: Path,
) -> None:
    src, dst = tmp_path / "run", tmp_path / "copy"
    src.mkdir()
    for name in ("a", "b", "CopyComplete.txt"):
        (src / name).write_text(name)
    args = [
        "copy",
        "--kind",
        "directory",
        "--sentinel",
        "CopyComplete.txt",
        "--sentinel-min-age",
        "0",
        "--ready-age",
        "0",
        src,
        dst,
    ]
    first = run_softcopy(*args)
    assert first.returncode == 0, first.stderr
    (src / "a").unlink()
    again = run_softcopy(*args)
    assert again.returncode == 0, again.stderr
    assert not (dst / "a").exists() and (dst / "b").read_text() == "b"


@pytest.mark.parametrize("how", ["deleted", "made again"])
def test_a_source_that_vanishes_mid_copy_fails_and_the_copy_keeps_its_files(
    tmp_path: Path, how: str
) -> None:
    """A vanished root once listed as empty: the copy ended `done` with 0 files, and its
    files were deleted at the destination as if the writer had deleted them."""
    src, dst = tmp_path / "run", tmp_path / "copy"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}.bin").write_bytes(os.urandom(1000))
    proc = start_softcopy(
        "copy",
        "--kind",
        "directory",
        "--ready-age",
        "0",
        "--idle-timeout",
        "30",
        "--scan-interval",
        "0.2",
        "--nprocs",
        "1",
        src,
        dst,
    )
    wait_for(lambda: len(list(dst.glob("f*.bin"))) == 5, what="the files copied", proc=proc)
    aside = tmp_path / "aside"
    src.rename(aside)  # the source as it was, kept to compare the copy with
    if how == "made again":
        src.mkdir()
    rc, _, err = finish(proc)
    assert rc == 1, err
    # Made again: the engine may look between the rename and the mkdir, and see it gone.
    said = ("vanished",) if how == "deleted" else ("was replaced", "vanished")
    assert any(s in err for s in said), err
    assert sorted(p.name for p in dst.glob("f*.bin")) == [f"f{i}.bin" for i in range(5)]
    for i in range(5):
        assert (dst / f"f{i}.bin").read_bytes() == (aside / f"f{i}.bin").read_bytes()
    assert not (tmp_path / "copy.softcopy" / "certificate.json").exists()
