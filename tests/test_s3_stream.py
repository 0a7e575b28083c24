"""sinks/s3_stream.py against the loopback S3 server: a stream of unknown length becomes
one object, in one put or in parts sent several at a time, and nothing is under its key
until it is complete."""

# ruff: noqa: F811 (the fixtures imported from s3server are parameters by the same names)
from __future__ import annotations

import hashlib
import os

import pytest
import s3server
from s3server import bucket, s3_server  # noqa: F401  (fixtures)

from softcopy.errors import SoftcopyError
from softcopy.sinks.s3_stream import ObjectStream

MiB = 1 << 20


def error(exc: BaseException, action: str) -> SoftcopyError:
    return SoftcopyError("s3://test", action, str(exc))


def keys(client, name: str) -> set[str]:
    return {o["Key"] for o in client.list_objects_v2(Bucket=name).get("Contents", ())}


@pytest.mark.parametrize("in_flight", [1, 3])
def test_parts_sent_several_at_a_time_make_the_object_in_order(bucket, in_flight):
    client = s3server.client()
    data = os.urandom(27 * MiB)  # five whole parts of 5 MiB and a short last one
    out = ObjectStream(client, bucket, "big", "sha256", error, {"softcopy-size": "1"},
                       in_flight=in_flight, part=5 * MiB)  # fmt: skip
    for at in range(0, len(data), 3 * MiB + 17):  # writes that straddle the parts
        out.write(data[at : at + 3 * MiB + 17])
        assert "big" not in keys(client, bucket)  # nothing under the key before the end
    etag = out.complete()
    got = client.get_object(Bucket=bucket, Key="big")
    assert got["Body"].read() == data and got["ETag"] == etag
    assert got["Metadata"] == {"softcopy-size": "1"}
    assert etag.strip('"').endswith("-6")  # six parts, completed in order
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_a_short_stream_is_one_put_with_its_checksum(bucket):
    client = s3server.client()
    out = ObjectStream(client, bucket, "small", "md5", error, part=5 * MiB)
    out.write(b"a few bytes")
    etag = out.complete()
    assert etag.strip('"') == hashlib.md5(b"a few bytes").hexdigest()
    assert client.get_object(Bucket=bucket, Key="small")["Body"].read() == b"a few bytes"


def test_an_aborted_stream_leaves_nothing(bucket):
    client = s3server.client()
    out = ObjectStream(client, bucket, "gone", "sha256", error, in_flight=2, part=5 * MiB)
    out.write(os.urandom(12 * MiB))  # two parts on their way
    out.abort()
    assert "gone" not in keys(client, bucket)
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")
