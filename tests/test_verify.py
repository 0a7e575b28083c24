"""`softcopy verify SOURCE DESTINATION`: every difference found, named, listed; exit codes."""

from __future__ import annotations

import json
import os
import shutil
import struct
from dataclasses import replace
from pathlib import Path

import pytest
from blake3 import blake3
from conftest import run_softcopy, tree_files
from test_acquisition import SMALL, simulate

from softcopy.names import name_from_json
from softcopy.zarr.layout import metadata_kind


def _make_copy(base: Path, spec) -> tuple[Path, Path]:
    src, dst = base / "src.zarr", base / "dst.zarr"
    simulate(src, spec)
    result = run_softcopy("copy", src, dst)
    assert result.returncode == 0, result.stderr
    return src, dst


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A v3 archive and its copy made by `softcopy copy`, made once per module."""
    return _make_copy(tmp_path_factory.mktemp("pristine"), SMALL)


@pytest.fixture(scope="module")
def pristine_v2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _make_copy(tmp_path_factory.mktemp("pristine_v2"), replace(SMALL, format="v2"))


def _clone(pair: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """This test's own source and copy: the module's pair, copied byte for byte."""
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    shutil.copytree(pair[0], src, symlinks=True)
    shutil.copytree(pair[1], dst, symlinks=True)
    return src, dst


@pytest.fixture
def pair(pristine: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    return _clone(pristine, tmp_path)


def chunks(root: Path) -> list[str]:
    """Chunk (or shard) files: everything but metadata and the marker."""
    return sorted(
        k for k in tree_files(root) if k != "complete" and not metadata_kind(os.path.basename(k))
    )


def verify(*args: object) -> tuple[int, list[str], str]:
    result = run_softcopy("verify", *args)
    return result.returncode, result.stdout.splitlines(), result.stderr


def flip_byte(path: Path, offset: int = -1) -> None:
    """One bit changed in place: same size, same inode, same mtime."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def b3(path: Path) -> str:
    return blake3(path.read_bytes()).hexdigest()


def test_a_correct_copy_passes_with_and_without_hash(pair: tuple[Path, Path]) -> None:
    src, dst = pair
    n = len(tree_files(dst))
    for extra, mode in (((), "size"), (("--hash",), "BLAKE3")):
        rc, out, err = verify(src, dst, *extra)
        assert rc == 0, f"{out}\n{err}"
        assert len(out) == 1 and out[0].startswith(f"identical: {n} files"), out
        assert f"compared by {mode}" in out[0]


def _delete(dst: Path) -> tuple[str, str]:
    key = chunks(dst)[3]
    (dst / key).unlink()
    return key, f"missing: {key} (in the source, not in the destination)"


def _truncate(dst: Path) -> tuple[str, str]:
    key = chunks(dst)[5]
    size = (dst / key).stat().st_size
    os.truncate(dst / key, size // 2)
    return key, f"size differs: {key} source {size} destination {size // 2}"


def _metadata(dst: Path) -> tuple[str, str]:
    key = "zarr.json" if (dst / "zarr.json").exists() else ".zarray"
    (dst / key).unlink()
    return key, f"missing: {key} (in the source, not in the destination)"


def _extra(dst: Path) -> tuple[str, str]:
    key = "c/0/0/9/9"
    (dst / key).parent.mkdir(parents=True, exist_ok=True)
    (dst / key).write_bytes(b"left behind")
    return key, f"extra: {key} (in the destination, not in the source)"


@pytest.mark.parametrize(
    ("fmt", "damage"),
    [
        ("v3", _delete),
        ("v3", _truncate),
        ("v3", _metadata),
        ("v3", _extra),
        ("v2", _truncate),
        ("v2", _metadata),
    ],
)
def test_each_difference_is_found_and_named(
    request: pytest.FixtureRequest, tmp_path: Path, fmt: str, damage
) -> None:
    pristine = request.getfixturevalue("pristine_v2" if fmt == "v2" else "pristine")
    src, dst = _clone(pristine, tmp_path)
    _, line = damage(dst)
    for extra in ((), ("--hash",)):
        rc, out, err = verify(src, dst, *extra)
        assert rc == 1, f"{extra}: {out}\n{err}"
        assert out == [line], extra
        assert "1 difference found" in err


def test_a_flipped_byte_is_found_only_by_hash(pair: tuple[Path, Path]) -> None:
    src, dst = pair
    key = chunks(dst)[7]
    flip_byte(dst / key, offset=len((dst / key).read_bytes()) // 2)
    rc, out, _ = verify(src, dst)
    assert rc == 0 and out[0].startswith("identical:"), "sizes alone cannot see a flipped byte"
    rc, out, err = verify(src, dst, "--hash")
    assert rc == 1, err
    assert out == [
        f"content differs: {key} source {b3(src / key)[:16]} destination {b3(dst / key)[:16]}"
    ]


def _damage_everything(src: Path, dst: Path) -> set[tuple[str, str]]:
    """Five differences at once; returns the (kind, key) of each."""
    keys = chunks(dst)
    (dst / keys[0]).unlink()
    os.truncate(dst / keys[1], 1)
    flip_byte(dst / keys[2])
    (dst / "zarr.json").unlink()
    (dst / "notes.txt").write_text("extra")
    return {
        ("missing", keys[0]),
        ("size", keys[1]),
        ("content", keys[2]),
        ("missing", "zarr.json"),
        ("extra", "notes.txt"),
    }


def test_every_finding_is_listed_not_just_the_first(pair: tuple[Path, Path]) -> None:
    src, dst = pair
    expected = _damage_everything(src, dst)
    rc, out, err = verify(src, dst, "--hash")
    assert rc == 1
    assert len(out) == len(expected), out
    for kind, key in expected:
        prefix = {"missing": "missing:", "size": "size differs:", "content": "content differs:"}
        assert any(line.startswith(f"{prefix.get(kind, kind + ':')} {key}") for line in out), (
            kind,
            key,
            out,
        )
    assert f"{len(expected)} differences found" in err  # more than one here


def test_json_gives_one_record_per_finding_and_a_summary(pair: tuple[Path, Path]) -> None:
    src, dst = pair
    expected = _damage_everything(src, dst)
    rc, out, _ = verify(src, dst, "--hash", "--json")
    assert rc == 1
    records = [json.loads(line) for line in out]  # every line parses
    *findings, summary = records
    assert {(r["kind"], r["key"]) for r in findings} == expected
    assert len(findings) == len(expected)
    size = next(r for r in findings if r["kind"] == "size")
    assert size["destination"] == 1 and size["source"] > 1
    assert summary["kind"] == "summary" and summary["ok"] is False
    assert summary["findings"] == len(expected)
    # A clean tree: only the summary.
    rc, out, _ = verify(src, src, "--json")
    assert rc == 0 and len(out) == 1 and json.loads(out[0])["ok"] is True


def test_metadata_that_does_not_parse_is_a_finding(pair: tuple[Path, Path]) -> None:
    src, dst = pair
    # Same size on both sides, so only parsing can tell: the destination's is garbage.
    (src / ".zattrs").write_bytes(b'{"a": 1}')
    (dst / ".zattrs").write_bytes(b'{"a": 1]')
    rc, out, _ = verify(src, dst)
    assert rc == 1
    assert len(out) == 1 and out[0].startswith("metadata does not parse: .zattrs: "), out
    # An array's own metadata: named by its file, with and without --decode.
    (dst / ".zattrs").write_bytes(b'{"a": 1}')
    (dst / "zarr.json").write_text("{garbage")
    for extra in ((), ("--decode",)):
        rc, out, err = verify(src, dst, *extra)
        assert rc == 1, f"{extra}: exit {rc}: {err}"
        assert any(line.startswith("metadata does not parse: zarr.json: ") for line in out), out
        assert any(line.startswith("size differs: zarr.json") for line in out)


def test_decode_finds_a_torn_chunk_present_on_both_sides(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, SMALL)
    key = chunks(src)[9]
    # The writer itself tore it: half a blosc stream, on the source.
    os.truncate(src / key, (src / key).stat().st_size // 2)
    result = run_softcopy("copy", src, dst)
    assert result.returncode == 0, result.stderr
    rc, out, _ = verify(src, dst, "--hash")
    assert rc == 0, "source and destination agree byte for byte"
    rc, out, err = verify(src, dst, "--decode")
    assert rc == 1, err
    assert len(out) == 1 and out[0].startswith(f"does not decode: {key}: "), out


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def test_decode_finds_damaged_shard_indexes(tmp_path: Path) -> None:
    src, dst = _make_copy(tmp_path, replace(SMALL, format="v3-sharded"))
    meta = json.loads((dst / "zarr.json").read_text())
    sharding = meta["codecs"][0]["configuration"]
    inner = 1
    for outer, size in zip(meta["chunk_grid"]["configuration"]["chunk_shape"],
                           sharding["chunk_shape"], strict=True):  # fmt: skip
        inner *= outer // size
    index_len = 16 * inner + 4  # (offset, nbytes) u64 pairs, then crc32c
    shards = chunks(dst)
    assert len(shards) >= 2
    # One shard: its index checksum no longer matches.
    flip_byte(dst / shards[0], offset=-index_len + 3)
    # Another: a checksum-valid index whose first entry runs past the end of the file.
    path = dst / shards[1]
    data = bytearray(path.read_bytes())
    entries = list(struct.unpack(f"<{2 * inner}Q", data[-index_len:-4]))
    entries[1] = len(data) + 1000
    index = struct.pack(f"<{2 * inner}Q", *entries)
    data[-index_len:] = index + struct.pack("<I", _crc32c(index))
    path.write_bytes(bytes(data))
    rc, out, _ = verify(src, dst)
    assert rc == 0, "same sizes: only decoding can tell"
    rc, out, err = verify(src, dst, "--decode")
    assert rc == 1, err
    assert sorted(line.split(": ")[1] for line in out) == shards[:2], out
    assert all(line.startswith("does not decode: ") for line in out)
    assert any("invalid for shard of size" in line for line in out), out


def test_usage_errors_exit_2(pair: tuple[Path, Path], tmp_path: Path) -> None:
    src, dst = pair
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [
        ((src, a_file), "it is not a directory"),
        ((src, tmp_path / "nowhere"), "nowhere: it does not exist"),
        ((src, dst, dst), "give SOURCE DESTINATION or DESTINATION"),
        ((src, dst, "--manifest", tmp_path / "m.b3"), "--manifest checks DESTINATION alone"),
        ((dst,), "cannot read manifest"),  # made without --hash: no sidecar manifest
        ((dst, "--manifest", tmp_path / "nowhere.b3"), "cannot read manifest"),
    ]
    for args, message in cases:
        rc, out, err = verify(*args)
        assert rc == 2, f"{args}: exit {rc}\n{out}\n{err}"
        assert message in err and "Traceback" not in err, err
    assert run_softcopy("verify").returncode == 2  # no path at all


def test_a_leftover_temporary_in_the_destination_fails_verification(
    pair: tuple[Path, Path],
) -> None:
    """A crashed copier's temporary: the copy is not clean, whatever the files say."""
    src, dst = pair
    (dst / "c" / ".softcopy-tmp.x").write_bytes(b"half a chunk")
    rc, out, err = verify(src, dst)
    assert rc == 1, err
    assert out == ["temporary file left in the destination: c/.softcopy-tmp.x"]


def test_any_file_name_is_reported_on_one_line(pair: tuple[Path, Path]) -> None:
    """A name with a newline cannot forge a line of the report; one that is not UTF-8 cannot
    crash it, even where stdout's encoding is strict."""
    src, dst = pair
    forged, raw = "x\nidentical: 0 files", os.fsdecode(b"raw \xff")
    (dst / forged).write_text("1")
    (dst / raw).write_text("2")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    result = run_softcopy("verify", src, dst, env=env)
    assert result.returncode == 1, result.stderr
    assert sorted(result.stdout.splitlines()) == [
        "extra: raw \\xff (in the destination, not in the source)",
        "extra: x\\nidentical: 0 files (in the destination, not in the source)",
    ]
    result = run_softcopy("verify", "--json", src, dst, env=env)
    *records, _ = map(json.loads, result.stdout.splitlines())
    # Strict JSON (no lone surrogates); names_hex gives the exact bytes back.
    keys = [name_from_json(r, r["key"]) for r in records]
    assert sorted(keys) == sorted([forged, raw]), "JSON keeps the names"
