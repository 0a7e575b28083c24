"""`softcopy release`: the source of a finished copy is freed only when provably safe, every
reason for refusing is listed, and freeing is race-safe and resumable."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DEADLINE, finish, run_softcopy, start_softcopy, wait_for

from softcopy.service.release import HIDDEN_SUFFIX, RELEASED, _Job
from softcopy.state.records import Records, records_dir

COPY = ["copy", "--hash", "--kind", "directory", "--ready-age", "0"]


def run_release(*args: object) -> subprocess.CompletedProcess:
    """`softcopy release ...`, the real program in a subprocess."""
    from softcopy.cli import main

    if "release" in main.commands:
        return run_softcopy("release", *args)
    # Until cli/__init__.py registers the command: the same group, with it added.
    code = (
        "import sys; from softcopy.cli import main, release; "
        "main.add_command(release.release); sys.argv[0] = 'softcopy'; "
        "main(prog_name='softcopy')"
    )
    cmd = [sys.executable, "-c", code, "release", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=DEADLINE)


def make_source(root: Path, outside: Path, marker: bool = True) -> Path:
    """A run folder with nested files, a link inside the tree and a link out of it."""
    src = root / "run"
    (src / "sub").mkdir(parents=True)
    (src / "a").write_bytes(b"a" * 1000)
    (src / "sub" / "b").write_bytes(b"b" * 300)
    (src / "sub" / "c").write_bytes(b"c" * 10)
    os.symlink("../a", src / "sub" / "rel")
    outside.mkdir(exist_ok=True)
    (outside / "keep.txt").write_text("not part of any tree")
    os.symlink(outside / "keep.txt", src / "out")
    os.symlink(outside, src / "outdir")
    if marker:
        (src / "complete").touch()
    return src


def make_copy(tmp_path: Path, *extra: str, marker: bool = True) -> tuple[Path, Path, Path]:
    src = make_source(tmp_path / "acq", tmp_path / "outside", marker)
    dst, state = tmp_path / "copies" / "run", tmp_path / "state"
    result = run_softcopy(*COPY, *extra, src, dst, "--state-dir", state)
    assert result.returncode == 0, result.stderr
    return src, dst, state


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry below root with its full version, links not followed."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            found[os.path.relpath(path, root)] = (
                st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns
            )  # fmt: skip
    return found


def reasons(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if "refused to release" in line]


def refused(result: subprocess.CompletedProcess, *expected: str) -> None:
    """Exit 1, a line per reason, each expected text in one of them, no traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    lines = reasons(result)
    for text in expected:
        assert any(text in line for line in lines), f"{text!r} not in {lines}"
    assert "Traceback" not in result.stderr
    assert re.search(r"not (be )?released: \d+ reasons? above", result.stderr), result.stderr


def released_record(dst: Path) -> dict:
    return json.loads((records_dir(dst) / RELEASED).read_text())


# ---- refusals, one per reason ----------------------------------------------------------


def test_no_certificate_is_refused(tmp_path: Path) -> None:
    # A copy that never ended (no marker, no end rule), stopped: its records, no certificate.
    src = make_source(tmp_path / "acq", tmp_path / "outside", marker=False)
    dst, state = tmp_path / "copies" / "run", tmp_path / "state"
    proc = start_softcopy(*COPY, src, dst, "--state-dir", state)
    wait_for(lambda: (dst / "sub" / "c").exists(), what="the copy to start", proc=proc)
    proc.terminate()
    finish(proc)
    before = snapshot(src)
    result = run_release(dst, "--state-dir", state)
    refused(result, "has no certificate")
    assert snapshot(src) == before


@pytest.mark.parametrize("trusted", [False, True])
def test_a_guessed_end_is_refused_even_when_trusted(tmp_path: Path, trusted: bool) -> None:
    extra = ["--idle-timeout", "0.5"] + (["--trust-guessed-end"] if trusted else [])
    src, dst, state = make_copy(tmp_path, *extra, marker=False)
    result = run_release(dst, "--state-dir", state)
    refused(result, "release needs a proven end")
    if trusted:
        refused(result, "only trusted with --trust-guessed-end")
    assert len(reasons(result)) == 1, reasons(result)
    assert (src / "a").exists()


def test_a_copy_without_hash_is_refused(tmp_path: Path) -> None:
    src = make_source(tmp_path / "acq", tmp_path / "outside")
    dst, state = tmp_path / "copies" / "run", tmp_path / "state"
    args = ["copy", "--kind", "directory", "--ready-age", "0", src, dst, "--state-dir", state]
    assert run_softcopy(*args).returncode == 0
    refused(run_release(dst, "--state-dir", state), "verified by sizes only")
    assert (src / "a").exists()


def test_a_corrupted_destination_file_is_refused(tmp_path: Path) -> None:
    src, dst, state = make_copy(tmp_path)
    target = dst / "sub" / "b"
    st = target.stat()
    with open(target, "r+b") as f:  # same size, same mtime: only the bytes tell
        f.write(b"X")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    refused(run_release(dst, "--state-dir", state), "does not match its manifest", "sub/b")
    assert (src / "sub" / "b").read_bytes() == b"b" * 300


def test_a_removed_destination_file_is_refused(tmp_path: Path) -> None:
    src, dst, state = make_copy(tmp_path)
    (dst / "sub" / "c").unlink()
    refused(run_release(dst, "--state-dir", state), "missing: sub/c")
    assert (src / "sub" / "c").exists()


def test_an_extra_destination_file_is_refused(tmp_path: Path) -> None:
    src, dst, state = make_copy(tmp_path)
    (dst / "stray").write_text("x")
    refused(run_release(dst, "--state-dir", state), "not in the manifest: stray")
    assert (src / "a").exists()


def test_a_touched_source_file_is_refused(tmp_path: Path) -> None:
    src, dst, state = make_copy(tmp_path)
    st = (src / "a").stat()
    os.utime(src / "a", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    refused(run_release(dst, "--state-dir", state), "changed since they were copied", "ctime: a")
    assert (src / "a").exists()


def test_a_source_file_replaced_with_same_size_and_mtime_is_refused(tmp_path: Path) -> None:
    src, dst, state = make_copy(tmp_path)
    st = (src / "sub" / "b").stat()
    new = src / "sub" / "b.new"
    new.write_bytes(b"B" * 300)
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.rename(new, src / "sub" / "b")  # how writers publish: a new inode
    refused(
        run_release(dst, "--state-dir", state), "changed since they were copied", "ctime: sub/b"
    )
    assert (src / "sub" / "b").read_bytes() == b"B" * 300


def test_a_new_source_file_is_refused(tmp_path: Path) -> None:
    src, dst, state = make_copy(tmp_path)
    (src / "sub" / "late.dat").write_text("written after the copy")
    refused(run_release(dst, "--state-dir", state), "has files the copy lacks: sub/late.dat")
    assert (src / "sub" / "late.dat").exists()


def test_a_deleted_source_file_is_refused(tmp_path: Path) -> None:
    src, dst, state = make_copy(tmp_path)
    (src / "sub" / "c").unlink()
    refused(run_release(dst, "--state-dir", state), "lacks files the copy has: sub/c")
    assert (src / "a").exists()


def test_a_changed_source_link_is_refused(tmp_path: Path) -> None:
    src, dst, state = make_copy(tmp_path)
    (src / "sub" / "rel").unlink()
    os.symlink("../sub/b", src / "sub" / "rel")
    refused(run_release(dst, "--state-dir", state), "symbolic links differ", "sub/rel")


def test_no_journal_record_is_refused_unless_rehash(tmp_path: Path) -> None:
    src, dst, _ = make_copy(tmp_path)
    other = tmp_path / "other-state"
    refused(run_release(dst, "--state-dir", other), "has no record of this copy", "--rehash")
    assert (src / "a").exists()
    result = run_release(dst, "--state-dir", other, "--rehash", "--json")
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["released"] is True and outcome["versions_checked_by"] == "content"
    assert not src.exists()


def test_rehash_catches_content_the_versions_cannot(tmp_path: Path) -> None:
    # Without a journal, --rehash: the source's bytes decide.
    src, dst, _ = make_copy(tmp_path)
    st = (src / "a").stat()
    with open(src / "a", "r+b") as f:
        f.write(b"Z")
    os.utime(src / "a", ns=(st.st_atime_ns, st.st_mtime_ns))
    other = tmp_path / "other-state"
    result = run_release(dst, "--state-dir", other, "--rehash")
    refused(result, "differ in content from the manifest: a")
    assert (src / "a").exists()


def test_another_source_directory_is_refused(tmp_path: Path) -> None:
    src, dst, state = make_copy(tmp_path)
    other = tmp_path / "elsewhere"
    shutil.copytree(src, other, symlinks=True)
    result = run_release(dst, "--source", other, "--state-dir", state)
    refused(result, "is not the copied source")
    assert (src / "a").exists() and (other / "a").exists()


def test_a_source_made_again_at_the_same_path_is_refused(tmp_path: Path) -> None:
    # A new acquisition in a directory of the same name is not the one copied.
    src, dst, state = make_copy(tmp_path)
    aside = tmp_path / "aside"
    os.rename(src, aside)
    shutil.copytree(aside, src, symlinks=True)
    refused(run_release(dst, "--state-dir", state), "is not the directory that was copied")
    assert (src / "a").exists()


def test_a_source_already_gone_is_refused(tmp_path: Path) -> None:
    src, dst, state = make_copy(tmp_path)
    shutil.rmtree(src)
    refused(run_release(dst, "--state-dir", state), "does not exist any more")


def test_a_running_copy_is_refused(tmp_path: Path) -> None:
    src = make_source(tmp_path / "acq", tmp_path / "outside", marker=False)
    dst, state = tmp_path / "copies" / "run", tmp_path / "state"
    proc = start_softcopy(*COPY, src, dst, "--state-dir", state)
    wait_for(lambda: (dst / "sub" / "c").exists(), what="the copy to start", proc=proc)
    result = run_release(dst, "--state-dir", state)
    refused(result, "is copying to", "right now")
    assert proc.poll() is None and (src / "a").exists()
    proc.terminate()
    finish(proc)


def test_every_reason_is_listed_at_once(tmp_path: Path) -> None:
    src, dst, state = make_copy(tmp_path, "--idle-timeout", "0.5", marker=False)
    (dst / "sub" / "c").write_bytes(b"C" * 10)
    os.utime(src / "a", ns=(1, 1))
    (src / "new").write_text("new")
    result = run_release(dst, "--state-dir", state)
    refused(
        result,
        "release needs a proven end",
        "does not match its manifest",
        "changed since they were copied",
        "ctime: a",
        "has files the copy lacks: new",
    )
    assert len(reasons(result)) == 4, reasons(result)
    assert "4 reasons" in result.stderr


def test_json_lists_the_reasons_and_checks(tmp_path: Path) -> None:
    src, dst, state = make_copy(tmp_path)
    (src / "new").write_text("new")
    result = run_release(dst, "--state-dir", state, "--json")
    assert result.returncode == 1
    outcome = json.loads(result.stdout)
    assert outcome["released"] is False and outcome["dry_run"] is False
    assert outcome["source"] == str(src) and outcome["destination"] == str(dst)
    assert outcome["checks"]["source"] is False and outcome["checks"]["destination"] is True
    assert len(outcome["reasons"]) == 1 and "new" in outcome["reasons"][0]
    assert outcome["moved_to"] is None


# ---- bad input -------------------------------------------------------------------------


def one_paragraph_error(result: subprocess.CompletedProcess, *texts: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("softcopy: error: cannot ")
    for text in texts:
        assert text in result.stderr, result.stderr


def test_bad_input_is_one_paragraph(tmp_path: Path) -> None:
    src, dst, state = make_copy(tmp_path)
    one_paragraph_error(run_release(tmp_path / "nowhere"), "nowhere", "not a directory")
    one_paragraph_error(run_release(src), f"{src}.softcopy", "does not exist")
    cert = records_dir(dst) / "certificate.json"
    cert.write_text("{not json")
    one_paragraph_error(run_release(dst, "--state-dir", state), str(cert), "not valid JSON")
    (tmp_path / "file").write_text("x")
    one_paragraph_error(run_release(dst, "--to", tmp_path / "file"), "file", "is not a directory")
    assert (src / "a").exists()


def test_a_records_folder_that_is_a_link_is_refused(tmp_path: Path) -> None:
    src, dst, state = make_copy(tmp_path)
    real = tmp_path / "real-records"
    os.rename(records_dir(dst), real)
    os.symlink(real, records_dir(dst))
    one_paragraph_error(run_release(dst, "--state-dir", state), "symbolic link")
    assert (src / "a").exists() and not (real / RELEASED).exists()


# ---- dry run and success ---------------------------------------------------------------


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    src, dst, state = make_copy(tmp_path)
    before_src, before_records = snapshot(src), snapshot(records_dir(dst))
    result = run_release(dst, "--state-dir", state, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "would release" in result.stdout
    assert snapshot(src) == before_src and snapshot(records_dir(dst)) == before_records
    status = [json.loads(x) for x in run_softcopy("status", "--json", "--state-dir", state)
              .stdout.splitlines()]  # fmt: skip
    assert [t["state"] for t in status] == ["done"]
    (src / "new").write_text("new")
    result = run_release(dst, "--state-dir", state, "--dry-run")
    refused(result, "has files the copy lacks: new")
    assert "would not be released" in result.stderr


def test_release_deletes_the_source_and_records_it(tmp_path: Path) -> None:
    src, dst, state = make_copy(tmp_path)
    before_dst = snapshot(dst)
    result = run_release(dst, "--state-dir", state)
    assert result.returncode == 0, result.stderr
    assert "released" in result.stdout and "deleted" in result.stdout
    assert not os.path.lexists(src)
    assert os.listdir(src.parent) == [], "no hidden leftover of the source"
    assert snapshot(dst) == before_dst
    # Links were removed, never followed: what they point to outside the trees survives.
    outside = tmp_path / "outside"
    assert (outside / "keep.txt").read_text() == "not part of any tree"
    record = released_record(dst)
    assert record["how"] == "deleted" and record["to"] is None
    assert record["source"] == str(src) and record["destination"] == str(dst)
    assert record["versions_checked_by"] == "journal"
    assert all(record["checks"].values()) and record["when"] and record["host"]
    status = [json.loads(x) for x in run_softcopy("status", "--json", "--state-dir", state)
              .stdout.splitlines()]  # fmt: skip
    assert [(t["destination"], t["state"]) for t in status] == [(str(dst), "released")]
    verify = run_softcopy("verify", dst)
    assert verify.returncode == 0, verify.stderr
    # Once released, again: refused, saying so.
    refused(run_release(dst, "--state-dir", state), "already released")


def test_release_to_a_trash_folder_moves_the_source(tmp_path: Path) -> None:
    src, dst, state = make_copy(tmp_path)
    trash = tmp_path / "acq" / "trash"
    (trash / "run").mkdir(parents=True)  # taken: the source goes to run-1, nothing replaced
    (trash / "run" / "earlier").write_text("keep")
    before = snapshot(src)
    result = run_release(dst, "--state-dir", state, "--to", trash, "--json")
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["released"] is True and outcome["moved_to"] == str(trash / "run-1")
    assert not os.path.lexists(src)
    assert snapshot(trash / "run-1") == before, "a rename: every inode and time kept"
    assert (trash / "run" / "earlier").read_text() == "keep"
    record = released_record(dst)
    assert record["how"] == "moved" and record["to"] == str(trash / "run-1")


def test_release_to_another_filesystem_is_refused(tmp_path: Path) -> None:
    src, dst, state = make_copy(tmp_path)
    other = tmp_path / "tmpfs"
    other.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", other],
                             capture_output=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        before = snapshot(src)
        result = run_release(dst, "--state-dir", state, "--to", other)
        refused(result, "on another filesystem")
        assert snapshot(src) == before and os.listdir(other) == []
    finally:
        subprocess.run(["umount", other], check=True)


# ---- races and resuming ----------------------------------------------------------------


def test_a_file_slipped_in_after_the_checks_is_caught_and_the_source_put_back(
    tmp_path: Path,
) -> None:
    src, dst, state = make_copy(tmp_path)
    records = Records.open(records_dir(dst), create=False)
    assert records is not None
    try:
        job = _Job(dst, records, None, None, False, True, state)
        assert job.run().reasons == []  # every check passed (as a dry run)
        # A writer adds a file between the checks and the rename.
        (src / "sub" / "slipped").write_text("late")
        job.dry_run = False
        outcome = job._free()
    finally:
        records.close()
    assert outcome.released is False
    assert any("changed while it was being released" in r for r in outcome.reasons)
    assert (src / "sub" / "slipped").read_text() == "late" and (src / "a").exists()
    assert os.listdir(src.parent) == ["run"], "put back where it was, no hidden copy left"
    assert not (records_dir(dst) / RELEASED).exists()


def test_a_release_killed_after_the_rename_is_finished_by_the_next(tmp_path: Path) -> None:
    # What a release killed between its rename and its record leaves: the hidden tree.
    src, dst, state = make_copy(tmp_path)
    hidden = src.parent / f".{src.name}{HIDDEN_SUFFIX}999999"
    os.rename(src, hidden)
    result = run_release(dst, "--state-dir", state)
    assert result.returncode == 0, result.stderr
    assert os.listdir(src.parent) == []
    assert released_record(dst)["how"] == "deleted"


def test_a_hidden_tree_that_changed_is_put_back(tmp_path: Path) -> None:
    src, dst, state = make_copy(tmp_path)
    hidden = src.parent / f".{src.name}{HIDDEN_SUFFIX}999999"
    os.rename(src, hidden)
    (hidden / "late").write_text("late")
    result = run_release(dst, "--state-dir", state)
    refused(result, "has files the copy lacks: late")
    assert (src / "late").exists() and not os.path.lexists(hidden), "put back where it was"


def test_a_zarr_copy_is_released(tmp_path: Path) -> None:
    from test_acquisition import SMALL, simulate

    src, dst, state = tmp_path / "acq.zarr", tmp_path / "copy.zarr", tmp_path / "state"
    simulate(src, SMALL)  # with its `complete` marker: a proven end
    result = run_softcopy("copy", "--hash", src, dst, "--state-dir", state)
    assert result.returncode == 0, result.stderr
    result = run_release(dst, "--state-dir", state)
    assert result.returncode == 0, result.stderr
    assert not os.path.lexists(src) and (dst / "complete").exists()


def test_names_that_are_not_utf8_are_checked_and_shown(tmp_path: Path) -> None:
    src = make_source(tmp_path / "acq", tmp_path / "outside")
    name = os.fsdecode(b"raw\xff\nname")
    (src / "sub" / name).write_text("bytes")
    dst, state = tmp_path / "copies" / "run", tmp_path / "state"
    assert run_softcopy(*COPY, src, dst, "--state-dir", state).returncode == 0
    os.utime(src / "sub" / name, ns=(1, 1))
    result = run_release(dst, "--state-dir", state)
    refused(result, "ctime: sub/raw\\xff\\nname")
    os.unlink(src / "sub" / name)
    shutil.copy2(dst / "sub" / name, src / "sub" / name)
    # A new inode: refused by the journal, released by content.
    result = run_release(dst, "--state-dir", tmp_path / "other", "--rehash")
    assert result.returncode == 0, result.stderr
    assert not os.path.lexists(src)


def test_a_release_killed_after_its_record_is_finished_by_the_next(tmp_path: Path) -> None:
    # What a release killed while deleting leaves: its record, and part of the hidden tree.
    src, dst, state = make_copy(tmp_path)
    hidden = src.parent / f".{src.name}{HIDDEN_SUFFIX}999999"
    os.rename(src, hidden)
    identity = [os.lstat(hidden).st_dev, os.lstat(hidden).st_ino]
    record = {"when": "2026-01-01T00:00:00+00:00", "how": "deleted", "to": None,
              "source": str(src), "source_identity": identity}  # fmt: skip
    (records_dir(dst) / RELEASED).write_text(json.dumps(record))
    shutil.rmtree(hidden / "sub")
    result = run_release(dst, "--state-dir", state)
    assert result.returncode == 0, result.stderr
    assert os.listdir(src.parent) == []
    assert (tmp_path / "outside" / "keep.txt").exists()


def test_a_hidden_tree_left_by_a_killed_release_goes_to_the_trash_with_to(tmp_path: Path) -> None:
    src, dst, state = make_copy(tmp_path)
    hidden = src.parent / f".{src.name}{HIDDEN_SUFFIX}999999"
    os.rename(src, hidden)
    trash = tmp_path / "acq" / "trash"
    trash.mkdir()
    result = run_release(dst, "--state-dir", state, "--to", trash)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(src.parent)) == ["trash"] and (trash / "run" / "a").exists()
    assert released_record(dst)["to"] == str(trash / "run")
