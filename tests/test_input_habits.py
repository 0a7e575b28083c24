"""Habits of rsync, rclone and cp users met with clear refusals, and messages without slips.

A DESTINATION that is a folder to copy *into* (`cp -r SRC DEST/`), a destination that looks
remote (`host:/path`, `gs://`), every error of a targets file at once with its line and
a "did you mean", and the wording of counts, flags and the read-only destination.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import assert_same_tree, finish, run_softcopy, start_softcopy, wait_for
from test_bad_input import assert_one_error, make_array, snapshot

# ---- a destination that is not a copy of the source ------------------------------------------


def unrelated_destination(t: Path) -> tuple[Path, Path]:
    src = make_array(t / "a.zarr")
    (src / "complete").touch()
    dest = t / "projects"
    (dest / "other.zarr").mkdir(parents=True)
    (dest / "notes.txt").write_text("someone's notes\n")
    return src, dest


@pytest.mark.parametrize("dry_run", [False, True], ids=["copy", "dry-run"])
def test_a_folder_to_copy_into_is_refused_before_anything(tmp_path: Path, dry_run: bool) -> None:
    src, dest = unrelated_destination(tmp_path)
    before = snapshot(tmp_path)
    proc = run_softcopy("copy", *(["--dry-run"] if dry_run else []), src, f"{dest}/")
    assert proc.returncode == 2, proc.stderr
    assert_one_error(
        proc.stderr,
        f"cannot copy to destination {dest}:",
        "notes.txt, other.zarr",
        f"give {dest}/a.zarr",
    )
    assert snapshot(tmp_path) == before  # nothing copied in, no records folder beside it


def test_a_folder_to_copy_into_is_refused_when_the_source_appears_later(tmp_path: Path) -> None:
    """--wait-for-source: the source is not there when the target is made; the refusal
    comes when it appears, still before anything is copied."""
    src, dest = unrelated_destination(tmp_path)
    staged = tmp_path / "staged.zarr"
    src.rename(staged)
    proc = start_softcopy("copy", "--wait-for-source", src, dest)
    wait_for(lambda: (tmp_path / "projects.softcopy" / "lock").exists(), what="the lock", proc=proc)
    staged.rename(src)  # metadata and all at once
    code, _, err = finish(proc)
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("softcopy: error: ")]
    assert len(errors) == 1, err  # besides the "waiting for the source" log line
    assert f"cannot copy to destination {dest}:" in errors[0]
    assert f"give {dest}/a.zarr" in errors[0]
    assert sorted(os.listdir(dest)) == ["notes.txt", "other.zarr"]


def another_acquisition_with_notes(t: Path) -> tuple[Path, Path]:
    """Another acquisition's copy, named like this one's chunks, with notes beside: what
    `softcopy copy SRC DEST` would overwrite or fail on if DEST were taken as this copy."""
    src = make_array(t / "a.zarr", chunks=("0", "1"))
    (src / "complete").touch()
    dest = t / "mine"
    make_array(dest, chunks=("0", "1"))
    (dest / "0").write_bytes(b"another acquisition's chunk, longer than ours")
    (dest / "NOTES.txt").write_text("keep me\n")
    return src, dest


@pytest.mark.parametrize("dry_run", [False, True], ids=["copy", "dry-run"])
def test_a_folder_holding_files_that_are_not_this_copy_is_refused(
    tmp_path: Path, dry_run: bool
) -> None:
    src, dest = another_acquisition_with_notes(tmp_path)
    before = snapshot(tmp_path)
    proc = run_softcopy("copy", *(["--dry-run"] if dry_run else []), src, dest)
    assert proc.returncode == 2, proc.stderr
    assert_one_error(
        proc.stderr,
        f"cannot copy to destination {dest}: it is an existing folder softcopy did not make",
        "NOTES.txt (not in the source",
        "0 (45 bytes; the source's: 4 bytes) (they would be overwritten)",
        f"give {dest}/a.zarr",
        "add --replace",
    )
    assert snapshot(tmp_path) == before  # nothing overwritten, no records folder, no lock


def test_another_acquisitions_copy_of_the_same_names_and_sizes_is_refused(tmp_path: Path) -> None:
    # Uncompressed chunks of one protocol have one size: only their bytes tell another
    # acquisition's copy from a partial copy of this one.
    src = make_array(tmp_path / "a.zarr", chunks=("0", "1", "2"))
    (src / "complete").touch()
    dest = make_array(tmp_path / "b-copy", chunks=("0", "1", "2"))
    (dest / "1").write_bytes(b"XXXX")  # as long as ours, not ours
    large = os.urandom(3 << 20)  # a large file: its head and its tail are compared
    (src / "3").write_bytes(large)
    (dest / "3").write_bytes(large[:-1] + bytes([large[-1] ^ 1]))
    before = snapshot(tmp_path)
    proc = run_softcopy("copy", src, dest)
    assert proc.returncode == 2, proc.stderr
    assert_one_error(
        proc.stderr,
        f"cannot copy to destination {dest}: it is an existing folder softcopy did not make",
        "1 (of the source's size, other bytes)",
        "3 (of the source's size, other bytes)",
        "(they would be overwritten)",
        "add --replace",
    )
    assert snapshot(tmp_path) == before
    # The same names with the same bytes: a partial copy of this source, copied into.
    (dest / "1").write_bytes((src / "1").read_bytes())
    (dest / "3").write_bytes(large)
    proc = run_softcopy("copy", src, dest)
    assert proc.returncode == 0, proc.stderr
    assert_same_tree(src, dest)


def test_replace_makes_a_folder_softcopy_did_not_make_the_copy(tmp_path: Path) -> None:
    src, dest = another_acquisition_with_notes(tmp_path)
    proc = run_softcopy("copy", "--replace", src, dest)
    assert proc.returncode == 0, proc.stderr
    assert "--replace" in proc.stderr
    assert_same_tree(src, dest)  # NOTES.txt deleted, chunk 0 rewritten: as asked


def partial_cp_copy(src: Path, dest: Path) -> None:
    dest.mkdir()
    shutil.copy2(src / ".zarray", dest / ".zarray")  # cp was stopped after the first file


def only_lost_and_found(src: Path, dest: Path) -> None:
    (dest / "lost+found").mkdir(parents=True)  # a freshly made filesystem's root


def old_softcopy_copy(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest)
    records = dest.parent / f"{dest.name}.softcopy"
    records.mkdir()
    (records / "target.json").write_text(json.dumps({"source": str(src)}))  # no identity yet


@pytest.mark.parametrize("make", [partial_cp_copy, only_lost_and_found, old_softcopy_copy])
def test_a_destination_that_may_be_this_copy_is_copied_to(tmp_path: Path, make) -> None:
    src = make_array(tmp_path / "a.zarr")
    (src / "complete").touch()
    dest = tmp_path / "copy"
    make(src, dest)
    proc = run_softcopy("copy", src, dest)
    assert proc.returncode == 0, proc.stderr
    assert_same_tree(src, dest, ignore=("lost+found",))


# ---- destinations that look remote -------------------------------------------------------------

REMOTE = [
    ("host:/data/run1", "a remote location"),
    ("user@host:run1", "a remote location"),
    ("gdrive:backup", "a remote location"),  # an rclone remote
    ("gs://bucket/run1", "gs:// destinations are not supported yet"),  # s3:// is one
    ("https://example.org/run1", "https:// destinations are not supported yet"),
    ("file:///data/run1", "it looks like a file URL: give the path itself, /data/run1."),
]


@pytest.mark.parametrize(("destination", "says"), REMOTE, ids=[r[0] for r in REMOTE])
def test_a_remote_looking_destination_is_a_clear_error(
    tmp_path: Path, destination: str, says: str
) -> None:
    src = make_array(tmp_path / "a.zarr")
    before = snapshot(tmp_path)
    proc = run_softcopy("copy", src, destination, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert_one_error(proc.stderr, says, "put a slash before the colon")
    assert snapshot(tmp_path) == before  # no local folder named `host:` or `s3:`


@pytest.mark.parametrize("spelling", ["./a:b", "absolute"])
def test_a_local_folder_with_a_colon_stays_possible(tmp_path: Path, spelling: str) -> None:
    src = make_array(tmp_path / "a.zarr")
    (src / "complete").touch()
    destination = str(tmp_path / "a:b") if spelling == "absolute" else spelling
    proc = run_softcopy("copy", src, destination, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_same_tree(src, tmp_path / "a:b")


def test_a_remote_looking_destination_in_a_targets_file_names_its_line(tmp_path: Path) -> None:
    make_array(tmp_path / "a.zarr")
    targets = tmp_path / "targets.yaml"
    targets.write_text("targets:\n  - source: a.zarr\n    destination: nas:/copies/a.zarr\n")
    before = snapshot(tmp_path)
    proc = run_softcopy("run", targets)
    assert proc.returncode == 2, proc.stderr
    assert_one_error(proc.stderr, f"{targets}:3: targets[0].destination", "a remote location")
    assert snapshot(tmp_path) == before


# ---- targets files: every error at once --------------------------------------------------------

BROKEN = """\
defaults:
  nproc: 3
targets:
  - source: a.zarr
    destination: copy-a
    settle: -1
  - src: a.zarr
    destination: copy-b
  - {source: a.zarr, destination: copy-c, hash: maybe}
wach: []
"""
# (line, what the paragraph for it says)
BROKEN_ERRORS = [
    (2, "defaults.nproc: unknown option 'nproc'; did you mean 'nprocs'?"),
    (6, "targets[0].settle: -1 is less than 0"),
    (7, "targets[1].src: unknown option 'src'; did you mean 'source'?"),
    (9, "targets[2].hash: 'maybe' is not true or false"),
    (10, "wach: unknown top-level key; did you mean 'watch'?"),
]


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_every_error_of_a_targets_file_at_once_with_its_line(tmp_path: Path, dry_run: bool) -> None:
    make_array(tmp_path / "a.zarr")
    targets = tmp_path / "targets.yaml"
    targets.write_text(BROKEN)
    before = snapshot(tmp_path)
    proc = run_softcopy("run", *(["--dry-run"] if dry_run else []), targets)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    paragraphs = [p for p in proc.stderr.strip().split("\n\n") if p.strip()]
    assert len(paragraphs) == len(BROKEN_ERRORS), proc.stderr
    for paragraph, (line, says) in zip(paragraphs, BROKEN_ERRORS, strict=True):
        assert paragraph.startswith("softcopy: error: cannot "), paragraph
        assert "\n" not in paragraph, paragraph  # one paragraph each
        assert f"{targets}:{line}: {says}" in paragraph, paragraph
    assert snapshot(tmp_path) == before


def test_a_misspelt_key_with_no_near_name_lists_the_known_ones(tmp_path: Path) -> None:
    make_array(tmp_path / "a.zarr")
    targets = tmp_path / "targets.yaml"
    targets.write_text("targets:\n  - {source: a.zarr, destination: copy, colour: red}\n")
    proc = run_softcopy("run", targets)
    assert proc.returncode == 2, proc.stderr
    assert_one_error(
        proc.stderr, f"{targets}:2: targets[0].colour: unknown option 'colour' (known: "
    )
    assert "did you mean" not in proc.stderr


# ---- message slips ------------------------------------------------------------------------------


def test_one_file_and_one_copier_are_singular(tmp_path: Path) -> None:
    src = make_array(tmp_path / "a.zarr", chunks=())  # metadata only: all chunks are holes
    (src / "complete").touch()
    proc = run_softcopy("copy", "--nprocs", "1", src, tmp_path / "copy")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "with 1 copier\n" in out, out
    assert ": 2 files (" in proc.stdout and "; 1 copied (" in proc.stdout, proc.stdout  # +marker
    status = run_softcopy("status")
    assert status.returncode == 0, status.stderr
    assert " 1 file (" in status.stdout and "0 files (" in status.stdout, status.stdout
    for slip in ("1 copiers", " 1 files"):
        assert slip not in out + status.stdout


def test_a_bad_option_on_the_command_line_names_the_flag(tmp_path: Path) -> None:
    src = make_array(tmp_path / "a.zarr")
    proc = run_softcopy("copy", src, tmp_path / "copy", "--max-rate", "fast")
    assert proc.returncode == 2, proc.stderr
    assert_one_error(proc.stderr, "cannot read option --max-rate: 'fast' is not a rate")
    assert "command line." not in proc.stderr


def test_simulate_into_a_full_folder_says_it_once(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").touch()
    proc = run_softcopy("simulate", tmp_path / "full", "--timepoints", "1")
    assert proc.returncode != 0
    assert_one_error(proc.stderr, f"cannot simulate into {tmp_path}/full: the directory is not")
    assert proc.stderr.count("cannot simulate into") == 1, proc.stderr
    assert proc.returncode == 2  # the path given is the problem: a usage error


def test_simulate_under_a_file_or_into_a_full_disk_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "afile").touch()
    proc = run_softcopy("simulate", tmp_path / "afile" / "x.zarr", "--timepoints", "1")
    assert proc.returncode == 2, proc.stderr
    assert_one_error(proc.stderr, f"cannot simulate into {tmp_path}/afile/x.zarr: Not a directory")
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", small]).returncode:
        pytest.skip("cannot mount a tmpfs")
    try:
        proc = run_softcopy("simulate", small / "x.zarr", "--timepoints", "4", "--interval",
                            "0", "--shape", "4,128,128", "--no-compress")  # fmt: skip
    finally:
        subprocess.run(["umount", small], check=True)
    assert proc.returncode == 1, proc.stderr
    assert_one_error(proc.stderr, f"cannot simulate into {small}/x.zarr: No space left on device")
    assert "internal error" not in proc.stderr


@pytest.fixture
def read_only_dir(tmp_path: Path):
    if shutil.which("mount") is None:
        pytest.skip("mount is not installed")
    path = tmp_path / "ro"
    path.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs: {made.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_read_only_destination_is_named_as_given(tmp_path: Path, read_only_dir: Path) -> None:
    src = make_array(tmp_path / "a.zarr")
    dest = read_only_dir / "copy"
    proc = run_softcopy("copy", src, dest)
    assert proc.returncode != 0, proc.stderr
    # What the user typed first; the records folder beside it second.
    assert_one_error(
        proc.stderr,
        f"cannot copy to destination {dest}: Read-only file system",
        f"its records folder {dest}.softcopy beside it",
    )
