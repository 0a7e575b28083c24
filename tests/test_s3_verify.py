"""`softcopy verify` against an object store: a real S3 server on loopback (moto, real HTTP).

The bucket is filled by the sink itself (lock, create, put each file), the manifest written
into its records by softcopy's own writer; damage is done behind its back with a plain
client, as another tool (or the store) would.
"""

# ruff: noqa: F811 (the fixtures imported from s3server are parameters by the same names)
from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import s3server
from conftest import run_softcopy
from s3server import AuthServer, auth_server, bucket, s3_server  # noqa: F401 (fixtures)

from softcopy.sinks.base import COPIED, sink_from_spec, spec_for
from softcopy.verify.manifest import CERTIFICATE, MANIFEST, write_certificate, write_manifest
from softcopy.verify.sizes import SIZE_LIST, write_size_list

pytest.importorskip("boto3")
from softcopy.verify.objects import check_sink_manifest, check_sink_sizes, compare_with_sink

MTIME_NS = 1_700_000_000_123_456_789
FILES = {
    "zarr.json": b'{"zarr_format": 3, "node_type": "group"}',
    "a/c/0/0": b"chunk zero" * 100,
    "a/c/0/1": b"chunk one!" * 100,
    "a/c/1/0": b"x" * 5000,
    "b/deep/er/f": b"f" * 7,
    "name with spaces %": b"odd name",
}


@dataclass(frozen=True)
class Copy:
    src: Path
    url: str
    bucket: str
    digests: dict[str, str]

    def object_key(self, key: str) -> str:
        from softcopy.sinks.s3 import escape

        return "dst/" + escape(key)


def make(url: str, **options: str):
    return sink_from_spec(spec_for(url, options))


def populate(bucket: str, src: Path, url: str) -> dict[str, str]:
    """Every file of `src` put by the sink, the manifest of their digests in its records."""
    sink = make(url)
    sink.lock()
    sink.create()
    digests: dict[str, str] = {}
    try:
        for key in sorted(FILES):
            outcome = sink.put(str(src), key, digest=True)
            assert outcome.status == COPIED, outcome
            digests[key] = outcome.digest
        assert sink.records is not None
        write_manifest(sink.records / MANIFEST, digests)
    finally:
        sink.close()
    return digests


@pytest.fixture
def copy(bucket: str, tmp_path: Path) -> Copy:
    src = tmp_path / "src"
    for key, data in FILES.items():
        path = src / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, ns=(MTIME_NS, MTIME_NS))
    os.symlink("a/c/0/0", src / "alias")  # skipped by the copy: stores have no links
    url = f"s3://{bucket}/dst"
    return Copy(src, url, bucket, populate(bucket, src, url))


@pytest.fixture
def sink(copy: Copy) -> Iterator[object]:
    s = make(copy.url)
    try:
        yield s
    finally:
        s.close()


def verify(*args: object, **kw) -> tuple[int, list[str], str]:
    result = run_softcopy("verify", *args, **kw)
    return result.returncode, result.stdout.splitlines(), result.stderr


def json_findings(stdout: list[str]) -> list[dict]:
    records = [json.loads(line) for line in stdout]
    assert records[-1]["kind"] == "summary"
    return records[:-1]


def put_behind(copy: Copy, key: str, data: bytes, same_metadata: bool = True) -> None:
    """Another tool writes the object: same source version in its metadata, or none."""
    metadata = {"softcopy-mtime-ns": str(MTIME_NS), "softcopy-size": str(len(data))}
    s3server.client().put_object(
        Bucket=copy.bucket,
        Key=copy.object_key(key),
        Body=data,
        Metadata=metadata if same_metadata else {},
    )


def replace_same_size(copy: Copy, key: str) -> None:
    data = bytearray(FILES[key])
    data[-1] ^= 0x01
    put_behind(copy, key, bytes(data))


# ---- a good copy ------------------------------------------------------------------------------


@pytest.mark.parametrize("hashed", [False, True])
def test_a_good_copy_verifies_against_its_source(copy: Copy, hashed: bool) -> None:
    code, out, err = verify(copy.src, copy.url, *(["--hash"] if hashed else []))
    assert code == 0, err
    assert len(out) == 1 and out[0].startswith(f"identical: {len(FILES)} files")
    assert ("compared by BLAKE3" if hashed else "compared by size") in out[0]
    assert "1 source link skipped (object storage has none)" in out[0]
    assert "alias" not in out[0] + err


def test_a_good_copy_verifies_against_its_manifest(copy: Copy) -> None:
    code, out, err = verify(copy.url)
    assert code == 0, err
    assert "compared by BLAKE3 against the manifest" in out[0]


def test_the_summary_record_is_the_local_forms(copy: Copy) -> None:
    code, out, err = verify(copy.src, copy.url, "--json")
    assert code == 0, err
    (summary,) = [json.loads(line) for line in out]
    assert summary["kind"] == "summary" and summary["ok"] is True
    assert summary["files"] == len(FILES)
    assert summary["bytes"] == sum(map(len, FILES.values()))


def test_a_source_link_is_counted_not_a_finding(copy: Copy, sink) -> None:
    result = compare_with_sink(str(copy.src), sink, hashes=True)
    assert result.ok, result.findings
    assert result.links_skipped == 1
    assert result.digests == copy.digests  # what the manifest of a copy gets


def test_an_object_where_the_source_has_a_link_is_a_type_difference(copy: Copy, sink) -> None:
    put_behind(copy, "alias", b"was a file once")
    result = compare_with_sink(str(copy.src), sink)
    assert [(f.kind, f.key, f.source, f.destination) for f in result.findings] == [
        ("type", "alias", "link", "file")
    ]
    assert result.links_skipped == 0


# ---- damage -----------------------------------------------------------------------------------


def test_a_deleted_object_is_missing(copy: Copy) -> None:
    s3server.client().delete_object(Bucket=copy.bucket, Key=copy.object_key("a/c/0/1"))
    code, out, _ = verify(copy.src, copy.url, "--json")
    assert code == 1
    assert json_findings(out) == [{"kind": "missing", "key": "a/c/0/1"}]
    code, out, _ = verify(copy.url)
    assert code == 1
    assert "missing: a/c/0/1 (in the manifest, not in the destination)" in out


def test_a_truncated_object_differs_in_size(copy: Copy) -> None:
    put_behind(copy, "a/c/1/0", FILES["a/c/1/0"][:-10], same_metadata=False)
    code, out, err = verify(copy.src, copy.url)
    assert code == 1
    assert out == ["size differs: a/c/1/0 source 5000 destination 4990"]
    assert err.strip() == "1 difference found"


def test_a_replaced_object_of_the_same_size_is_found_only_by_hash(copy: Copy) -> None:
    replace_same_size(copy, "a/c/0/0")
    code, out, err = verify(copy.src, copy.url)
    assert code == 0, err  # keys and sizes alone cannot tell
    code, out, _ = verify(copy.src, copy.url, "--hash", "--json")
    assert code == 1
    (finding,) = json_findings(out)
    assert (finding["kind"], finding["key"]) == ("content", "a/c/0/0")
    assert finding["source"] == copy.digests["a/c/0/0"][:16]


def test_the_manifest_alone_catches_a_replaced_object(copy: Copy) -> None:
    replace_same_size(copy, "b/deep/er/f")
    code, out, _ = verify(copy.url, "--json")
    assert code == 1
    (finding,) = json_findings(out)
    assert finding == {
        "kind": "content",
        "key": "b/deep/er/f",
        "source": copy.digests["b/deep/er/f"][:16],
        "destination": finding["destination"],
        "against": "manifest",
    }


def test_an_object_the_source_does_not_have_is_extra(copy: Copy, sink) -> None:
    put_behind(copy, "a/c/9/9", b"stray")
    put_behind(copy, "new/dir/only/here", b"stray")
    result = compare_with_sink(str(copy.src), sink)
    assert [(f.kind, f.key) for f in result.findings] == [
        ("extra", "a/c/9/9"),
        ("extra", "new/dir/only/here"),
    ]
    against = check_sink_manifest(sink, copy.digests)
    assert [(f.kind, f.key) for f in against.findings] == [
        ("manifest", "a/c/9/9"),
        ("manifest", "new/dir/only/here"),
    ]


def test_include_and_exclude_narrow_what_is_compared(copy: Copy) -> None:
    s3server.client().delete_object(Bucket=copy.bucket, Key=copy.object_key("a/c/0/1"))
    code, _, err = verify(copy.src, copy.url, "--exclude", "a/c/0/1")
    assert code == 0, err
    code, _, err = verify(copy.url, "--include", "b/*")
    assert code == 0, err


# ---- the size list ----------------------------------------------------------------------------


def write_size_list_records(copy: Copy) -> None:
    """What a copy made without --hash leaves: the size list its verification found (as the
    engine writes it), vouched for by a certificate; no manifest."""
    sink = make(copy.url)
    sink.lock()
    try:
        verified = compare_with_sink(str(copy.src), sink)
        assert verified.ok, verified.findings
        records = sink.records
        digest = write_size_list(records / SIZE_LIST, verified.size_list)
        records.unlink(MANIFEST)
        write_certificate(
            records / CERTIFICATE,
            {"manifest": None, "size_list": SIZE_LIST, "size_list_blake3": digest},
        )
    finally:
        sink.close()


def test_without_a_manifest_the_size_list_is_checked(copy: Copy, sink) -> None:
    write_size_list_records(copy)
    code, out, err = verify(copy.url)
    assert code == 0, err
    assert "compared by sizes and modification times against the size list" in out[0]
    put_behind(copy, "a/c/1/0", FILES["a/c/1/0"][:-1], same_metadata=False)
    s3server.client().delete_object(Bucket=copy.bucket, Key=copy.object_key("zarr.json"))
    code, out, _ = verify(copy.url)
    assert code == 1
    assert out == [
        "missing: zarr.json (in the size list, not in the destination)",
        "size differs: a/c/1/0 size list 5000 destination 4999",
    ]


def test_an_object_replaced_with_another_mtime_differs_from_the_size_list(copy: Copy, sink) -> None:
    listed = {key: (len(data), MTIME_NS) for key, data in FILES.items()}
    assert check_sink_sizes(sink, listed).ok
    put_behind(copy, "a/c/0/0", FILES["a/c/0/0"], same_metadata=False)  # its upload time
    result = check_sink_sizes(sink, listed)
    assert [(f.kind, f.key, f.against) for f in result.findings] == [
        ("mtime", "a/c/0/0", "size list")
    ]


def test_hash_without_a_manifest_is_a_usage_error(copy: Copy) -> None:
    write_size_list_records(copy)
    code, _, err = verify(copy.url, "--hash")
    assert code == 2
    assert "there is no manifest" in err


# ---- bad input --------------------------------------------------------------------------------


def one_paragraph(err: str) -> str:
    assert "Traceback" not in err
    paragraphs = [p for p in err.strip().split("\n\n") if p]
    assert len(paragraphs) == 1, err
    assert paragraphs[0].startswith("softcopy: error: cannot ")
    return paragraphs[0]


def test_a_missing_bucket_is_a_usage_error(s3_server: str, tmp_path: Path) -> None:
    for args in (["s3://no-such-bucket-here/dst"], [tmp_path, "s3://no-such-bucket-here/dst"]):
        code, out, err = verify(*args)
        assert code == 2 and out == []
        assert f"the bucket no-such-bucket-here does not exist at {s3_server}" in one_paragraph(err)


def test_an_empty_prefix_is_a_usage_error(copy: Copy) -> None:
    code, _, err = verify(f"s3://{copy.bucket}/nothing-here")
    assert code == 2
    assert "no object is stored under it" in one_paragraph(err)


@pytest.mark.parametrize("wrong", ["key id", "secret"])
def test_wrong_credentials_are_a_usage_error_and_never_printed(
    auth_server: AuthServer, wrong: str
) -> None:
    secret = "not-the-secret-" + "q" * 20
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG" if wrong == "key id" else auth_server.key_id,
        "AWS_SECRET_ACCESS_KEY": secret,
    }
    code, out, err = verify(
        f"s3://{auth_server.bucket}/dst", "--s3-endpoint", auth_server.url, env=env
    )
    assert code == 2 and out == []
    assert "wrong credentials" in one_paragraph(err)
    assert secret not in err


def test_an_unreachable_endpoint_is_named(copy: Copy) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, never listening
        code, _, err = verify(copy.url, "--s3-endpoint", url)
    assert code == 2
    assert f"cannot reach the endpoint {url}" in one_paragraph(err)


def test_an_object_store_source_and_decode_are_refused(copy: Copy) -> None:
    code, _, err = verify(copy.url, copy.src)
    assert code == 2
    assert "an object store can be the destination only" in one_paragraph(err)
    code, _, err = verify(copy.url, "--decode")
    assert code == 2
    assert "--decode reads chunks of a directory" in one_paragraph(err)


# ---- the same findings as compare_trees ---------------------------------------------------------


def test_through_a_local_sink_the_findings_are_compare_trees_own(tmp_path: Path) -> None:
    """The walk by directory, the links and the read-back are compare.py's, not a copy of
    them: through a directory's sink, every difference is found as compare_trees finds it."""
    import shutil

    from softcopy.verify.compare import compare_trees

    src, dst = tmp_path / "src", tmp_path / "dst"
    for key, data in FILES.items():
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        (src / key).write_bytes(data)
    os.symlink("a/c/0/0", src / "alias")
    os.symlink("zarr.json", src / "b" / "meta")
    shutil.copytree(src, dst, symlinks=True)
    (dst / "a/c/0/1").unlink()  # missing
    (dst / "a/c/1/0").write_bytes(FILES["a/c/1/0"][:-1])  # size
    (dst / "b/deep/er/f").write_bytes(b"g" * 7)  # content
    (dst / "only/here").mkdir(parents=True)
    (dst / "only/here/x").write_bytes(b"extra")  # extra, in a directory of its own
    (dst / "alias").unlink()
    (dst / "alias").write_bytes(b"a file")  # type
    (dst / "b/meta").unlink()
    os.symlink("elsewhere", dst / "b/meta")  # link
    (dst / ".softcopy-tmp.left").write_bytes(b"")  # leftover
    expected = compare_trees(str(src), str(dst), hashes=True)
    sink = sink_from_spec(spec_for(str(dst)))
    try:
        got = compare_with_sink(str(src), sink, hashes=True)
    finally:
        sink.close()
    assert got.findings == expected.findings
    assert {f.kind for f in got.findings} == {
        "missing", "size", "content", "extra", "type", "link", "leftover"
    }  # fmt: skip
    assert (got.files, got.bytes, got.links, got.digests) == (
        expected.files, expected.bytes, expected.links, expected.digests
    )  # fmt: skip
    for listed in (got.size_list, expected.size_list):
        listed.seek(0)
    assert got.size_list.read() == expected.size_list.read() != b""


def test_a_comparison_by_size_asks_nothing_per_object(copy: Copy, sink) -> None:
    """Sizes come with the listing: no HEAD per object (a copy of 20,000 objects would pay
    20,000 requests for mtimes it does not compare). The size list still has each file's
    mtime, the source's, which the upload recorded and `verify` against it checks."""
    sent: list[str] = []
    sink.client.meta.events.register(
        "before-send.s3", lambda event_name, **kw: sent.append(event_name.rsplit(".", 1)[1])
    )
    verified = compare_with_sink(str(copy.src), sink)
    assert verified.ok, verified.findings
    assert "HeadObject" not in sent and sent.count("ListObjectsV2") == 1
    lines = verified.size_list
    lines.seek(0)
    assert all(line.split(b"\t")[2].strip() == str(MTIME_NS).encode()
               for line in lines.read().splitlines() if line)  # fmt: skip
