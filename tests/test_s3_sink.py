"""The object-store sink against a real S3 server on loopback (moto, real HTTP, no mocks).

What the contract suite (test_sink_contract.py) cannot say about object storage: how
names are mapped to keys, what is sent with an upload, multipart uploads resumed after a
kill -9, the lock, the records prefix, links, and the errors of a bucket that will not take
files. Requests are counted and their headers read through botocore's own event hooks on
the sink's client: the requests still go to the server.
"""

# ruff: noqa: F811 (the fixtures imported from s3server are parameters by the same names)
from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import s3server
from blake3 import blake3
from conftest import start, wait_for
from hypothesis import given
from hypothesis import strategies as st
from s3server import AuthServer, auth_server, bucket, s3_server  # noqa: F401 (fixtures)

from softcopy.errors import ConfigError, SoftcopyError
from softcopy.sinks.base import (
    CHANGED,
    COPIED,
    DELETED,
    FAILED,
    SKIPPED,
    SinkSpec,
    sink_from_spec,
    spec_for,
)
from softcopy.sources.scan import version_of

pytest.importorskip("boto3")
from softcopy.sinks import s3

MTIME_NS = 1_234_567_890_123_456_789
MiB = 1 << 20
# The S3 minimum part size, so a multipart upload of three parts is 12 MiB, not 192.
SMALL_PARTS = {"multipart_threshold": "5Mi", "part_size": "5Mi"}


def write(root: Path, key: str, data: bytes, mtime_ns: int = MTIME_NS) -> Path:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


@pytest.fixture
def src(tmp_path: Path) -> Path:
    p = tmp_path / "src"
    p.mkdir()
    return p


def make(bucket: str, prefix: str = "dst", **options: str) -> s3.ObjectStore:
    sink = sink_from_spec(spec_for(f"s3://{bucket}/{prefix}", options))
    assert isinstance(sink, s3.ObjectStore)
    return sink


@pytest.fixture
def sink(bucket: str) -> Iterator[s3.ObjectStore]:
    s = make(bucket, **SMALL_PARTS)
    s.lock()
    s.create()
    try:
        yield s
    finally:
        s.close()


def keys_in(bucket: str, prefix: str = "") -> list[str]:
    pages = (
        s3server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    )
    return sorted(o["Key"] for page in pages for o in page.get("Contents", ()))


def uploads_in(bucket: str) -> list[dict]:
    return s3server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])


class Requests:
    """The requests a sink's client sends, by operation, with their headers."""

    def __init__(self, client) -> None:
        self.sent: list[tuple[str, dict, dict]] = []
        client.meta.events.register("before-send.s3", self._record)

    def _record(self, request, **kw) -> None:
        operation = kw["event_name"].rsplit(".", 1)[1]
        self.sent.append((operation, dict(request.headers), {"url": request.url}))

    def of(self, operation: str) -> list[dict]:
        return [headers for op, headers, _ in self.sent if op == operation]

    def urls(self, operation: str) -> list[str]:
        return [extra["url"] for op, _, extra in self.sent if op == operation]


def b64_sha256(data: bytes) -> bytes:
    return base64.b64encode(hashlib.sha256(data).digest())


def header(headers: dict, name: str) -> bytes | None:
    for k, v in headers.items():
        if k.lower() == name:
            return v if isinstance(v, bytes) else v.encode()
    return None


# ---- names ------------------------------------------------------------------------------------

NAMES = {
    "space": ("a dir/with spaces.txt", "dst/a dir/with spaces.txt"),
    "unicode": ("données/é🙂", "dst/données/é🙂"),
    "not-utf8": (os.fsdecode(b"raw/\xff\xfe-chunk"), "dst/raw/%FF%FE-chunk"),
    "percent": ("100%/x%41", "dst/100%25/x%2541"),
    "control": ("tab\there\x01", "dst/tab%09here%01"),
}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_every_name_round_trips_through_a_valid_utf8_key(
    bucket: str, sink: s3.ObjectStore, src: Path, name: str
) -> None:
    key, object_key = NAMES[name]
    data = os.fsencode(key) * 3
    write(src, key, data)
    assert sink.put(str(src), key).status == COPIED
    assert keys_in(bucket, "dst/") == [object_key]
    listing = sink.listing()
    assert list(listing.files) == [key]
    assert listing.files[key].mtime_ns == MTIME_NS
    with sink.open(key) as f:
        assert f.read() == data
    assert sink.delete(key).status == DELETED
    assert keys_in(bucket, "dst/") == []


@given(st.binary(min_size=1, max_size=40))
def test_the_escape_is_reversible_and_always_utf8(raw: bytes) -> None:
    key = os.fsdecode(raw)
    escaped = s3.escape(key)
    escaped.encode("utf-8")  # no lone surrogate: every undecodable byte was escaped
    assert not any(ord(c) < 0x20 or c == "\x7f" for c in escaped)
    assert s3.unescape(escaped) == key


def test_a_key_too_long_for_s3_fails_naming_the_limit(sink: s3.ObjectStore, src: Path) -> None:
    key = "/".join(["d" * 200] * 6)
    write(src, key, b"x")
    outcome = sink.put(str(src), key)
    assert outcome.status == FAILED
    assert "S3 allows 1024" in outcome.error


# ---- a put: metadata, checksums, changes ---------------------------------------------------------


def test_a_put_stores_the_source_version_as_metadata(
    bucket: str, sink: s3.ObjectStore, src: Path
) -> None:
    path = write(src, "c/0", b"chunk bytes")
    outcome = sink.put(str(src), "c/0", digest=True)
    assert outcome.status == COPIED
    assert outcome.version == version_of(os.lstat(path))
    assert outcome.digest == blake3(b"chunk bytes").hexdigest()
    head = s3server.client().head_object(Bucket=bucket, Key="dst/c/0")
    assert head["Metadata"] == {"softcopy-mtime-ns": str(MTIME_NS), "softcopy-size": "11"}
    version = sink.version("c/0")
    assert version is not None
    assert (version.size, version.mtime_ns, version.ino) == (11, MTIME_NS, 0)
    assert version.ctime_ns == int(head["LastModified"].timestamp()) * 10**9


def test_an_object_softcopy_did_not_write_has_its_upload_time_as_mtime(
    bucket: str, sink: s3.ObjectStore
) -> None:
    s3server.client().put_object(Bucket=bucket, Key="dst/foreign", Body=b"abc")
    version = sink.listing().files["foreign"]
    assert version.size == 3
    assert version.mtime_ns == version.ctime_ns > 0


@pytest.mark.parametrize("size", [4097, 12 * MiB + 1], ids=["single", "multipart"])
def test_the_sha256_of_the_bytes_read_is_sent_with_every_upload(
    bucket: str, sink: s3.ObjectStore, src: Path, size: int
) -> None:
    data = os.urandom(size)
    write(src, "f", data)
    requests = Requests(sink.client)
    assert sink.put(str(src), "f").status == COPIED
    if size < 5 * MiB:
        (put,) = requests.of("PutObject")
        assert header(put, "x-amz-checksum-sha256") == b64_sha256(data)
    else:
        parts = requests.of("UploadPart")
        assert [header(p, "x-amz-checksum-sha256") for p in parts] == [
            b64_sha256(data[i : i + 5 * MiB]) for i in range(0, size, 5 * MiB)
        ]
        (create,) = requests.of("CreateMultipartUpload")
        assert header(create, "x-amz-checksum-algorithm") == b"SHA256"
    with sink.open("f") as f:
        assert f.read() == data


WHEN_REQUIRED = {"request_checksum_calculation": "when_required"}


@pytest.mark.parametrize(
    ("options", "headers"),
    [
        ({}, {"x-amz-checksum-sha256"}),
        (WHEN_REQUIRED, {"x-amz-checksum-sha256"}),
        ({"checksum": "md5", **WHEN_REQUIRED}, {"content-md5"}),
        # boto3's own default adds a CRC32 to a put that carries none...
        ({"checksum": "none"}, {"x-amz-checksum-crc32", "x-amz-sdk-checksum-algorithm"}),
        # ...which is what breaks some stores: with when_required, nothing at all is sent.
        ({"checksum": "none", **WHEN_REQUIRED}, set()),
    ],
    ids=["default", "when-required", "md5", "none", "none-when-required"],
)
def test_checksum_options_decide_what_is_sent(
    bucket: str, src: Path, options: dict, headers: set[str]
) -> None:
    write(src, "f", b"payload")
    sink = make(bucket, **options)
    try:
        requests = Requests(sink.client)
        assert sink.put(str(src), "f").status == COPIED
        (put,) = requests.of("PutObject")
        names = {k.lower() for k in put}
        sent = {n for n in names if "checksum" in n or n == "content-md5"}
        assert sent == headers
        if "x-amz-checksum-sha256" in headers:
            assert header(put, "x-amz-checksum-sha256") == b64_sha256(b"payload")
        if "content-md5" in headers:
            assert header(put, "content-md5") == base64.b64encode(hashlib.md5(b"payload").digest())
        assert header(put, "content-encoding") is None  # never an aws-chunked body
    finally:
        sink.close()


def test_a_source_changed_mid_read_uploads_nothing(
    bucket: str, sink: s3.ObjectStore, src: Path
) -> None:
    path = write(src, "c/1", os.urandom(MiB))

    def append_at_second_slice(nbytes: int, calls: list[int] = []) -> None:  # noqa: B006
        calls.append(nbytes)
        if len(calls) == 2:
            with open(path, "ab") as f:
                f.write(b"more")

    append_at_second_slice.rate = 1.0  # the smallest slice, 64 KiB
    requests = Requests(sink.client)
    assert sink.put(str(src), "c/1", throttle=append_at_second_slice).status == CHANGED
    assert requests.of("PutObject") == []
    assert keys_in(bucket, "dst/") == []


def test_a_changed_multipart_upload_is_aborted_not_completed(
    bucket: str, sink: s3.ObjectStore, src: Path
) -> None:
    path = write(src, "big", os.urandom(12 * MiB))
    calls = []

    def touch_in_third_part(nbytes: int) -> None:
        calls.append(nbytes)
        if len(calls) == 11:  # 1 MiB slices: parts 1 and 2 are up
            os.utime(path, ns=(MTIME_NS + 10**9, MTIME_NS + 10**9))

    touch_in_third_part.rate = 10 * MiB  # type: ignore[attr-defined]
    requests = Requests(sink.client)
    assert sink.put(str(src), "big", throttle=touch_in_third_part).status == CHANGED
    assert requests.of("CompleteMultipartUpload") == []
    assert keys_in(bucket, "dst/") == [] and uploads_in(bucket) == []


# ---- multipart uploads, killed and resumed ----------------------------------------------------

_KILLED_PUT = """
import json, os, sys, time
from softcopy.sinks.base import SinkSpec, sink_from_spec
spec, src, key, ready = sys.argv[1:]
sink = sink_from_spec(SinkSpec.from_dict(json.loads(spec)))
calls = 0
class Hold:
    rate = 10 << 20  # 1 MiB slices
    def __call__(self, nbytes):
        global calls
        calls += 1
        if calls == 11:  # parts 1 and 2 (5 MiB each) are uploaded: say so, and wait for the kill
            open(ready, "w").close()
            time.sleep(3600)
sink.put(src, key, throttle=Hold())
"""


def _killed_mid_upload(bucket: str, sink: s3.ObjectStore, src: Path, tmp: Path) -> list[dict]:
    """A real process putting `big` is killed with SIGKILL after two of its three parts."""
    ready = tmp / "ready"
    proc = start(
        [
            sys.executable,
            "-c",
            _KILLED_PUT,
            json.dumps(sink.spec.as_dict()),
            str(src),
            "big",
            str(ready),
        ]
    )
    wait_for(ready.exists, what="the put to reach its third part", proc=proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (upload,) = uploads_in(bucket)
    parts = s3server.client().list_parts(Bucket=bucket, Key="dst/big", UploadId=upload["UploadId"])
    assert [p["PartNumber"] for p in parts["Parts"]] == [1, 2]
    return parts["Parts"]


def test_a_put_killed_mid_multipart_upload_resumes_with_the_parts_already_there(
    bucket: str, sink: s3.ObjectStore, src: Path, tmp_path: Path
) -> None:
    data = os.urandom(12 * MiB + 12345)
    write(src, "big", data)
    before = _killed_mid_upload(bucket, sink, src, tmp_path)
    requests = Requests(sink.client)
    outcome = sink.put(str(src), "big", digest=True)
    assert outcome.status == COPIED
    assert outcome.digest == blake3(data).hexdigest()  # of every byte, reused parts too
    assert [u.split("partNumber=")[1].split("&")[0] for u in requests.urls("UploadPart")] == ["3"]
    assert requests.of("CreateMultipartUpload") == []
    (complete,) = requests.of("CompleteMultipartUpload")
    assert complete is not None
    with sink.open("big") as f:
        assert f.read() == data
    head = s3server.client().head_object(Bucket=bucket, Key="dst/big")
    assert head["Metadata"]["softcopy-mtime-ns"] == str(MTIME_NS)
    assert head["ETag"].strip('"').endswith("-3")  # the two parts from before, and one new
    assert before[0]["ETag"] == f'"{hashlib.md5(data[: 5 * MiB]).hexdigest()}"'
    assert uploads_in(bucket) == []
    assert keys_in(bucket, "dst.softcopy/uploads/") == []  # the note went with the upload


def test_parts_of_another_version_are_never_reused(
    bucket: str, sink: s3.ObjectStore, src: Path, tmp_path: Path
) -> None:
    """Same bytes, another mtime: the old upload would carry the old version's metadata."""
    data = os.urandom(12 * MiB)
    path = write(src, "big", data)
    _killed_mid_upload(bucket, sink, src, tmp_path)
    os.utime(path, ns=(MTIME_NS + 10**9, MTIME_NS + 10**9))
    requests = Requests(sink.client)
    assert sink.put(str(src), "big").status == COPIED
    assert len(requests.of("UploadPart")) == 3
    assert len(requests.of("AbortMultipartUpload")) == 1
    head = s3server.client().head_object(Bucket=bucket, Key="dst/big")
    assert head["Metadata"]["softcopy-mtime-ns"] == str(MTIME_NS + 10**9)
    assert uploads_in(bucket) == []


def test_a_part_whose_bytes_differ_is_uploaded_again(
    bucket: str, sink: s3.ObjectStore, src: Path, tmp_path: Path
) -> None:
    """Same version (a writer that restores mtime and size), other bytes in part 1."""
    data = os.urandom(12 * MiB)
    path = write(src, "big", data)
    _killed_mid_upload(bucket, sink, src, tmp_path)
    st = os.lstat(path)
    with open(path, "r+b") as f:
        f.write(b"X" * 10)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    # The note holds ctime too; make it the same note the new version would match.
    note = sink.notes.recall("dst/big")
    assert note is not None
    sink.notes.remember(
        s3.UploadNote(note.key, note.upload_id, tuple(version_of(os.lstat(path))), note.part_size)
    )
    requests = Requests(sink.client)
    assert sink.put(str(src), "big").status == COPIED
    assert [u.split("partNumber=")[1].split("&")[0] for u in requests.urls("UploadPart")] == [
        "1",
        "3",
    ]
    with sink.open("big") as f:
        assert f.read() == b"X" * 10 + data[10:]


def test_abort_stale_uploads_aborts_this_targets_uploads_only(
    bucket: str, sink: s3.ObjectStore, src: Path, tmp_path: Path
) -> None:
    write(src, "big", os.urandom(12 * MiB))
    _killed_mid_upload(bucket, sink, src, tmp_path)
    other = s3server.client().create_multipart_upload(Bucket=bucket, Key="dst-other/x")
    assert sink.abort_stale_uploads() == 1
    assert [u["UploadId"] for u in uploads_in(bucket)] == [other["UploadId"]]
    assert keys_in(bucket, "dst.softcopy/uploads/") == []


def test_discard_partial_aborts_the_unfinished_upload_of_a_key(
    bucket: str, sink: s3.ObjectStore, src: Path, tmp_path: Path
) -> None:
    write(src, "big", os.urandom(12 * MiB))
    _killed_mid_upload(bucket, sink, src, tmp_path)
    sink.discard_partial(["big", "never/put"])
    assert uploads_in(bucket) == []


# ---- markers, records, lock -------------------------------------------------------------------


def test_markers_are_uploaded_in_order_after_the_data(
    bucket: str, sink: s3.ObjectStore, src: Path
) -> None:
    write(src, "c/0", b"data")
    write(src, "done.txt", b"sentinel")
    write(src, "complete", b"")
    requests = Requests(sink.client)
    sink.put(str(src), "c/0")
    digests = sink.write_markers(str(src), ["done.txt", "complete"], digest=True)
    assert digests["complete"] == blake3().hexdigest()
    assert [u.rsplit("/", 1)[1] for u in requests.urls("PutObject")] == [
        "0",
        "done.txt",
        "complete",
    ]


def test_a_marker_gone_from_the_source_stops_before_the_last(
    bucket: str, sink: s3.ObjectStore, src: Path
) -> None:
    write(src, "complete", b"")
    with pytest.raises(SoftcopyError, match="gone from the source") as raised:
        sink.write_markers(str(src), ["sentinel", "complete"], digest=False)
    assert f"s3://{bucket}/dst/sentinel" in str(raised.value)
    assert keys_in(bucket, "dst/") == []


def test_records_live_beside_the_copy(bucket: str, sink: s3.ObjectStore) -> None:
    records = sink.records
    assert records is not None
    records.write("summary.json", b"{}")
    (records / "manifest.b3").write_bytes(b"digest  key\n")
    assert records.read("summary.json") == b"{}"
    assert (records / "manifest.b3").read_bytes() == b"digest  key\n"
    assert str(records / "x") == f"s3://{bucket}/dst.softcopy/x"
    assert {"dst.softcopy/summary.json", "dst.softcopy/manifest.b3"} <= set(keys_in(bucket))
    assert sink.listing().files == {}  # never inside the copy
    records.unlink("summary.json")
    with pytest.raises(FileNotFoundError):
        records.read("summary.json")
    with pytest.raises(ConfigError, match="it does not exist"):
        (records / "summary.json").open_input("read summary")


def test_a_size_list_written_block_by_block_is_one_record(sink: s3.ObjectStore) -> None:
    """Records are written as they are read (verification's size list); on object storage
    the blocks become one object, read back whole with the same digest."""
    from softcopy.verify.sizes import format_entry, read_size_list, size_list_body, write_size_list

    assert sink.records is not None
    body = size_list_body()
    entries = {f"c/0/{i}": (i, MTIME_NS + i) for i in range(2000)}
    for key, (size, mtime_ns) in entries.items():
        body.write(format_entry(key, size, mtime_ns).encode())
    digest = write_size_list(sink.records / "files.tsv", body)
    assert read_size_list(sink.records / "files.tsv") == (entries, digest)


def test_the_lock_is_a_conditional_put_released_on_close(bucket: str) -> None:
    first = make(bucket)
    first.lock()
    holder = json.loads(
        s3server.client().get_object(Bucket=bucket, Key="dst.softcopy/lock")["Body"].read()
    )
    assert holder["pid"] == os.getpid()
    second = make(bucket)
    with pytest.raises(ConfigError, match="another softcopy is already copying there"):
        second.lock()
    first.close()
    assert "dst.softcopy/lock" not in keys_in(bucket)
    second.lock()
    second.close()


def _plant_lock(bucket: str, **holder: object) -> None:
    body = {"host": socket.gethostname(), "boot": s3._boot_id(), "token": "x", **holder}
    s3server.client().put_object(Bucket=bucket, Key="dst.softcopy/lock", Body=json.dumps(body))


def test_a_lock_left_by_a_dead_process_here_is_taken_over(bucket: str) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    import time

    _plant_lock(bucket, pid=int(dead.stdout), renewed=time.time())
    sink = make(bucket)
    try:
        sink.lock()
        holder = json.loads(
            s3server.client().get_object(Bucket=bucket, Key="dst.softcopy/lock")["Body"].read()
        )
        assert holder["pid"] == os.getpid()
    finally:
        sink.close()


@pytest.mark.parametrize("renewed_ago", [10.0, s3.LEASE + 60], ids=["renewed", "expired"])
def test_a_lock_of_another_host_is_refused_until_its_lease_runs_out(
    bucket: str, renewed_ago: float
) -> None:
    import time

    _plant_lock(bucket, host="elsewhere", pid=1, renewed=time.time() - renewed_ago)
    sink = make(bucket)
    try:
        if renewed_ago < s3.LEASE:
            with pytest.raises(ConfigError, match="pid 1 on elsewhere"):
                sink.lock()
        else:
            sink.lock()
    finally:
        sink.close()


# ---- links ------------------------------------------------------------------------------------


def test_a_link_is_not_uploaded(bucket: str, sink: s3.ObjectStore, src: Path) -> None:
    write(src, "real", b"bytes")
    os.symlink("real", src / "alias")
    outcome = sink.put(str(src), "alias")
    assert outcome.status == SKIPPED
    assert outcome.version == version_of(os.lstat(src / "alias"))
    assert outcome.error.startswith("a symbolic link: object storage has none")
    assert keys_in(bucket, "dst/") == []


# ---- errors -----------------------------------------------------------------------------------


def test_probe_of_a_bucket_that_does_not_exist(s3_server: str) -> None:
    sink = make("no-such-bucket-here")
    with pytest.raises(ConfigError) as raised:
        sink.probe()
    assert "the bucket no-such-bucket-here does not exist at " + s3_server in str(raised.value)
    assert raised.value.exit_code == 2


def test_probe_of_a_closed_port_names_the_endpoint(bucket: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        sink = make(bucket, endpoint_url=f"http://127.0.0.1:{port}")
        with pytest.raises(ConfigError) as raised:
            sink.probe()
    assert f"cannot reach the endpoint http://127.0.0.1:{port}" in str(raised.value)


def test_a_put_to_an_endpoint_gone_fails_naming_the_key(bucket: str, src: Path) -> None:
    write(src, "c/0", b"x")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        sink = make(bucket, endpoint_url=url, max_attempts="2")
        outcome = sink.put(str(src), "c/0")
    assert outcome.status == FAILED
    assert f"s3://{bucket}/dst/c/0" in outcome.error and url in outcome.error
    assert outcome.errno == 5  # EIO: the engine's retries try again later


@pytest.mark.parametrize("wrong", ["key id", "secret"])
def test_wrong_credentials_are_named_and_never_printed(
    auth_server: AuthServer, monkeypatch: pytest.MonkeyPatch, wrong: str
) -> None:
    secret = "not-the-secret-" + "q" * 20
    key_id = "AKIAWRONGWRONGWRONG" if wrong == "key id" else auth_server.key_id
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    sink = make(auth_server.bucket, endpoint_url=auth_server.url)
    with pytest.raises(ConfigError, match="wrong credentials") as raised:
        sink.probe()
    assert ("access key id" if wrong == "key id" else "secret access key") in str(raised.value)
    assert secret not in str(raised.value)


def test_access_denied_on_write_is_named(
    auth_server: AuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", auth_server.key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", auth_server.secret)
    sink = make(auth_server.bucket, endpoint_url=auth_server.url)
    with pytest.raises(ConfigError, match="access denied") as raised:
        sink.probe()  # the reader may list, not write
    assert raised.value.action == "write to destination"
    assert auth_server.secret not in str(raised.value)


def test_no_credentials_at_all(bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    sink = make(bucket)
    with pytest.raises(ConfigError, match="no credentials found"):
        sink.probe()
    with pytest.raises(ConfigError, match="no credentials found"):
        sink.lock()


# ---- the spec ---------------------------------------------------------------------------------


def test_spec_for_an_object_store_and_a_directory() -> None:
    spec = spec_for("s3://bkt/run/1", {"part_size": "8Mi", "endpoint_url": "http://h:9000"})
    assert spec == SinkSpec(
        "s3", "s3://bkt/run/1", (("endpoint_url", "http://h:9000"), ("part_size", "8Mi"))
    )
    assert spec_for("/data/run") == SinkSpec("local", "/data/run")


@pytest.mark.parametrize(
    ("location", "options", "problem"),
    [
        ("s3://bkt", {}, "give both a bucket and a prefix"),
        ("s3:///p", {}, "give both a bucket and a prefix"),
        ("s3://bkt/p", {"part_size": "1Mi"}, "at least 5 MiB"),
        ("s3://bkt/p", {"checksum": "crc64"}, "not one of sha256, md5, none"),
        ("s3://bkt/p", {"aws_secret_access_key": "x"}, "unknown object-store option"),
        ("s3://bkt/p", {"concurrency": "0"}, "at least 1"),
    ],
)
def test_bad_locations_and_options_are_refused(location: str, options: dict, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        sink_from_spec(spec_for(location, options))
