"""`softcopy copy SRC s3://BUCKET/PREFIX`, end to end, against moto's server on loopback.

Real processes (the command line, its copiers), real HTTP to a real S3 server, real
tensorstore writing the source while it is copied, SIGKILL mid multipart upload.
"""

# ruff: noqa: F811 (the fixtures imported from s3server are parameters by the same names)

from __future__ import annotations

import json
import os
import re
import signal
import socket
from dataclasses import replace
from pathlib import Path

import pytest
import s3server
from conftest import finish, run_softcopy, start_simulator, start_softcopy, tree_files, wait_for
from s3server import AuthServer, auth_server, bucket, s3_server  # noqa: F401 (fixtures)
from test_acquisition import SMALL, rewrite_delete_grow, sim_args, simulate

MiB = 1 << 20


def objects(bucket: str, prefix: str) -> dict[str, bytes]:
    """Every object under `prefix/`, by the source key it stands for, with its bytes."""
    from softcopy.sinks.s3 import unescape

    client = s3server.client()
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix + "/"
    ):
        for entry in page.get("Contents", ()):
            try:
                body = client.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
            except client.exceptions.NoSuchKey:
                continue  # deleted since the listing: a live copy
            found[unescape(entry["Key"][len(prefix) + 1 :])] = body
    return found


def files_of(root: Path) -> dict[str, bytes]:
    return {k: (root / k).read_bytes() for k in tree_files(root) if not (root / k).is_symlink()}


def record(bucket: str, prefix: str, name: str) -> dict:
    body = s3server.client().get_object(Bucket=bucket, Key=f"{prefix}.softcopy/{name}")["Body"]
    return json.loads(body.read())


def record_names(bucket: str, prefix: str) -> list[str]:
    answer = s3server.client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix}.softcopy/")
    return sorted(o["Key"].rpartition("/")[2] for o in answer.get("Contents", ()))


def test_a_finished_archive_is_copied_verified_and_certified(bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "src.zarr"
    simulate(src, SMALL)
    os.symlink("zarr.json", src / "alias")  # object storage has no links
    result = run_softcopy("copy", src, f"s3://{bucket}/runs/a.zarr")
    assert result.returncode == 0, result.stderr
    assert "alias: a symbolic link: object storage has none, so it is skipped" in result.stderr
    assert "1 link skipped" in result.stdout
    assert "Found credentials" not in result.stderr  # boto3's chatter stays out
    assert "testing" not in result.stdout + result.stderr  # nor any credential
    assert objects(bucket, "runs/a.zarr") == files_of(src)
    # The records folder's twin; the lock was released.
    assert record_names(bucket, "runs/a.zarr") == [
        "certificate.json", "files.tsv", "log.jsonl", "summary.json", "target.json"
    ]  # fmt: skip
    cert = record(bucket, "runs/a.zarr", "certificate.json")
    assert cert["destination"] == f"s3://{bucket}/runs/a.zarr"
    assert cert["verification"] == "sizes" and cert["end"]["rule"] == "marker"
    assert cert["links_skipped"] == 1
    assert cert["safe_to_free"] is False  # the copy lacks the link: freeing would lose it
    assert cert["files"] == len(files_of(src))
    target = record(bucket, "runs/a.zarr", "target.json")
    assert target["source"] == str(src) and target["destination"] == cert["destination"]


def test_a_hashed_copy_has_a_manifest_and_a_rerun_copies_nothing(
    bucket: str, tmp_path: Path
) -> None:
    from blake3 import blake3

    src = tmp_path / "src.zarr"
    simulate(src, SMALL)
    dst = f"s3://{bucket}/b.zarr"
    result = run_softcopy("copy", "--hash", src, dst)
    assert result.returncode == 0, result.stderr
    cert = record(bucket, "b.zarr", "certificate.json")
    assert cert["verification"] == "blake3" and cert["safe_to_free"] is True
    manifest = s3server.client().get_object(Bucket=bucket, Key="b.zarr.softcopy/manifest.b3")
    lines = manifest["Body"].read().decode().splitlines()
    expected = {k: blake3(v).hexdigest() for k, v in files_of(src).items()}
    assert dict(reversed(line.split("  ", 1)) for line in lines) == expected
    again = run_softcopy("copy", src, dst)
    assert again.returncode == 0, again.stderr
    assert " 0 copied" in again.stdout and f"{len(expected) - 1} already there" in again.stdout


def test_a_copy_during_acquisition_follows_rewrites_and_deletes(
    bucket: str, tmp_path: Path
) -> None:
    spec = replace(SMALL, complete=False)
    src = tmp_path / "src.zarr"
    simulate(src, spec)
    dst = f"s3://{bucket}/live.zarr"
    copier = start_softcopy("copy", src, dst, "--settle", "600", "--scan-interval", "600")
    wait_for(lambda: objects(bucket, "live.zarr") == files_of(src), what="the first copy",
             proc=copier)  # fmt: skip
    rewrite_delete_grow(src, spec)
    wait_for(lambda: objects(bucket, "live.zarr") == files_of(src),
             what="the rewrite, the delete and the new timepoint", proc=copier)  # fmt: skip
    assert copier.poll() is None, "finished without a marker"
    (src / "complete").touch()
    rc, out, err = finish(copier)
    assert rc == 0, err
    assert objects(bucket, "live.zarr") == files_of(src)
    assert re.search(r", [1-9]\d* deleted", out)  # the zeroed timepoint's chunks


def test_a_copy_started_before_the_writer_ends_identical(bucket: str, tmp_path: Path) -> None:
    """tensorstore writes timepoints, rewrites chunks in slabs and zeroes one timepoint at
    the end (its chunks deleted), while the copy runs: the objects end as the files."""
    spec = replace(SMALL, timepoints=8, interval=0.15, partial_writes=2, delete_chunk=True)
    src = tmp_path / "src.zarr"
    copier = start_softcopy("copy", src, f"s3://{bucket}/w.zarr", "--wait-for-source",
                            "--scan-interval", "2")  # fmt: skip
    writer = start_simulator(src, *sim_args(spec))
    rc_w, _, err_w = finish(writer)
    assert rc_w == 0, err_w
    rc, _, err = finish(copier)
    assert rc == 0, err
    assert objects(bucket, "w.zarr") == files_of(src)


def test_a_copy_killed_mid_multipart_upload_resumes_with_the_parts_there(
    bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "run"
    src.mkdir()
    data = os.urandom(40 * MiB)
    (src / "big.bin").write_bytes(data)
    (src / "CopyComplete.txt").touch()
    dst = f"s3://{bucket}/run"
    args = ("--kind", "directory", "--sentinel", "CopyComplete.txt", "--sentinel-min-age", "0",
            "--ready-age", "0", "--multipart-threshold", "5Mi")  # fmt: skip
    copier = start_softcopy("copy", src, dst, *args, "--max-rate", "8M", start_new_session=True)
    client = s3server.client()

    def a_part_is_up() -> bool:
        for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", ()):
            parts = client.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            if parts.get("Parts"):
                return True
        return False

    wait_for(a_part_is_up, what="the first part of big.bin", proc=copier)
    os.killpg(copier.pid, signal.SIGKILL)  # the supervisor and its copiers, mid-upload
    copier.communicate()
    assert "big.bin" not in objects(bucket, "run")  # nothing partial is ever visible
    result = run_softcopy("copy", src, dst, *args, "--json", "--file-events")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    (copied,) = [e for e in events if e["event"] == "file_copied" and e["key"] == "big.bin"]
    assert copied["resumed"] >= 16 * MiB  # at least one whole part was not sent again
    assert objects(bucket, "run")["big.bin"] == data
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


# ---- bad input ---------------------------------------------------------------------------


def one_paragraph(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stderr


def test_a_bucket_that_does_not_exist(s3_server: str, tmp_path: Path) -> None:
    src = tmp_path / "src.zarr"
    simulate(src, SMALL)
    err = one_paragraph(run_softcopy("copy", src, "s3://no-such-bucket-here/x", cwd=tmp_path))
    assert "the bucket no-such-bucket-here does not exist at " + s3_server in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.zarr"]  # no local `s3:`


@pytest.mark.parametrize(
    ("location", "problem"),
    [
        ("s3://just-a-bucket", "give both a bucket and a prefix"),
        ("s3:///prefix", "give both a bucket and a prefix"),
    ],
)
def test_a_location_without_bucket_or_prefix(tmp_path: Path, location: str, problem: str) -> None:
    src = tmp_path / "src.zarr"
    simulate(src, SMALL)
    assert problem in one_paragraph(run_softcopy("copy", src, location))


def test_an_object_store_is_never_a_source(tmp_path: Path) -> None:
    err = one_paragraph(run_softcopy("copy", "s3://bucket/x", tmp_path / "dst"))
    assert "s3://bucket/x" in err and "not back" in err


def test_wrong_credentials_are_named_and_never_printed(
    auth_server: AuthServer, tmp_path: Path
) -> None:
    src = tmp_path / "src.zarr"
    simulate(src, SMALL)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG0",
           "AWS_SECRET_ACCESS_KEY": "a-secret-nobody-may-see"}  # fmt: skip
    result = run_softcopy(
        "copy", src, f"s3://{auth_server.bucket}/x", "--s3-endpoint", auth_server.url, env=env
    )
    err = one_paragraph(result)
    assert f"s3://{auth_server.bucket}/x" in err
    assert "a-secret-nobody-may-see" not in result.stdout + err


def test_a_reader_may_not_write(auth_server: AuthServer, tmp_path: Path) -> None:
    src = tmp_path / "src.zarr"
    simulate(src, SMALL)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": auth_server.key_id,
           "AWS_SECRET_ACCESS_KEY": auth_server.secret}  # fmt: skip
    result = run_softcopy(
        "copy", src, f"s3://{auth_server.bucket}/x", "--s3-endpoint", auth_server.url, env=env
    )
    err = one_paragraph(result)
    assert "denied" in err.lower() and auth_server.bucket in err


def test_an_endpoint_that_refuses_connections_fails_naming_it(
    s3_server: str, tmp_path: Path
) -> None:
    src = tmp_path / "src.zarr"
    simulate(src, SMALL)
    url = f"http://127.0.0.1:{s3server.free_port()}"
    result = run_softcopy("copy", src, "s3://bucket/x", "--s3-endpoint", url, timeout=75)
    assert url in one_paragraph(result)


def test_a_prefix_holding_something_else_is_refused(bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "src.zarr"
    simulate(src, SMALL)
    client = s3server.client()
    client.put_object(Bucket=bucket, Key="theirs/report.pdf", Body=b"not ours")
    err = one_paragraph(run_softcopy("copy", src, f"s3://{bucket}/theirs"))
    assert "it holds objects of something else (report.pdf)" in err
    assert objects(bucket, "theirs") == {"report.pdf": b"not ours"}


def test_run_copies_a_targets_entry_to_the_store_and_status_shows_it(
    bucket: str, s3_server: str, tmp_path: Path
) -> None:
    src = tmp_path / "src.zarr"
    simulate(src, SMALL)
    dst = f"s3://{bucket}/t.zarr"
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        f"targets:\n  - source: {src}\n    destination: {dst}/\n    s3_endpoint: {s3_server}\n"
    )
    result = run_softcopy("run", targets, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert objects(bucket, "t.zarr") == files_of(src)
    assert not (tmp_path / "s3:").exists()  # a URL is not a path relative to the file
    status = run_softcopy("status", dst)
    assert status.returncode == 0, status.stderr
    assert f"done        {src} -> {dst}" in status.stdout  # one spelling: no trailing slash
    assert f"of {dst}.softcopy/log.jsonl:" in status.stdout and "run_ended" in status.stdout


def test_two_targets_in_one_prefix_are_refused(bucket: str, tmp_path: Path) -> None:
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        f"targets:\n  - source: {tmp_path}/a\n    destination: s3://{bucket}/x\n"
        f"  - source: {tmp_path}/b\n    destination: s3://{bucket}/x/y\n"
    )
    err = one_paragraph(run_softcopy("run", targets))
    assert (
        "targets[1].destination" in err
        and f"overlaps targets[0].destination s3://{bucket}/x" in err
    )


def _tiles(root: Path) -> Path:
    root.mkdir()
    for i in range(24):
        (root / f"tile{i:02d}.bin").write_bytes(os.urandom(64 << 10))
    (root / "CopyComplete.txt").touch()
    return root


# A copy slowed by --max-rate, so that an outage comes mid-copy.
_THROUGH = ("--kind", "directory", "--sentinel", "CopyComplete.txt", "--sentinel-min-age", "0",
            "--ready-age", "0", "--max-rate", "256k")  # fmt: skip


def _copy_through(outage: s3server.Outage, src: Path, dst: str):
    return start_softcopy("copy", src, dst, *_THROUGH, "--s3-endpoint", outage.url)


def _a_tile_is_up(bucket: str, prefix: str) -> bool:
    return any(k.startswith("tile") for k in objects(bucket, prefix))


def test_the_server_going_away_mid_copy_and_coming_back(
    bucket: str, s3_server: str, tmp_path: Path
) -> None:
    src = _tiles(tmp_path / "run")
    outage = s3server.Outage(s3_server)
    try:
        copier = _copy_through(outage, src, f"s3://{bucket}/away")
        wait_for(lambda: _a_tile_is_up(bucket, "away"), what="a tile uploaded", proc=copier)
        outage.cut()
        wait_for(lambda: outage.refused >= 3, what="three refused connections", proc=copier)
        outage.restore()
        rc, _, err = finish(copier)
    finally:
        outage.close()
    assert rc == 0, err
    assert objects(bucket, "away") == files_of(src)


@pytest.mark.slow
def test_a_server_gone_for_good_fails_naming_each_key(
    bucket: str, s3_server: str, tmp_path: Path
) -> None:
    src = _tiles(tmp_path / "run")
    # Two attempts per file, not five: still a retry with back-off, then given up on, in
    # half the time (each attempt is boto3's own retries, seconds of back-off). Only a
    # targets file sets max_attempts.
    targets = tmp_path / "t.yaml"
    targets.write_text(
        f"targets:\n  - source: {src}\n    destination: s3://{bucket}/gone\n    max_attempts: 2\n"
    )
    outage = s3server.Outage(s3_server)
    try:
        copier = start_softcopy("run", targets, *_THROUGH, "--s3-endpoint", outage.url)
        wait_for(lambda: _a_tile_is_up(bucket, "gone"), what="a tile uploaded", proc=copier)
        outage.cut()
        rc, _, err = finish(copier)
    finally:
        outage.close()
    assert rc != 0
    assert "Traceback" not in err
    # Retried with back-off, then given up on, each named with the endpoint it could not reach.
    failed = re.findall(r"(tile\d\d\.bin): cannot reach the endpoint (\S+) .*giving up after", err)
    assert failed and {url for _, url in failed} == {outage.url}
    assert f"(object s3://{bucket}/gone/{failed[0][0]})" in err
    assert objects(bucket, "gone").keys() < files_of(src).keys()  # no marker: not done


def test_an_endpoint_that_never_answers_fails_within_a_minute(
    s3_server: str, tmp_path: Path
) -> None:
    src = tmp_path / "src.zarr"
    simulate(src, SMALL)
    # Connections complete in the kernel's backlog; nothing ever reads or answers them.
    with socket.create_server(("127.0.0.1", 0), backlog=64) as silent:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        # "Within about a minute" (the issue): two attempts of 15 s at most, fewer with a
        # shorter --s3-timeout. The process is killed, and the test fails, if it hangs.
        result = run_softcopy(
            "copy", src, "s3://bucket/x", "--s3-endpoint", url, "--s3-timeout", "2", timeout=80
        )
    err = one_paragraph(result)
    assert f"the endpoint {url} took the connection but did not answer in time" in err


def test_follow_links_inside_uploads_the_file_a_link_leads_to(bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "run"
    (src / "data").mkdir(parents=True)
    (src / "data" / "real.bin").write_bytes(b"first version")
    (tmp_path / "secret").write_bytes(b"outside the source")
    os.symlink("data/real.bin", src / "alias")
    os.symlink(tmp_path / "secret", src / "outside")
    os.symlink("data", src / "dirlink")
    (src / "CopyComplete.txt").touch()
    dst = f"s3://{bucket}/links"
    args = ("--kind", "directory", "--sentinel", "CopyComplete.txt", "--sentinel-min-age", "0",
            "--ready-age", "0", "--follow-links-inside")  # fmt: skip
    result = run_softcopy("copy", src, dst, *args)
    assert result.returncode == 0, result.stderr
    held = objects(bucket, "links")
    assert held["alias"] == b"first version" and held["data/real.bin"] == b"first version"
    assert "outside" not in held and "dirlink" not in held  # nothing outside is ever read
    for name in ("outside", "dirlink"):
        assert f"{name}: a symbolic link that does not lead to a file inside the source" in (
            result.stderr
        )
    assert record(bucket, "links", "certificate.json")["links_skipped"] == 2
    # The file rewritten (same size): the link's object follows it.
    (src / "data" / "real.bin").write_bytes(b"later version")
    again = run_softcopy("copy", src, dst, *args)
    assert again.returncode == 0, again.stderr
    assert objects(bucket, "links")["alias"] == b"later version"
    checked = run_softcopy("verify", "--hash", "--follow-links-inside", src, dst)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_release_of_an_object_store_copy_is_refused_saying_so(tmp_path: Path) -> None:
    err = one_paragraph(run_softcopy("release", "s3://bucket/run7", cwd=tmp_path))
    assert "cannot release the source of s3://bucket/run7: freeing the source of an " in err
    assert list(tmp_path.iterdir()) == []
