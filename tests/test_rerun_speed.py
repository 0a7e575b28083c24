"""A large rerun lists its destination and asks the journal in a process of its own, beside
the source's listing (engine/prematch.py): it must decide exactly what the supervisor's own
listing of the destination decides. Real trees, a real journal, the real process; only its
threshold is lowered, so a few files take the path a large copy takes."""

from __future__ import annotations

import json
import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest

from softcopy.config import make_target
from softcopy.engine import prematch
from softcopy.engine import target as target_module
from softcopy.engine.events import Summary
from softcopy.engine.target import copy_target
from softcopy.sources.scan import TEMP_PREFIX, Version
from softcopy.sources.select import Selection
from softcopy.state.journal import Journal
from softcopy.verify.sizes import format_entry, read_size_list

META = {
    "zarr_format": 3,
    "node_type": "array",
    "shape": [4, 64],
    "data_type": "uint8",
    "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1, 16]}},
    "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
    "fill_value": 0,
    "codecs": [{"name": "bytes"}],
}


def _archive(root: Path) -> None:
    (root / "c").mkdir(parents=True)
    (root / "zarr.json").write_text(json.dumps(META))
    for i in range(4):
        (root / "c" / str(i)).mkdir()
        for j in range(4):
            (root / "c" / str(i) / str(j)).write_bytes(bytes([i * 4 + j]) * 16)
    (root / "notes.txt").write_text("a note\n")
    (root / "latest").symlink_to("c/2")
    (root / "complete").write_text("")


def _files(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath, name)
            key = str(path.relative_to(root))
            out[key] = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
    return out


@pytest.fixture
def sides(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every destination side started; a threshold of one file, so these trees take it."""
    started: list[object] = []
    real = prematch.start

    def start(*args: object, **kw: object) -> object:
        side = real(*args, **kw)  # type: ignore[arg-type]
        started.append(side)
        return side

    monkeypatch.setattr(target_module, "_SIDE_FROM", 1)
    monkeypatch.setattr(target_module, "start_destination_side", start)
    return started


def _copy(src: Path, dst: Path, options: dict | None = None) -> Summary:
    """In a thread of its own: a supervisor lowers its thread's priority."""
    cfg = make_target(src, dst, options or {"nprocs": 1}, "test")
    done: list[Summary] = []
    thread = threading.Thread(target=lambda: done.append(copy_target(cfg)))
    thread.start()
    thread.join()
    return done[0]


def test_a_no_op_rerun_through_the_destination_side_certifies_the_same(
    tmp_path: Path, sides: list
) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    _archive(src)
    first = _copy(src, dst)
    assert first.state == "done" and not sides  # a new destination: nothing to look up
    records = dst.parent / "dst.zarr.softcopy"
    listed, _ = read_size_list(records / "files.tsv")
    again = _copy(src, dst)
    assert len(sides) == 1 and sides[0] is not None
    assert again.state == "done", again.error
    assert (again.files_copied, again.files_already_there) == (0, first.files_copied)
    relisted, _ = read_size_list(records / "files.tsv")
    assert relisted == listed
    certificate = json.loads((records / "certificate.json").read_text())
    assert certificate["files"] == len(listed)


def _differences(root: Path) -> tuple[Path, Path]:
    """A finished copy, then changes at both ends that a rerun must find."""
    src, dst = root / "src.zarr", root / "dst.zarr"
    _archive(src)
    assert _copy(src, dst).state == "done"
    (dst / "c/0/0").write_bytes(b"another size")  # re-copied
    (dst / "c/0/1").unlink()  # copied again
    (dst / "c/3/extra").write_bytes(b"not in the source")  # deleted: the copy is ours
    (src / "c/1/1").write_bytes(b"new at the source")  # copied
    st = os.stat(dst / "c/2/2")
    os.utime(dst / "c/2/2", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # compared
    (dst / "c/2" / f"{TEMP_PREFIX}3").write_bytes(b"a crashed run's partial file")
    return src, dst


def test_every_difference_is_found_through_the_destination_side(
    tmp_path: Path, sides: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = _differences(tmp_path / "side")
    again = _copy(src, dst)
    assert len(sides) == 1 and sides[0] is not None
    assert again.state == "done", again.error
    assert _files(dst) == _files(src)
    monkeypatch.setattr(target_module, "_SIDE_FROM", 10**9)  # the supervisor lists it
    src, dst = _differences(tmp_path / "itself")
    alone = _copy(src, dst)
    assert len(sides) == 1
    assert alone.state == "done", alone.error
    fields = ("files_copied", "bytes_copied", "files_deleted", "files_already_there")
    assert [getattr(again, f) for f in fields] == [getattr(alone, f) for f in fields]
    assert again.files_deleted == 1 and again.files_copied >= 3


def test_a_destination_side_that_fails_leaves_the_listing_to_the_supervisor(
    tmp_path: Path,
) -> None:
    (tmp_path / "dst").mkdir()
    missing = tmp_path / "state" / "journal.sqlite"  # it cannot open the journal: exit 1
    side = prematch.start(str(tmp_path / "dst"), missing, 1, Selection("complete"))
    assert side is not None
    try:
        assert side.records(lambda: False) is None
    finally:
        side.close()


def test_the_destination_side_reports_what_the_listing_shows(tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    (dst / "a").mkdir(parents=True)
    (dst / "a" / "x").write_bytes(b"12345")
    (dst / "a" / os.fsdecode(b"\xff")).write_bytes(b"12")  # not UTF-8
    (dst / "a" / f"{TEMP_PREFIX}x").write_bytes(b"1")
    (dst / "link").symlink_to("a/x")
    (dst / "complete").write_text("")
    journal = Journal(tmp_path / "state", str(tmp_path / "src"), str(dst))
    try:
        vouched = Version(5, 123, 456, 789)
        odd = os.fsdecode(b"a/\xff")
        journal.checkpoint([("a/x", vouched, "ab" * 32), (odd, vouched, "")], [], {}, {})
        out = tmp_path / "records"
        with open(out, "wb") as f:
            prematch.serve(str(dst), journal.path, journal.id, Selection("complete"), f)
    finally:
        journal.close()
    found = []
    with open(out, "rb") as f:
        while not found or not isinstance(found[-1], prematch.End):
            found.append(pickle.load(f))
    dirs = [r for r in found if isinstance(r, prematch.Directory)]
    (batch,) = [r for r in found if isinstance(r, prematch.Batch)]
    assert found[-1].markers == ["complete"]
    assert [d.links for d in dirs if d.links] == [["link"]]
    assert [(d.temporary, d.doubt) for d in dirs if d.temporary] == [([f"a/{TEMP_PREFIX}x"], True)]
    assert [(d, sorted(names)) for d, names in batch.dirs] == [("a", sorted(["x", "\udcff"]))]
    names = batch.dirs[0][1]
    there = np.frombuffer(batch.there, dtype=np.int64).reshape(-1, 4)
    records = np.frombuffer(batch.records, dtype=np.int64).reshape(-1, 4)
    for row, name in enumerate(names):
        key = f"a/{name}"
        st = os.lstat(dst / key)
        assert tuple(there[row]) == (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
        assert tuple(records[row]) == tuple(vouched)
        assert (batch.digests.get(row, "") == "ab" * 32) == (name == "x")
    expected = "".join(format_entry(f"a/{n}", *there[r, :2].tolist()) for r, n in enumerate(names))
    assert batch.lines == expected.encode("utf-8", "surrogateescape")


def test_a_hashed_rerun_through_the_destination_side_keeps_each_files_digest(
    tmp_path: Path, sides: list
) -> None:
    """Each digest the journal holds goes to its own file's row: verification checks them."""
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    _archive(src)
    for _ in range(2):
        summary = _copy(src, dst, {"nprocs": 1, "hash": True})
        assert summary.state == "done", summary.error
    assert len(sides) == 1 and sides[0] is not None
    assert summary.files_copied == 0


@pytest.fixture
def pools(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many copiers each copier pool of a run started with."""
    started: list[int] = []

    class Pool(target_module.CopierPool):
        def __init__(self, n: int, options: object) -> None:
            started.append(n)
            super().__init__(n, options)  # type: ignore[arg-type]

    monkeypatch.setattr(target_module, "CopierPool", Pool)
    return started


def test_a_no_op_rerun_starts_no_copier(tmp_path: Path, pools: list[int]) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    _archive(src)
    assert _copy(src, dst).state == "done"
    assert pools == [1]
    again = _copy(src, dst)
    assert again.state == "done" and again.files_copied == 0
    assert pools == [1, 0]


def test_copiers_start_when_work_appears_during_a_rerun(tmp_path: Path, pools: list[int]) -> None:
    """A rerun that found nothing to do starts its copiers once the source changes."""
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    _archive(src)
    assert _copy(src, dst).state == "done"
    (src / "complete").unlink()
    wrote: list[bool] = []

    def events(event: dict) -> None:
        # In the supervisor's thread, at its first progress report: the loop is running.
        if event["event"] == "progress" and not wrote:
            wrote.append(True)
            (src / "later.txt").write_text("written during the rerun\n")
            (src / "complete").write_text("")

    cfg = make_target(src, dst, {"nprocs": 1, "settle": 3600.0}, "test")
    done: list[Summary] = []
    thread = threading.Thread(target=lambda: done.append(copy_target(cfg, events=events)))
    thread.start()
    thread.join()
    assert wrote and done[0].state == "done", done[0].error
    assert done[0].files_copied == 1
    assert pools == [1, 0, 1]
    assert (dst / "later.txt").read_text() == "written during the rerun\n"
