"""The writer comes first on the CPUs: copiers at SCHED_IDLE, CPU pressure as a back-off signal.

Everything is measured on real processes: the scheduling policy of a running copier,
the kernel's own PSI file under a real busy-loop load, and a real copy pausing.
Nothing here asserts a speed (the machine is shared).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
from conftest import assert_same_tree, finish, softcopy_cmd, start, tree_files, wait_for
from test_acquisition import SMALL, simulate

from softcopy.sources.pressure import BUSY_CPU_ENV, CpuPressure, psi_some_total

PSI_CPU = Path("/proc/pressure/cpu")
needs_psi = pytest.mark.skipif(not PSI_CPU.exists(), reason="no /proc/pressure/cpu (PSI off)")


def start_cpu_load() -> list[subprocess.Popen]:
    """More busy loops than CPUs, so some task is always waiting for one. At nice 19, so
    the softcopy under test still starts and runs promptly (PSI counts them all the same)."""
    loop = "import os\nos.nice(19)\nwhile 1: pass"
    return [start([sys.executable, "-c", loop]) for _ in range(3 * (os.cpu_count() or 1))]


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait()


def copiers_of(proc: subprocess.Popen) -> list[psutil.Process]:
    children = psutil.Process(proc.pid).children()
    return [c for c in children if "softcopy.copiers" in " ".join(c.cmdline())]


# ---- scheduling policy ---------------------------------------------------------------------


def test_copiers_run_at_sched_idle_nice_19_and_idle_io(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, replace(SMALL, complete=False))
    proc = start(softcopy_cmd("copy", src, dst, "--settle", "600"))
    wait_for(lambda: tree_files(dst) == tree_files(src), what="the copy", proc=proc)
    copiers = copiers_of(proc)
    assert copiers
    for copier in copiers:
        assert os.sched_getscheduler(copier.pid) == os.SCHED_IDLE
        assert copier.nice() == 19
        assert copier.ionice().ioclass == psutil.IOPRIO_CLASS_IDLE
    # The main thread answers signals and draws the display: it is never starved.
    assert os.sched_getscheduler(proc.pid) == os.SCHED_OTHER
    proc.terminate()
    finish(proc)


# A seccomp filter that refuses sched_setscheduler with EPERM (as a container's profile
# may), inherited by the copiers; then softcopy runs as usual. x86_64 numbering.
_REFUSE_SCHED = r"""
import ctypes, errno, runpy, struct, sys

def insn(code, k, jt=0, jf=0):
    return struct.pack("HBBI", code, jt, jf, k)

LD_ABS, JEQ, RET = 0x20, 0x15, 0x06
ALLOW, ERRNO = 0x7FFF0000, 0x00050000
program = b"".join([
    insn(LD_ABS, 4), insn(JEQ, 0xC000003E, 1, 0), insn(RET, ALLOW),  # not x86_64: allow
    insn(LD_ABS, 0), insn(JEQ, 144, 0, 1), insn(RET, ERRNO | errno.EPERM),  # sched_setscheduler
    insn(RET, ALLOW),
])

class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
fprog = Fprog(len(program) // 8, program)
assert libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) == 0, ctypes.get_errno()  # SECCOMP_MODE_FILTER
sys.argv = ["softcopy", *sys.argv[1:]]
runpy.run_module("softcopy", run_name="__main__")
"""


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the filter uses x86_64 numbers")
def test_a_copy_goes_on_at_nice_19_where_sched_idle_is_refused(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, replace(SMALL, complete=False))
    proc = start([sys.executable, "-c", _REFUSE_SCHED, "-v", "copy", src, dst, "--settle", "600"])
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    wait_for(lambda: tree_files(dst) == tree_files(src), what="the copy", proc=proc)
    copiers = copiers_of(proc)
    assert copiers
    for copier in copiers:
        assert os.sched_getscheduler(copier.pid) == os.SCHED_OTHER  # the filter did refuse
        assert copier.nice() == 19
    (src / "complete").touch()
    assert proc.wait(timeout=90) == 0, "".join(lines)
    reader.join(10)
    assert_same_tree(src, dst)
    refused = [line for line in lines if "could not set SCHED_IDLE" in line]
    assert len(refused) == len(copiers), "".join(lines)
    assert all("DEBUG" in line for line in refused), refused  # a note, not a warning
    assert not any("Traceback" in line for line in lines)


# ---- CPU pressure ---------------------------------------------------------------------------


@pytest.mark.alone
@needs_psi
def test_cpu_pressure_is_read_from_the_kernel_and_rises_under_load() -> None:
    total = psi_some_total()
    assert isinstance(total, int) and total >= 0
    sampler = CpuPressure()
    load = start_cpu_load()
    try:
        # Busy loops outnumber the CPUs: some task waits nearly all the time.
        wait_for(lambda: (sampler.update() or 0) >= 50, timeout=60, what="CPU pressure >= 50 %")
    finally:
        stop(load)
    later = psi_some_total()
    assert later is not None and later > total


@pytest.mark.alone
@needs_psi
def test_waits_of_softcopys_own_processes_are_not_pressure() -> None:
    """Copiers at SCHED_IDLE wait whenever anyone else computes: counting that as
    pressure would pause every copy on a busy machine, because of itself."""
    load = start_cpu_load()
    try:
        everyone = CpuPressure()
        ours = CpuPressure(own_pids=lambda: [p.pid for p in load])
        seen: list[tuple[float, float]] = []

        def sampled() -> bool:
            seen.append((everyone.update() or 0.0, ours.update() or 0.0))
            return seen[-1][0] >= 50

        wait_for(sampled, timeout=60, what="CPU pressure >= 50 % from the load")
        # The loops' own waits (3 per CPU, two thirds of the time each) cover the whole
        # interval: nothing of the pressure is left once they are taken out.
        assert seen[-1][1] <= 0.5 * seen[-1][0], seen
    finally:
        stop(load)


@pytest.fixture
def tmpfs_source(tmp_path: Path):
    """A source on its own tmpfs: no block device, so only the CPUs can make softcopy
    pause (the machine's shared disk is busy with other jobs' I/O)."""
    mnt = tmp_path / "acq"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mnt)]).returncode:
        pytest.skip("needs root to mount a tmpfs")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.alone
@needs_psi
def test_busy_cpus_pause_the_copiers_and_the_reason_names_the_cpus(
    tmp_path: Path, tmpfs_source: Path
) -> None:
    src, dst = tmpfs_source / "src.zarr", tmp_path / "dst.zarr"
    simulate(src, replace(SMALL, complete=False))
    load = start_cpu_load()
    try:
        # A slow --max-rate keeps work pending for seconds with the copiers asleep in
        # the limiter: the back-off judges only while there is copying to do, and a
        # copier that itself waits for a CPU is left out of the measure.
        proc = start(
            softcopy_cmd("copy", src, dst, "--settle", "600", "--max-rate", "2k"),
            env={**os.environ, BUSY_CPU_ENV: "50"},
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        reader.start()
        wait_for(
            lambda: any("pausing copiers" in line for line in lines), what="a pause", proc=proc
        )
    finally:
        stop(load)
    paused = next(line for line in lines if "pausing copiers" in line)
    assert "CPUs busy" in paused and "CPU pressure" in paused, paused
    # Paused, not stopped: once the end comes the copy finishes (resumed, or trickling).
    (src / "complete").touch()
    assert proc.wait(timeout=120) == 0, "".join(lines)
    reader.join(10)
    assert_same_tree(src, dst)


# ---- the supervisor's wake-ups --------------------------------------------------------------


def voluntary_switches(pid: int) -> dict[int, int]:
    """Per thread of a process: how often it went to sleep (each wait that returned)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except OSError:
            continue  # a thread that just ended
        found[int(task.name)] = int(status.split("voluntary_ctxt_switches:")[1].split()[0])
    return found


def test_an_idle_supervisor_wakes_about_once_a_second(tmpfs_source: Path) -> None:
    """Everything copied, the writer quiet: the target's thread sleeps until its next
    progress report (it used to wake every 0.5 s as well). All on a tmpfs, journal
    included, so no disk write puts a thread to sleep and counts as a wake-up."""
    src, dst = tmpfs_source / "src.zarr", tmpfs_source / "dst.zarr"
    simulate(src, replace(SMALL, complete=False))
    env = {**os.environ, "XDG_STATE_HOME": str(tmpfs_source / "state")}
    proc = start(softcopy_cmd("copy", src, dst, "--settle", "600"), env=env)
    wait_for(lambda: tree_files(dst) == tree_files(src), what="the copy", proc=proc)
    rates: list[dict[int, float]] = []

    def quiet_for_a_while() -> bool:
        # Over 4 s at a time: just after the copy, re-checks of fresh copies still run.
        before, started = voluntary_switches(proc.pid), time.monotonic()
        time.sleep(4)  # the measured interval itself
        after, seconds = voluntary_switches(proc.pid), time.monotonic() - started
        # The main thread (the process's own id) draws the display; the others are the run's.
        run = [t for t in after if t in before and t != proc.pid]
        rates.append({t: (after[t] - before[t]) / seconds for t in run})
        return bool(run) and max(rates[-1].values()) <= 1.5

    wait_for(quiet_for_a_while, timeout=40, what="<= 1.5 wake-ups/s", proc=proc)
    proc.terminate()
    finish(proc)


def test_the_hash_read_back_threads_read_in_the_idle_io_class(tmp_path: Path) -> None:
    """`--hash` reads the copy back on threads of the supervisor: their reads wait for
    the writer's disk as the copiers' do, while the supervisor's own thread does not."""
    from softcopy.verify.early import EarlyReads

    reads = EarlyReads(str(tmp_path), workers=2)
    try:

        def ioclass() -> int:
            return psutil.Process(threading.get_native_id()).ionice().ioclass

        classes = {reads._pool.submit(ioclass).result(timeout=30) for _ in range(8)}
    finally:
        reads.close()
    assert classes == {psutil.IOPRIO_CLASS_IDLE}
    assert psutil.Process(threading.get_native_id()).ionice().ioclass != psutil.IOPRIO_CLASS_IDLE
