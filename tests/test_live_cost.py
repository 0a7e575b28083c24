"""The supervisor's per-file work during a live copy, cut down without changing what it does.

A writer at full speed makes thousands of chunk files a second: each one's run-log line and
change notifications are the supervisor's bulk. The cheaper ways must say and see exactly
what the general ones do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from softcopy.engine.backoff import Backoff, shares_disk, storage_reads
from softcopy.engine.events import Event
from softcopy.sources.pressure import DiskPressure, block_device
from softcopy.sources.scan import scan_tree
from softcopy.sources.watch import Hint, TreeWatcher, coalesced
from softcopy.state.records import Records
from softcopy.state.runlog import IDLE_EVERY, LOG, RunLog

# ---- the run log's line per file ----------------------------------------------------------

NAMES = [
    "c/0/1/2",
    "0.0",
    'a "quoted" name',
    "back\\slash",
    "tab\tnew\nline\rcontrol\x01\x1f\x7f",
    "ünïcødé/名前/😀",
    "\u2028\u2029",
    os.fsdecode(b"not-utf8-\xff\xfe"),  # surrogate escapes: written with names_hex
    "",
]
FIELDS = [
    {},
    {"size": 65536},
    {"size": 0, "digest": "ab" * 32},
    {"size": 2**40, "resumed": 123},
    {"error": 'No space left on device: "x"\n'},
    {"size": True},  # a bool is an int to Python, not to JSON
    {"size": 1.5},
    {"error": None},
    {"error": Event.FILE_FAILED},  # a str subclass
]


@pytest.fixture
def records(tmp_path: Path) -> Iterator[Records]:
    opened = Records.open(tmp_path / "records")
    assert opened is not None
    try:
        yield opened
    finally:
        os.close(opened.fd)


def logged(records: Records) -> bytes:
    return (records.path / LOG).read_bytes()


@pytest.mark.parametrize("source", ["/acq/run 1.zarr", os.fsdecode(b"/acq/\xff.zarr")])
def test_a_file_line_is_byte_for_byte_the_record_add_writes(
    records: Records, tmp_path: Path, source: str
) -> None:
    other = Records.open(tmp_path / "other")
    assert other is not None
    try:
        fast, general = RunLog(records), RunLog(other)
        ends = (source, '/dest/ü "x"')
        when = 1796179268.5399559
        for event in (Event.FILE_COPIED, Event.FILE_RECOPIED, Event.FILE_DELETED):
            for key in NAMES:
                for fields in FIELDS:
                    fast.add_file(event, when, ends, key, fields)
                    record = {"event": event, "time": when, "source": ends[0]}
                    general.add(
                        {"schema": 1} | record | {"destination": ends[1], "key": key} | fields
                    )
            when += 0.001
        fast.flush()
        general.flush()
        lines = logged(records).splitlines()
        assert len(lines) == 3 * len(NAMES) * len(FIELDS)
        assert logged(records) == logged(other)
    finally:
        os.close(other.fd)


def test_the_paths_of_a_line_follow_the_ends_given(records: Records) -> None:
    runlog = RunLog(records)
    runlog.add_file(Event.FILE_COPIED, 1.0, ("/a", "/b"), "k", {"size": 1})
    runlog.add_file(Event.FILE_COPIED, 2.0, ("/c", "/d"), "k", {"size": 2})
    runlog.flush()
    assert logged(records) == (
        b'{"schema":1,"event":"file_copied","time":1.0,"source":"/a","destination":"/b",'
        b'"key":"k","size":1}\n'
        b'{"schema":1,"event":"file_copied","time":2.0,"source":"/c","destination":"/d",'
        b'"key":"k","size":2}\n'
    )


def test_idle_copiers_append_the_buffered_lines_at_most_every_idle_every(
    records: Records,
) -> None:
    runlog = RunLog(records)
    runlog.add_file(Event.FILE_COPIED, 1.0, ("/a", "/b"), "0", {"size": 1})
    runlog.flush()
    runlog.add_file(Event.FILE_COPIED, 2.0, ("/a", "/b"), "1", {"size": 1})
    runlog.idle()  # just flushed: the line waits for the next call
    assert logged(records).count(b"\n") == 1
    runlog._flushed_at -= IDLE_EVERY  # as if IDLE_EVERY had passed
    runlog.idle()
    assert logged(records).count(b"\n") == 2
    runlog._flushed_at -= IDLE_EVERY
    runlog.idle()  # nothing buffered: nothing written
    assert logged(records).count(b"\n") == 2


# ---- change notifications, coalesced -------------------------------------------------------


def test_one_read_names_each_file_once_and_nothing_a_directory_scan_lists() -> None:
    hints = [
        Hint("file", "c/0/0"),
        Hint("dir", "c/1"),
        Hint("file", "c/0/0"),  # a rename, then the close of the same file
        Hint("file", "c/1/0/3"),  # made in the new directory: its scan lists it
        Hint("dir", "c/1/0"),  # below it: listed by the same scan
        Hint("file", "c/10/0"),  # a sibling whose name starts alike is not below it
        Hint("dir", "c/1"),
        Hint("file", "c/1"),  # a file of that name is another thing to look at
    ]
    assert coalesced(hints) == [
        Hint("file", "c/0/0"),
        Hint("dir", "c/1"),
        Hint("file", "c/10/0"),
        Hint("file", "c/1"),
    ]


def test_a_hint_before_the_directory_hint_that_covers_it_stays() -> None:
    # A file deleted in the old directory, which is then made anew under its name: the new
    # directory's scan does not list the deleted file, so only its own hint says it is gone.
    hints = [Hint("file", "t/0/c"), Hint("dir", "t")]
    assert coalesced(hints) == hints


def test_a_rescan_stands_for_every_hint_of_its_read() -> None:
    hints = [Hint("file", "a"), Hint("dir", "b"), Hint("rescan"), Hint("file", "c")]
    assert coalesced(hints) == [Hint("rescan")]
    assert coalesced([Hint("rescan"), Hint("rescan")]) == [Hint("rescan")]


def publish(path: Path, data: bytes = b"chunk") -> None:
    """tensorstore's way: write a lock file, rename it into place with its fd open, close."""
    with open(f"{path}.__lock", "wb") as f:
        f.write(data)
        f.flush()
        os.rename(f"{path}.__lock", path)


def test_a_tensorstore_timepoint_is_seen_whole_with_fewer_looks(tmp_path: Path) -> None:
    root = tmp_path / "acq"
    (root / "c").mkdir(parents=True)
    watcher = TreeWatcher(str(root))
    try:
        scan_tree(str(root), "", on_dir=watcher.watch)
        publish(root / "c" / "early")
        (root / "c" / "0" / "0").mkdir(parents=True)  # the timepoint's directories
        for y in range(4):
            publish(root / "c" / "0" / "0" / str(y))
        hints = watcher.read(0)
        # The rename and close of "early" are one look; c/0 is new: one scan lists it all.
        assert hints == [Hint("file", "c/early"), Hint("dir", "c/0")]
        seen = {h.key for h in hints if h.kind == "file"}
        for h in hints:
            if h.kind == "dir":
                seen |= set(scan_tree(str(root), h.key, on_dir=watcher.watch).files)
        assert seen == {"c/early", *(f"c/0/0/{y}" for y in range(4))}
        # The scan watched the new directories: what follows there is a file hint, once.
        publish(root / "c" / "0" / "0" / "4")
        assert watcher.read(0) == [Hint("file", "c/0/0/4")]
    finally:
        watcher.close()


# ---- back-off: a busy source disk matters only to copies that touch it --------------------


def reader(path: Path) -> subprocess.Popen:
    """A process that reads `path` whole when told to (a line on stdin), then waits."""
    code = (
        "import sys; sys.stdin.readline(); "
        f"open({str(path)!r}, 'rb').read(); print('read', flush=True); sys.stdin.readline()"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def read_by(proc: subprocess.Popen) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == "read\n"


def finish(proc: subprocess.Popen) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait()


def evicted(path: Path, size: int) -> None:
    """`path` written, on the device, and out of the page cache."""
    with open(path, "wb") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


SIZE = 4 << 20  # above the evidence threshold


@pytest.mark.skipif(block_device(tempfile.gettempdir()) is None, reason="no block device")
def test_copies_of_cached_files_onto_another_device_do_not_wait_for_the_source_disk(
    tmp_path: Path,
) -> None:
    cached, cold = tmp_path / "cached", tmp_path / "cold"
    cached.write_bytes(os.urandom(SIZE))  # just written: in the page cache
    evicted(cold, SIZE)
    backoff = Backoff(str(tmp_path), lambda *a, **k: None)
    backoff.pressure = DiskPressure(str(tmp_path))
    backoff.shares_disk = False
    proc = reader(cached)
    try:
        backoff.own_pids = lambda: [proc.pid]
        backoff.check(copied=0)
        assert not backoff.disk_matters()  # no evidence yet: a fresh acquisition is cached
        read_by(proc)
        backoff.check(copied=SIZE)
        reads = storage_reads([proc.pid])
        assert reads is not None and reads[proc.pid] < SIZE // 8
        assert not backoff.disk_matters()
    finally:
        finish(proc)
    proc = reader(cold)
    try:
        backoff.own_pids = lambda: [proc.pid]  # a copier replaced: counted from its start
        read_by(proc)
        backoff.check(copied=2 * SIZE)
        reads = storage_reads([proc.pid])
        assert reads is not None and reads[proc.pid] >= SIZE // 2, reads
        assert backoff.disk_matters()  # the copies read the disk: its load is theirs
    finally:
        finish(proc)
    backoff.shares_disk = True
    assert backoff.disk_matters()


def test_too_few_bytes_copied_tell_nothing_and_unmeasurable_reads_count_as_the_disks(
    tmp_path: Path,
) -> None:
    backoff = Backoff(str(tmp_path), lambda *a, **k: None)
    backoff.pressure = DiskPressure(str(tmp_path))
    backoff.shares_disk = False
    backoff.own_pids = lambda: [os.getpid()]
    backoff.check(copied=100)
    assert not backoff.disk_matters()
    backoff.own_pids = lambda: [1]  # init's /proc/1/io: not ours to read (unless root)
    if storage_reads([1]) is None:
        backoff.check(copied=10 * SIZE)
        assert backoff.disk_matters()
        assert backoff.own_pids is None


def test_the_destination_shares_the_source_disk_unless_it_is_another_device(
    tmp_path: Path,
) -> None:
    device = block_device(str(tmp_path))
    assert not shares_disk(None, str(tmp_path))  # no disk to watch at the source
    if device is not None:
        assert shares_disk(device, str(tmp_path))
        if os.path.isdir("/dev/shm") and block_device("/dev/shm") is None:
            assert not shares_disk(device, "/dev/shm")  # tmpfs: no disk at all
        assert shares_disk("loop7", str(tmp_path))  # a loop file may sit on any disk
        assert shares_disk(device, str(tmp_path / "missing"))  # cannot tell: assume so


# ---- how often the source is listed ---------------------------------------------------------

# Runs the program in this process and, as it exits, reports each full listing of the source
# (whether it was the first). The listing is wrapped, never replaced: it still lists.
COUNTING = """
import atexit, json, runpy, sys
from softcopy.engine import observe
report, sys.argv = sys.argv[1], ["softcopy", *sys.argv[2:]]
calls = []
original = observe.SourceView.full_scan
def full_scan(self, initial=False):
    calls.append(initial)
    return original(self, initial)
observe.SourceView.full_scan = full_scan
atexit.register(lambda: open(report, "w").write(json.dumps(calls)))
runpy.run_module("softcopy", run_name="__main__", alter_sys=True)
"""


# A run folder that ends at its sentinel at once: the test waits for no settle period.
QUICK = (
    "--kind",
    "directory",
    "--sentinel",
    "done.txt",
    "--sentinel-min-age",
    "0",
    "--ready-age",
    "0",
)


def _listings(tmp_path: Path, *args: object) -> list[bool]:
    report = tmp_path / "listings.json"
    done = subprocess.run(
        [sys.executable, "-c", COUNTING, str(report), *map(str, args)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(report.read_text())


def test_a_finished_source_is_listed_once_before_and_once_after_its_copies(
    tmp_path: Path,
) -> None:
    # The drain listed the source as the end was seen too, with every copy still queued: a
    # whole listing that finds nothing the one after the copies does not.
    src = tmp_path / "run"
    for i in range(40):
        (src / f"lane{i % 4}").mkdir(parents=True, exist_ok=True)
        (src / f"lane{i % 4}" / f"f{i}").write_bytes(b"x" * i)
    (src / "done.txt").write_text("")
    dst = tmp_path / "copy"
    assert _listings(tmp_path, "copy", src, dst, *QUICK) == [
        True,
        False,
    ]
    assert sorted(p.name for p in dst.rglob("f*")) == sorted(f"f{i}" for i in range(40))
    # A rerun with nothing to copy lists it once.
    assert _listings(tmp_path, "copy", src, dst, *QUICK) == [True]
