"""A rerun's destination side at scale (engine/prematch.py): a directory of many files is
looked up in the journal as one range of its keys, and its size list lines are made in one
go. Both must give exactly what a key-by-key lookup and line-by-line formatting give,
whatever the journal holds around the range. Real trees, a real journal."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from softcopy.engine import prematch
from softcopy.sources.scan import Version
from softcopy.sources.select import Selection
from softcopy.state.journal import Journal, copied_at, copied_in, open_reader
from softcopy.verify.sizes import format_entries, format_entry

MANY = 2 * prematch._RANGE_FROM  # files in a directory looked up as a range


def _journal(tmp_path: Path, dst: Path, rows: list[tuple[str, Version, str]]) -> Journal:
    journal = Journal(tmp_path / "state", str(tmp_path / "src"), str(dst))
    journal.checkpoint(rows, [], {}, {})
    return journal


def test_a_range_of_keys_finds_what_a_lookup_per_key_finds(tmp_path: Path) -> None:
    names = [str(i) for i in range(MANY)] + ["never-copied"]
    rows = [
        (f"c/5/{n}", Version(i, i + 1, i + 2, i + 3), "ab" * 32 if i % 7 == 0 else "")
        for i, n in enumerate(names[:-1])
    ]
    # Around the range and inside it, keys that are not the directory's files: a neighbour
    # whose name extends it ("c/50"), a parent's file, a subtree's file, a sibling "c/5.x".
    rows += [(k, Version(9, 9, 9, 9), "") for k in ("c/50/0", "c/5", "c/5/x/0", "c/5.x/0")]
    journal = _journal(tmp_path, tmp_path / "dst", rows)
    try:
        db = open_reader(journal.path)
        ranged = copied_in(db, journal.id, "c/5", names)
        assert ranged == copied_at(db, journal.id, [f"c/5/{n}" for n in names])
        assert ranged is not None and ranged[-1] == (None,) * 5 and ranged[7][4] == "ab" * 32
        db.close()
    finally:
        journal.close()


def test_a_range_stands_in_only_where_it_can(tmp_path: Path) -> None:
    """Not at the root, not for names that may be stored as bytes, not for a range that
    holds far more rows than the directory's files."""
    rows = [(f"big/x/{i}", Version(1, 2, 3, 4), "") for i in range(300)]
    journal = _journal(tmp_path, tmp_path / "dst", rows)
    try:
        db = open_reader(journal.path)
        assert copied_in(db, journal.id, "", ["a", "b"]) is None
        assert copied_in(db, journal.id, "a", ["x", os.fsdecode(b"\xff")]) is None
        assert copied_in(db, journal.id, "big", ["0", "1"]) is None  # 300 rows below it
        assert copied_in(db, journal.id, "big/x", [str(i) for i in range(301)]) is not None
        db.close()
    finally:
        journal.close()


def test_lines_made_in_one_go_are_the_lines_made_one_by_one() -> None:
    sizes, mtimes = [1, 10, 0], [2, -5, 0]
    for prefix, names in (
        ("c/0/", ["0", "1", "zarr.json"]),
        ("", ["plain", "back\\slash", "new\nline"]),
        ("a/", ["é", os.fsdecode(b"\xff"), "x"]),
        (os.fsdecode(b"\xfe/"), ["0", "1", "2"]),
    ):
        rows = zip(names, sizes, mtimes, strict=True)
        expected = "".join(format_entry(prefix + n, s, m) for n, s, m in rows)
        assert format_entries(prefix, names, sizes, mtimes) == expected


def _serve(tmp_path: Path, dst: Path, journal: Journal) -> list[object]:
    out = tmp_path / "records"
    with open(out, "wb") as f:
        prematch.serve(str(dst), journal.path, journal.id, Selection("complete"), f, batch=100)
    found: list[object] = []
    with open(out, "rb") as f:
        while not found or not isinstance(found[-1], prematch.End):
            found.append(pickle.load(f))
    return found


def test_the_destination_side_reports_each_file_of_a_large_directory(tmp_path: Path) -> None:
    """Directories looked up as ranges beside small ones looked up key by key, in batches that
    end inside neither: every row holds its own file's listing, record, digest and line."""
    dst = tmp_path / "dst"
    (dst / "c" / "0").mkdir(parents=True)
    (dst / "c" / "1").mkdir()
    (dst / "zarr.json").write_text("{}")
    for i in range(MANY):
        (dst / "c" / "0" / str(i)).write_bytes(b"x" * (i % 5))
    for i in range(3):
        (dst / "c" / "1" / str(i)).write_bytes(b"y")
    (dst / "c" / "0" / "zarr.json").write_text("{}")  # a metadata name inside a big one
    rows = []
    for key in ["zarr.json", *(f"c/0/{i}" for i in range(0, MANY, 2)), "c/1/1", "c/0/gone"]:
        st = os.lstat(dst / key) if (dst / key).exists() else None
        version = Version(st.st_size, st.st_mtime_ns, 7, 8) if st else Version(1, 1, 1, 1)
        rows.append((key, version, "cd" * 32 if key.endswith("2") else ""))
    journal = _journal(tmp_path, dst, rows)
    try:
        found = _serve(tmp_path, dst, journal)
    finally:
        journal.close()
    journaled = {k: (v, d) for k, v, d in rows}
    batches = [r for r in found if isinstance(r, prematch.Batch)]
    seen = []
    for batch in batches:
        keys = [f"{d}/{n}" if d else n for d, names in batch.dirs for n in names]
        there = np.frombuffer(batch.there, dtype=np.int64).reshape(-1, 4)
        records = np.frombuffer(batch.records, dtype=np.int64).reshape(-1, 4)
        for row, key in enumerate(keys):
            st = os.lstat(dst / key)
            assert tuple(there[row]) == (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
            version, digest = journaled.get(key, (Version(-1, -1, -1, -1), ""))
            assert tuple(records[row]) == tuple(version), key
            assert batch.digests.get(row, "") == digest, key
        lines = "".join(format_entry(k, *there[r, :2].tolist()) for r, k in enumerate(keys))
        assert batch.lines == lines.encode()
        assert [keys[r] for r in batch.metadata] == [k for k in keys if k.endswith("zarr.json")]
        seen += keys
    assert sorted(seen) == sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file())
    assert len(batches) > 1
