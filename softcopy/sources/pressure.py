"""Is the acquisition disk busy? Utilisation and write activity from /proc/diskstats, plus PSI.

softcopy only reads the source, so writes to the source device mean the writer
(or someone else) is working. The disk counts as busy when it is nearly always
occupied *and* being written, or when the whole system stalls on I/O: then
copiers pause, and resume once it is quiet. Requiring writes keeps softcopy from
pausing because of its own reads.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

_DISKSTATS = "/proc/diskstats"
_PSI_IO = "/proc/pressure/io"


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


@dataclass
class Sample:
    utilisation: float | None  # 0..1 over the last interval
    writing: bool
    psi: float | None  # % of time some task stalled on I/O, 10 s average


class DiskPressure:
    """Samples the source device; `busy()` and `quiet()` have hysteresis so copiers do not flap."""

    def __init__(
        self,
        path: str,
        busy_utilisation: float = 0.75,
        quiet_utilisation: float | None = None,
        busy_psi: float = 60.0,
        quiet_psi: float = 20.0,
    ) -> None:
        self.device = block_device(path)
        self.busy_utilisation = busy_utilisation
        # Hysteresis: resume only well below the pause threshold, so copiers do not flap.
        self.quiet_utilisation = quiet_utilisation or 0.6 * busy_utilisation
        self.busy_psi, self.quiet_psi = busy_psi, quiet_psi
        self._last = self._read()
        self.sample = Sample(None, False, _psi_some_avg10())

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
        self.sample = Sample(utilisation, writing, _psi_some_avg10())
        return self.sample

    def busy(self) -> bool:
        s = self.sample
        disk = s.utilisation is not None and s.utilisation >= self.busy_utilisation and s.writing
        return disk or (s.psi is not None and s.psi >= self.busy_psi)

    def quiet(self) -> bool:
        s = self.sample
        disk = s.utilisation is None or s.utilisation < self.quiet_utilisation or not s.writing
        return disk and (s.psi is None or s.psi < self.quiet_psi)

    def describe(self) -> str:
        s = self.sample
        parts = []
        if s.utilisation is not None:
            parts.append(
                f"{self.device} {s.utilisation:.0%} busy" + (", written" if s.writing else "")
            )
        if s.psi is not None:
            parts.append(f"I/O pressure {s.psi:.0f}%")
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
