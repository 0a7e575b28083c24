"""TreeWatcher (inotify hints) together with scan_tree (the listing that hints point at).

inotify queues an event before the syscall that caused it returns, so reading with
timeout 0 right after a write is deterministic: no waiting is needed to see an event,
and an empty read means no event was queued.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from softcopy.sources.scan import is_temporary, scan_tree
from softcopy.sources.watch import Hint, TreeWatcher

HEX16 = "0123456789abcdef"
HEX32 = "0123456789abcdef0123456789abcdef"
QUEUE_LIMIT = "/proc/sys/fs/inotify/max_queued_events"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "acq"
    r.mkdir()
    return r


@pytest.fixture
def watcher(root: Path) -> Iterator[TreeWatcher]:
    """A watcher on every directory of `root`, added the way the supervisor does it."""
    w = TreeWatcher(str(root))
    try:
        yield w
    finally:
        w.close()  # inotify instances are a per-user limit


def watch_all(w: TreeWatcher) -> None:
    scan_tree(w.root, "", on_dir=w.watch)


def files(hints: list[Hint]) -> set[str]:
    return {h.key for h in hints if h.kind == "file"}


def follow(w: TreeWatcher, hints: list[Hint]) -> None:
    """What the supervisor does with hints that change what is watched."""
    for h in hints:
        if h.kind == "rescan":
            scan_tree(w.root, "", on_dir=w.watch)
        elif h.kind == "dir":
            scan_tree(w.root, h.key, on_dir=w.watch)


def publish(path: Path, data: bytes = b"chunk") -> None:
    """tensorstore's way: write `<name>.__lock`, rename it onto the final name."""
    tmp = path.with_name(path.name + ".__lock")
    tmp.write_bytes(data)
    os.rename(tmp, path)


# ---- the new-directory race -----------------------------------------------------------


def test_files_in_a_new_directory_are_found_by_the_scan_that_follows_the_hint(
    root: Path, watcher: TreeWatcher
) -> None:
    watch_all(watcher)
    # The writer makes a directory and fills it before the watcher reads a single event.
    new = root / "0"
    (new / "1").mkdir(parents=True)
    expected = set()
    for i in range(5):
        (new / str(i)).with_suffix(".c").write_bytes(b"x")
        (new / "1" / str(i)).write_bytes(b"y")
        expected |= {f"0/{i}.c", f"0/1/{i}"}

    hints = watcher.read(0)
    assert hints == [Hint("dir", "0")]  # the events alone name none of the ten files
    assert watcher.read(0) == []  # and nothing more is coming: "0" had no watch yet

    result = scan_tree(str(root), "0", on_dir=watcher.watch)
    assert set(result.files) == expected
    assert sorted(result.directories) == ["0", "0/1"]

    # Watched now, at both depths: later writes there are hinted.
    publish(new / "late")
    publish(new / "1" / "late")
    assert files(watcher.read(0)) == {"0/late", "0/1/late"}


@pytest.mark.alone  # the queue limit is the kernel's: every new inotify instance gets it
def test_a_rescan_after_overflow_finds_everything(root: Path, tmp_path: Path) -> None:
    try:
        with open(QUEUE_LIMIT) as f:
            original = f.read()
        with open(QUEUE_LIMIT, "w") as f:
            f.write("64")
    except OSError as exc:
        pytest.skip(f"cannot lower {QUEUE_LIMIT}: {exc}")
    try:
        w = TreeWatcher(str(root))  # the instance copies the limit at inotify_init
    finally:
        with open(QUEUE_LIMIT, "w") as f:
            f.write(original)
    try:
        with open(QUEUE_LIMIT) as f:
            assert f.read() == original
        watch_all(w)
        for i in range(200):
            (root / f"f{i}").write_bytes(b"x")  # CREATE + CLOSE_WRITE: 400 events
        hints = w.read(0)
        assert Hint("rescan") in hints
        assert hints[-1] == Hint("rescan")  # the kernel's overflow marker comes last
        assert len(files(hints)) < 200  # events alone lost files
        assert len(scan_tree(str(root), "", on_dir=w.watch).files) == 200
        # The watcher keeps working after an overflow.
        (root / "after").write_bytes(b"x")
        assert files(w.read(0)) == {"after"}
    finally:
        w.close()


# ---- which names produce hints ----------------------------------------------------------

TEMPORARY = [
    "0.0.__lock",
    "x.__lock",
    f"x_{HEX16}.__lock",
    f"0.1.{HEX32}.partial",
    f"zarr.{HEX32}.partial",
    f".zgroup.{HEX32}.partial",
    f"1.{HEX32}.partial",
    ".softcopy-tmp.x",
    ".softcopy-tmp.zarr.json",
    f".softcopy-tmp.0.{HEX32}.partial",
]
FINAL = [
    "x",
    "0.0",
    "0",
    "zarr.json",
    ".zarray",
    ".zattrs",
    ".zgroup",
    "complete",
    "x.__lock.bak",  # the suffix must be at the end
    "x.__lockx",
    "x.partial",  # no 32-hex tag
    f"0.{HEX32[:-1]}.partial",  # 31 hex digits
    f"0.{HEX32.upper()}.partial",  # writers use lowercase hex
    f"0{HEX32}.partial",  # no dot before the tag
    "softcopy-tmp.x",
    "a.softcopy-tmp.x",
]


@pytest.mark.parametrize("name", TEMPORARY)
def test_is_temporary(name: str) -> None:
    assert is_temporary(name)


@pytest.mark.parametrize("name", FINAL)
def test_is_not_temporary(name: str) -> None:
    assert not is_temporary(name)


def test_temporary_names_produce_no_hints(root: Path, watcher: TreeWatcher) -> None:
    (root / "c" / "0").mkdir(parents=True)
    watch_all(watcher)
    for name in TEMPORARY:
        for where in (root, root / "c" / "0"):
            (where / name).write_bytes(b"partial")  # CREATE, CLOSE_WRITE
    os.rename(root / "x.__lock", root / f"x_{HEX16}.__lock")  # MOVED_FROM / MOVED_TO
    for name in TEMPORARY:
        for where in (root, root / "c" / "0"):
            (where / name).unlink(missing_ok=True)  # DELETE
    assert watcher.read(0) == []

    for name in FINAL:
        (root / "c" / "0" / name).write_bytes(b"final")
    assert files(watcher.read(0)) == {f"c/0/{name}" for name in FINAL}


def test_a_rename_onto_the_final_name_is_one_file_hint(root: Path, watcher: TreeWatcher) -> None:
    watch_all(watcher)
    publish(root / "0.0")
    assert watcher.read(0) == [Hint("file", "0.0")]

    # zarr-python: `<stem>.<hex>.partial` renamed onto the final name.
    (root / f"zarr.{HEX32}.partial").write_text("{}")
    os.rename(root / f"zarr.{HEX32}.partial", root / "zarr.json")
    assert watcher.read(0) == [Hint("file", "zarr.json")]

    # tensorstore renames while its fd is open, then closes: MOVED_TO, then CLOSE_WRITE,
    # one look at the file when both are read together.
    with open(root / "0.1.__lock", "wb") as f:
        f.write(b"data")
        f.flush()
        os.rename(root / "0.1.__lock", root / "0.1")
    assert watcher.read(0) == [Hint("file", "0.1")]

    # zarr-python's create-if-absent: link(tmp, final), unlink(tmp).
    (root / f"0.2.{HEX32}.partial").write_bytes(b"data")
    os.link(root / f"0.2.{HEX32}.partial", root / "0.2")
    os.unlink(root / f"0.2.{HEX32}.partial")
    assert watcher.read(0) == [Hint("file", "0.2")]


def test_a_deleted_file_is_a_file_hint(root: Path, watcher: TreeWatcher) -> None:
    (root / "c").mkdir()
    (root / "c" / "0").write_bytes(b"x")
    (root / "c" / "1").write_bytes(b"x")
    watch_all(watcher)
    (root / "c" / "0").unlink()
    os.rename(root / "c" / "1", root.parent / "moved-out")  # MOVED_FROM, nothing in the tree
    assert watcher.read(0) == [Hint("file", "c/0"), Hint("file", "c/1")]


def test_a_symlink_is_a_file_hint(root: Path, watcher: TreeWatcher) -> None:
    watch_all(watcher)
    (root / "link").symlink_to("/nonexistent")
    assert watcher.read(0) == [Hint("file", "link")]


# ---- directories that move --------------------------------------------------------------


def test_a_directory_moved_away_asks_for_a_rescan(
    root: Path, tmp_path: Path, watcher: TreeWatcher
) -> None:
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "0").write_bytes(b"x")
    watch_all(watcher)
    os.rename(root / "a", tmp_path / "gone")
    hints = watcher.read(0)
    assert Hint("rescan") in hints
    assert not files(hints)
    follow(watcher, hints)
    assert scan_tree(str(root)).files == {}

    # What happens in the moved-away tree is none of our business any more.
    (tmp_path / "gone" / "new").write_bytes(b"x")
    (tmp_path / "gone" / "b" / "new").write_bytes(b"x")
    (tmp_path / "gone" / "b" / "0").unlink()
    assert watcher.read(0) == []


def test_a_directory_moved_in_is_a_dir_hint(
    root: Path, tmp_path: Path, watcher: TreeWatcher
) -> None:
    outside = tmp_path / "staging"
    (outside / "1").mkdir(parents=True)
    (outside / "1" / "0").write_bytes(b"x")
    watch_all(watcher)
    os.rename(outside, root / "well")
    hints = watcher.read(0)
    assert hints == [Hint("dir", "well")]
    follow(watcher, hints)
    publish(root / "well" / "1" / "late")
    assert files(watcher.read(0)) == {"well/1/late"}


def test_a_directory_moved_within_the_tree_is_watched_under_its_new_name(
    root: Path, watcher: TreeWatcher
) -> None:
    (root / "a" / "sub").mkdir(parents=True)
    watch_all(watcher)
    os.rename(root / "a", root / "b")
    (root / "a" / "sub").mkdir(parents=True)  # a new directory under the old name
    hints = watcher.read(0)
    assert Hint("rescan") in hints
    follow(watcher, hints)

    for d in ("a", "a/sub", "b", "b/sub"):
        publish(root / d / "new")
    assert files(watcher.read(0)) == {"a/new", "a/sub/new", "b/new", "b/sub/new"}


def test_a_deleted_and_recreated_directory_is_watched_again(
    root: Path, watcher: TreeWatcher
) -> None:
    (root / "t" / "0").mkdir(parents=True)
    watch_all(watcher)
    shutil.rmtree(root / "t")
    (root / "t" / "0").mkdir(parents=True)
    hints = watcher.read(0)
    assert Hint("dir", "t") in hints
    follow(watcher, hints)
    publish(root / "t" / "0" / "c")
    assert files(watcher.read(0)) == {"t/0/c"}


# ---- the watch limit ----------------------------------------------------------------------

_LIMIT_PROBE = """
import sys
from softcopy.sources.scan import scan_tree
from softcopy.sources.watch import TreeWatcher
w = TreeWatcher(sys.argv[1])
result = scan_tree(sys.argv[1], "", on_dir=w.watch)
print(w.unwatched, len(result.directories), len(result.files))
w.close()
"""


def test_running_out_of_watches_degrades_to_scans(root: Path) -> None:
    """A user namespace gets its own watch limit, so nothing global changes."""
    if not shutil.which("unshare"):
        pytest.skip("unshare is not installed")
    for i in range(6):
        (root / f"d{i}").mkdir()
        (root / f"d{i}" / "0").write_bytes(b"x")
    limit = "echo 3 > /proc/sys/user/max_inotify_watches"
    script = f'{limit} && exec "$0" -c "$1" "$2"'
    proc = subprocess.run(
        ["unshare", "-U", "-r", "sh", "-c", script, sys.executable, _LIMIT_PROBE, str(root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0 and "max_inotify_watches" in proc.stderr:
        pytest.skip(f"cannot limit inotify watches in a user namespace: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    # 7 directories, 3 watches: 4 unwatched, and the listing still sees every file.
    assert proc.stdout.split() == ["4", "7", "6"]
    assert "Traceback" not in proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "max_user_watches" in line]
    assert len(warnings) == 1  # said once, not once per directory
    assert str(root) in warnings[0]


def test_watching_a_vanished_directory_is_not_an_error(root: Path, watcher: TreeWatcher) -> None:
    watcher.watch("never-existed")
    (root / "file").write_bytes(b"x")
    watcher.watch("file")  # a file where a directory was expected: ONLYDIR refuses it
    watch_all(watcher)
    publish(root / "0")
    assert watcher.read(0) == [Hint("file", "0")]


def test_close_releases_the_instance(root: Path) -> None:
    w = TreeWatcher(str(root))
    fd = w.fileno()
    assert os.path.exists(f"/proc/self/fd/{fd}")
    w.close()
    with pytest.raises(OSError):
        os.fstat(fd)
