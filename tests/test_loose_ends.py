"""Loose ends of issue 12 a review found: a refusal for lack of space leaves the destination
as it was; a targets file's missing source is named by its line; the original's
`--wait-for-source maybe` is a clear error; an archive with fill-value holes says at once
what its copy waits for; files_copied counts files, not copy operations."""

# ruff: noqa: F811 (the fixture imported from test_durability is a parameter by that name)

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import (
    assert_same_tree,
    finish,
    run_softcopy,
    start_softcopy,
    tree_files,
    wait_for,
)
from test_acquisition import SMALL, simulate
from test_durability import BIG, small_tmpfs  # noqa: F401 (a fixture)
from test_quick_ends import quiet_for

from softcopy.config import load_targets
from softcopy.errors import ConfigError


def one_paragraph(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    return " ".join(stderr.split())


def status_records() -> list[dict]:
    result = run_softcopy("status", "--json")
    assert result.returncode in (0, 1), result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


# ---- 1. no room: the destination as it was ------------------------------------------------


def test_a_copy_refused_for_space_removes_what_it_made(tmp_path: Path, small_tmpfs) -> None:
    src = tmp_path / "src.zarr"
    simulate(src, BIG)
    mnt = small_tmpfs("size=512k")
    (mnt / "theirs").write_text("not softcopy's")
    dst = mnt / "new" / "deeper" / "dst.zarr"
    result = run_softcopy("copy", src, dst)
    assert result.returncode == 1, result.stderr
    text = one_paragraph(result.stderr)
    assert "free at least" in text and "nothing was copied" in text, text
    assert str(mnt / "new") in text, "says what it removed"
    # What softcopy made for the run (two parents, the destination, its records) is gone;
    # what it did not make is untouched.
    assert sorted(p.name for p in mnt.iterdir()) == ["theirs"]
    assert (mnt / "theirs").read_text() == "not softcopy's"
    # `status` says why, and that nothing is left: a failed entry, not a stray folder.
    (record,) = [r for r in status_records() if r["destination"] == str(dst)]
    assert record["state"] == "failed" and "nothing was copied" in record["error"], record


def test_a_refusal_into_an_empty_folder_keeps_the_folder(tmp_path: Path, small_tmpfs) -> None:
    src = tmp_path / "src.zarr"
    simulate(src, BIG)
    mnt = small_tmpfs("size=512k")
    dst = mnt / "dst.zarr"
    dst.mkdir()  # the user's, made before softcopy ran
    result = run_softcopy("copy", src, dst)
    assert result.returncode == 1, result.stderr
    assert "nothing was copied" in one_paragraph(result.stderr)
    assert sorted(p.name for p in mnt.iterdir()) == ["dst.zarr"]
    assert list(dst.iterdir()) == []


def test_a_refusal_of_a_rerun_leaves_the_copy_and_its_records(tmp_path: Path, small_tmpfs) -> None:
    """A destination that was there before the run is not the run's to remove."""
    src = tmp_path / "src.zarr"
    simulate(src, replace(BIG, timepoints=2))
    mnt = small_tmpfs("size=1m")
    dst = mnt / "dst.zarr"
    first = run_softcopy("copy", src, dst)
    assert first.returncode == 0, first.stderr
    more = tmp_path / "more.zarr"
    simulate(more, replace(BIG, timepoints=24))  # far more than is left
    for key in sorted(k for k in tree_files(more) if k not in tree_files(src)):
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        (src / key).write_bytes((more / key).read_bytes())
    result = run_softcopy("copy", src, dst)
    assert result.returncode == 1, result.stderr
    text = one_paragraph(result.stderr)
    assert "free at least" in text and "the destination is as it was" not in text, text
    # The copy stays, but not as it was: its certificate went as the rerun began (the
    # source changed), and the refusal says so instead of "as it was".
    assert "its certificate was withdrawn" in text, text
    assert (mnt / "dst.zarr.softcopy" / "target.json").is_file()
    assert not (mnt / "dst.zarr.softcopy" / "certificate.json").exists()
    assert tree_files(dst), "the earlier copy stays"


# ---- 2. a missing source, by its line ---------------------------------------------------


def targets_with_a_missing_source(tmp_path: Path) -> Path:
    good = tmp_path / "good.zarr"
    good.mkdir(exist_ok=True)
    targets = tmp_path / "t.yaml"
    targets.write_text(
        "targets:\n"
        f"  - source: {good}\n"
        f"    destination: {tmp_path / 'good-copy'}\n"
        f"  - destination: {tmp_path / 'copy'}\n"
        "    source: missing.zarr\n"
        f"  - source: {tmp_path / 'later.zarr'}\n"
        f"    destination: {tmp_path / 'later-copy'}\n"
        "    wait_for_source: true\n"
    )
    return targets


def test_a_missing_source_is_an_error_of_the_file_at_its_line(tmp_path: Path) -> None:
    targets = targets_with_a_missing_source(tmp_path)
    load_targets(targets)  # the file alone is fine: no source is looked at
    with pytest.raises(ConfigError) as raised:
        load_targets(targets, check_sources=True)
    assert str(raised.value) == (
        f"cannot read targets file {targets}:5: targets[1].source missing.zarr "
        f"({tmp_path / 'missing.zarr'}): it does not exist"
    ), "one error: the source waited for is none"
    (targets.parent / "missing.zarr").write_text("")
    with pytest.raises(ConfigError, match=r"t\.yaml:5: .*: it is not a directory$"):
        load_targets(targets, check_sources=True)


def test_a_missing_source_is_named_beside_another_error_of_its_target(tmp_path: Path) -> None:
    # All of a file's errors at once: a target with a bad option is looked at too.
    targets = targets_with_a_missing_source(tmp_path)
    targets.write_text(targets.read_text() + f"  - source: gone.zarr\n    destination: "
                       f"{tmp_path / 'g'}\n    settle: -1\n")  # fmt: skip
    with pytest.raises(ConfigError) as raised:
        load_targets(targets, check_sources=True)
    text = str(raised.value)
    assert "t.yaml:5: targets[1].source missing.zarr" in text, text
    assert "targets[3].settle" in text, text
    assert f"targets[3].source gone.zarr ({tmp_path / 'gone.zarr'}): it does not exist" in text


def test_a_missing_source_in_a_targets_file_names_its_line(tmp_path: Path) -> None:
    targets = targets_with_a_missing_source(tmp_path)
    simulate(tmp_path / "good.zarr", SMALL)
    for args in (("run", targets), (targets,)):  # and the original's form
        result = run_softcopy(*args, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        text = one_paragraph(result.stderr)
        assert (
            f"cannot read targets file {targets}:5: targets[1].source missing.zarr "
            f"({tmp_path / 'missing.zarr'}): it does not exist"
        ) in text, text
    assert not (tmp_path / "good-copy").exists(), "refused before anything starts"
    # Waited for, it is no error.
    waited = run_softcopy("run", targets, "--wait-for-source", "--dry-run")
    assert "targets file" not in waited.stderr, waited.stderr


# ---- 3. --wait-for-source maybe --------------------------------------------------------------


def test_a_wait_for_source_value_that_is_not_a_boolean_is_named(tmp_path: Path) -> None:
    src = tmp_path / "src.zarr"
    simulate(src, SMALL)
    targets = tmp_path / "t.yaml"
    targets.write_text(f"targets:\n  - source: {src}\n    destination: {tmp_path / 'c'}\n")
    for args in (
        (src, tmp_path / "c", "--wait-for-source", "maybe"),  # the original's forms
        (targets, "--wait-for-source", "maybe"),
        ("copy", src, tmp_path / "c", "--wait-for-source", "maybe"),
        ("run", targets, "--wait-for-source", "maybe"),
    ):
        result = run_softcopy(*args)
        assert result.returncode == 2, result.stderr
        assert "unexpected extra argument" not in result.stderr
        text = one_paragraph(result.stderr)
        assert "'--wait-for-source': 'maybe' is not true or false" in text, text
    assert not (tmp_path / "c").exists()
    # The switch before the paths still takes none.
    dry = run_softcopy("copy", "--wait-for-source", src, tmp_path / "c", "--dry-run")
    assert dry.returncode == 0, dry.stderr


# ---- 4. holes: said at once ---------------------------------------------------------------


def test_an_archive_with_holes_says_what_it_waits_for_once_it_settles(tmp_path: Path) -> None:
    """Fill-value holes and no marker: the settle rule will never end the copy, so the note
    comes once the source is as quiet as settle asks (here before the start), not after
    max(10 s, 4 x settle) of waiting: before the idle timeout, 9 s from the last change."""
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, replace(SMALL, complete=False, holes=0.3))
    quiet_for(src, 3.0)
    args = ("--settle", "1", "--idle-timeout", "9", "--finished-after", "0")
    result = run_softcopy("copy", src, dst, *args)
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "waiting for the end" in line]
    assert len(notes) == 1, result.stderr
    assert "expected chunk files are absent" in notes[0]
    assert "the idle timeout ends it at " in notes[0], notes[0]
    assert_same_tree(src, dst)
    quiet = run_softcopy("copy", src, tmp_path / "quiet.zarr", *args, "-q")
    assert quiet.returncode == 0 and "waiting for the end" not in quiet.stderr, quiet.stderr


# ---- 5. files, not copies -----------------------------------------------------------------


def test_a_file_rewritten_during_the_copy_counts_once(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, replace(SMALL, complete=False))
    files = tree_files(src)
    chunk = next(k for k in sorted(files) if not k.endswith(("zarr.json", ".zarray")))
    proc = start_softcopy("copy", src, dst, "--settle", "600", "--json")
    wait_for(lambda: tree_files(dst) == files, what="the first copy", proc=proc)
    # The writer replaces one chunk (new bytes, same size), as tensorstore does: a
    # temporary file renamed onto it.
    old = (src / chunk).read_bytes()
    new = bytes(255 - b for b in old)
    tmp = src / f"{chunk}.__lock"
    tmp.write_bytes(new)
    os.utime(tmp, ns=(time.time_ns(), time.time_ns()))
    os.rename(tmp, src / chunk)
    wait_for(lambda: (dst / chunk).read_bytes() == new, what="the second copy", proc=proc)
    (src / "complete").touch()
    code, out, err = finish(proc)
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    summary = events[-1]
    assert summary["event"] == "summary"
    assert summary["files_copied"] == len(files), summary  # files, the marker apart
    assert summary["copies_made"] == len(files) + 1, summary
    progress = [e for e in events if e["event"] == "progress"]
    assert max(e["files_copied"] for e in progress) <= len(files)
    assert f"; {len(files)} copied (" in err, err
    assert_same_tree(src, dst)


def test_taking_back_never_goes_through_a_link(tmp_path: Path) -> None:
    """A folder the run made, replaced by a link before the refusal: what the link leads
    to is not the run's, and stays; and a folder that holds anything stays."""
    from softcopy.engine.made import missing_before, take_back

    dst = tmp_path / "made" / "dst.zarr"
    made = missing_before(str(dst))
    assert (made.parents, made.destination, made.records) == (["made"], True, True)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "dst.zarr").mkdir(parents=True)
    (tmp_path / "made").symlink_to(elsewhere)
    assert take_back(made, str(dst), None) == []
    assert (elsewhere / "dst.zarr").is_dir() and (tmp_path / "made").is_symlink()
    (tmp_path / "made").unlink()
    dst.mkdir(parents=True)
    (dst / "theirs").write_text("")
    assert take_back(made, str(dst), None) == []
    assert (dst / "theirs").exists()
    (dst / "theirs").unlink()
    assert take_back(made, str(dst), None) == [str(dst), str(tmp_path / "made")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere"]
