"""A rerun with nothing to copy: its verification comes from its match with the journal
(engine/matched.py), and must say exactly what walking both trees would say."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import run_softcopy

from softcopy.verify.sizes import read_size_list

META = {
    "zarr_format": 3,
    "node_type": "array",
    "shape": [3, 64],
    "data_type": "uint8",
    "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1, 16]}},
    "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
    "fill_value": 0,
    "codecs": [{"name": "bytes"}],
}


def _archive(root: Path) -> None:
    """A finished zarr v3 array: every chunk file, metadata, a link, the marker."""
    (root / "c").mkdir(parents=True)
    (root / "zarr.json").write_text(json.dumps(META))
    for i in range(3):
        for j in range(4):
            (root / "c" / str(i)).mkdir(exist_ok=True)
            (root / "c" / str(i) / str(j)).write_bytes(bytes([i * 4 + j]) * 16)
    (root / "notes.txt").write_text("a note\n")
    (root / "latest").symlink_to("c/2")
    (root / "complete").write_text("")


def _copy(src: Path, dst: Path) -> dict:
    result = run_softcopy("copy", "--json", "--no-progress", src, dst)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    summary = lines[-1]
    summary["returncode"] = result.returncode
    summary["stderr"] = result.stderr
    return summary


def _certificate(dst: Path) -> dict:
    return json.loads((dst.parent / f"{dst.name}.softcopy" / "certificate.json").read_text())


def test_a_no_op_rerun_certifies_what_the_first_copy_did(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    _archive(src)
    first = _copy(src, dst)
    assert first["returncode"] == 0, first["stderr"]
    listed, _ = read_size_list(dst.parent / "dst.zarr.softcopy" / "files.tsv")
    before = _certificate(dst)
    again = _copy(src, dst)
    assert again["returncode"] == 0, again["stderr"]
    assert again["files_copied"] == 0 and again["files_already_there"] == first["files_copied"]
    relisted, _ = read_size_list(dst.parent / "dst.zarr.softcopy" / "files.tsv")
    assert relisted == listed  # every file, with the size and mtime the destination holds
    after = _certificate(dst)
    for field in ("verification", "files", "bytes", "links", "end_rule", "safe_to_free"):
        assert after.get(field) == before.get(field), field


def test_a_no_op_rerun_still_finds_broken_metadata(tmp_path: Path) -> None:
    """The match vouches for sizes and mtimes; the metadata is still read and parsed."""
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    _archive(src)
    assert _copy(src, dst)["returncode"] == 0
    meta = dst / "zarr.json"
    st = os.stat(meta)
    meta.write_bytes(b"{" + b" " * (st.st_size - 1))  # same size, not JSON
    os.utime(meta, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = _copy(src, dst)
    assert again["returncode"] == 1, again["stderr"]
    assert again["files_copied"] == 0  # trusted by the journal: size and mtime as copied
    assert "metadata does not parse: zarr.json" in again["stderr"] + json.dumps(again)


def test_a_rerun_that_finds_a_leftover_temporary_walks_both_trees(tmp_path: Path) -> None:
    """What the match cannot vouch for (a crashed run's partial file, removed now) sends
    verification back to walking both trees: the copy is still verified and done."""
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    _archive(src)
    assert _copy(src, dst)["returncode"] == 0
    before = _certificate(dst)
    (dst / "c" / "1" / ".softcopy-tmp.2").write_bytes(b"partial")
    again = _copy(src, dst)
    assert again["returncode"] == 0, again["stderr"]
    assert not (dst / "c" / "1" / ".softcopy-tmp.2").exists()
    after = _certificate(dst)
    assert (after["files"], after["bytes"]) == (before["files"], before["bytes"])
