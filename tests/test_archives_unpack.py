"""Restoring archives (issue 14): unpack_stream verifies every member against the manifest
and refuses hostile archives made by hand, writing nothing outside the folder."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from test_archives_tar import make_run, pack, tree

from softcopy.archives.formats import Packing
from softcopy.archives.members import Member
from softcopy.archives.pipeline import unpacker
from softcopy.archives.unpack import unpack_stream
from softcopy.errors import SoftcopyError


def unpack(dest: Path, into: Path, expected: list[Member] | None, packing: Packing) -> list:
    with open(dest, "rb") as inp, unpacker(inp, packing, None) as (stream, _):
        return unpack_stream(stream, into, expected)


@pytest.mark.parametrize("compression", ["", "gzip", "zstd"])
def test_unpack_restores_and_verifies(tmp_path: Path, compression: str) -> None:
    run = make_run(tmp_path / "src")
    packing = Packing(compression)
    dest = tmp_path / f"run0042{packing.suffix}"
    members, _, _ = pack(run, dest, packing)
    into = tmp_path / "into"
    into.mkdir()
    found = unpack(dest, into, members, packing)
    assert found == members
    assert tree(into / "run0042") == tree(run)
    assert sorted(os.listdir(into)) == ["run0042"]  # no temporary left

    again = tmp_path / "again"
    again.mkdir()
    assert unpack(dest, again, None, packing) == members


def test_unpack_refuses_to_overwrite(tmp_path: Path) -> None:
    run = make_run(tmp_path / "src")
    dest = tmp_path / "run0042.tar"
    members, _, _ = pack(run, dest, Packing(""))
    into = tmp_path / "into"
    (into / "run0042" / "a").mkdir(parents=True)
    (into / "run0042" / "empty").write_bytes(b"mine")
    with pytest.raises(SoftcopyError, match="exists; unpack never overwrites"):
        unpack(dest, into, members, Packing(""))
    assert (into / "run0042" / "empty").read_bytes() == b"mine"


def test_unpack_finds_a_member_that_does_not_match_the_manifest(tmp_path: Path) -> None:
    run = make_run(tmp_path / "src")
    dest = tmp_path / "run0042.tar.zst"
    members, _, _ = pack(run, dest, Packing("zstd"))
    reads = next(m for m in members if m.path.endswith("reads.fastq"))
    wrong = [
        Member(m.path, m.kind, m.size, m.mode, m.mtime_ns, m.target, "0" * 64) if m is reads else m
        for m in members
    ]
    into = tmp_path / "into"
    into.mkdir()
    with pytest.raises(SoftcopyError, match=r"reads\.fastq: its BLAKE3 .* is not the manifest's"):
        unpack(dest, into, wrong, Packing("zstd"))
    reads_path = into / "run0042" / "a" / "b"
    assert not (reads_path / "reads.fastq").exists()
    assert [n for n in os.listdir(reads_path) if n.startswith(".softcopy")] == []

    missing = [*members, Member("run0042/lost", "file", 1, 0o644, 0, "", "1" * 64)]
    again = tmp_path / "again"
    again.mkdir()
    with pytest.raises(SoftcopyError, match="run0042/lost: in the manifest but not in the archive"):
        unpack(dest, again, missing, Packing("zstd"))
    extra = [m for m in members if not m.path.endswith("empty")]
    third = tmp_path / "third"
    third.mkdir()
    with pytest.raises(SoftcopyError, match=r"run0042/empty: .*it is not in the manifest"):
        unpack(dest, third, extra, Packing("zstd"))


def hostile(*members: tuple[str, bytes, str]) -> io.BytesIO:
    """A tar made by hand: (name, type, link name or contents)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, extra in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.REGTYPE:
                info.size = len(extra)
                tf.addfile(info, io.BytesIO(extra.encode()))
            else:
                info.linkname = extra
                tf.addfile(info)
    buf.seek(0)
    return buf


def everything(root: Path) -> set[str]:
    return {os.path.join(d, n) for d, ds, fs in os.walk(root) for n in ds + fs}


D, F, L = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.SYMTYPE


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ([("ABS", F, "x")], "its path is absolute"),
        ([("run", D, ""), ("run/../../evil", F, "x")], "holds `..`"),
        ([("../evil", F, "x")], "holds `..`"),
        ([("run", D, ""), ("run/l", L, "ABS")], "links to an absolute path"),
        ([("run", D, ""), ("run/l", L, "../../outside")], "links out of the folder"),
        ([("run", D, ""), ("run/l", L, "sub/../../..")], "holds `..` after a name"),
        ([("run", D, ""), ("run/l", L, "."), ("run/l/f", F, "x")], "its folder .*run/l is a link"),
        ([("run", D, ""), ("run/f", F, "x"), ("run/h", tarfile.LNKTYPE, "run/f")], "hard link"),
        ([("run", D, ""), ("run/dev", tarfile.CHRTYPE, "")], "character device"),
        ([("run", D, ""), ("run/fifo", tarfile.FIFOTYPE, "")], "FIFO"),
    ],
)
def test_hostile_archives_are_refused(tmp_path: Path, members: list, why: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    into = tmp_path / "box" / "into"
    into.mkdir(parents=True)
    members = [
        (n.replace("ABS", str(outside / "evil")), k, e.replace("ABS", str(outside)))
        for n, k, e in members
    ]
    before = everything(tmp_path)
    with pytest.raises(SoftcopyError, match=why):
        unpack_stream(hostile(*members), into, None)
    assert {p for p in everything(tmp_path) - before if not p.startswith(str(into))} == set()
    assert everything(outside) == set()


def test_a_link_already_in_the_folder_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    into = tmp_path / "into"
    into.mkdir()
    os.symlink(outside, into / "run")
    with pytest.raises(SoftcopyError, match=r"its folder .*run is a link"):
        unpack_stream(hostile(("run/f", F, "x")), into, None)
    assert everything(outside) == set()


def test_links_inside_the_folder_are_restored(tmp_path: Path) -> None:
    into = tmp_path / "into"
    into.mkdir()
    stream = hostile(
        ("run", D, ""),
        ("run/sub", D, ""),
        ("run/sub/up", L, "../f"),
        ("run/sub/top", L, "../.."),
        ("run/f", F, "data"),
    )
    found = unpack_stream(stream, into, None)
    assert [m.path for m in found] == ["run", "run/sub", "run/sub/up", "run/sub/top", "run/f"]
    assert os.readlink(into / "run" / "sub" / "top") == "../.."
    assert (into / "run" / "sub" / "up").read_bytes() == b"data"


def test_gnu_tar_archives_unpack_too(tmp_path: Path) -> None:
    run = make_run(tmp_path / "src")
    dest = tmp_path / "gnu.tar"
    subprocess.run(
        ["tar", "--format=posix", "--sort=name", "-cf", dest, "-C", run.parent, run.name],
        check=True,
    )
    into = tmp_path / "into"
    into.mkdir()
    with open(dest, "rb") as inp:
        found = unpack_stream(inp, into, None)
    assert tree(into / "run0042") == tree(run)
    assert {m.path for m in found} == {
        os.fsdecode(os.path.relpath(os.path.join(d, n), os.fsencode(run.parent)))
        for d, ds, fs in os.walk(os.fsencode(run))
        for n in ds + fs
    } | {"run0042"}
