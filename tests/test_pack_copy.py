"""`softcopy copy --pack`, `verify ARCHIVE` and `unpack`, end to end on the command line.

Real programs read what softcopy writes (GNU tar, zstd, gzip, age, gpg, b3sum), a real
byte is flipped in the middle of an archive, a real pack is killed with SIGKILL, and the
object-store archive goes to moto's server on loopback.
"""

# ruff: noqa: F811 (the fixtures imported from s3server are parameters by the same names)

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tarfile
from pathlib import Path

import pytest
import s3server
from conftest import finish, run_softcopy, start_softcopy, wait_for
from s3server import bucket, s3_server  # noqa: F401 (fixtures)

RUN_OPTIONS = ("--kind", "directory", "--sentinel", "CopyComplete.txt", "--sentinel-min-age", "0")
TAR_READS = {"tar": [], "tar.gz": ["-z"], "tar.zst": ["--zstd"]}


def make_run(root: Path, name: str = "run0042", big: int = 0, odd_name: bool = False) -> Path:
    """A small sequencer-like run folder, finished (its sentinel is there)."""
    run = root / name
    (run / "Data" / "Intensities").mkdir(parents=True)
    (run / "Data" / "Intensities" / "s_1.fastq").write_bytes(b"@r1\nACGT\n+\nIIII\n" * 5000)
    (run / "RunInfo.xml").write_text("<RunInfo/>\n")
    (run / "empty").write_bytes(b"")
    (run / "Data" / "latest").symlink_to("Intensities/s_1.fastq")
    if odd_name:
        (run / "caf\xe9 \udcff.txt").write_bytes(b"a name that is not UTF-8\n")
    if big:
        (run / "big.bin").write_bytes(os.urandom(big))
    (run / "CopyComplete.txt").write_text("")
    return run


def certificate(archive: Path | str) -> dict:
    return json.loads(Path(f"{archive}.softcopy/certificate.json").read_text())


def tar_names(archive: Path) -> list[str]:
    with tarfile.open(archive) as tar:
        return tar.getnames()


def pack(run: Path, archive: Path | str, *args: object) -> subprocess.CompletedProcess:
    return run_softcopy("copy", "--pack", *args, *RUN_OPTIONS, run, archive)


@pytest.mark.parametrize("fmt", ["tar", "tar.gz", "tar.zst"])
def test_each_format_is_read_by_the_real_tools_and_verified(tmp_path, fmt):
    run = make_run(tmp_path / "src", odd_name=True)
    archive = tmp_path / "dst" / f"run0042.{fmt}"
    done = pack(run, archive, fmt)
    assert done.returncode == 0, done.stderr
    assert not [p for p in archive.parent.iterdir() if p.name.endswith(".tmp")]

    cert = certificate(archive)
    assert cert["verified"] == "members" and cert["safe_to_free"] is True
    assert cert["end"]["rule"] == "sentinel"
    assert (
        cert["packed"]["format"] == fmt
        and cert["packed"]["archive_bytes"] == archive.stat().st_size
    )

    listed = subprocess.run(
        ["tar", "--quoting-style=literal", *TAR_READS[fmt], "-tvf", archive],
        capture_output=True,
        check=True,
    ).stdout
    assert b"run0042/Data/latest -> Intensities/s_1.fastq" in listed
    assert "run0042/café \udcff.txt".encode("utf-8", "surrogateescape") in listed
    if fmt == "tar.gz":
        subprocess.run(["gzip", "-t", archive], check=True)
    if fmt == "tar.zst":
        subprocess.run(["zstd", "-q", "-t", archive], check=True)

    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", *TAR_READS[fmt], "-xf", archive, "-C", out], check=True)
    # b3sum cannot check a name that is not UTF-8 (it has no escape for one): the rest.
    lines = Path(f"{archive}.softcopy/manifest.b3").read_bytes().splitlines(keepends=True)
    manifest = tmp_path / "checkable.b3"
    manifest.write_bytes(b"".join(line for line in lines if not line.startswith(b"\\")))
    assert len(lines) == 5 and manifest.read_bytes().count(b"\n") == 4
    subprocess.run(["b3sum", "--check", manifest], cwd=out, check=True, capture_output=True)
    subprocess.run(
        ["b3sum", "--check", f"{archive.name}.softcopy/archive.b3"],
        cwd=archive.parent,
        check=True,
        capture_output=True,
    )
    assert (out / "run0042" / "Data" / "latest").readlink() == Path("Intensities/s_1.fastq")
    assert (out / "run0042" / "caf\xe9 \udcff.txt").read_bytes() == b"a name that is not UTF-8\n"

    checked = run_softcopy("verify", run, archive)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "every member" in checked.stdout

    again = pack(run, archive, fmt)  # a rerun finds it certified: nothing is written
    assert again.returncode == 0, again.stderr
    assert "already there" in again.stdout + again.stderr


@pytest.mark.parametrize("fmt", ["tar", "tar.zst"])
def test_a_byte_changed_in_the_middle_is_found(tmp_path, fmt):
    run = make_run(tmp_path / "src")
    archive = tmp_path / f"run0042.{fmt}"
    assert pack(run, archive, fmt).returncode == 0
    with open(archive, "r+b") as f:
        f.seek(archive.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x20]))
    checked = run_softcopy("verify", archive)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "archive differs" in checked.stdout
    assert "Traceback" not in checked.stderr


def test_a_source_that_changed_since_packing_is_found(tmp_path):
    run = make_run(tmp_path / "src")
    archive = tmp_path / "run0042.tar"
    assert pack(run, archive, "tar").returncode == 0
    (run / "RunInfo.xml").write_text("<RunInfo changed='yes'/>\n")
    checked = run_softcopy("verify", run, archive)
    assert checked.returncode == 1
    assert "source and manifest differ" in checked.stdout and "RunInfo.xml" in checked.stdout


def test_age_encrypted_archive(tmp_path):
    if shutil.which("age") is None:
        pytest.skip("age is not installed")
    identity = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", identity], check=True, capture_output=True)
    recipient = next(
        line.split(": ")[1] for line in identity.read_text().splitlines() if "public key" in line
    )
    run = make_run(tmp_path / "src")
    given = tmp_path / "dst" / "run0042.tar.zst"
    done = pack(run, given, "tar.zst", "--encrypt", f"age:{recipient}")
    assert done.returncode == 0, done.stderr
    archive = Path(f"{given}.age")
    assert archive.exists() and not given.exists()
    assert b"ACGT" not in archive.read_bytes()

    # Without the key here: the stored bytes are verified, and the source is not "safe to
    # free" (a wrong recipient would have made the archive unreadable to everyone).
    cert = certificate(archive)
    assert cert["verified"] == "ciphertext" and cert["safe_to_free"] is False
    assert "while packing only" in cert["plaintext_verified"]
    assert cert["packed"]["encryption"] == {"tool": "age", "recipients": [f"{recipient}"]}

    plain = subprocess.run(["age", "-d", "-i", identity, archive], capture_output=True, check=True)
    listed = subprocess.run(
        ["tar", "--zstd", "-tf", "-"], input=plain.stdout, capture_output=True, check=True
    )
    assert b"run0042/RunInfo.xml" in listed.stdout

    checked = run_softcopy("verify", "--identity", identity, archive)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "every member" in checked.stdout

    other = tmp_path / "other.txt"
    subprocess.run(["age-keygen", "-o", other], check=True, capture_output=True)
    wrong = run_softcopy("verify", "--identity", other, archive)
    assert wrong.returncode != 0
    assert str(archive) in wrong.stderr and "wrong key" in wrong.stderr
    assert "Traceback" not in wrong.stderr

    # With the identity at hand while packing, the archive is decrypted back and the
    # certificate can say "safe to free".
    keyed = tmp_path / "keyed" / "run0042.tar.zst"
    args = ("--encrypt", f"age:{recipient}", "--identity", identity)
    assert pack(run, keyed, "tar.zst", *args).returncode == 0
    assert certificate(f"{keyed}.age")["verified"] == "members"
    assert certificate(f"{keyed}.age")["safe_to_free"] is True

    restored = tmp_path / "restored"
    unpacked = run_softcopy("unpack", "--identity", identity, f"{keyed}.age", restored)
    assert unpacked.returncode == 0, unpacked.stderr
    assert (restored / "run0042" / "RunInfo.xml").read_text() == "<RunInfo/>\n"


@pytest.fixture
def gnupg_home(tmp_path, monkeypatch) -> str:
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("GNUPGHOME", str(home))
    subprocess.run(
        ["gpg", "--batch", "--passphrase", "", "--quick-gen-key", "archive@example.org",
         "ed25519", "cert", "never"],
        check=True, capture_output=True,
    )  # fmt: skip
    fingerprint = next(
        line.split(":")[9]
        for line in subprocess.run(
            ["gpg", "--batch", "--with-colons", "--list-keys", "archive@example.org"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.splitlines()
        if line.startswith("fpr:")
    )
    subprocess.run(
        ["gpg", "--batch", "--passphrase", "", "--quick-add-key", fingerprint, "cv25519",
         "encr", "never"],
        check=True, capture_output=True,
    )  # fmt: skip
    yield fingerprint
    subprocess.run(["gpgconf", "--kill", "all"], capture_output=True)


def test_gpg_encrypted_archive(tmp_path, gnupg_home):
    run = make_run(tmp_path / "src")
    given = tmp_path / "run0042.tar.gz"
    done = pack(run, given, "tar.gz", "--encrypt", f"gpg:{gnupg_home}")
    assert done.returncode == 0, done.stderr
    archive = Path(f"{given}.gpg")
    cert = certificate(archive)
    # The secret key is in this keyring: the archive was decrypted back and compared.
    assert cert["verified"] == "members" and cert["safe_to_free"] is True
    plain = subprocess.run(["gpg", "--batch", "-d", archive], capture_output=True, check=True)
    listed = subprocess.run(
        ["tar", "-tzf", "-"], input=plain.stdout, capture_output=True, check=True
    )
    assert b"run0042/Data/Intensities/s_1.fastq" in listed.stdout
    assert run_softcopy("verify", archive).returncode == 0


def test_kill_mid_pack_leaves_nothing_under_the_final_name(tmp_path):
    run = make_run(tmp_path / "src", big=24 << 20)
    archive = tmp_path / "dst" / "run0042.tar.zst"
    proc = start_softcopy(
        "copy", "--pack", "tar.zst", *RUN_OPTIONS, "--max-rate", "4M", "--no-backoff", run, archive
    )

    def temporary() -> list[Path]:
        return [p for p in archive.parent.glob(".run0042.tar.zst.*.tmp") if p.stat().st_size]

    wait_for(temporary, what="the archive's temporary file to grow", proc=proc)
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    assert not archive.exists()
    assert not Path(f"{archive}.softcopy/certificate.json").exists()

    done = pack(run, archive, "tar.zst")
    assert done.returncode == 0, done.stderr
    assert not list(archive.parent.glob(".*.tmp"))  # the killed run's temporary is gone
    assert run_softcopy("verify", run, archive).returncode == 0


def test_pack_to_object_storage(tmp_path, bucket):
    run = make_run(tmp_path / "src", big=20 << 20)  # more than one part
    location = f"s3://{bucket}/archives/run0042.tar.zst"
    done = pack(run, location, "tar.zst")
    assert done.returncode == 0, done.stderr
    client = s3server.client()
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert "archives/run0042.tar.zst" in keys
    assert "archives/run0042.tar.zst.softcopy/certificate.json" in keys
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")
    body = client.get_object(Bucket=bucket, Key="archives/run0042.tar.zst")["Body"].read()
    listed = subprocess.run(["tar", "--zstd", "-tf", "-"], input=body, capture_output=True)
    assert b"run0042/big.bin" in listed.stdout

    assert run_softcopy("verify", run, location).returncode == 0
    restored = tmp_path / "restored"
    unpacked = run_softcopy("unpack", location, restored)
    assert unpacked.returncode == 0, unpacked.stderr
    assert (restored / "run0042" / "big.bin").read_bytes() == (run / "big.bin").read_bytes()

    # A replaced object is found.
    client.put_object(Bucket=bucket, Key="archives/run0042.tar.zst", Body=body[:-100])
    checked = run_softcopy("verify", location)
    assert checked.returncode == 1 and "archive differs" in checked.stdout


def test_unpack_restores_and_refuses_a_hostile_archive(tmp_path):
    run = make_run(tmp_path / "src")
    archive = tmp_path / "run0042.tar"
    assert pack(run, archive, "tar").returncode == 0
    restored = tmp_path / "restored"
    done = run_softcopy("unpack", archive, restored)
    assert done.returncode == 0, done.stderr
    manifest = Path(f"{archive}.softcopy/manifest.b3")
    subprocess.run(["b3sum", "--check", manifest], cwd=restored, check=True, capture_output=True)

    again = run_softcopy("unpack", archive, restored)  # nothing existing is overwritten
    assert again.returncode != 0 and "Traceback" not in again.stderr

    # A hostile archive made by hand, given records that vouch for it.
    from softcopy.archives.check import format_members
    from softcopy.archives.members import Member

    hostile = tmp_path / "evil.tar"
    with tarfile.open(hostile, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("run0042/../../escaped.txt")
        info.size = 4
        tar.addfile(info, __import__("io").BytesIO(b"evil"))
    records = Path(f"{hostile}.softcopy")
    records.mkdir()
    members = [Member("run0042/../../escaped.txt", "file", 4, 0o644, 0)]
    (records / "members.jsonl").write_bytes(format_members(members))
    import blake3

    data = hostile.read_bytes()
    packed = {"format": "tar", "archive_bytes": len(data), "encryption": None,
              "archive_blake3": blake3.blake3(data).hexdigest()}  # fmt: skip
    (records / "certificate.json").write_text(json.dumps({"packed": packed}))
    into = tmp_path / "into" / "deep"
    refused = run_softcopy("unpack", hostile, into)
    assert refused.returncode != 0
    assert "escaped.txt" in refused.stderr and "Traceback" not in refused.stderr
    assert (
        not (tmp_path / "escaped.txt").exists() and not (tmp_path / "into" / "escaped.txt").exists()
    )


@pytest.mark.parametrize(
    "args, says",
    [
        (("--pack", "zip"), "zip"),
        (("--pack", "tar", "--encrypt", "age:age1notakey"), "age1notakey"),
        (("--pack", "tar", "--encrypt", "rot13:x"), "rot13"),
        (("--pack", "tar", "--encrypt", "gpg:NO-SUCH-KEY-0000"), "NO-SUCH-KEY-0000"),
        (("--encrypt", "age:age1x"), "--pack"),
    ],
)
def test_bad_input_is_one_paragraph_and_exit_2(tmp_path, args, says, monkeypatch):
    monkeypatch.setenv("GNUPGHOME", str(tmp_path / "empty-gnupg"))
    (tmp_path / "empty-gnupg").mkdir(mode=0o700)
    run = make_run(tmp_path / "src")
    archive = tmp_path / "run0042.tar"
    done = run_softcopy("copy", *args, *RUN_OPTIONS, run, archive)
    assert done.returncode == 2, done.stdout + done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr
    assert not archive.exists() and not list(tmp_path.glob(".*.tmp"))


def test_include_and_exclude_choose_the_members_and_verify_honours_them(tmp_path):
    run = make_run(tmp_path / "src")
    (run / "Thumbnail_Images" / "L001").mkdir(parents=True)
    (run / "Thumbnail_Images" / "L001" / "s_1_a.jpg").write_bytes(b"\xff\xd8" * 1000)
    archive = tmp_path / "run0042.tar"
    done = pack(run, archive, "tar", "--exclude", "Thumbnail_Images*", "--exclude", "empty")
    assert done.returncode == 0, done.stderr
    names = set(tar_names(archive))
    assert "run0042/CopyComplete.txt" in names and "run0042/Data/latest" in names
    assert not {n for n in names if "Thumbnail" in n or n.endswith("/empty")}, names
    cert = certificate(archive)
    assert cert["exclude"] == ["Thumbnail_Images*", "empty"]
    assert run_softcopy("verify", run, archive).returncode == 0  # the excluded are not "extra"
    (run / "Thumbnail_Images" / "L001" / "s_1_b.jpg").write_bytes(b"late")
    assert run_softcopy("verify", run, archive).returncode == 0
    (run / "RunInfo.xml").write_text("<RunInfo changed='yes'/>\n")
    assert run_softcopy("verify", run, archive).returncode == 1

    # --include: only what it names, the folders that lead there, and the sentinel.
    only = tmp_path / "only.tar"
    done = pack(run, only, "tar", "--include", "Data/Intensities/*")
    assert done.returncode == 0, done.stderr
    assert sorted(tar_names(only)) == [
        "run0042", "run0042/CopyComplete.txt", "run0042/Data", "run0042/Data/Intensities",
        "run0042/Data/Intensities/s_1.fastq",
    ]  # fmt: skip


def test_a_dry_run_lists_each_member_and_writes_nothing(tmp_path):
    run = make_run(tmp_path / "src")
    archive = tmp_path / "out" / "run0042.tar.zst"
    planned = run_softcopy("copy", "-n", "-v", "--pack", "tar.zst", *RUN_OPTIONS, run, archive)
    assert planned.returncode == 0, planned.stderr
    assert "pack" in planned.stdout and "Data/Intensities/s_1.fastq" in planned.stdout
    assert "to copy:     4 files" in planned.stdout, planned.stdout
    assert not archive.parent.exists()
    assert pack(run, archive, "tar.zst").returncode == 0
    again = run_softcopy("copy", "-n", "--pack", "tar.zst", *RUN_OPTIONS, run, archive)
    assert again.returncode == 0 and "trusted:     4 files" in again.stdout, again.stdout
    other = tmp_path / "other.tar"
    other.write_bytes(b"someone else's")
    refused = run_softcopy("copy", "-n", "--pack", "tar", *RUN_OPTIONS, run, other)
    assert refused.returncode == 2 and "never replaces" in refused.stderr


def test_an_existing_destination_is_never_replaced(tmp_path):
    run = make_run(tmp_path / "src")
    archive = tmp_path / "run0042.tar"
    archive.write_bytes(b"someone else's file")
    done = pack(run, archive, "tar")
    assert done.returncode == 2 and "exists" in done.stderr and str(archive) in done.stderr
    assert archive.read_bytes() == b"someone else's file"


def test_a_missing_tool_is_named(tmp_path):
    run = make_run(tmp_path / "src")
    bin_dir = tmp_path / "bin"  # PATH with python's folder but not age's
    bin_dir.mkdir()
    env = {**os.environ, "PATH": str(bin_dir)}
    done = run_softcopy(
        "copy", "--pack", "tar", "--encrypt", "age:age1x", *RUN_OPTIONS, run, tmp_path / "a.tar",
        env=env,
    )  # fmt: skip
    assert done.returncode == 2 and "age" in done.stderr and "Debian package" in done.stderr


def test_watch_packs_each_run_once(tmp_path):
    root, dest = tmp_path / "root", tmp_path / "dest"
    root.mkdir()
    for name in ("runA", "runB"):
        make_run(root, name)
    args = ("watch", root, dest, "--once", "--pack", "tar.zst", "--sentinel",
            "CopyComplete.txt", "--sentinel-min-age", "0")  # fmt: skip
    done = run_softcopy(*args)
    assert done.returncode == 0, done.stderr
    for name in ("runA", "runB"):
        archive = dest / f"{name}.tar.zst"
        assert certificate(archive)["verified"] == "members"
        assert run_softcopy("verify", root / name, archive).returncode == 0
    assert sorted(p.name for p in dest.iterdir()) == [
        "runA.tar.zst", "runA.tar.zst.softcopy", "runB.tar.zst", "runB.tar.zst.softcopy"
    ]  # fmt: skip
    again = run_softcopy(*args)  # a restarted watcher packs nothing again
    assert again.returncode == 0, again.stderr
    assert "packing it" not in again.stderr

    # Done runs are released (0 s ago counts): each source goes, its archive stays.
    freed = run_softcopy(*args, "--release-after", "0s")
    assert freed.returncode == 0, freed.stderr
    assert not (root / "runA").exists() and not (root / "runB").exists(), freed.stderr
    for name in ("runA", "runB"):
        assert run_softcopy("verify", dest / f"{name}.tar.zst").returncode == 0
        assert json.loads(Path(f"{dest}/{name}.tar.zst.softcopy/released.json").read_text())


def test_a_rerun_never_certifies_an_archive_that_no_longer_matches(tmp_path):
    run = make_run(tmp_path / "src")
    archive = tmp_path / "run0042.tar"
    assert pack(run, archive, "tar").returncode == 0
    (run / "RunInfo.xml").write_text("<RunInfo again='yes'/>\n")  # the run changed since
    changed = pack(run, archive, "tar")
    assert changed.returncode == 1 and "changed since it was packed" in changed.stderr
    assert "RunInfo.xml" in changed.stderr

    other = make_run(tmp_path / "src2")
    second = tmp_path / "second.tar"
    assert pack(other, second, "tar").returncode == 0
    with open(second, "ab") as f:  # the archive itself changed since it was verified
        f.write(bytes(512))
    grown = pack(other, second, "tar")
    assert grown.returncode == 1 and "its certificate says" in grown.stderr
