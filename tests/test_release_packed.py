"""`softcopy release` of a packed archive and of a compressed copy: freed only when the
archive or every compressed file, re-read from the disk, is what was verified, and the
source's content (compared always: their journals hold no per-file source versions) is
what was packed or compressed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import run_softcopy
from test_compress_copy import compress
from test_compress_copy import make_run as make_fastq_run
from test_pack_copy import make_run, pack


def refused(done: subprocess.CompletedProcess, says: str) -> None:
    assert done.returncode == 1, done.stdout + done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_packed_runs_source_is_freed_only_while_archive_and_source_are_as_packed(tmp_path):
    run = make_run(tmp_path / "src")
    archive = tmp_path / "dst" / "run0042.tar.zst"
    assert pack(run, archive, "tar.zst").returncode == 0

    (run / "RunInfo.xml").write_text("<RunInfo late='yes'/>\n")  # same size? no matter
    refused(run_softcopy("release", archive), "differ in content from the manifest")
    (run / "RunInfo.xml").write_text("<RunInfo/>\n")  # as packed again: content decides

    (run / "Data" / "latest").unlink()
    (run / "Data" / "latest").symlink_to("elsewhere")
    refused(run_softcopy("release", archive), "symbolic links differ")
    (run / "Data" / "latest").unlink()
    (run / "Data" / "latest").symlink_to("Intensities/s_1.fastq")

    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    original = archive.read_bytes()
    archive.write_bytes(bytes(data))
    refused(run_softcopy("release", archive), "does not match its records")
    archive.write_bytes(original)

    dry = run_softcopy("release", "--dry-run", archive)
    assert dry.returncode == 0 and "would release" in dry.stdout, dry.stdout + dry.stderr
    assert run.is_dir()
    done = run_softcopy("release", "--json", archive)
    assert done.returncode == 0, done.stdout + done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["released"] and outcome["versions_checked_by"] == "content"
    assert not run.exists()
    assert json.loads(Path(f"{archive}.softcopy/released.json").read_text())["how"] == "deleted"
    assert run_softcopy("verify", archive).returncode == 0  # the archive stays, whole


@pytest.mark.parametrize("key_at_hand", [True, False])
def test_an_encrypted_archive_is_freed_only_when_its_members_were_verified(tmp_path, key_at_hand):
    identity = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", identity], check=True, capture_output=True)
    recipient = next(
        line.split(": ", 1)[1]
        for line in identity.read_text().splitlines()
        if line.startswith("# public key: ")
    )
    run = make_run(tmp_path / "src")
    archive = tmp_path / "run0042.tar.zst.age"
    args = ["--encrypt", f"age:{recipient}"] + (["--identity", identity] if key_at_hand else [])
    assert pack(run, archive, "tar.zst", *args).returncode == 0
    done = run_softcopy("release", archive)
    if key_at_hand:
        assert done.returncode == 0, done.stdout + done.stderr
        assert not run.exists()
    else:
        refused(done, "verified while packing only")
        assert run.is_dir()


def test_a_compressed_runs_source_is_freed_and_moved_with_to(tmp_path):
    run = make_fastq_run(tmp_path / "src", fastq_kb=8)
    dest = tmp_path / "dst" / "run0042"
    assert compress(run, dest).returncode == 0

    stored = dest / "Data" / "s_2.fastq.gz"
    good = stored.read_bytes()
    other = subprocess.run(["gzip", "-c"], input=b"@r0\nACGT\n+\nIIII\n", capture_output=True)
    stored.write_bytes(other.stdout)  # a valid gzip of other bytes: only digests can tell
    refused(run_softcopy("release", dest), "does not match its records")
    stored.write_bytes(good)
    (run / "Data" / "s_3.fastq").write_text("@r0\nACGT\n+\nIIII\n")
    refused(run_softcopy("release", dest), "differ in content from the manifest")
    (run / "Data" / "s_3.fastq").unlink()
    refused(run_softcopy("release", dest), "lacks files the copy has")
    assert compress(run, dest).returncode == 0  # the copy follows the source again

    kept = tmp_path / "released"
    kept.mkdir()
    done = run_softcopy("release", "--to", kept, dest)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not run.exists() and (kept / "run0042" / "Data" / "s_1.fastq").is_file()
    assert run_softcopy("verify", dest).returncode == 0


def test_a_guessed_end_is_never_freed(tmp_path):
    run = make_fastq_run(tmp_path / "src", fastq_kb=4)
    (run / "CopyComplete.txt").unlink()
    dest = tmp_path / "run0042.tar"
    done = run_softcopy(
        "copy", "--pack", "tar", "--kind", "directory", "--idle-timeout", "0.5", run, dest
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    refused(run_softcopy("release", dest), "release needs a proven end")
    assert run.is_dir()
