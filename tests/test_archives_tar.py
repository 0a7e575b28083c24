"""Archives (issue 14): tar, tar.gz and tar.zst written by softcopy and read by the real
tar, gzip, pigz, zstd and b3sum; tampering and truncation found; files that change while
packed refused."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from blake3 import blake3

from softcopy.archives.check import (
    compare,
    format_members,
    manifest_text,
    parse_members,
    verify_archive,
)
from softcopy.archives.formats import Packing, packing_of, parse_pack
from softcopy.archives.members import Member, list_source, read_tar, write_tar
from softcopy.archives.pipeline import count_stream, packer, unpacker
from softcopy.errors import ConfigError, SoftcopyError

NON_UTF8 = b"caf\xe9.txt"
NEWLINE = b"two\nlines"
FORMATS = {"tar": "", "tar.gz": "gzip", "tar.zst": "zstd"}
MTIME = 1_700_000_000_123_456_789


def fastq(n: int, seed: int = 7) -> bytes:
    """Reads whose bases do not repeat (a deterministic generator), so compression keeps
    the middle of the archive inside a file's contents."""
    out, x = [], seed
    for i in range(n):
        seq = []
        for _ in range(100):
            x = (x * 6364136223846793005 + 1442695040888963407) % 2**64
            seq.append("ACGT"[x >> 62])
        out.append(f"@r{i}\n{''.join(seq)}\n+\n{'F' * 100}\n")
    return "".join(out).encode()


def make_run(root: Path) -> Path:
    run = root / "run0042"
    (run / "a" / "b").mkdir(parents=True)
    (run / "a" / "b" / "reads.fastq").write_bytes(fastq(3000))
    (run / "empty").write_bytes(b"")
    (run / "a" / "secret.txt").write_bytes(b"only the owner\n")
    os.chmod(run / "a" / "secret.txt", 0o600)
    os.symlink("a/b/reads.fastq", run / "rel")
    os.symlink("../nowhere", run / "a" / "dangling")
    for name in (NON_UTF8, NEWLINE):
        with open(os.path.join(os.fsencode(run), name), "wb") as f:
            f.write(name * 3)
    os.chmod(run / "a" / "b", 0o750)
    for dirpath, dirnames, filenames in os.walk(run, topdown=False):
        for name in [*filenames, *dirnames, ""]:
            path = os.path.join(dirpath, name) if name else dirpath
            os.utime(path, ns=(MTIME, MTIME), follow_symlinks=False)
    return run


def pack(run: Path, dest: Path, packing: Packing) -> tuple[list[Member], str, int]:
    with open(dest, "wb") as out, packer(out, packing) as (stream, counted):
        members, skipped = write_tar(stream, run, run.name)
    assert skipped == []
    return members, counted.blake3, counted.size


def read_back(dest: Path, packing: Packing, identity: Path | None = None) -> list[Member]:
    with open(dest, "rb") as inp, unpacker(inp, packing, identity) as (stream, counted):
        found = list(read_tar(stream))
    assert counted.size == dest.stat().st_size
    assert counted.blake3 == blake3(dest.read_bytes()).hexdigest()
    return found


def tree(root: Path) -> dict[bytes, tuple]:
    """Every entry under root: kind, mode, mtime_ns, contents or link target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                body = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    body = f.read()
            else:
                body = b""
            mode = stat.S_IMODE(st.st_mode) if not stat.S_ISLNK(st.st_mode) else 0
            rel = os.path.relpath(path, os.fsencode(root))
            out[rel] = (stat.S_IFMT(st.st_mode), mode, st.st_mtime_ns, body)
    return out


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_real_tools_read_what_softcopy_writes(tmp_path: Path, fmt: str) -> None:
    run = make_run(tmp_path / "src")
    dest = tmp_path / f"run0042.{fmt}"
    packing = Packing(FORMATS[fmt])
    assert packing.suffix == f".{fmt}"
    members, digest, size = pack(run, dest, packing)
    assert (size, digest) == (dest.stat().st_size, blake3(dest.read_bytes()).hexdigest())
    assert [m.path for m in members] == sorted((m.path for m in members), key=os.fsencode)
    assert members[0] == Member("run0042", "dir", 0, 0o755, MTIME)

    if fmt == "tar.gz":
        for tool in (["gzip", "-t"], ["pigz", "-t"]):
            subprocess.run([*tool, dest], check=True)
        unzipped = subprocess.run(["zcat", dest], capture_output=True, check=True).stdout
        assert unzipped[257:262] == b"ustar"
    if fmt == "tar.zst":
        subprocess.run(["zstd", "-q", "-t", dest], check=True)

    listing = subprocess.run(
        ["tar", "--quoting-style=literal", "-tvf", dest], capture_output=True, check=True
    )
    # GNU tar 1.34 reads the raw bytes of a PAX path and only warns about the POSIX
    # `hdrcharset=BINARY` record it does not know.
    assert set(listing.stderr.splitlines()) <= {
        b"tar: Ignoring unknown extended header keyword 'hdrcharset'"
    }
    for name in (NON_UTF8, NEWLINE, b"a/dangling -> ../nowhere", b"0/0"):
        assert name in listing.stdout

    into = tmp_path / "extracted"
    into.mkdir()
    subprocess.run(["tar", "-xf", dest, "-C", into], check=True, capture_output=True)
    assert tree(into / "run0042") == tree(run)

    manifest = tmp_path / "manifest.b3"
    manifest.write_text(manifest_text(members))
    check = subprocess.run(["b3sum", "--check", manifest], cwd=into, capture_output=True, text=True)
    # Every name b3sum can check passes; the one that is not UTF-8 it cannot check at all
    # (verify.manifest.format_line), and says so.
    ok = {line for line in check.stdout.splitlines() if line.endswith(": OK")}
    assert len(ok) == sum(1 for m in members if m.kind == "file") - 1
    assert "FAILED" not in check.stdout

    found = read_back(dest, packing)
    assert compare(members, found) == []
    assert parse_members(format_members(members)) == members
    assert found == members


def test_pack_names_and_formats() -> None:
    assert [parse_pack(f) for f in FORMATS] == ["", "gzip", "zstd"]
    with pytest.raises(ConfigError, match=r"tar\.bz2.*tar, tar\.gz, tar\.zst"):
        parse_pack("tar.bz2")
    zst = packing_of("run0042.tar.zst.age")
    assert (zst.compression, zst.encryption.tool, zst.suffix) == ("zstd", "age", ".tar.zst.age")
    assert packing_of("x.tar").suffix == ".tar"
    assert packing_of("x.tar.gz.gpg").suffix == ".tar.gz.gpg"
    for name in ("x.zip", ".tar", "x.tar.age.gz", "x.gpg"):
        with pytest.raises(ConfigError, match="does not end in"):
            packing_of(name)


def test_bad_levels_and_threads() -> None:
    for args, why in (
        (("bzip2",), "choose one of gzip, zstd"),
        (("gzip", 0), "it is not 1-9"),
        (("zstd", 23), "it is not 1-22"),
        (("zstd", 3, -1), "it is not 0-256"),
    ):
        with pytest.raises(ConfigError, match=why):
            Packing(*args)


def test_reproducible_and_owner_free(tmp_path: Path) -> None:
    run = make_run(tmp_path / "src")
    first = pack(run, tmp_path / "one.tar.zst", Packing("zstd"))
    second = pack(run, tmp_path / "two.tar.zst", Packing("zstd"))
    assert first == second


def flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x20
    path.write_bytes(bytes(data))


def problems_of(dest: Path, packing: Packing, members: list[Member], identity=None) -> str:
    """What verification reports: the error or the comparison's problems."""
    try:
        with open(dest, "rb") as inp:
            problems, counted = verify_archive(inp, packing, identity, members)
    except SoftcopyError as exc:
        return str(exc)
    assert (counted.size, counted.blake3) == (dest.stat().st_size, count_of(dest))
    return "; ".join(problems)


def count_of(dest: Path) -> str:
    with open(dest, "rb") as inp:
        return count_stream(inp).blake3


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_a_tampered_byte_is_found(tmp_path: Path, fmt: str) -> None:
    run = make_run(tmp_path / "src")
    dest = tmp_path / f"run0042.{fmt}"
    packing = Packing(FORMATS[fmt])
    members, _, _ = pack(run, dest, packing)
    flip_middle(dest)
    found = problems_of(dest, packing, members)
    expected = {
        "tar": "reads.fastq: BLAKE3",
        "tar.gz": "cannot decompress gzip: the archive is corrupt",
        "tar.zst": "cannot decompress zstd: the archive is corrupt",
    }
    assert expected[fmt] in found


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_a_truncated_archive_is_found(tmp_path: Path, fmt: str) -> None:
    run = make_run(tmp_path / "src")
    dest = tmp_path / f"run0042.{fmt}"
    packing = Packing(FORMATS[fmt])
    members, _, _ = pack(run, dest, packing)
    os.truncate(dest, dest.stat().st_size // 2)
    found = problems_of(dest, packing, members)
    assert "truncated" in found or "damaged" in found, found


def test_members_record_round_trips_any_name() -> None:
    odd = os.fsdecode(b"run/\xff\\x\n\\xff")
    members = [
        Member("run", "dir", 0, 0o755, -1_500_000_000),
        Member(odd, "file", 3, 0o644, MTIME, "", "ab" * 32),
        Member("run/l", "link", 0, 0o777, 0, os.fsdecode(b"\xfe/t")),
    ]
    data = format_members(members)
    data.decode("utf-8")  # strict: any JSON reader takes it
    assert parse_members(data) == members
    assert len(data.splitlines()) == 3


def test_compare_names_each_problem() -> None:
    want = [
        Member("r", "dir", 0, 0o755, 0),
        Member("r/f", "file", 3, 0o644, 0, "", "a" * 64),
        Member("r/g", "file", 3, 0o644, 0, "", "b" * 64),
        Member("r/l", "link", 0, 0o777, 0, "f"),
        Member("r/gone", "file", 1, 0o644, 0, "", "c" * 64),
    ]
    got = [
        Member("r", "dir", 0, 0o700, 0),
        Member("r/f", "file", 4, 0o644, 0, "", "a" * 64),
        Member("r/g", "file", 3, 0o644, 0, "", "d" * 64),
        Member("r/l", "link", 0, 0o777, 0, "g"),
        Member("r/new", "dir", 0, 0o755, 0),
    ]
    problems = compare(want, got)
    assert problems == [
        "r: mode 0700 where 0755 was packed",
        "r/f: 4 bytes where 3 were packed",
        f"r/g: BLAKE3 {'d' * 64} where {'b' * 64} was packed (contents differ)",
        "r/l: links to g where f was packed",
        "r/new: in the archive but not in the manifest (extra)",
        "r/gone: in the manifest but not in the archive (missing)",
    ]


def test_a_file_that_grows_while_packed_is_refused(tmp_path: Path) -> None:
    run = make_run(tmp_path / "src")
    big = run / "a" / "b" / "reads.fastq"

    def grow(nbytes: int) -> None:
        with open(big, "ab") as f:
            f.write(b"@more\n")

    changed = r"reads\.fastq: it changed while it was read"
    with pytest.raises(SoftcopyError, match=changed), open(os.devnull, "wb") as out:
        write_tar(out, run, "run0042", pace=grow)


def test_a_file_that_shrinks_while_packed_is_refused(tmp_path: Path) -> None:
    run = make_run(tmp_path / "src")
    big = run / "a" / "b" / "reads.fastq"
    big.write_bytes(fastq(20000))  # several read blocks

    def shrink(nbytes: int) -> None:
        os.truncate(big, nbytes)

    changed = r"reads\.fastq: it changed while it was read"
    with pytest.raises(SoftcopyError, match=changed), open(os.devnull, "wb") as out:
        write_tar(out, run, "run0042", pace=shrink)


def test_pace_sees_every_byte(tmp_path: Path) -> None:
    run = make_run(tmp_path / "src")
    seen: list[int] = []
    with open(os.devnull, "wb") as out:
        members, _ = write_tar(out, run, "run0042", pace=seen.append)
    assert sum(seen) == sum(m.size for m in members)


def test_unpackable_entries_are_skipped_and_links_never_followed(tmp_path: Path) -> None:
    run = make_run(tmp_path / "src")
    os.mkfifo(run / "a" / "pipe")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "private").write_bytes(b"not part of the run")
    os.symlink(outside, run / "away")
    _, skipped = list_source(run, "run0042")
    assert skipped == ["run0042/a/pipe"]
    with open(os.devnull, "wb") as out:
        members, skipped = write_tar(out, run, "run0042")
    assert skipped == ["run0042/a/pipe"]
    away = next(m for m in members if m.path == "run0042/away")
    assert (away.kind, away.target) == ("link", str(outside))
    assert not any("private" in m.path for m in members)

    linked_run = tmp_path / "linked"
    os.symlink(run, linked_run)
    with pytest.raises(SoftcopyError, match="symbolic link"):
        list_source(linked_run, "run0042")


def test_hostile_tar_member_types_are_refused(tmp_path: Path) -> None:
    import tarfile

    for kind, what in ((tarfile.LNKTYPE, "hard link"), (tarfile.CHRTYPE, "character device")):
        dest = tmp_path / f"{kind!r}.tar"
        with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tf:
            info = tarfile.TarInfo("run/x")
            info.type, info.linkname = kind, "run/y"
            tf.addfile(info)
        with pytest.raises(SoftcopyError, match=f"run/x: it is a {what}"):
            read_back(dest, Packing(""))


def test_a_file_replaced_by_a_link_while_packing_is_not_followed(tmp_path: Path) -> None:
    run = make_run(tmp_path / "src")
    (run / "a" / "b" / "reads.fastq").write_bytes(fastq(20000))
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"private")
    later = run / "empty"  # packed after a/b/reads.fastq

    def swap(nbytes: int) -> None:
        if not later.is_symlink():
            later.unlink()
            os.symlink(outside, later)

    with (
        pytest.raises(SoftcopyError, match=r"empty: .*symbolic link"),
        open(os.devnull, "wb") as out,
    ):
        write_tar(out, run, "run0042", pace=swap)


@pytest.mark.parametrize(("compression", "level", "threads"), [("gzip", 6, 2), ("zstd", 9, 2)])
def test_levels_and_threads(tmp_path: Path, compression: str, level: int, threads: int) -> None:
    run = make_run(tmp_path / "src")
    packing = Packing(compression, level, threads)
    dest = tmp_path / f"run0042{packing.suffix}"
    members, _, _ = pack(run, dest, packing)
    tool = "gzip" if compression == "gzip" else "zstd"
    subprocess.run([tool, "-q", "-t", dest], check=True)
    assert read_back(dest, Packing(compression)) == members
