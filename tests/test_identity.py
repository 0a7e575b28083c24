"""Directories are compared by identity (st_dev, st_ino), not by name.

A bind mount or a link is a second name for a directory: softcopy's output is never
its own input, one destination has one lock whatever it is called, and a copy of one
source is never turned into a copy of another (--replace says so explicitly).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import assert_same_tree, finish, run_softcopy, start_softcopy, wait_for
from test_bad_input import assert_one_error, make_array, snapshot


@pytest.fixture
def bind() -> Iterator[Callable[[Path, Path], None]]:
    """`mount --bind what where` (root); skipped where it cannot be done."""
    mounted: list[Path] = []

    def mount(what: Path, where: Path) -> None:
        if shutil.which("mount") is None:
            pytest.skip("mount is not installed")
        where.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "--bind", what, where], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"mount --bind failed: {done.stderr.strip()}")
        mounted.append(where)

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", where], check=True)


def finished_source(path: Path, chunks: tuple[str, ...] = ("0", "1")) -> Path:
    src = make_array(path, chunks)
    (src / "complete").write_text("")
    return src


def records(dst: Path) -> Path:
    return dst.parent / f"{dst.name}.softcopy"


def refused(args: list[object], root: Path, *needles: str) -> None:
    """Exit 2, one error naming what it must, and nothing below root changed."""
    before = snapshot(root)
    proc = run_softcopy(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert_one_error(proc.stderr, *needles)
    assert snapshot(root) == before


# ---- the source is never softcopy's own output ------------------------------------------------


@pytest.mark.parametrize("how", ["itself", "inside", "through-a-link"])
def test_a_records_folder_is_never_a_source(tmp_path: Path, how: str) -> None:
    """`copy X.softcopy X` wrote lock, target.json and certificates into its own source."""
    side = tmp_path / "copy.softcopy"
    src = finished_source(side / "inner.zarr" if how == "inside" else side)
    if how == "through-a-link":
        src = tmp_path / "alias"
        src.symlink_to(side, target_is_directory=True)
    refused(["copy", src, tmp_path / "copy"], tmp_path, str(src), "records folder")


@pytest.mark.parametrize("case", ["dst-in-src", "src-in-dst", "dst-is-src", "records-is-src"])
def test_a_second_name_through_a_bind_mount_is_the_same_directory(
    tmp_path: Path, bind: Callable[[Path, Path], None], case: str
) -> None:
    """Compared as strings, these copied their own output until the disk was full."""
    src = finished_source(tmp_path / "acq" / "a.zarr")
    view = tmp_path / "view"
    if case == "dst-in-src":
        bind(src, view)
        args, needles = [src, view / "copy"], [str(view / "copy"), "inside the source"]
    elif case == "src-in-dst":
        bind(tmp_path / "acq", view)
        args, needles = [view / "a.zarr", tmp_path / "acq"], ["inside the destination"]
    elif case == "dst-is-src":
        bind(src, view)
        args, needles = [src, view], [str(view), "the source itself"]
    else:
        bind(src, tmp_path / "view.softcopy")  # where the records of `view` would go
        args, needles = [src, view], [str(src), "records folder"]
    refused(["copy", *args], tmp_path / "acq", *needles)


def targets_file(root: Path, *pairs: tuple[str, str]) -> Path:
    lines = ["targets:"] + [f"  - {{source: {s}, destination: {d}}}" for s, d in pairs]
    path = root / "t.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("pairs", "named"),
    [
        # targets[0] writes inside what targets[1] reads
        ((("a.zarr", "copies/a.zarr"), ("copies", "backup")), "targets[1]"),
        # targets[1] reads targets[0]'s records folder
        ((("a.zarr", "copy-a"), ("copy-a.softcopy", "copy-b")), "targets[1]"),
        # targets[1] writes into what targets[0] reads
        ((("a.zarr", "copy-a"), ("b.zarr", "a.zarr/copy-b")), "targets[0]"),
    ],
)
def test_a_target_never_reads_what_another_writes(
    tmp_path: Path, pairs: tuple[tuple[str, str], ...], named: str
) -> None:
    finished_source(tmp_path / "a.zarr")
    finished_source(tmp_path / "b.zarr")
    (tmp_path / "copies").mkdir()
    path = targets_file(tmp_path, *pairs)
    refused(["run", path], tmp_path, str(path), "overlaps the source of", named)


def test_a_target_never_reads_what_another_writes_through_a_bind_mount(
    tmp_path: Path, bind: Callable[[Path, Path], None]
) -> None:
    finished_source(tmp_path / "a.zarr")
    finished_source(tmp_path / "b.zarr")
    bind(tmp_path / "b.zarr", tmp_path / "view")
    path = targets_file(tmp_path, ("a.zarr", "view/copy-a"), ("b.zarr", "copy-b"))
    refused(["run", path], tmp_path / "a.zarr", "targets[0]", "overlaps the source of targets[1]")


# ---- one destination, one lock, whatever its name ---------------------------------------------


@pytest.mark.parametrize("how", ["symlink", "bind-mount", "linked-parent"])
def test_one_destination_under_two_names_is_copied_to_once(
    tmp_path: Path, bind: Callable[[Path, Path], None], how: str
) -> None:
    src = make_array(tmp_path / "a.zarr", chunks=("0",))  # no end: the first copy waits
    other = finished_source(tmp_path / "b.zarr")  # a second source: each would delete the other's
    dst = tmp_path / "out" / "copy.zarr"
    first = start_softcopy("copy", src, dst, "--nprocs", "1", "--idle-timeout", "600",
                           "--settle", "600")  # fmt: skip
    try:
        wait_for(
            lambda: (records(dst) / "target.json").exists() and (dst / "0").exists(),
            what="the first softcopy to take the destination",
            proc=first,
        )
        if how == "symlink":
            alias = tmp_path / "alias"
            alias.symlink_to(dst, target_is_directory=True)
        elif how == "linked-parent":
            (tmp_path / "elsewhere").symlink_to(dst.parent, target_is_directory=True)
            alias = tmp_path / "elsewhere" / dst.name
        else:
            alias = tmp_path / "mounted"
            bind(dst, alias)
        before = snapshot(dst)
        second = run_softcopy("copy", other, alias, "--idle-timeout", "2")
        assert second.returncode == 2, second.stdout + second.stderr
        # A link is resolved when the command is read: the error names the real directory.
        assert_one_error(
            second.stderr, str(alias if how == "bind-mount" else dst), "another softcopy"
        )
        assert snapshot(dst) == before
        assert first.poll() is None, "the first copy is unaffected"
    finally:
        first.send_signal(signal.SIGTERM)
        finish(first)


# ---- a copy of one source never becomes a copy of another -------------------------------------


def test_a_copy_of_one_source_is_never_made_a_copy_of_another(tmp_path: Path) -> None:
    a = finished_source(tmp_path / "a.zarr")
    (a / "only-in-a.txt").write_text("a")
    b = finished_source(tmp_path / "b.zarr", chunks=("0",))
    dst = tmp_path / "copy.zarr"
    assert run_softcopy("copy", a, dst).returncode == 0
    # Refused before anything in the copy or its records is written or deleted.
    refused(["copy", b, dst], tmp_path, str(dst), str(a), "--replace")
    refused(["copy", "--dry-run", b, dst], tmp_path, str(dst), str(a), "--replace")
    proc = run_softcopy("copy", b, dst, "--replace")
    assert proc.returncode == 0, proc.stderr
    assert_same_tree(b, dst)
    assert json.loads((records(dst) / "target.json").read_text())["source"] == str(b)
    assert run_softcopy("copy", b, dst).returncode == 0, "now it is b's copy"


def test_a_source_made_again_at_the_same_path_is_another_source(tmp_path: Path) -> None:
    """A new acquisition in the old one's folder would delete the old copy's extra files."""
    src = finished_source(tmp_path / "a.zarr")
    dst = tmp_path / "copy.zarr"
    assert run_softcopy("copy", src, dst).returncode == 0
    # Made again while the old one still exists: it cannot get the old inode number.
    src.rename(tmp_path / "old.zarr")
    finished_source(src, chunks=("0",))
    refused(["copy", src, dst], tmp_path, str(dst), "deleted and made again", "--replace")
    shutil.rmtree(tmp_path / "old.zarr")
    proc = run_softcopy("copy", src, dst, "--replace")
    assert proc.returncode == 0, proc.stderr
    assert_same_tree(src, dst)


def test_a_record_without_identity_from_an_older_version_is_trusted_by_path(
    tmp_path: Path,
) -> None:
    src = finished_source(tmp_path / "a.zarr")
    dst = tmp_path / "copy.zarr"
    assert run_softcopy("copy", src, dst).returncode == 0
    record = records(dst) / "target.json"
    old = {k: v for k, v in json.loads(record.read_text()).items() if k != "source_identity"}
    record.write_text(json.dumps(old))
    (dst / "stale.txt").write_text("left by an interrupted older run")
    proc = run_softcopy("copy", src, dst)
    assert proc.returncode == 0, proc.stderr
    assert not (dst / "stale.txt").exists(), "still softcopy's own copy: extras deleted"
    assert json.loads(record.read_text())["source_identity"] == [
        os.stat(src).st_dev,
        os.stat(src).st_ino,
    ]
