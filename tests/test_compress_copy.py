"""`softcopy copy --compress gzip|zstd`: a run folder copied with chosen files compressed.

Real gzip, pigz, zcat, zstd and b3sum read what softcopy writes; a real byte is flipped
inside a .gz; a real copy is killed with SIGKILL mid-file and run again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import finish, run_softcopy, start_softcopy, wait_for

RUN_OPTIONS = ("--kind", "directory", "--sentinel", "CopyComplete.txt", "--sentinel-min-age", "0")
SUFFIX = {"gzip": ".gz", "zstd": ".zst"}


def make_run(root: Path, name: str = "run0042", fastq_kb: int = 300) -> Path:
    """A FASTQ-like finished run: a few *.fastq, RunInfo.xml, a link, the sentinel."""
    run = root / name
    (run / "Data").mkdir(parents=True)
    for lane in (1, 2, 3):
        reads = (
            os.urandom(fastq_kb * 256)
            .hex()
            .upper()
            .translate(bytes.maketrans(b"0123456789ABCDEF", b"ACGTACGTACGTACGT"))
        )
        body = "".join(
            f"@r{i}\n{reads[i * 100 : (i + 1) * 100]}\n+\n{'I' * 100}\n"
            for i in range(len(reads) // 100)
        )
        (run / "Data" / f"s_{lane}.fastq").write_text(body)
    (run / "RunInfo.xml").write_text("<RunInfo/>\n")
    (run / "Data" / "s_1.fastq").chmod(0o640)
    (run / "latest").symlink_to("Data/s_1.fastq")
    (run / "CopyComplete.txt").write_text("")
    return run


def records(dest: Path, name: str) -> Path:
    return Path(f"{dest}.softcopy") / name


def compress(run: Path, dest: Path, method: str = "gzip", *args: object):
    return run_softcopy(
        "copy", "--compress", method, "--compress-include", "*.fastq", *RUN_OPTIONS, *args,
        run, dest,
    )  # fmt: skip


def b3(data: bytes) -> str:
    return subprocess.run(["b3sum", "--no-names"], input=data, capture_output=True,
                          check=True).stdout.decode().strip()  # fmt: skip


@pytest.mark.parametrize("method", ["gzip", "zstd"])
def test_the_real_tools_read_every_compressed_file(tmp_path, method):
    run = make_run(tmp_path / "src")
    dest = tmp_path / "dst" / "run0042"
    done = compress(run, dest, method)
    assert done.returncode == 0, done.stderr
    suffix = SUFFIX[method]
    fastq = sorted((dest / "Data").iterdir())
    assert [p.name for p in fastq] == [f"s_{n}.fastq{suffix}" for n in (1, 2, 3)]
    if method == "gzip":
        subprocess.run(["gzip", "-t", *fastq], check=True)
        subprocess.run(["pigz", "-t", *fastq], check=True)
    else:
        subprocess.run(["zstd", "-q", "-t", *fastq], check=True)
    originals = {
        line.split("  ", 1)[1]: line.split("  ", 1)[0]
        for line in records(dest, "originals.b3").read_text().splitlines()
    }
    unzip = ["zcat"] if method == "gzip" else ["zstd", "-dc"]
    for path in fastq:
        plain = subprocess.run([*unzip, path], capture_output=True, check=True).stdout
        original = run / "Data" / path.name.removesuffix(suffix)
        assert plain == original.read_bytes()
        assert b3(plain) == originals[f"Data/{original.name}"]
        assert path.stat().st_mtime_ns == original.stat().st_mtime_ns
        assert path.stat().st_mode == original.stat().st_mode
    assert (dest / "RunInfo.xml").read_bytes() == (run / "RunInfo.xml").read_bytes()
    assert os.readlink(dest / "latest") == "Data/s_1.fastq"
    assert (dest / "CopyComplete.txt").exists()
    subprocess.run(["b3sum", "--check", "--quiet", records(dest, "manifest.b3")], cwd=dest,
                   check=True)  # fmt: skip
    assert not list(dest.rglob(".*.tmp"))

    cert = json.loads(records(dest, "certificate.json").read_text())
    assert cert["verified"] == "decompressed" and cert["safe_to_free"] is True
    assert cert["compressed"]["method"] == method and cert["compressed"]["files_compressed"] == 3
    assert cert["compressed"]["include"] == ["*.fastq"] and cert["compressed"]["level"] == 1

    for args in ((dest,), (run, dest)):
        checked = run_softcopy("verify", *args)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "decompressing every file" in checked.stdout


def test_verify_finds_a_flipped_byte_a_deleted_an_extra_file_and_a_changed_source(tmp_path):
    run = make_run(tmp_path / "src")
    dest = tmp_path / "run0042"
    assert compress(run, dest).returncode == 0

    gz = dest / "Data" / "s_2.fastq.gz"
    data = bytearray(gz.read_bytes())
    data[len(data) // 2] ^= 0x01
    gz.write_bytes(bytes(data))
    (dest / "RunInfo.xml").unlink()
    (dest / "Data" / "notes.txt").write_text("not from the source\n")
    (run / "Data" / "s_3.fastq").write_text("@r\nACGT\n+\nIIII\n")

    checked = run_softcopy("verify", dest)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    said = checked.stdout + checked.stderr
    assert "Data/s_2.fastq.gz" in said and "missing: RunInfo.xml" in said
    assert "extra: Data/notes.txt" in said and "s_3" not in said

    with_source = run_softcopy("verify", run, dest)
    assert with_source.returncode == 1
    assert "content differs: Data/s_3.fastq" in with_source.stdout + with_source.stderr


def test_a_kill_leaves_no_partial_file_and_the_rerun_keeps_what_was_done(tmp_path):
    run = make_run(tmp_path / "src", fastq_kb=2048)
    dest = tmp_path / "run0042"
    proc = start_softcopy(
        "copy", "--compress", "gzip", *RUN_OPTIONS, "--max-rate", "1M", "--no-backoff", run, dest
    )

    def second_file_started() -> list[Path]:
        return list((dest / "Data").glob(".s_2.fastq.gz.*.tmp")) if (dest / "Data").exists() else []

    wait_for(second_file_started, what="the second file's temporary", proc=proc)
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    assert not records(dest, "certificate.json").exists()
    # Whenever the kill landed, a name without the temporary's form is a whole file.
    finished = sorted((dest / "Data").glob("*.gz"))
    assert dest / "Data" / "s_1.fastq.gz" in finished
    subprocess.run(["gzip", "-t", *finished], check=True)
    first = dest / "Data" / "s_1.fastq.gz"  # finished and recorded before the second began
    before = (first.stat().st_ino, first.stat().st_ctime_ns)

    done = run_softcopy("copy", "--compress", "gzip", *RUN_OPTIONS, run, dest)
    assert done.returncode == 0, done.stderr
    assert (first.stat().st_ino, first.stat().st_ctime_ns) == before  # not compressed again
    assert not list(dest.rglob(".*.tmp"))  # the killed run's temporary is gone
    cert = json.loads(records(dest, "certificate.json").read_text())
    assert cert["compressed"]["files_reused"] >= 1
    assert run_softcopy("verify", run, dest).returncode == 0


def test_a_rerun_with_another_method_leaves_only_the_new_copy(tmp_path):
    run = make_run(tmp_path / "src", fastq_kb=16)
    odd = run / "Data" / "caf\xe9 \udcff.fastq"  # a name that is not UTF-8
    odd.write_bytes(b"@r\nACGT\n+\nIIII\n")
    dest = tmp_path / "run0042"
    assert compress(run, dest, "gzip").returncode == 0
    (run / "Data" / "s_3.fastq").unlink()
    done = compress(run, dest, "zstd")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (dest / "Data").iterdir()) == [
        "caf\xe9 \udcff.fastq.zst", "s_1.fastq.zst", "s_2.fastq.zst"
    ]  # fmt: skip
    assert run_softcopy("verify", run, dest).returncode == 0


@pytest.mark.parametrize(
    "dest, says",
    [
        ("unrelated", "holding other things"),  # config.py: the folder to copy into
        ("a partial copy", "its records do not say"),  # shares names: not ours either
    ],
)
def test_bad_input_is_one_paragraph_and_exit_2(tmp_path, dest, says):
    run = make_run(tmp_path / "src", fastq_kb=4)
    held = []
    if not dest.startswith("s3://"):
        held = ["RunInfo.xml", "thesis.pdf"] if dest == "a partial copy" else ["thesis.pdf"]
        dest = tmp_path / "someone"
        dest.mkdir()
        for name in held:
            (dest / name).write_text("someone else's\n")
    done = compress(run, dest)
    assert done.returncode == 2, done.stdout + done.stderr
    assert says in done.stderr and str(dest) in done.stderr and "Traceback" not in done.stderr
    if held:
        assert sorted(p.name for p in dest.iterdir()) == held


def test_exclude_leaves_files_out_and_verify_honours_it(tmp_path):
    run = make_run(tmp_path / "src", fastq_kb=4)
    (run / "Logs").mkdir()
    (run / "Logs" / "run.log").write_text("still written by the instrument\n")
    dest = tmp_path / "dst" / "run0042"
    done = compress(run, dest, "gzip", "--exclude", "Logs*", "--exclude", "RunInfo.xml")
    assert done.returncode == 0, done.stderr
    assert not (dest / "Logs").exists() and not (dest / "RunInfo.xml").exists()
    assert (dest / "Data" / "s_1.fastq.gz").is_file() and (dest / "CopyComplete.txt").is_file()
    (run / "Logs" / "run.log").write_text("and more\n")  # excluded: not the copy's business
    checked = run_softcopy("verify", run, dest)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_dry_run_says_what_each_file_becomes_and_writes_nothing(tmp_path):
    run = make_run(tmp_path / "src", fastq_kb=4)
    dest = tmp_path / "dst" / "run0042"
    planned = compress(run, dest, "gzip", "-n", "-v")
    assert planned.returncode == 0, planned.stderr
    lines = planned.stdout.splitlines()
    assert any(line.split()[0] == "compress" and "Data/s_1.fastq" in line for line in lines)
    assert any(line.split()[0] == "copy" and "RunInfo.xml" in line for line in lines)
    assert not dest.exists() and not records(dest, "target.json").exists()
    assert compress(run, dest).returncode == 0
    (run / "Data" / "s_2.fastq").write_text("@r0\nACGT\n+\nIIII\n")
    again = compress(run, dest, "gzip", "-n", "-v")
    assert again.returncode == 0, again.stderr
    assert "to copy:     1 file " in again.stdout, again.stdout
    assert "trusted:     4 files (its records say" in again.stdout, again.stdout
    assert any(
        line.split()[0] == "compress" and "s_2.fastq" in line for line in again.stdout.splitlines()
    )


def test_watch_compresses_each_run(tmp_path):
    root, dest = tmp_path / "root", tmp_path / "dest"
    root.mkdir()
    for name in ("runA", "runB"):
        make_run(root, name, fastq_kb=16)
    done = run_softcopy(
        "watch", root, dest, "--once", "--compress", "gzip", "--sentinel", "CopyComplete.txt",
        "--sentinel-min-age", "0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for name in ("runA", "runB"):
        assert (dest / name / "Data" / "s_1.fastq.gz").is_file()
        assert (dest / name / "RunInfo.xml.gz").is_file()  # no --compress-include: every file
        assert (dest / name / "CopyComplete.txt").is_file()  # the sentinel keeps its name
        assert run_softcopy("verify", root / name, dest / name).returncode == 0
