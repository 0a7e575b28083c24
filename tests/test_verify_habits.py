"""`verify` as rsync and rclone users expect: the copy's include/exclude honoured, findings
worded by what they were compared with, and a copy made without --hash checked later,
without its source, against the size list its end wrote."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import run_softcopy

NAMES = {
    "sub/a.dat": b"alpha" * 10,
    "sub/b.dat": b"bravo" * 20,
    "notes.log": b"a log the copy leaves out",
    "tab\there": b"tab",
    "new\nline": b"newline",
    os.fsdecode(b"raw\xff"): b"raw",
    "back\\slash": b"backslash",
}


def make_source(base: Path) -> Path:
    src = base / "src"
    for key, data in NAMES.items():
        path = src / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (src / "complete").write_bytes(b"")  # the end marker: the copy finishes at once
    return src


def copy(src: Path, dst: Path, *options: object) -> None:
    result = run_softcopy("copy", "--kind", "directory", "--no-progress", *options, src, dst)
    assert result.returncode == 0, result.stderr


def verify(*args: object) -> tuple[int, str, str]:
    result = run_softcopy("verify", *args)
    return result.returncode, result.stdout, result.stderr


@pytest.fixture
def excluded_copy(tmp_path: Path) -> tuple[Path, Path]:
    src = make_source(tmp_path)
    dst = tmp_path / "dst"
    copy(src, dst, "--exclude", "*.log")
    assert not (dst / "notes.log").exists()
    return src, dst


def test_files_the_copy_excluded_are_not_missing(excluded_copy: tuple[Path, Path]) -> None:
    src, dst = excluded_copy
    cert = json.loads((dst.parent / "dst.softcopy" / "certificate.json").read_text())
    assert cert["selection"]["exclude"] == ["*.log"]
    rc, out, err = verify(src, dst)
    assert rc == 0, out + err
    # A real difference is still found: the recorded exclude hides only what it names.
    (dst / "sub" / "a.dat").unlink()
    rc, out, _ = verify(src, dst)
    assert rc == 1 and out.splitlines() == [
        "missing: sub/a.dat (in the source, not in the destination)"
    ]


def test_verify_takes_its_own_include_and_exclude(excluded_copy: tuple[Path, Path]) -> None:
    src, dst = excluded_copy
    (dst / "sub" / "a.dat").unlink()
    rc, out, err = verify(src, dst, "--exclude", "sub/a.dat")
    assert rc == 0, out + err
    rc, out, err = verify(src, dst, "--include", "sub/b.dat")
    assert rc == 0 and "identical: 1 file " in out + err, out + err
    # Added to what was recorded, never instead of it: the log stays left out.
    rc, out, err = verify(src, dst, "--include", "*.log")
    assert rc == 0 and "identical: 0 files" in out + err, out + err
    rc, out, _ = verify(dst, "--exclude", "sub/a.dat")  # and without the source
    assert rc == 0, out


def test_without_the_source_findings_name_the_manifest(tmp_path: Path) -> None:
    src = make_source(tmp_path)
    dst = tmp_path / "dst"
    copy(src, dst, "--hash")
    shutil.rmtree(src)
    (dst / "sub" / "a.dat").unlink()
    data = bytearray((dst / "sub" / "b.dat").read_bytes())
    data[0] ^= 1
    (dst / "sub" / "b.dat").write_bytes(bytes(data))
    rc, out, err = verify(dst)
    assert rc == 1, err
    assert "in the source" not in out and "source" not in out, out
    lines = out.splitlines()
    assert "missing: sub/a.dat (in the manifest, not in the destination)" in lines, out
    assert any(
        line.startswith("content differs: sub/b.dat manifest ") and " destination " in line
        for line in lines
    ), out
    rc, out, _ = verify(dst, "--json")
    records = [json.loads(line) for line in out.splitlines()]
    assert {r.get("against") for r in records if r.get("kind") != "summary"} == {"manifest"}


def test_a_copy_without_hash_is_verified_later_against_its_size_list(tmp_path: Path) -> None:
    src = make_source(tmp_path)
    dst = tmp_path / "dst"
    copy(src, dst)
    records = tmp_path / "dst.softcopy"
    assert not (records / "manifest.b3").exists()
    cert = json.loads((records / "certificate.json").read_text())
    assert cert["size_list"] == "files.tsv"
    shutil.rmtree(src)  # months later: the source is long gone
    rc, out, err = verify(dst)
    assert rc == 0, out + err
    # Every name, the marker included: tabs, newlines, raw bytes, backslashes.
    assert f"identical: {len(NAMES) + 1} files" in out, out
    assert "against the size list" in out

    (dst / "sub" / "a.dat").write_bytes(b"short")  # rewritten, another size
    st = (dst / "sub" / "b.dat").stat()
    os.utime(dst / "sub" / "b.dat", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched
    os.unlink(os.path.join(os.fsencode(dst), b"raw\xff"))
    (dst / "stray").write_bytes(b"not copied")
    rc, out, err = verify(dst)
    assert rc == 1, err
    lines = out.splitlines()
    assert "size differs: sub/a.dat size list 50 destination 5" in lines, out
    assert any(line.startswith("modification time differs: sub/b.dat size list ") for line in lines)
    assert "missing: raw\\xff (in the size list, not in the destination)" in lines, out
    assert "not in the size list: stray" in lines, out
    assert "source" not in out, out
    assert len(lines) == 4, out


def test_a_size_list_its_certificate_does_not_vouch_for_is_refused(tmp_path: Path) -> None:
    src = make_source(tmp_path)
    dst = tmp_path / "dst"
    copy(src, dst)
    listed = tmp_path / "dst.softcopy" / "files.tsv"
    with listed.open("a") as f:
        f.write("sub/invented\t1\t1\n")
    rc, out, err = verify(dst)
    assert rc == 2, out + err
    assert "Traceback" not in err
    assert str(listed) in err and "BLAKE3 differs" in err, err


def test_hash_without_a_manifest_or_source_is_a_clear_error(tmp_path: Path) -> None:
    src = make_source(tmp_path)
    dst = tmp_path / "dst"
    copy(src, dst)
    rc, _, err = verify(dst, "--hash")
    assert rc == 2 and "Traceback" not in err
    assert "no manifest" in err and "give SOURCE too" in err, err


def test_an_unfinished_copy_without_a_manifest_says_so(tmp_path: Path) -> None:
    src = make_source(tmp_path)
    dst = tmp_path / "dst"
    copy(src, dst)
    (tmp_path / "dst.softcopy" / "certificate.json").unlink()  # as while a run copies
    rc, _, err = verify(dst)
    assert rc == 2 and "Traceback" not in err
    assert "certificate.json" in err and "not finished" in err, err


def test_a_hashed_copy_whose_manifest_is_gone_is_not_checked_by_sizes(tmp_path: Path) -> None:
    src = make_source(tmp_path)
    dst = tmp_path / "dst"
    copy(src, dst, "--hash")
    (tmp_path / "dst.softcopy" / "manifest.b3").unlink()
    rc, _, err = verify(dst)
    assert rc == 2 and "Traceback" not in err
    assert "manifest.b3" in err and "certificate names it" in err, err


def test_a_size_list_larger_than_memory_holds_is_written_whole(tmp_path: Path) -> None:
    """Verification writes the size list's lines to a temporary file once they pass a MiB;
    the record is still the whole list, in order, and its digest is the file's."""
    from blake3 import blake3

    from softcopy.verify.sizes import format_entry, read_size_list, size_list_body, write_size_list

    entries = {f"c/{i // 1000}/{i % 1000}": (1024 + i, 10**18 + i) for i in range(40000)}
    body = size_list_body()
    for key, (size, mtime_ns) in entries.items():
        body.write(format_entry(key, size, mtime_ns).encode())
    assert body._rolled  # past a MiB: on disk, not in memory
    target = tmp_path / "records"
    target.mkdir()
    digest = write_size_list(target / "files.tsv", body)
    read, read_digest = read_size_list(target / "files.tsv")
    assert read == entries
    assert digest == read_digest == blake3((target / "files.tsv").read_bytes()).hexdigest()
