"""`softcopy copy --compress gzip|zstd SRC s3://BUCKET/PREFIX`, on the loopback S3 server.

Every object is downloaded and read with the real gzip and zstd; objects are replaced,
deleted and added behind softcopy's back for verify to find; a real copy is killed with
SIGKILL in the middle of a multipart upload and run again.
"""

# ruff: noqa: F811 (the fixtures imported from s3server are parameters by the same names)
from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import s3server
from conftest import finish, run_softcopy, start_softcopy, wait_for
from s3server import bucket, s3_server  # noqa: F401  (fixtures)
from test_compress_copy import RUN_OPTIONS, b3, compress, make_run


def objects(name: str, prefix: str) -> dict[str, dict]:
    pages = s3server.client().get_paginator("list_objects_v2").paginate(Bucket=name, Prefix=prefix)
    return {o["Key"][len(prefix) :]: o for page in pages for o in page.get("Contents", ())}


def body(name: str, key: str) -> bytes:
    return s3server.client().get_object(Bucket=name, Key=key)["Body"].read()


def certificate(name: str, prefix: str) -> dict:
    return json.loads(body(name, f"{prefix}.softcopy/certificate.json"))


@pytest.mark.parametrize("method, tool", [("gzip", ["gzip", "-dc"]), ("zstd", ["zstd", "-dc"])])
def test_each_file_is_an_object_the_real_tools_decompress(tmp_path, bucket, method, tool):
    run = make_run(tmp_path / "src")
    location = f"s3://{bucket}/runs/run0042"
    done = compress(run, location, method)
    assert done.returncode == 0, done.stderr
    suffix = {"gzip": ".gz", "zstd": ".zst"}[method]
    held = objects(bucket, "runs/run0042/")
    assert sorted(held) == sorted(
        [f"Data/s_{lane}.fastq{suffix}" for lane in (1, 2, 3)]
        + ["RunInfo.xml", "CopyComplete.txt"]  # not in --compress-include; the sentinel
    )
    for lane in (1, 2, 3):
        stored = body(bucket, f"runs/run0042/Data/s_{lane}.fastq{suffix}")
        original = (run / "Data" / f"s_{lane}.fastq").read_bytes()
        plain = subprocess.run(tool, input=stored, capture_output=True, check=True).stdout
        assert plain == original and len(stored) < len(original) / 2
    head = s3server.client().head_object(Bucket=bucket, Key=f"runs/run0042/Data/s_1.fastq{suffix}")
    st = (run / "Data" / "s_1.fastq").stat()
    assert head["Metadata"]["softcopy-mtime-ns"] == str(st.st_mtime_ns)
    assert head["Metadata"]["softcopy-mode"] == "640"

    # The link is left out (a bucket has none), and said so.
    assert "latest" in done.stderr and "symbolic link" in done.stderr
    cert = certificate(bucket, "runs/run0042")
    assert cert["verified"] == "decompressed" and cert["compressed"]["method"] == method
    assert cert["skipped"] == ["latest"] and cert["files"] == 5
    originals = body(bucket, "runs/run0042.softcopy/originals.b3").decode()
    assert f"{b3((run / 'RunInfo.xml').read_bytes())}  RunInfo.xml" in originals

    for args in ((location,), (run, location)):
        checked = run_softcopy("verify", *args)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "downloaded again" in checked.stdout


def test_verify_finds_a_replaced_a_deleted_and_an_extra_object(tmp_path, bucket):
    run = make_run(tmp_path / "src", fastq_kb=8)
    location = f"s3://{bucket}/run0042"
    assert compress(run, location).returncode == 0
    client = s3server.client()
    key = "run0042/Data/s_2.fastq.gz"
    stored = body(bucket, key)
    # Still a valid gzip stream, of other bytes: only the digests can tell.
    other = subprocess.run(["gzip", "-c"], input=b"@r0\nACGT\n+\nIIII\n", capture_output=True)
    client.put_object(Bucket=bucket, Key=key, Body=other.stdout)
    client.delete_object(Bucket=bucket, Key="run0042/RunInfo.xml")
    client.put_object(Bucket=bucket, Key="run0042/Data/notes.txt", Body=b"someone's")
    checked = run_softcopy("verify", location, "--json")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    *records, summary = [json.loads(line) for line in checked.stdout.splitlines()]
    findings = {(r["kind"], r["key"]) for r in records}
    assert summary["findings"] == 3
    assert findings == {
        ("content", "Data/s_2.fastq.gz"),
        ("missing", "RunInfo.xml"),
        ("extra", "Data/notes.txt"),
    }
    # Put back as it was, it verifies again: the records, not the store, are the truth.
    client.put_object(Bucket=bucket, Key=key, Body=stored)
    client.put_object(Bucket=bucket, Key="run0042/RunInfo.xml", Body=b"<RunInfo/>\n")
    client.delete_object(Bucket=bucket, Key="run0042/Data/notes.txt")
    assert run_softcopy("verify", run, location).returncode == 0


def test_a_rerun_uploads_nothing_and_a_changed_file_is_compressed_again(tmp_path, bucket):
    run = make_run(tmp_path / "src", fastq_kb=8)
    location = f"s3://{bucket}/run0042"
    assert compress(run, location).returncode == 0
    before = objects(bucket, "run0042/")
    again = compress(run, location, "gzip", "--json")
    assert again.returncode == 0, again.stderr
    summary = [json.loads(line) for line in again.stdout.splitlines() if '"summary"' in line][-1]
    assert summary["files_copied"] == 0 and summary["files_already_there"] == 5
    assert objects(bucket, "run0042/") == before  # same ETags, same upload times

    plain = run_softcopy("copy", *RUN_OPTIONS, run, location)  # would delete every .gz
    assert plain.returncode == 2 and "compressed copy" in plain.stderr, plain.stderr
    assert objects(bucket, "run0042/") == before

    (run / "Data" / "s_3.fastq").write_text("@r0\nACGT\n+\nIIII\n")
    third = compress(run, location)
    assert third.returncode == 0, third.stderr
    after = objects(bucket, "run0042/")
    changed = {k for k in after if after[k]["ETag"] != before[k]["ETag"]}
    assert changed == {"Data/s_3.fastq.gz"}
    assert run_softcopy("verify", run, location).returncode == 0


def test_a_kill_mid_upload_leaves_nothing_under_the_key_and_the_rerun_finishes(tmp_path, bucket):
    run = make_run(tmp_path / "src", fastq_kb=4)
    (run / "Data" / "big.bin").write_bytes(os.urandom(24 << 20))  # two parts, incompressible
    location = f"s3://{bucket}/run0042"
    client = s3server.client()
    proc = start_softcopy(
        "copy", "--compress", "gzip", *RUN_OPTIONS, "--max-rate", "8M", "--nprocs", "1",
        run, location,
    )  # fmt: skip
    wait_for(
        lambda: client.list_multipart_uploads(Bucket=bucket).get("Uploads"),
        what="the big file's upload to start",
        proc=proc,
    )
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    assert "Data/big.bin.gz" not in objects(bucket, "run0042/")
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads")  # left by the kill

    done = compress(run, location, "gzip", "--compress-include", "*.bin")
    assert done.returncode == 0, done.stderr
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")
    stored = body(bucket, "run0042/Data/big.bin.gz")
    plain = subprocess.run(["gzip", "-dc"], input=stored, capture_output=True, check=True).stdout
    assert plain == (run / "Data" / "big.bin").read_bytes()
    assert run_softcopy("verify", run, location).returncode == 0


def test_a_prefix_holding_other_objects_is_refused_untouched(tmp_path, bucket):
    run = make_run(tmp_path / "src", fastq_kb=4)
    client = s3server.client()
    client.put_object(Bucket=bucket, Key="run0042/thesis.pdf", Body=b"someone else's")
    done = compress(run, f"s3://{bucket}/run0042")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "holds objects" in done.stderr and "Traceback" not in done.stderr
    assert set(objects(bucket, "run0042/")) == {"thesis.pdf"}
    assert not objects(bucket, "run0042.softcopy/target.json")


def test_watch_compresses_each_run_into_its_prefix(tmp_path, bucket):
    root = tmp_path / "root"
    root.mkdir()
    for name in ("runA", "runB"):
        make_run(root, name, fastq_kb=4)
    done = run_softcopy(
        "watch", root, f"s3://{bucket}/runs", "--once", "--compress", "zstd", "--sentinel",
        "CopyComplete.txt", "--sentinel-min-age", "0", "--state-dir", tmp_path / "state",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("runA", "runB"):
        held = objects(bucket, f"runs/{name}/")
        assert "Data/s_1.fastq.zst" in held and "CopyComplete.txt" in held
        checked = run_softcopy("verify", root / name, f"s3://{bucket}/runs/{name}")
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_restored_bytes_match_the_originals_manifest(tmp_path, bucket):
    """What a user does to get a run back: download, decompress, `b3sum --check`."""
    run = make_run(tmp_path / "src", fastq_kb=4)
    location = f"s3://{bucket}/run0042"
    assert compress(run, location).returncode == 0
    restored = tmp_path / "restored"
    for key in objects(bucket, "run0042/"):
        target = restored / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body(bucket, f"run0042/{key}"))
    subprocess.run(["gzip", "-d", "-r", restored], check=True)
    originals = tmp_path / "originals.b3"
    originals.write_bytes(body(bucket, "run0042.softcopy/originals.b3"))
    checked = subprocess.run(
        ["b3sum", "--check", originals], cwd=restored, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert (
        Path(restored / "Data" / "s_1.fastq").read_bytes()
        == (run / "Data" / "s_1.fastq").read_bytes()
    )
