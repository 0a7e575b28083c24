"""A listing without keys (`list_names`, `iter_dir_names`: the supervisor's full scans and a
rerun's destination side) says exactly what the keyed listing says, for every kind of entry;
and a full scan through it finds what changed, what is wanted, and the newest change."""

from __future__ import annotations

import json
import os
from pathlib import Path

from softcopy.engine.ledger import Ledger
from softcopy.engine.observe import SourceView, newest_change_ns
from softcopy.sources.kinds import source_kind
from softcopy.sources.scan import Version, iter_dir_names, iter_dirs
from softcopy.sources.select import Selection
from softcopy.zarr.layout import parse_array_metadata


def _tree(root: Path) -> None:
    (root / "c" / "0").mkdir(parents=True)
    (root / "c" / "1" / "deep").mkdir(parents=True)
    (root / "zarr.json").write_text("{}")
    for name in ["0", "1", "x.__lock", f"y.{'a' * 32}.partial", ".softcopy-tmp.0"]:
        (root / "c" / "0" / name).write_bytes(b"1234")
    (root / "c" / "1" / "deep" / "f").write_bytes(b"x" * 10)
    (root / "c" / "1" / os.fsdecode(b"\xff-not-utf8")).write_bytes(b"y")
    (root / "link").symlink_to("zarr.json")
    (root / "dirlink").symlink_to("c")
    os.mkfifo(root / "fifo")


def test_a_listing_without_keys_lists_what_the_keyed_listing_lists(tmp_path: Path) -> None:
    root = tmp_path / "src"
    _tree(root)
    keyed = list(iter_dirs(str(root)))
    named = list(iter_dir_names(str(root)))
    assert [rel for rel, _ in named] == [rel for rel, _ in keyed]
    for (rel, a), (_, b) in zip(keyed, named, strict=True):
        assert not isinstance(a, OSError) and not isinstance(b, OSError)
        prefix = f"{rel}/" if rel else ""
        flat = b.versions.tolist()
        versions = [Version(*flat[4 * j : 4 * j + 4]) for j in range(len(b.names))]
        assert dict(zip([prefix + n for n in b.names], versions, strict=True)) == a.files
        assert len(flat) == 4 * len(b.names)
        assert (b.links, b.dirs, b.temporary) == (a.links, a.dirs, a.temporary)
        assert b.newest_ns == a.newest_ns
        assert b.errors == a.errors == []
    # Below a directory, as a new directory's subtree is listed.
    assert [rel for rel, _ in iter_dir_names(str(root), "c")] == ["c", "c/0", "c/1", "c/1/deep"]


META = {
    "zarr_format": 3,
    "node_type": "array",
    "shape": [2, 8],
    "data_type": "uint8",
    "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1, 4]}},
    "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
    "fill_value": 0,
    "codecs": [{"name": "bytes"}],
}


def _view(root: Path, select: Selection) -> tuple[SourceView, list[list[str]]]:
    changes: list[list[str]] = []
    ledger = Ledger()
    view = SourceView(
        str(root), source_kind("zarr", 0), select, ledger, lambda k, _: changes.append(k), 3600.0
    )
    return view, changes


def test_a_full_scan_finds_each_change_and_counts_only_what_is_wanted(tmp_path: Path) -> None:
    root = tmp_path / "a.zarr"
    for i in range(2):
        (root / "c" / str(i)).mkdir(parents=True)
        for j in range(2):
            (root / "c" / str(i) / str(j)).write_bytes(b"1234")
    (root / "c" / "0" / "notes.txt").write_bytes(b"not a chunk")  # beside chunk files
    (root / "zarr.json").write_text(json.dumps(META))
    (root / "skip.log").write_bytes(b"excluded" * 10)
    (root / "complete").write_text("")
    view, changes = _view(root, Selection("complete", exclude=("*.log",)))
    assert view.full_scan(initial=True) == 6  # zarr.json, 4 chunks, notes.txt
    assert sorted(k for batch in changes for k in batch) == sorted(
        ["zarr.json", "c/0/0", "c/0/1", "c/1/0", "c/1/1", "c/0/notes.txt"]
    )
    assert view.files_at_source == 6
    assert view.bytes_at_source == 4 * 4 + len(b"not a chunk") + len(json.dumps(META))
    assert set(view.markers) == {"complete"}
    assert view.listed_at_ns > 0
    changes.clear()
    assert view.full_scan() == 0 and changes == []
    (root / "c" / "1" / "0").write_bytes(b"12345")  # a chunk rewritten
    (root / "c" / "0" / "notes.txt").unlink()  # a file that is not a chunk, deleted
    assert view.full_scan() == 2
    assert sorted(k for batch in changes for k in batch) == ["c/0/notes.txt", "c/1/0"]
    # The newest change counts every file listed, the excluded one too.
    os.utime(root / "skip.log", ns=(4 * 10**18, 4 * 10**18))
    view.full_scan()
    assert view.newest_ns == newest_change_ns(str(root)) >= 4 * 10**18


def test_folders_of_few_and_many_chunks_in_one_array_are_observed_as_one_by_one(
    tmp_path: Path,
) -> None:
    # Folders below 16 files go through plain lists, larger ones through numpy, and both
    # feed one array's rows in listing order: every chunk must land on its own row.
    meta = {**META, "shape": [7, 40], "chunk_grid": {"name": "regular",
            "configuration": {"chunk_shape": [1, 1]}}}  # fmt: skip
    root = tmp_path / "a.zarr"
    root.mkdir()
    (root / "zarr.json").write_text(json.dumps(meta))
    counts = {0: 40, 1: 3, 2: 17, 3: 1, 4: 3, 5: 1, 6: 2}
    for t, n in counts.items():
        (root / "c" / str(t)).mkdir(parents=True)
        for x in range(n):
            (root / "c" / str(t) / str(x)).write_bytes(b"v" * (t * 100 + x + 1))
    (root / "c" / "4" / "notes.txt").write_bytes(b"not a chunk")  # a small folder, not all chunks
    (root / "c" / "5" / "0").unlink()
    (root / "c" / "5" / "99").write_bytes(b"beyond the grid")  # a small folder, off the grid
    layout = parse_array_metadata(meta, "", "zarr.json")
    by_names, one_by_one = Ledger(), Ledger()
    by_names.set_layout(layout)
    one_by_one.set_layout(layout)
    named = [
        (rel, listing.names, listing.versions)
        for rel, listing in iter_dir_names(str(root))
        if not isinstance(listing, OSError)
    ]
    keyed = {
        key: version
        for _, listing in iter_dirs(str(root))
        if not isinstance(listing, OSError)
        for key, version in listing.files.items()
    }
    assert sorted(by_names.observe_names(named)) == sorted(one_by_one.observe_many(keyed.items()))
    for key, version in keyed.items():
        assert by_names.source(key) == one_by_one.source(key) == version, key
    assert by_names.pending_count() == one_by_one.pending_count() == len(keyed)
    # A second listing after one chunk of a small and one of a large folder changed.
    (root / "c" / "1" / "2").write_bytes(b"changed")
    (root / "c" / "0" / "39").write_bytes(b"changed too")
    named = [(rel, x.names, x.versions) for rel, x in iter_dir_names(str(root))]
    assert sorted(by_names.observe_names(named)) == ["c/0/39", "c/1/2"]
