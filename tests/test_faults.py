"""Real I/O faults at the source: a FUSE filesystem (tests/faultfs.py) between softcopy and it.

The archive is simulated into a backing directory, then copied from the FUSE mount
(`MOUNT/src.zarr`) to a local destination while faults are injected by path. Faults
change at run time through the control file, which the filesystem re-reads.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import assert_same_tree, run_softcopy, start_softcopy, tree_files, wait_for
from test_acquisition import SMALL, simulate

from softcopy.sinks.local import FAILED, DirCache, copy_one
from softcopy.sources.scan import TEMP_PREFIX
from softcopy.zarr.simulate import SimulationSpec

FAULTFS = Path(__file__).with_name("faultfs.py")
MOUNT_DEADLINE = 10.0
RUN_DEADLINE = 60.0  # a bound on a hang, never a wait

# One chunk of SMALL (v3, time point 1), and one of BIG's two 512 KiB uncompressed chunks.
CHUNK = "c/1/0/1/1"
BIG = SimulationSpec(
    timepoints=2, interval=0.0, shape=(1, 512, 512), chunks=(1, 512, 512), compress=False
)
BIG_CHUNK = "c/1/0/0/0"


# ---- the filesystem: mount, faults, unmount ---------------------------------------------


def _fuse_missing() -> str | None:
    if not os.path.exists("/dev/fuse") or not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not available"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed (apt-get install fuse3)"
    if importlib.util.find_spec("mfusepy") is None:
        return "mfusepy is not installed"
    return None


class FaultMount:
    """tests/faultfs.py over `backing`, mounted at `mount`, faults from `control`."""

    def __init__(self, root: Path, direct_io: bool, cache_timeout: float = 0.0) -> None:
        self.root = root
        self.backing = root / "backing"
        self.mount = root / "mnt"
        self.control = root / "faults.json"
        self.direct_io = direct_io
        self.cache_timeout = cache_timeout
        self.daemon: subprocess.Popen | None = None
        self.log = root / "faultfs.log"

    @property
    def src(self) -> Path:
        """The archive as softcopy sees it: through the filesystem."""
        return self.mount / "src.zarr"

    @property
    def truth(self) -> Path:
        """The archive as it is, without faults: what the copy is compared with."""
        return self.backing / "src.zarr"

    def set(self, **faults: object) -> None:
        """Replace the faults in force (atomically: the filesystem never sees half a file)."""
        tmp = self.control.with_name(self.control.name + ".tmp")
        tmp.write_text(json.dumps(faults))
        os.replace(tmp, self.control)

    def start(self) -> None:
        self.backing.mkdir(exist_ok=True)
        self.mount.mkdir(exist_ok=True)
        if not self.control.exists():
            self.set()
        cmd = [sys.executable, str(FAULTFS), str(self.backing), str(self.mount), str(self.control)]
        if self.direct_io:
            cmd.append("--direct-io")
        cmd += ["--cache-timeout", str(self.cache_timeout)]
        with open(self.log, "wb") as log:
            self.daemon = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + MOUNT_DEADLINE
        while not os.path.ismount(self.mount):
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.skip(f"could not mount the FUSE filesystem: {self.log.read_text()[-800:]}")
            time.sleep(0.02)

    def stop(self) -> None:
        if os.path.ismount(self.mount):
            done = subprocess.run(["fusermount3", "-u", str(self.mount)], capture_output=True)
            if done.returncode != 0:  # busy (a test failed with files open): detach lazily
                subprocess.run(["fusermount3", "-u", "-z", str(self.mount)], capture_output=True)
        if self.daemon is not None:
            try:
                self.daemon.wait(5)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        if os.path.ismount(self.mount):  # a daemon that died leaves ENOTCONN behind
            subprocess.run(["umount", "-l", str(self.mount)], capture_output=True)


class Harness:
    """Mounts and softcopy runs of one test; torn down in the safe order."""

    def __init__(self, root: Path, archives: dict[SimulationSpec, Path]) -> None:
        self.root = root
        self.archives = archives
        self.mounts: list[FaultMount] = []
        self.procs: list[subprocess.Popen] = []

    def mount(
        self, spec: SimulationSpec = SMALL, direct_io: bool = False, cache_timeout: float = 0.0
    ) -> FaultMount:
        fs = FaultMount(self.root, direct_io, cache_timeout)
        self.mounts.append(fs)
        fs.backing.mkdir()
        # One simulation per spec and module: copy2 keeps the mtimes softcopy compares.
        shutil.copytree(self.archives[spec], fs.backing / "src.zarr", symlinks=True)
        fs.start()
        return fs

    def start(self, *args: object) -> subprocess.Popen:
        proc = start_softcopy(*args)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        # Copiers first: a mount with open files cannot be unmounted cleanly.
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for fs in self.mounts:
            fs.stop()


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    class Cache(dict):
        def __missing__(self, spec: SimulationSpec) -> Path:
            path = tmp_path_factory.mktemp("archive") / "src.zarr"
            simulate(path, spec)
            self[spec] = path
            return path

    yield Cache()


@pytest.fixture
def faultfs(tmp_path: Path, archives: dict) -> Iterator[Harness]:
    missing = _fuse_missing()
    if missing:
        pytest.skip(missing)
    harness = Harness(tmp_path, archives)
    try:
        yield harness
    finally:
        harness.close()


# ---- helpers ------------------------------------------------------------------------------


def targets_file(tmp_path: Path, src: Path, dst: Path, **options: object) -> Path:
    target = {"source": str(src), "destination": str(dst), **options}
    path = tmp_path / "targets.yaml"
    path.write_text(json.dumps({"targets": [target]}))  # JSON is YAML
    return path


class Tail:
    """Collect a running process's stderr line by line, so a test can wait on a log line."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def has(self, needle: str) -> bool:
        return needle in self.text()

    def exited(self) -> bool:
        """True once the process has exited and all it wrote has been read."""
        if self.proc.poll() is None:
            return False
        self._thread.join(5)
        return True

    def finish(self, timeout: float = RUN_DEADLINE) -> tuple[int, str, str]:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"softcopy did not finish within {timeout} s:\n{self.text()}")
        self._thread.join(5)
        assert self.proc.stdout is not None
        return self.proc.returncode, self.proc.stdout.read(), self.text()


def temp_files(root: Path) -> list[str]:
    return [k for k in tree_files(root) if os.path.basename(k).startswith(TEMP_PREFIX)]


def wait_for_log(log: Tail, needle: str) -> None:
    """Until softcopy logs `needle`; fails at once, with its log, if it exits first."""
    wait_for(lambda: log.has(needle) or log.exited(), RUN_DEADLINE, repr(needle))
    assert log.has(needle), f"softcopy exited ({log.proc.poll()}) before {needle!r}:\n{log.text()}"


def assert_failed_alone(
    fs: FaultMount, dst: Path, key: str, result: subprocess.CompletedProcess, reason: str
) -> None:
    """One file given up on, named with its reason; everything else copied; no marker."""
    assert result.returncode == 1, f"{result.stdout}\n{result.stderr}"
    failed = [line for line in result.stdout.splitlines() if line.startswith("  failed: ")]
    assert len(failed) == 1 and f"failed: {key}: " in failed[0], result.stdout
    assert reason in failed[0], failed[0]
    assert not (dst / key).exists(), "a file that failed to copy was published"
    assert not (dst / "complete").exists(), "the marker was written for a failed copy"
    assert temp_files(dst) == []
    assert_same_tree(fs.truth, dst, ignore=(key, "complete"))


# ---- tests ---------------------------------------------------------------------------------


def test_transient_eio_is_retried_and_the_copy_completes(faultfs: Harness, tmp_path: Path) -> None:
    fs = faultfs.mount()
    fs.set(eio_read=[f"*/{CHUNK}"])
    dst = tmp_path / "dst.zarr"
    log = Tail(faultfs.start("run", targets_file(tmp_path, fs.src, dst, max_attempts=8)))
    wait_for_log(log, "retry 1")
    assert f"{CHUNK}: Input/output error" in log.text()
    fs.set()  # the disk recovers
    rc, out, err = log.finish()
    assert rc == 0, f"{out}\n{err}"
    assert "giving up" not in err
    assert_same_tree(fs.truth, dst)


def test_permanent_eio_fails_that_file_alone(faultfs: Harness, tmp_path: Path) -> None:
    fs = faultfs.mount()
    fs.set(eio_read=[f"*/{CHUNK}"])
    dst = tmp_path / "dst.zarr"
    targets = targets_file(tmp_path, fs.src, dst, max_attempts=3)
    result = run_softcopy("run", targets, timeout=RUN_DEADLINE)
    assert "retry 2 in 0.4 s" in result.stderr, result.stderr  # backed off, twice
    assert "giving up after 3 attempts" in result.stderr
    assert_failed_alone(fs, dst, CHUNK, result, "Input/output error")


@pytest.mark.parametrize("direct_io", [False, True], ids=["page-cache", "direct-io"])
def test_eio_after_some_bytes_never_publishes_a_truncated_file(
    faultfs: Harness, tmp_path: Path, direct_io: bool
) -> None:
    fs = faultfs.mount(BIG, direct_io=direct_io)
    assert (fs.truth / BIG_CHUNK).stat().st_size > 256 * 1024
    fs.set(eio_after_bytes={f"*/{BIG_CHUNK}": 200_000})
    dst = tmp_path / "dst.zarr"
    targets = targets_file(tmp_path, fs.src, dst, max_attempts=2)
    result = run_softcopy("run", targets, timeout=RUN_DEADLINE)
    assert_failed_alone(fs, dst, BIG_CHUNK, result, "Input/output error")


def test_short_reads_taken_for_the_end_of_file_are_caught(faultfs: Harness, tmp_path: Path) -> None:
    """Page-cache mode: the kernel takes a short read for the end of the file, and both
    sendfile and read() then stop there. A silent truncation, which must not be published."""
    fs = faultfs.mount(BIG, cache_timeout=30)
    fs.set(short_read={f"*/{BIG_CHUNK}": 5000})
    dst = tmp_path / "dst.zarr"
    targets = targets_file(tmp_path, fs.src, dst, max_attempts=2)
    result = run_softcopy("run", targets, timeout=RUN_DEADLINE)
    assert_failed_alone(fs, dst, BIG_CHUNK, result, "short read")
    size = (fs.truth / BIG_CHUNK).stat().st_size
    assert f"read 5000 of {size} bytes" in result.stdout


def test_short_reads_that_clear_up_end_in_an_identical_copy(
    faultfs: Harness, tmp_path: Path
) -> None:
    fs = faultfs.mount(BIG, cache_timeout=30)
    fs.set(short_read={f"*/{BIG_CHUNK}": 5000})
    dst = tmp_path / "dst.zarr"
    log = Tail(faultfs.start("run", targets_file(tmp_path, fs.src, dst, max_attempts=8)))
    wait_for_log(log, "retry 1")
    assert "short read" in log.text()
    assert not (dst / BIG_CHUNK).exists(), "published while only part of it could be read"
    fs.set()
    rc, out, err = log.finish()
    assert rc == 0, f"{out}\n{err}"
    assert_same_tree(fs.truth, dst)


@pytest.mark.parametrize("hash_", [False, True], ids=["kernel-copy", "hashing-copy"])
def test_short_reads_in_direct_io_mode_are_read_to_the_end(
    faultfs: Harness, tmp_path: Path, hash_: bool
) -> None:
    """With direct_io every short read reaches the application, which must go on reading.
    (sendfile does not: it takes the first short read for the end of the file.)"""
    fs = faultfs.mount(BIG, direct_io=True)
    fs.set(short_read={"*": 1000})  # every file, metadata too
    dst = tmp_path / "dst.zarr"
    targets = targets_file(tmp_path, fs.src, dst, max_attempts=1, hash=hash_)
    result = run_softcopy("run", targets, timeout=RUN_DEADLINE)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert_same_tree(fs.truth, dst)


def test_enotconn_on_every_operation_is_retried_then_named(
    faultfs: Harness, tmp_path: Path
) -> None:
    fs = faultfs.mount()
    fs.set(enotconn=[f"*/{CHUNK}"])
    dst = tmp_path / "dst.zarr"
    targets = targets_file(tmp_path, fs.src, dst, max_attempts=3)
    result = run_softcopy("run", targets, timeout=RUN_DEADLINE)
    assert "retry 1" in result.stderr, result.stderr
    assert_failed_alone(fs, dst, CHUNK, result, "Transport endpoint is not connected")


def test_enotconn_when_reading_is_retried_then_named(faultfs: Harness, tmp_path: Path) -> None:
    fs = faultfs.mount()
    fs.set(enotconn_data=[f"*/{CHUNK}"])
    dst = tmp_path / "dst.zarr"
    targets = targets_file(tmp_path, fs.src, dst, max_attempts=3)
    result = run_softcopy("run", targets, timeout=RUN_DEADLINE)
    assert "retry 2" in result.stderr, result.stderr
    assert_failed_alone(fs, dst, CHUNK, result, "Transport endpoint is not connected")


def test_a_source_stat_error_is_a_failed_outcome_not_a_dead_copier(
    faultfs: Harness, tmp_path: Path
) -> None:
    """The mount drops between the scan and the copy: copy_one's first lstat fails.
    It must report FAILED (retried by the supervisor), never raise in the copier."""
    fs = faultfs.mount()
    fs.set(enotconn=[f"*/{CHUNK}"])
    dst = tmp_path / "dst"
    dst.mkdir()
    dirs = DirCache(str(dst))
    try:
        outcome = copy_one(str(fs.src), dirs, CHUNK)
    finally:
        dirs.close()
    assert outcome.status == FAILED and outcome.errno == errno.ENOTCONN, outcome
    assert "not connected" in outcome.error
    assert tree_files(dst) == {}


def test_a_file_that_vanishes_for_good_is_deleted_not_failed(
    faultfs: Harness, tmp_path: Path
) -> None:
    fs = faultfs.mount(replace(SMALL, complete=False))
    dst = tmp_path / "dst.zarr"
    proc = faultfs.start("copy", fs.src, dst, "--settle", "600", "--scan-interval", "1")
    wait_for(lambda: tree_files(dst) == tree_files(fs.src), RUN_DEADLINE, "the first copy", proc)
    fs.set(vanish=[f"*/{CHUNK}"])
    assert not (fs.src / CHUNK).exists() and (fs.truth / CHUNK).exists()
    # No event reports it (FUSE has none for this): the periodic scan must notice.
    wait_for(lambda: not (dst / CHUNK).exists(), RUN_DEADLINE, "the deletion", proc)
    assert proc.poll() is None, "finished without a marker"
    (fs.truth / "complete").touch()  # unseen by inotify too
    rc, out, err = Tail(proc).finish()
    assert rc == 0, f"{out}\n{err}"
    assert "verified" in out and "1 deleted" in out
    assert not (dst / CHUNK).exists()
    assert_same_tree(fs.truth, dst, ignore=(CHUNK,))


def test_latency_on_every_operation_changes_nothing(faultfs: Harness, tmp_path: Path) -> None:
    # Names and attributes cached for 1 s, as a network filesystem would: without that,
    # every lookup of every path component pays the latency.
    fs = faultfs.mount(replace(SMALL, timepoints=2), cache_timeout=1)
    fs.set(latency_ms=20)
    dst = tmp_path / "dst.zarr"
    result = run_softcopy("copy", fs.src, dst, timeout=RUN_DEADLINE)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert_same_tree(fs.truth, dst)
