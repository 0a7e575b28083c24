"""End to end: a real tensorstore writer in one process, softcopy in another, trees compared."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    assert_same_tree,
    finish,
    run_softcopy,
    start_simulator,
    start_softcopy,
    tree_files,
    wait_for,
)

from softcopy.zarr.simulate import FORMATS, SimulationSpec, array_paths, expected_data

SMALL = SimulationSpec(timepoints=6, interval=0.0, shape=(2, 32, 32), chunks=(1, 16, 16))


def sim_args(spec: SimulationSpec) -> list[str]:
    args = [
        "--format", spec.format, "--layout", spec.layout,
        "--timepoints", spec.timepoints, "--interval", spec.interval,
        "--shape", ",".join(map(str, spec.shape)), "--chunks", ",".join(map(str, spec.chunks)),
        "--holes", spec.holes, "--partial-writes", spec.partial_writes, "--wells", spec.wells,
        "--seed", spec.seed,
        "--grow" if spec.grow else "--no-grow",
        "--delete-chunk" if spec.delete_chunk else "--no-delete-chunk",
        "--complete" if spec.complete else "--no-complete",
        "--compress" if spec.compress else "--no-compress",
    ]  # fmt: skip
    return [str(a) for a in args]


def simulate(path: Path, spec: SimulationSpec) -> None:
    rc, _, err = finish(start_simulator(path, *sim_args(spec)))
    assert rc == 0, err


def assert_arrays_read_back(dst: Path, spec: SimulationSpec) -> None:
    """The copy is not only the same bytes: tensorstore reads the same arrays from it."""
    import tensorstore as ts

    driver = "zarr" if spec.format.startswith("v2") else "zarr3"
    for path in array_paths(spec):
        store = ts.open(
            {"driver": driver, "kvstore": {"driver": "file", "path": str(dst / path)}},
            open=True,
        ).result()
        np.testing.assert_array_equal(store.read().result(), expected_data(spec, path))


def rewrite_delete_grow(src: Path, spec: SimulationSpec) -> None:
    """What a writer does after a first copy (zarr v3, SMALL's chunks): one chunk rewritten
    (new inode, new content), one timepoint zeroed (its chunks deleted: fill value), the
    array grown by a timepoint (new metadata)."""
    import tensorstore as ts

    store = ts.open(
        {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(src)}}, open=True
    ).result()
    store[1, 0, 0:16, 0:16] = np.full((16, 16), 7, dtype=store.dtype.numpy_dtype)
    store[2] = np.zeros(store.shape[1:], dtype=store.dtype.numpy_dtype)
    store = store.resize(exclusive_max=[spec.timepoints + 1, *spec.shape]).result()
    store[spec.timepoints] = np.ones(spec.shape, dtype=store.dtype.numpy_dtype)
    assert not (src / "c/2/0/0/0").exists()


def copy_live(tmp_path: Path, spec: SimulationSpec, *extra: str) -> tuple[Path, Path, str]:
    """Start softcopy first (waiting for the source), then the writer; both must finish."""
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    copier = start_softcopy("copy", src, dst, "--wait-for-source", "--scan-interval", "2", *extra)
    writer = start_simulator(src, *sim_args(spec))
    rc_w, _, err_w = finish(writer)
    assert rc_w == 0, err_w
    rc, out, err = finish(copier)
    assert rc == 0, f"softcopy failed ({rc}):\n{out}\n{err}"
    return src, dst, out + err


@pytest.mark.parametrize("fmt", FORMATS)
def test_copy_of_a_finished_archive_is_identical(tmp_path: Path, fmt: str) -> None:
    spec = replace(SMALL, format=fmt)
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, spec)
    result = run_softcopy("copy", src, dst)
    assert result.returncode == 0, result.stderr
    assert "done:" in result.stdout and "verified" in result.stdout
    assert_same_tree(src, dst)
    assert_arrays_read_back(dst, spec)


@pytest.mark.parametrize("fmt", FORMATS)
def test_copy_during_acquisition_ends_identical(tmp_path: Path, fmt: str) -> None:
    spec = replace(SMALL, format=fmt, timepoints=8, interval=0.15, partial_writes=2)
    src, dst, log = copy_live(tmp_path, spec)
    assert_same_tree(src, dst)
    assert_arrays_read_back(dst, spec)
    assert "complete" in log


def test_copy_is_live_and_follows_rewrites_and_deletes(tmp_path: Path) -> None:
    """Deterministic: the tool copies everything while the writer is 'still running'
    (no marker yet), then picks up a rewritten chunk, a deleted chunk and a new
    metadata version, and finishes only when the marker appears."""

    spec = replace(SMALL, complete=False)
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, spec)
    copier = start_softcopy("copy", src, dst, "--settle", "600", "--scan-interval", "600")
    wait_for(lambda: tree_files(dst) == tree_files(src), what="the initial copy", proc=copier)
    assert copier.poll() is None, "finished without a marker or settle"
    rewrite_delete_grow(src, spec)
    wait_for(lambda: tree_files(dst) == tree_files(src), what="the rewrite and delete", proc=copier)
    assert (dst / "c/1/0/0/0").read_bytes() == (src / "c/1/0/0/0").read_bytes()
    assert json.loads((dst / "zarr.json").read_text())["shape"][0] == spec.timepoints + 1
    assert copier.poll() is None
    (src / "complete").touch()
    rc, out, err = finish(copier)
    assert rc == 0, err
    assert "marker" in err and "deleted" in out
    assert_same_tree(src, dst)


def test_fill_value_holes_are_not_missing(tmp_path: Path) -> None:
    spec = replace(SMALL, holes=0.3, timepoints=8, interval=0.1)
    src, dst, _ = copy_live(tmp_path, spec)
    assert_same_tree(src, dst)
    assert_arrays_read_back(dst, spec)


def test_holes_without_marker_finish_on_idle_timeout(tmp_path: Path) -> None:
    spec = replace(SMALL, holes=0.3, complete=False)
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, spec)
    result = run_softcopy("copy", src, dst, "--idle-timeout", "1")
    assert result.returncode == 0, result.stderr
    assert "idle timeout" in result.stderr
    assert_same_tree(src, dst)


def test_full_grid_without_marker_finishes_after_settling(tmp_path: Path) -> None:
    spec = replace(SMALL, complete=False)
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, spec)
    result = run_softcopy("copy", src, dst, "--settle", "0.5")
    assert result.returncode == 0, result.stderr
    assert "every expected file is present" in result.stderr
    assert_same_tree(src, dst)
    assert not (dst / "complete").exists()


def test_marker_is_written_last_and_only_after_verification(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, SMALL)
    result = run_softcopy("copy", src, dst)
    assert result.returncode == 0, result.stderr
    marker = (dst / "complete").stat().st_mtime_ns
    newest_data = max(p.lstat().st_ctime_ns for p in dst.rglob("*") if p.name != "complete")
    assert (dst / "complete").stat().st_ctime_ns >= newest_data
    assert marker == (src / "complete").stat().st_mtime_ns
    summary = json.loads((tmp_path / "dst.zarr.softcopy" / "summary.json").read_text())
    assert summary["state"] == "done" and summary["findings"] == []
    assert summary["seconds"] > 0 and summary["files_copied"] == len(tree_files(src)) - 1


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param({"partial_writes": 4}, id="chunks-rewritten"),
        pytest.param({"format": "v3-sharded", "partial_writes": 2}, id="shards-rewritten"),
        pytest.param({"delete_chunk": True}, id="chunks-deleted"),
        pytest.param({"grow": True}, id="growing-array"),
        pytest.param({"grow": True, "format": "v2-nested"}, id="growing-v2-nested"),
        pytest.param({"layout": "ome"}, id="ome-multiscale"),
        pytest.param({"layout": "plate", "wells": 3, "timepoints": 9}, id="hcs-plate"),
        pytest.param({"layout": "plate", "format": "v2-nested", "wells": 2}, id="hcs-plate-v2"),
    ],
)
def test_acquisition_variants(tmp_path: Path, variant: dict) -> None:
    spec = replace(SMALL, timepoints=variant.pop("timepoints", 8), interval=0.1, **variant)
    src, dst, _ = copy_live(tmp_path, spec)
    assert_same_tree(src, dst)
    assert_arrays_read_back(dst, spec)
    if spec.delete_chunk and spec.format != "v3-sharded":
        assert not any(k.startswith("c/0/") for k in tree_files(dst))


def test_plate_well_appearing_mid_acquisition_joins_the_target(tmp_path: Path) -> None:
    """A whole new well sub-tree appears after copying started; it is copied too."""
    spec = replace(SMALL, layout="plate", wells=2, timepoints=6)
    src, dst = tmp_path / "plate.zarr", tmp_path / "copy.zarr"
    simulate(src, replace(spec, wells=1, complete=False))
    copier = start_softcopy("copy", src, dst, "--settle", "600", "--scan-interval", "600")
    wait_for(lambda: tree_files(dst) == tree_files(src), what="the first well", proc=copier)
    well_b = tmp_path / "wellB.zarr"
    simulate(well_b, replace(spec, wells=2, complete=False))
    # Move the second well in as a whole new sub-tree, then its plate metadata:
    # the new-directory path (watch, then scan) must find every file in it.
    os.rename(well_b / "B", src / "B")
    for name in (".zattrs", "zarr.json"):
        if (well_b / name).exists():
            os.replace(well_b / name, src / name)
    wait_for(lambda: tree_files(dst) == tree_files(src), what="the second well", proc=copier)
    (src / "complete").touch()
    rc, _, err = finish(copier)
    assert rc == 0, err
    assert any(k.startswith("B/") for k in tree_files(dst))
    assert_same_tree(src, dst)


def test_run_copies_two_targets_in_parallel(tmp_path: Path) -> None:
    specs = [replace(SMALL, format="v2"), replace(SMALL, format="v3-sharded", layout="ome")]
    writers = []
    lines = ["targets:"]
    for i, spec in enumerate(specs):
        lines += [f"  - source: src{i}.zarr", f"    destination: out/dst{i}.zarr"]
        writers.append((start_simulator(tmp_path / f"src{i}.zarr", *sim_args(spec)), spec))
    lines += ["defaults:", "  wait_for_source: true", "  nprocs: 1"]
    (tmp_path / "targets.yaml").write_text("\n".join(lines) + "\n")
    result = run_softcopy("run", tmp_path / "targets.yaml")
    for writer, _ in writers:
        assert finish(writer)[0] == 0
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("done:") == 2
    for i, spec in enumerate(specs):
        assert_same_tree(tmp_path / f"src{i}.zarr", tmp_path / "out" / f"dst{i}.zarr")
        assert_arrays_read_back(tmp_path / "out" / f"dst{i}.zarr", spec)


def test_partly_populated_destination_is_checked_not_recopied(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, replace(SMALL, compress=False))
    # Another tool copied some files first (new mtimes); one of them is corrupt.
    shutil.copytree(src, dst)
    (dst / "complete").unlink()
    chunks = sorted(k for k in tree_files(dst) if k.startswith("c/"))
    for key in chunks[len(chunks) // 2 :]:
        (dst / key).unlink()
    corrupt = dst / chunks[0]
    corrupt.write_bytes(b"\xff" + corrupt.read_bytes()[1:])
    kept = {k: (dst / k).stat().st_ino for k in chunks[1 : len(chunks) // 2]}
    result = run_softcopy("copy", src, dst)
    assert result.returncode == 0, result.stderr
    assert_same_tree(src, dst)
    # Identical files were compared, not rewritten; the corrupt one was replaced.
    assert {k: (dst / k).stat().st_ino for k in kept} == kept
    assert (dst / chunks[0]).read_bytes() == (src / chunks[0]).read_bytes()
    assert (dst / chunks[1]).stat().st_mtime_ns == (src / chunks[1]).stat().st_mtime_ns


def test_rerun_after_done_copies_nothing(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, SMALL)
    assert run_softcopy("copy", src, dst).returncode == 0
    again = run_softcopy("copy", src, dst)
    assert again.returncode == 0, again.stderr
    assert " 0 copied" in again.stdout


def test_stale_destination_files_are_deleted_when_the_destination_is_ours(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, SMALL)
    assert run_softcopy("copy", src, dst).returncode == 0
    # While softcopy was not running, the writer deleted a chunk.
    victim = next(k for k in tree_files(src) if k.startswith("c/"))
    (src / victim).unlink()
    result = run_softcopy("copy", src, dst)
    assert result.returncode == 0, result.stderr
    assert not (dst / victim).exists()
    assert_same_tree(src, dst)


def test_foreign_destination_extras_are_reported_not_deleted(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, SMALL)
    dst.mkdir()
    (dst / "notes.txt").write_text("someone else's file")
    # Beside a file of the source: a copy made by other means, not a folder to copy into.
    meta = next(p for p in sorted(src.iterdir()) if p.is_file() and p.name != "complete")
    (dst / meta.name).write_bytes(meta.read_bytes())
    # Met for the first time with a file the source lacks: refused before anything.
    first = run_softcopy("copy", src, dst)
    assert first.returncode == 2, first.stderr
    assert "notes.txt (not in the source" in first.stderr
    assert sorted(os.listdir(dst)) == sorted([meta.name, "notes.txt"])
    assert not (tmp_path / "dst.zarr.softcopy").exists()
    # Without it, the copy made by other means is resumed, and stays someone else's folder:
    # a file put there later is a finding of every run, and never deleted.
    (dst / "notes.txt").unlink()
    assert run_softcopy("copy", src, dst).returncode == 0
    (dst / "notes.txt").write_text("someone else's file")
    for attempt in range(2):  # a second run must not take the destination for its own
        result = run_softcopy("copy", src, dst)
        assert result.returncode == 1, f"run {attempt}: {result.stderr}"
        assert "extra: notes.txt" in result.stdout
        assert "choose an empty destination" in result.stderr
        assert (dst / "notes.txt").read_text() == "someone else's file"
        assert not (tmp_path / "dst.zarr.softcopy" / "certificate.json").exists()


def test_symlinks_are_copied_as_links_never_followed(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, SMALL)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("not part of the archive")
    os.symlink(outside, src / "link-to-dir")
    os.symlink("../outside/secret", src / "relative-link")
    result = run_softcopy("copy", src, dst)
    assert result.returncode == 0, result.stderr
    assert os.readlink(dst / "link-to-dir") == str(outside)
    assert os.readlink(dst / "relative-link") == "../outside/secret"
    assert not any("secret" in k for k in tree_files(dst) if not os.path.islink(dst / k))
    assert_same_tree(src, dst)


def test_python_dash_m_entry_point(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "softcopy", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "softcopy" in out.stdout


def test_a_file_that_fails_for_good_ends_the_target_failed(tmp_path: Path) -> None:
    """Regression: a permanent failure once left the drain loop spinning forever."""
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, SMALL)
    (src / "sub").mkdir()
    (src / "sub" / "data").write_text("x")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    targets = tmp_path / "targets.yaml"
    targets.write_text(f"targets:\n  - {{source: {src}, destination: {dst}, max_attempts: 2}}\n")
    assert run_softcopy("run", targets, timeout=60).returncode == 0
    # A link planted where the copy's directory was (a folder softcopy met before, so no
    # refusal up front): never written through, every attempt fails.
    shutil.rmtree(dst / "sub")
    os.symlink(elsewhere, dst / "sub")
    (src / "sub" / "data").write_text("y")  # a new version to copy
    result = run_softcopy("run", targets, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "failed: sub/data" in result.stdout
    assert list(elsewhere.iterdir()) == []
    assert not (tmp_path / "dst.zarr.softcopy" / "certificate.json").exists()  # not done


def test_a_new_mtime_alone_is_a_new_version(tmp_path: Path) -> None:
    """Regression: a change of mtime alone (`cp -p`, `touch`) raises only IN_ATTRIB,
    which was not watched: the destination kept the old mtime until a scan."""
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, replace(SMALL, complete=False))
    copier = start_softcopy("copy", src, dst, "--settle", "600", "--scan-interval", "600")
    log = src / "acquisition.log"
    log.write_text("stage moved\n")
    wait_for(lambda: tree_files(dst) == tree_files(src), what="the initial copy", proc=copier)
    os.utime(log, ns=(1_000_000_000, 1_000_000_000))
    wait_for(
        lambda: (dst / "acquisition.log").stat().st_mtime_ns == 1_000_000_000,
        what="the log's new mtime",
        proc=copier,
    )
    (src / "complete").touch()
    rc, _, err = finish(copier)
    assert rc == 0, err
    assert_same_tree(src, dst)


def test_a_copier_seeing_a_newer_version_than_the_ledger_settles(tmp_path: Path) -> None:
    """Regression: when the copier copied a version the supervisor never observed, the
    key was re-queued forever (174,000 copies of one file in a test run)."""
    from softcopy.config import make_target
    from softcopy.engine.target import Supervisor
    from softcopy.sinks.local import COPIED, Outcome
    from softcopy.sources.scan import stat_key

    src = tmp_path / "src.zarr"
    simulate(src, SMALL)
    sup = Supervisor(make_target(src, tmp_path / "dst.zarr", {}, "test"))
    (src / "notes.txt").write_text("v1")
    sup.ledger.observe("notes.txt", stat_key(str(src), "notes.txt"))
    assert sup.ledger.take(5) == ["notes.txt"]
    os.utime(src / "notes.txt", ns=(5, 5))  # changed behind the supervisor's back
    newer = stat_key(str(src), "notes.txt")
    sup._apply([Outcome("notes.txt", COPIED, newer, 2)], [])
    assert sup.ledger.source("notes.txt") == newer
    assert not sup.ledger.needs_work("notes.txt")
    assert sup.ledger.take(5) == []
