"""A large rerun's destination side begun by `copy` before the engine's imports
(engine/early_match.py): the supervisor takes it only when what it read still stands, and the
rerun decides exactly what it decides without it. Real trees, a real journal, the real process;
only the thresholds are lowered, so a few files take the path a large copy takes."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from test_rerun_speed import META, _files

from softcopy.cli import copy as cli_copy
from softcopy.config import TargetConfig, make_target
from softcopy.engine import early_match
from softcopy.engine import target as target_module
from softcopy.engine.events import Summary
from softcopy.engine.target import copy_target
from softcopy.sources.scan import TEMP_PREFIX
from softcopy.state.journal import Journal, default_state_dir
from softcopy.state.records import Records, records_dir
from softcopy.verify.sizes import read_size_list


def _archive(root: Path) -> None:
    """test_rerun_speed's archive without its link: every file has a size-list line."""
    (root / "c").mkdir(parents=True)
    (root / "zarr.json").write_text(json.dumps(META))
    for i in range(4):
        (root / "c" / str(i)).mkdir()
        for j in range(4):
            (root / "c" / str(i) / str(j)).write_bytes(bytes([i * 4 + j]) * 16)
    (root / "notes.txt").write_text("a note\n")
    (root / "complete").write_text("")


def _one_file_copied_again(src: Path, dst: Path, taken: list[bool], took: bool) -> None:
    """The rerun (which took the side begun early, or not) copies the one file missing."""
    again = _copy(src, dst)
    assert taken == [took]
    assert again.state == "done", again.error
    assert again.files_copied == 1
    assert _files(dst) == _files(src)


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each supervisor took a side begun early; thresholds of one file."""
    seen: list[bool] = []
    real = early_match.take

    def take(*args: object) -> object:
        side = real(*args)  # type: ignore[arg-type]
        seen.append(side is not None)
        return side

    monkeypatch.setattr(early_match, "SIDE_FROM", 1)
    monkeypatch.setattr(target_module, "_SIDE_FROM", 1)
    monkeypatch.setattr(target_module, "take_early_side", take)
    yield seen
    early_match.discard()


def _cfg(src: Path, dst: Path | str, options: dict | None = None) -> TargetConfig:
    return make_target(src, dst, options or {"nprocs": 1}, "test")


def _copy(src: Path, dst: Path, options: dict | None = None) -> Summary:
    """In a thread of its own: a supervisor lowers its thread's priority."""
    done: list[Summary] = []
    thread = threading.Thread(target=lambda: done.append(copy_target(_cfg(src, dst, options))))
    thread.start()
    thread.join()
    return done[0]


def _finished(root: Path) -> tuple[Path, Path]:
    src, dst = root / "src.zarr", root / "dst.zarr"
    _archive(src)
    assert _copy(src, dst).state == "done"
    return src, dst


def test_a_no_op_rerun_takes_the_side_begun_early_and_certifies_the_same(
    tmp_path: Path, taken: list[bool]
) -> None:
    src, dst = _finished(tmp_path)
    records = records_dir(dst)
    listed, _ = read_size_list(records / "files.tsv")
    cli_copy._start_copiers([_cfg(src, dst)], dry_run=False)  # as `copy` does
    assert early_match._started  # begun, before any supervisor
    again = _copy(src, dst)
    assert taken == [True]
    assert again.state == "done", again.error
    assert (again.files_copied, again.files_already_there) == (0, len(listed) - 1)
    relisted, _ = read_size_list(records / "files.tsv")
    assert relisted == listed
    assert json.loads((records / "certificate.json").read_text())["files"] == len(listed)


def _change(src: Path, dst: Path) -> None:
    """Changes at both ends that a rerun must find."""
    (dst / "c/0/0").write_bytes(b"another size")  # re-copied
    (dst / "c/0/1").unlink()  # copied again
    (dst / "c/3/extra").write_bytes(b"not in the source")  # deleted: the copy is ours
    st = os.stat(dst / "c/2/2")
    os.utime(dst / "c/2/2", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # compared
    (dst / "c/2" / f"{TEMP_PREFIX}3").write_bytes(b"a crashed run's partial file")
    (src / "c/1/1").write_bytes(b"new at the source")  # copied


def test_every_difference_is_found_through_the_side_begun_early(
    tmp_path: Path, taken: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = _finished(tmp_path / "early")
    _change(src, dst)
    assert early_match.begin(_cfg(src, dst))
    (src / "c/3/3").write_bytes(b"changed after the side began")  # the source is listed later
    again = _copy(src, dst)
    assert taken == [True]
    assert again.state == "done", again.error
    assert _files(dst) == _files(src)
    monkeypatch.setattr(target_module, "_SIDE_FROM", 10**9)  # the supervisor lists it
    src, dst = _finished(tmp_path / "itself")
    _change(src, dst)
    (src / "c/3/3").write_bytes(b"changed after the side began")
    alone = _copy(src, dst)
    assert taken == [True, False]
    assert alone.state == "done", alone.error
    fields = ("files_copied", "bytes_copied", "files_deleted", "files_already_there")
    assert [getattr(again, f) for f in fields] == [getattr(alone, f) for f in fields]
    assert again.files_deleted == 1 and again.files_copied >= 4


def test_a_run_between_the_side_and_the_supervisor_leaves_the_side_unused(
    tmp_path: Path, taken: list[bool]
) -> None:
    src, dst = _finished(tmp_path)
    assert early_match.begin(_cfg(src, dst))
    # Another run opened the journal for this target (and could have written the destination)
    # after the side read it: what the side found may be stale.
    Journal(default_state_dir(), str(src), str(dst)).close()
    (dst / "c/1/2").unlink()
    _one_file_copied_again(src, dst, taken, took=False)


def test_a_side_older_than_a_start_up_is_left_unused(
    tmp_path: Path, taken: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = _finished(tmp_path)
    assert early_match.begin(_cfg(src, dst))
    # A supervisor that waited (for its source) would list a destination changed meanwhile.
    monkeypatch.setattr(early_match, "FRESH_FOR", -1.0)
    (dst / "c/1/2").unlink()
    _one_file_copied_again(src, dst, taken, took=False)


def test_a_missing_file_found_by_the_side_begun_early_is_copied_again(
    tmp_path: Path, taken: list[bool]
) -> None:
    src, dst = _finished(tmp_path)
    (dst / "c/1/2").unlink()
    assert early_match.begin(_cfg(src, dst))
    _one_file_copied_again(src, dst, taken, took=True)


def test_nothing_begins_early_where_it_is_not_safe_or_not_worth_it(
    tmp_path: Path, taken: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = _finished(tmp_path)
    assert not early_match.begin(_cfg(src, dst, {"nprocs": 1, "dry_run": True}))
    assert not early_match.begin(_cfg(src, dst, {"nprocs": 1, "pack": "tar"}))
    assert not early_match.begin(_cfg(src, tmp_path / "never.zarr"))  # nothing there yet
    assert not early_match.begin(_cfg(src, "s3://bucket/copy.zarr"))  # no request made
    held = Records.open(records_dir(dst))
    assert held is not None and held.lock()  # another run holds the destination
    try:
        assert not early_match.begin(_cfg(src, dst))
    finally:
        held.close()
    assert not early_match.begin(_cfg(tmp_path / "another.zarr", dst))  # another source
    (tmp_path / "another.zarr").mkdir()
    assert not early_match.begin(_cfg(tmp_path / "another.zarr", dst))
    src.rename(tmp_path / "moved.zarr")  # the supervisor waits for it, or refuses it
    assert not early_match.begin(_cfg(src, dst))
    (tmp_path / "moved.zarr").rename(src)
    monkeypatch.setattr(early_match, "SIDE_FROM", 10**9)
    assert not early_match.begin(_cfg(src, dst))  # a small rerun lists it itself
    monkeypatch.setattr(early_match, "SIDE_FROM", 1)
    (records_dir(dst) / "certificate.json").unlink()  # an unfinished copy
    assert not early_match.begin(_cfg(src, dst))
    assert not early_match._started


def test_a_side_nobody_took_is_ended(tmp_path: Path, taken: list[bool]) -> None:
    src, dst = _finished(tmp_path)
    assert early_match.begin(_cfg(src, dst))
    (process,) = [e.side.process for e in early_match._started.values()]
    early_match.discard()
    assert process.poll() is not None
    assert not early_match._started
