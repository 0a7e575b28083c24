"""Shared helpers: run softcopy and the simulator as real processes, wait on conditions."""

from __future__ import annotations

import fcntl
import filecmp
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import settings

from softcopy.sources.pressure import BUSY_CPU_ENV, BUSY_IO_ENV

# Two shared cores: an example's time says nothing about the code, so no deadline.
settings.register_profile("softcopy", deadline=None)
settings.load_profile("softcopy")

# Slow CI machines share two cores; a deadline is a bound on a hang, never a wait.
DEADLINE = 90.0


def softcopy_cmd(*args: object) -> list[str]:
    return [sys.executable, "-m", "softcopy", *map(str, args)]


def run_softcopy(*args: object, timeout: float = DEADLINE, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        softcopy_cmd(*args), capture_output=True, text=True, timeout=timeout, **kw
    )


_started: list[subprocess.Popen] = []


def start(cmd: list[str], **kw) -> subprocess.Popen:
    """A process the test owns: killed after the test if it is still running."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    _started.append(proc)
    return proc


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Under pytest-xdist, a test marked `alone` runs while no other worker runs one: it
    loads the whole machine (CPU or I/O pressure, which pauses every other copy) or sets
    something the kernel shares (a sysctl). Every other test holds the lock shared. The
    turnstile lets a waiting `alone` test in before later shared ones (no starvation).
    Held around the whole test, fixtures included, and outside its timeout and its
    durations: waiting for the other worker's test is neither a hang nor this test's time."""
    basetemp = item.config.option.basetemp
    if "PYTEST_XDIST_WORKER" not in os.environ or not basetemp:
        return (yield)
    # Each worker's basetemp is a child of the session's: the locks are the session's.
    session_dir = Path(basetemp).parent
    alone = item.get_closest_marker("alone") is not None
    with (
        open(session_dir / "machine.turnstile", "a") as turnstile,
        open(session_dir / "machine.lock", "a") as lock,
    ):
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        return (yield)  # closing the files lets the lock go


@pytest.fixture(autouse=True)
def _no_pause_for_busy_cpus(monkeypatch):
    """Other tests' processes (the other xdist worker's) keep the CPUs busy at times, and
    softcopy pauses its copiers when others wait for a CPU, or when the system's I/O
    pressure is high (another test's fsyncs): no copy here waits for another test's load.
    The tests of that back-off set their own thresholds (test_priority.py, and the busy
    source disk of test_throttle.py, which is a loop device of its own)."""
    monkeypatch.setenv(BUSY_CPU_ENV, "101")  # above 100 %: never
    monkeypatch.setenv(BUSY_IO_ENV, "101")


@pytest.fixture(autouse=True)
def _private_state_dir(tmp_path_factory, monkeypatch):
    """Each test has its own journal; nothing lands in the real user's state directory."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))


@pytest.fixture(autouse=True)
def _test_process_priority_unchanged():
    """A supervisor run in-process lowers its thread's priority; in pytest's main thread,
    every later test's processes would inherit it (and priority tests would fail far from
    the cause). Such a test fails here, and the priority is put back."""
    before = os.getpriority(os.PRIO_PROCESS, 0)
    yield
    after = os.getpriority(os.PRIO_PROCESS, 0)
    if after != before:
        os.setpriority(os.PRIO_PROCESS, 0, before)
        pytest.fail(f"the test left pytest's main thread at nice {after} (was {before})")


@pytest.fixture(autouse=True)
def _no_leftover_processes():
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def start_softcopy(*args: object, **kw) -> subprocess.Popen:
    return start(softcopy_cmd(*args), **kw)


def start_disk_load(directory: Path) -> subprocess.Popen:
    """Another job hammering a (test's own loop) disk with O_DIRECT writes, until killed."""
    return start(
        ["sh", "-c", f"while :; do dd if=/dev/zero of={directory}/load bs=1M count=64 "
         "oflag=direct status=none; done"]
    )  # fmt: skip


def start_simulator(destination: Path, *args: object) -> subprocess.Popen:
    return start(softcopy_cmd("simulate", destination, *args))


def finish(proc: subprocess.Popen, timeout: float = DEADLINE) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"process did not finish within {timeout} s:\n{out}\n{err}")
    return proc.returncode, out, err


def wait_for(
    condition: Callable[[], object],
    timeout: float = DEADLINE,
    what: str = "",
    proc: subprocess.Popen | None = None,
) -> object:
    """Poll a condition until it holds; fail (never pass) when the deadline passes,
    or at once when `proc`, which the condition depends on, has exited."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(
                f"process exited ({proc.returncode}) while waiting for {what}:\n{out}\n{err}"
            )
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(0.02)


def met_before(dst: Path) -> None:
    """Leave a folder softcopy did not make as softcopy leaves one it has copied into: its
    records folder beside it, and no target.json (not its own). A file the source lacks is
    then a finding of the copy's verification, not a refusal up front (config.not_this_copy
    looks only at a folder it meets for the first time)."""
    (dst.parent / f"{dst.name}.softcopy").mkdir()


def tree_files(root: Path) -> dict[str, int]:
    """Every file and link below root (key -> size), links not followed."""
    found: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            try:
                found[os.path.relpath(path, root)] = os.lstat(path).st_size
            except FileNotFoundError:
                continue  # renamed or deleted since the listing (a live tree)
    return found


def assert_same_tree(src: Path, dst: Path, ignore: tuple[str, ...] = ()) -> None:
    """Byte-for-byte equality of every file; no extra or missing file on either side."""
    a = {k: v for k, v in tree_files(src).items() if k not in ignore}
    b = {k: v for k, v in tree_files(dst).items() if k not in ignore}
    assert sorted(a) == sorted(b), (
        f"missing at destination: {sorted(set(a) - set(b))}; extra: {sorted(set(b) - set(a))}"
    )
    for key in a:
        p, q = src / key, dst / key
        if p.is_symlink():
            assert q.is_symlink() and os.readlink(p) == os.readlink(q), key
        else:
            assert filecmp.cmp(p, q, shallow=False), f"content differs: {key}"


@pytest.fixture
def softcopy_bin() -> Callable[..., subprocess.CompletedProcess]:
    return run_softcopy
