"""Huge and hostile zarr metadata through the real CLI: huge grids cost memory per file that
exists, metadata softcopy cannot take is one clear error (exit 2), and neither breaks a copy
that is already running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    DEADLINE,
    assert_same_tree,
    finish,
    run_softcopy,
    softcopy_cmd,
    start_softcopy,
    tree_files,
    wait_for,
)

GROUP = {"zarr_format": 3, "node_type": "group"}


def v3_array(shape: list[int], chunks: list[int]) -> dict:
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": shape,
        "data_type": "uint8",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}},
        "chunk_key_encoding": {"name": "default"},
        "codecs": [{"name": "bytes"}],
        "fill_value": 0,
    }


CANVAS = v3_array([10**6, 10**6], [1, 1])  # a sparse mosaic canvas: 10^12 chunk files
TILES = ["c/0/0", "c/0/1", "c/123456/654321", "c/999999/999999"]


def write_array(path: Path, meta: dict | str, chunks: list[str]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "zarr.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    for key in chunks:
        (path / key).parent.mkdir(parents=True, exist_ok=True)
        (path / key).write_bytes(b"\x07")  # one uint8 element: a chunk that decodes


def run_measured(*args: object) -> tuple[subprocess.CompletedProcess, int]:
    """Run softcopy under a wrapper that reports the peak RSS (bytes) of softcopy and of the
    copiers it waited for, and of nothing else this test process ever started."""
    wrapper = (
        "import resource, subprocess, sys\n"
        "code = subprocess.run(sys.argv[1:]).returncode\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(f'peak-rss-kib={peak}', file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", wrapper, *softcopy_cmd(*args)],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    line = [x for x in result.stderr.splitlines() if x.startswith("peak-rss-kib=")][-1]
    return result, int(line.split("=")[1]) * 1024


def assert_one_error(stderr: str, *needles: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert stderr.count("softcopy: error:") == 1, stderr
    paragraphs = [p for p in stderr.strip().split("\n\n") if p.strip()]
    assert len(paragraphs) == 1, stderr
    for needle in needles:
        assert needle in stderr, f"{needle!r} not in {stderr!r}"


def test_a_sparse_canvas_of_10_to_the_12_chunks_copies_with_bounded_memory(
    tmp_path: Path,
) -> None:
    src, dst = tmp_path / "canvas.zarr", tmp_path / "copy.zarr"
    write_array(src, CANVAS, TILES)
    (src / "complete").touch()
    result, peak = run_measured("copy", src, dst, "--nprocs", "1")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert_same_tree(src, dst)
    # A dense ledger of the grid would need 33 TB; a bound on memory, not on speed.
    assert peak < 500 * 2**20, f"peak RSS {peak / 2**20:.0f} MiB"
    # Verification reads the metadata again, and --decode decodes every tile in the grid.
    check = run_softcopy("verify", "--decode", src, dst)
    assert check.returncode == 0, check.stdout + check.stderr


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        (v3_array([4, 2**63], [1, 1]), ["shape[1] = 9223372036854775808 is larger than 2^63-1"]),
        (v3_array([10**400, 4], [1, 1]), ["shape[0] = 10^400 is larger than 2^63-1"]),
        (v3_array([2**40, 2**40], [1, 1]), ["cells, more than 2^63-1"]),
        (v3_array([1] * 100, [1] * 100), ["100 dimensions, more than 32"]),
        ('{"zarr_format": 3, "node_type": "array", "attributes": ' + deep(100_000) + "}",
         ["nesting deeper than 256 levels"]),
        (json.dumps(v3_array([4], [1])) + " " * (65 * 2**20),
         ["more than the 64 MiB softcopy reads as metadata"]),
    ],
    ids=["2^63", "10^400", "2^80-cells", "rank-100", "nested-100000", "65MiB"],
)  # fmt: skip
def test_metadata_softcopy_cannot_take_is_one_clear_error(
    tmp_path: Path, content: dict | str, needles: list[str]
) -> None:
    src, dst = tmp_path / "bad.zarr", tmp_path / "copy.zarr"
    write_array(src, content, ["c/0/0"])
    result = run_softcopy("copy", src, dst, "--idle-timeout", "1")
    assert result.returncode == 2, result.stderr
    assert_one_error(result.stderr, f"{src}/zarr.json", *needles)
    assert "Traceback" in run_softcopy("-v", "copy", src, dst).stderr, "--verbose shows it"


def test_deeply_nested_attributes_break_neither_the_copy_nor_the_verification(
    tmp_path: Path,
) -> None:
    src, dst = tmp_path / "img.zarr", tmp_path / "copy.zarr"
    src.mkdir()
    (src / ".zarray").write_text(
        json.dumps({"zarr_format": 2, "shape": [4], "chunks": [2], "dtype": "|u1",
                    "compressor": None, "fill_value": 0, "order": "C", "filters": None})
    )  # fmt: skip
    (src / "0").write_bytes(b"\1\2")
    (src / "1").write_bytes(b"\3\4")
    # Valid JSON that json.loads cannot take (RecursionError); not needed for any layout.
    (src / ".zattrs").write_text('{"a": ' + deep(100_000) + "}")
    (src / "complete").touch()
    result = run_softcopy("copy", src, dst, "--hash")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert_same_tree(src, dst)
    check = run_softcopy("verify", "--decode", src, dst)
    assert check.returncode == 0, check.stdout + check.stderr
    # Broken at the same depth, it is a finding, not a crash.
    (dst / ".zattrs").write_text('{"a": ' + deep(100_000)[:-1] + "}")
    check = run_softcopy("verify", src, dst)
    assert check.returncode == 1 and "Traceback" not in check.stderr, check.stderr
    assert ".zattrs" in check.stdout + check.stderr


def start_group_copy(tmp_path: Path) -> tuple[Path, Path, subprocess.Popen]:
    src, dst = tmp_path / "plate.zarr", tmp_path / "copy.zarr"
    src.mkdir()
    (src / "zarr.json").write_text(json.dumps(GROUP))
    write_array(src / "a", v3_array([4, 4], [2, 2]), ["c/0/0", "c/1/1"])
    copier = start_softcopy("copy", src, dst, "--settle", "600", "--scan-interval", "600")
    wait_for(lambda: tree_files(dst) == tree_files(src), what="the first array", proc=copier)
    return src, dst, copier


def add_array(src: Path, tmp_path: Path, name: str, meta: dict, chunks: list[str]) -> None:
    # Built aside and renamed in, as a whole new sub-tree appears.
    aside = tmp_path / f"aside-{name}"
    write_array(aside, meta, chunks)
    os.rename(aside, src / name)


def test_a_huge_grid_appearing_mid_run_is_copied_like_any_other(tmp_path: Path) -> None:
    src, dst, copier = start_group_copy(tmp_path)
    add_array(src, tmp_path, "canvas", CANVAS, TILES)
    wait_for(lambda: tree_files(dst) == tree_files(src), what="the canvas", proc=copier)
    (src / "a" / "c" / "1" / "0").write_bytes(b"\1" * 4)  # the first array still copies
    wait_for(lambda: tree_files(dst) == tree_files(src), what="a new chunk", proc=copier)
    (src / "complete").touch()
    rc, _, err = finish(copier)
    assert rc == 0, err
    assert "Traceback" not in err
    assert_same_tree(src, dst)


def test_metadata_softcopy_cannot_take_appearing_mid_run_is_a_warning(tmp_path: Path) -> None:
    src, dst, copier = start_group_copy(tmp_path)
    add_array(src, tmp_path, "bad", v3_array([2**63], [1]), ["c/0"])
    wait_for(lambda: tree_files(dst) == tree_files(src), what="the bad array", proc=copier)
    (src / "a" / "c" / "1" / "0").write_bytes(b"\1" * 4)
    wait_for(lambda: tree_files(dst) == tree_files(src), what="a new chunk", proc=copier)
    (src / "complete").touch()
    rc, out, err = finish(copier)
    assert "Traceback" not in err
    assert f"{src}/bad/zarr.json" in err and "larger than 2^63-1" in err, err
    assert_same_tree(src, dst, ignore=("complete",))
    # Everything is copied; the target still fails, naming the metadata that does not parse.
    assert rc == 1, err
    assert "bad/zarr.json" in out + err
