"""softcopy's records folder (DEST.softcopy) and its own names in the destination: links
planted there are never followed, read through, or "copied" again and again.

Every case runs the real CLI; "outside" is a directory in neither tree, which must stay
exactly as it was.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import run_softcopy, tree_files
from test_bad_input import assert_one_error, make_array, snapshot

RECORDS = ("target.json", "summary.json", "manifest.b3", "certificate.json")
# Before temporaries were per writer they were `.NAME.tmp`: a planted one is removed.
TEMPORARIES = tuple(f".{name}.tmp" for name in RECORDS)
NOBODY = 65534


def finished_source(root: Path) -> Path:
    src = make_array(root / "a.zarr")
    (src / "complete").write_text("")
    return src


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A precious file outside both trees, in a directory nothing may add to."""
    where = tmp_path / "outside"
    where.mkdir()
    (where / "victim").write_bytes(b"precious")
    return where


def assert_untouched(outside: Path) -> None:
    assert os.listdir(outside) == ["victim"], "nothing is created outside both trees"
    assert (outside / "victim").read_bytes() == b"precious", "nothing is written outside"


# ---- links inside the records folder ------------------------------------------------------------


@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-file", "dangling"])
@pytest.mark.parametrize("name", [*TEMPORARIES, *RECORDS[1:]])
def test_a_link_named_like_a_record_is_replaced_not_followed(
    tmp_path: Path, outside: Path, name: str, dangling: bool
) -> None:
    src = finished_source(tmp_path)
    dst, side = tmp_path / "copy.zarr", tmp_path / "copy.zarr.softcopy"
    side.mkdir()
    (side / name).symlink_to(outside / ("new" if dangling else "victim"))
    proc = run_softcopy("copy", "--hash", src, dst)
    assert proc.returncode == 0, proc.stderr
    assert_untouched(outside)
    for record in RECORDS:
        assert not (side / record).is_symlink() and (side / record).is_file(), record
    assert not [n for n in os.listdir(side) if n.endswith(".tmp")], "no temporary left"
    assert json.loads((side / "certificate.json").read_text())["source"] == str(src)


def test_a_link_planted_as_target_json_is_refused(tmp_path: Path, outside: Path) -> None:
    """The record that decides whether files may be deleted is never read through a link."""
    src = finished_source(tmp_path)
    dst, side = tmp_path / "copy.zarr", tmp_path / "copy.zarr.softcopy"
    side.mkdir()
    (outside / "victim").write_text(json.dumps({"source": str(src)}))
    (side / "target.json").symlink_to(outside / "victim")
    before = (outside / "victim").read_bytes()
    proc = run_softcopy("copy", src, dst)
    assert proc.returncode == 2, proc.stderr
    assert_one_error(proc.stderr, str(side / "target.json"), "symbolic link")
    assert os.listdir(outside) == ["victim"] and (outside / "victim").read_bytes() == before
    assert (side / "target.json").is_symlink()
    assert not dst.exists() or not os.listdir(dst), "nothing copied"


@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-file", "dangling"])
def test_a_link_planted_as_the_lock_is_refused(
    tmp_path: Path, outside: Path, dangling: bool
) -> None:
    src = finished_source(tmp_path)
    dst, side = tmp_path / "copy.zarr", tmp_path / "copy.zarr.softcopy"
    side.mkdir()
    (side / "lock").symlink_to(outside / ("new" if dangling else "victim"))
    proc = run_softcopy("copy", src, dst)
    assert proc.returncode == 2, proc.stderr
    assert_one_error(proc.stderr, str(side / "lock"), "symbolic link")
    assert_untouched(outside)
    assert not dst.exists(), "refused before the destination is made"


def test_a_records_folder_that_is_a_link_is_refused(tmp_path: Path, outside: Path) -> None:
    src = finished_source(tmp_path)
    dst, side = tmp_path / "copy.zarr", tmp_path / "copy.zarr.softcopy"
    side.symlink_to(outside, target_is_directory=True)
    proc = run_softcopy("copy", src, dst)
    assert proc.returncode == 2, proc.stderr
    assert_one_error(proc.stderr, str(side), "symbolic link")
    assert_untouched(outside)
    assert not dst.exists()
    # A dry run reads the records too, and says the same.
    proc = run_softcopy("copy", "--dry-run", src, dst)
    assert proc.returncode == 2, proc.stderr
    assert_one_error(proc.stderr, str(side), "symbolic link")


def test_a_records_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a folder to another user")
    src = finished_source(tmp_path)
    dst, side = tmp_path / "copy.zarr", tmp_path / "copy.zarr.softcopy"
    side.mkdir()
    os.chown(side, NOBODY, NOBODY)
    before = snapshot(tmp_path)
    proc = run_softcopy("copy", src, dst)
    assert proc.returncode == 2, proc.stderr
    assert_one_error(proc.stderr, str(side), f"owned by uid {NOBODY}")
    assert snapshot(tmp_path) == before


def test_verify_never_reads_a_manifest_through_a_link(tmp_path: Path, outside: Path) -> None:
    src = finished_source(tmp_path)
    dst, side = tmp_path / "copy.zarr", tmp_path / "copy.zarr.softcopy"
    proc = run_softcopy("copy", "--hash", src, dst)
    assert proc.returncode == 0, proc.stderr
    assert run_softcopy("verify", dst).returncode == 0
    # A good manifest, but outside: read through the link, verify would pass.
    shutil.move(side / "manifest.b3", outside / "good.b3")
    (side / "manifest.b3").symlink_to(outside / "good.b3")
    proc = run_softcopy("verify", dst)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert_one_error(proc.stderr, str(side / "manifest.b3"), "symbolic link")
    # The records folder itself a link: the same.
    shutil.rmtree(side)
    side.symlink_to(outside, target_is_directory=True)
    (outside / "good.b3").rename(outside / "manifest.b3")
    proc = run_softcopy("verify", dst)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert_one_error(proc.stderr, str(side), "symbolic link")
    # A manifest the user names is the user's choice: read as given.
    proc = run_softcopy("verify", dst, "--manifest", side / "manifest.b3")
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---- softcopy's own names in the destination: the marker, excluded keys --------------------------


def summary(dst: Path) -> dict:
    return json.loads((dst.parent / f"{dst.name}.softcopy" / "summary.json").read_text())


def test_a_link_where_the_marker_goes_is_replaced_last(tmp_path: Path, outside: Path) -> None:
    """It was "copied" tens of thousands of times, and the marker published before verifying."""
    src = finished_source(tmp_path)
    dst = tmp_path / "copy.zarr"
    assert run_softcopy("copy", src, dst).returncode == 0
    (dst / "complete").unlink()
    (dst / "complete").symlink_to(outside / "victim")
    proc = run_softcopy("copy", src, dst, timeout=60)  # the old loop never ended
    assert proc.returncode == 0, proc.stderr
    assert not (dst / "complete").is_symlink() and (dst / "complete").read_bytes() == b""
    assert summary(dst)["files_copied"] == 0, "the marker is not data: copied once, last"
    assert_untouched(outside)


@pytest.mark.parametrize(
    "pattern", [("--exclude", "*.lnk"), ("--include", "[0-9]*", "--include", ".z*")]
)
def test_a_link_not_wanted_is_neither_copied_nor_deleted(
    tmp_path: Path, pattern: tuple[str, ...]
) -> None:
    """Excluded keys are not softcopy's, at either end: never copied, never deleted."""
    src = finished_source(tmp_path)
    (src / "notes.lnk").symlink_to("0")
    dst = tmp_path / "copy.zarr"
    assert run_softcopy("copy", src, dst).returncode == 0  # the link copied: wanted then
    (dst / "mine.lnk").symlink_to("1")  # only at the destination
    proc = run_softcopy("copy", src, dst, *pattern, timeout=60)  # the old loop never ended
    assert proc.returncode == 0, proc.stderr
    assert summary(dst)["files_copied"] == 0
    assert summary(dst)["files_deleted"] == 0, "an excluded key is not softcopy's to delete"
    assert os.readlink(dst / "mine.lnk") == "1" and os.readlink(dst / "notes.lnk") == "0"
    # And a fresh copy never copies an excluded link at all.
    fresh = tmp_path / "fresh.zarr"
    proc = run_softcopy("copy", src, fresh, *pattern, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert sorted(tree_files(fresh)) == [".zarray", "0", "1", "complete"]


def test_a_directory_where_the_marker_goes_is_a_clear_failure(tmp_path: Path) -> None:
    src = finished_source(tmp_path)
    dst = tmp_path / "copy.zarr"
    assert run_softcopy("copy", src, dst).returncode == 0
    (dst / "complete").unlink()
    (dst / "complete").mkdir()
    (dst / "complete" / "x").write_text("x")
    proc = run_softcopy("copy", src, dst, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"softcopy: error: cannot write completion marker {dst}/complete: ")
    assert "a directory is where the marker goes" in last
    assert not (dst.parent / f"{dst.name}.softcopy" / "certificate.json").exists()
