"""Is the acquisition busy? The source disk (/proc/diskstats, I/O PSI) and the CPUs (CPU PSI).

softcopy only reads the source, so writes to the source device mean the writer
(or someone else) is working. The disk counts as busy when it is nearly always
occupied *and* being written, or when the whole system stalls on I/O: then
copiers pause, and resume once it is quiet. Requiring writes keeps softcopy from
pausing because of its own reads.

The CPUs count as busy when runnable tasks wait for a CPU most of the time (PSI
`cpu some`, from the growth of its total over the last interval) once the time
softcopy's own tasks spent waiting is taken out: copiers run at SCHED_IDLE, so
they wait whenever the writer computes, and that must not count as pressure.
PSI cannot tell whose wait overlapped whose, so while copiers wait most of an
interval the estimate falls towards zero: a lower bound, and harmless there, since
copiers that wait are at SCHED_IDLE already leaving every wanted CPU alone.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

_DISKSTATS = "/proc/diskstats"
_PSI_IO = "/proc/pressure/io"
_PSI_CPU = "/proc/pressure/cpu"
# Percent of the time some task other than softcopy's waited for a CPU that counts as
# busy: nearly always, since copiers at SCHED_IDLE already leave any CPU that is wanted,
# and a lower bar pauses copies on every merely shared machine. Internal, read from the
# environment: tests set it low to pause under a small real load, or above 100 (never).
BUSY_CPU_ENV = "SOFTCOPY_BUSY_CPU_PRESSURE"
_BUSY_CPU = 90.0
# Percent of the last 10 s in which some task stalled on I/O (system-wide PSI) that counts
# as busy; quiet again below a third of it. Internal, as above: the tests of other things
# set it above 100, so that one test's fsyncs do not pause another's copy for 30 s.
BUSY_IO_ENV = "SOFTCOPY_BUSY_IO_PRESSURE"
_BUSY_IO = 60.0


def block_device(path: str) -> str | None:
    """The /proc/diskstats name of the block device holding `path` (None: not a block device)."""
    st = os.stat(path)
    major, minor = os.major(st.st_dev), os.minor(st.st_dev)
    if major == 0:
        return None  # NFS, tmpfs, FUSE: no block device to watch
    try:
        return os.path.basename(os.path.realpath(f"/sys/dev/block/{major}:{minor}"))
    except OSError:
        return None


def _disk_counters(name: str) -> tuple[int, int] | None:
    """(io_ticks in ms, sectors written) of one device."""
    try:
        with open(_DISKSTATS) as f:
            for line in f:
                fields = line.split()
                if len(fields) > 12 and fields[2] == name:
                    return int(fields[12]), int(fields[9])
    except OSError:
        pass
    return None


def _psi_some_avg10() -> float | None:
    try:
        with open(_PSI_IO) as f:
            for line in f:
                if line.startswith("some "):
                    return float(line.split()[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        pass
    return None


def psi_some_total(path: str = _PSI_CPU) -> int | None:
    """The `some` line's total of a PSI file: microseconds some task stalled, ever."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("some "):
                    for field in line.split()[1:]:
                        name, _, value = field.partition("=")
                        if name == "total":
                            return int(value)
    except (OSError, ValueError):
        pass
    return None


def run_queue_wait_ns(tasks: list[str]) -> int:
    """Nanoseconds these tasks (/proc paths of a process or thread) waited for a CPU, ever."""
    total = 0
    for task in tasks:
        try:
            with open(f"{task}/schedstat") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            pass  # a copier that just ended: its waits no longer matter
    return total


class CpuPressure:
    """Percent of the last few seconds in which some task other than ours waited for a CPU.

    Over a window of WINDOW samples (about one a second): a burst of the writer's
    threads is not a busy machine, and the window's hysteresis keeps copiers from flapping.
    """

    WINDOW = 5

    def __init__(self, own_pids: Callable[[], list[int]] = list) -> None:
        self.own_pids = own_pids  # the copiers, asked at each sample (they are replaced)
        self._thread = f"/proc/self/task/{threading.get_native_id()}"  # the supervisor
        self._readings = deque([self._read()], maxlen=self.WINDOW + 1)

    def _read(self) -> tuple[float, int | None, int]:
        tasks = [self._thread, *(f"/proc/{pid}" for pid in self.own_pids())]
        return time.monotonic(), psi_some_total(), run_queue_wait_ns(tasks)

    def update(self) -> float | None:
        self._readings.append(self._read())
        (then, total_before, own_before), (now, total, own) = self._readings[0], self._readings[-1]
        if total is None or total_before is None or now <= then:
            return None
        # A copier replaced meanwhile makes `own` smaller: never add the difference back.
        stalled_ns = (total - total_before) * 1000 - max(0, own - own_before)
        return min(100.0, max(0.0, 100.0 * stalled_ns / ((now - then) * 1e9)))


@dataclass
class Sample:
    utilisation: float | None  # 0..1 over the last interval
    writing: bool
    psi: float | None  # % of time some task stalled on I/O, 10 s average
    cpu: float | None = None  # % of the last interval some other task waited for a CPU


class DiskPressure:
    """Samples the source device; `busy()` and `quiet()` have hysteresis so copiers do not flap."""

    def __init__(
        self,
        path: str,
        busy_utilisation: float = 0.75,
        quiet_utilisation: float | None = None,
        busy_psi: float | None = None,
        quiet_psi: float | None = None,
        busy_cpu: float | None = None,
    ) -> None:
        self.device = block_device(path)
        self.busy_utilisation = busy_utilisation
        # Hysteresis: resume only well below the pause threshold, so copiers do not flap.
        self.quiet_utilisation = quiet_utilisation or 0.6 * busy_utilisation
        if busy_psi is None:
            busy_psi = float(os.environ.get(BUSY_IO_ENV) or _BUSY_IO)
        self.busy_psi = busy_psi
        self.quiet_psi = busy_psi / 3 if quiet_psi is None else quiet_psi
        if busy_cpu is None:
            busy_cpu = float(os.environ.get(BUSY_CPU_ENV) or _BUSY_CPU)
        self.busy_cpu, self.quiet_cpu = busy_cpu, 0.5 * busy_cpu
        self.cpu = CpuPressure()
        self._last = self._read()
        self.sample = Sample(None, False, _psi_some_avg10())

    def watch_own(self, pids: Callable[[], list[int]]) -> None:
        """softcopy's own processes (the copiers): their waits for a CPU are not pressure."""
        self.cpu.own_pids = pids

    def _read(self) -> tuple[float, tuple[int, int] | None]:
        return time.monotonic(), _disk_counters(self.device) if self.device else None

    def update(self) -> Sample:
        now, counters = self._read()
        then, before = self._last
        self._last = (now, counters)
        utilisation, writing = None, False
        if counters and before and now > then:
            utilisation = min(1.0, (counters[0] - before[0]) / ((now - then) * 1000))
            writing = counters[1] > before[1]
        self.sample = Sample(utilisation, writing, _psi_some_avg10(), self.cpu.update())
        return self.sample

    def _disk_busy(self) -> bool:
        s = self.sample
        disk = s.utilisation is not None and s.utilisation >= self.busy_utilisation and s.writing
        return disk or (s.psi is not None and s.psi >= self.busy_psi)

    def _cpu_busy(self) -> bool:
        return self.sample.cpu is not None and self.sample.cpu >= self.busy_cpu

    def busy(self) -> bool:
        return self._disk_busy() or self._cpu_busy()

    def quiet(self) -> bool:
        s = self.sample
        disk = s.utilisation is None or s.utilisation < self.quiet_utilisation or not s.writing
        cpu = s.cpu is None or s.cpu < self.quiet_cpu
        return disk and cpu and (s.psi is None or s.psi < self.quiet_psi)

    def cause(self) -> str:
        """What is busy, for the pause message."""
        both = self._disk_busy() and self._cpu_busy()
        if both:
            return "source disk and CPUs busy"
        return "CPUs busy" if self._cpu_busy() else "source disk busy"

    def describe(self) -> str:
        s = self.sample
        parts = []
        if s.utilisation is not None:
            parts.append(
                f"{self.device} {s.utilisation:.0%} busy" + (", written" if s.writing else "")
            )
        if s.psi is not None:
            parts.append(f"I/O pressure {s.psi:.0f}%")
        if s.cpu is not None:
            parts.append(f"CPU pressure {s.cpu:.0f}%")
        return "; ".join(parts) or "no disk statistics"


# Schedulers that honour I/O priority classes (mq-deadline since Linux 5.14).
_HONOURS_IDLE = ("bfq", "mq-deadline", "cfq")


def io_scheduler(device: str) -> str | None:
    """The active I/O scheduler of a block device (a partition's is its disk's)."""
    base = os.path.realpath(f"/sys/class/block/{device}")
    for candidate in (base, os.path.dirname(base)):
        try:
            with open(os.path.join(candidate, "queue", "scheduler")) as f:
                text = f.read()
        except OSError:
            continue
        start, end = text.find("["), text.find("]")
        return text[start + 1 : end] if 0 <= start < end else text.strip()
    return None


def idle_class_warning(path: str) -> str | None:
    """Why the copiers' idle I/O class will not protect the writer on this disk, if so."""
    device = block_device(path)
    scheduler = io_scheduler(device) if device else None
    if scheduler is None or scheduler in _HONOURS_IDLE:
        return None
    return (
        f"the I/O scheduler of {device} is '{scheduler}', which ignores I/O priority "
        "classes: copiers at idle priority still compete with the writer; use "
        "--max-rate, --sleep-time or the busy-disk back-off, or switch the disk to "
        "mq-deadline or bfq"
    )
