"""The acquisition comes first: pause copiers while the source disk or the CPUs are busy,
but not forever.

Another job's I/O can keep a shared disk busy for hours, so after MAX_PAUSE one
batch goes out every TRICKLE_EVERY: the copy always moves, slowly. Only copying
waits: a run with nothing to copy never pauses (a rerun of a finished copy ends
at once whatever other jobs do), and comparing what the destination already
holds, like the verification, goes on while paused (target.py).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from ..sources.pressure import DiskPressure, block_device
from .events import Event
from .notes import MAX_PAUSE, TRICKLE_EVERY

log = logging.getLogger(__name__)

# The copies read the source disk when their copiers' reads from storage (not the page
# cache) came to more than this share of the bytes they copied in an interval ...
_STORAGE_SHARE = 0.125
# ... of at least this many bytes copied (fewer tell nothing either way).
_EVIDENCE = 1 << 20
# Devices that may sit on any disk (device mapper, RAID, loop files): never told apart.
_LAYERED = ("dm-", "md", "loop", "nbd", "zram", "drbd")


class Backoff:
    def __init__(self, source: str, emit: Callable[..., None]) -> None:
        self.source = source
        self.emit = emit
        self.pressure: DiskPressure | None = None  # None: --no-backoff
        self.paused = False
        self._paused_since = 0.0
        self._last_trickle = 0.0
        self._said_trickle = False
        # Whether the source disk's load is the copy's business (disk_matters):
        self.shares_disk = True  # the copies are written to the source's disk
        self.own_pids: Callable[[], list[int]] | None = None  # the copiers
        self._reads: dict[int, int] = {}  # copier pid -> bytes it read from storage
        self._copied = 0
        self._reads_storage: bool | None = None  # as the last interval with copies showed

    def why(self) -> str | None:
        """The measurement while paused, else None."""
        return self.pressure.describe() if self.paused and self.pressure is not None else None

    def disk_matters(self) -> bool:
        """Whether a busy source disk is a reason to pause: the copies are written to it, or
        they read it (reads that missed the page cache, in the last interval with copies).

        A writer's new files are read from the page cache: copying them to another device
        takes nothing from the writer's disk, and pausing would only add lag. Until the
        first interval with copies says which, they are let go (a fresh acquisition's
        files are cached); reads that cannot be measured count as reads of the disk.
        """
        if self.shares_disk or self.own_pids is None:
            return True
        return bool(self._reads_storage)

    def _weigh_reads(self, copied: int) -> None:
        """What the copies since the last check read from storage, per byte copied."""
        if self.own_pids is None or self.shares_disk:
            return
        reads = storage_reads(self.own_pids())
        if reads is None:
            self._reads_storage = True
            self.own_pids = None  # not measurable here: the disk's load always matters
            return
        # Summed until enough was copied to tell; a copier started since counts from its start.
        nbytes = copied - self._copied
        if nbytes < _EVIDENCE:
            return
        read = sum(max(0, n - self._reads.get(pid, 0)) for pid, n in reads.items())
        self._reads, self._copied = reads, copied
        self._reads_storage = read > _STORAGE_SHARE * nbytes

    def _busy(self) -> bool:
        assert self.pressure is not None
        if self.disk_matters():
            return self.pressure.busy()
        cpu = self.pressure.sample.cpu
        return cpu is not None and cpu >= self.pressure.busy_cpu

    def _quiet(self) -> bool:
        assert self.pressure is not None
        if self.disk_matters():
            return self.pressure.quiet()
        cpu = self.pressure.sample.cpu
        return cpu is None or cpu < self.pressure.quiet_cpu

    def check(self, copying: bool = True, copied: int = 0) -> None:
        """Sample the source disk; pause (only while there is copying to do) or resume.

        `copied`: bytes copied so far, which the copiers' reads from storage are weighed
        against (disk_matters)."""
        if self.pressure is None:
            return
        # Sampled either way: a busy verdict is over the interval since the last sample.
        self.pressure.update()
        self._weigh_reads(copied)
        if not self.paused and copying and self._busy():
            self.paused = True
            self._paused_since = time.monotonic()
            self._said_trickle = False
            log.warning(
                "%s: %s (%s); pausing copiers",
                self.source,
                self.pressure.cause() if self.disk_matters() else "CPUs busy",
                self.pressure.describe(),
            )
            self.emit(Event.PAUSED, reason=self.pressure.describe())
        elif self.paused and self._quiet():
            self.paused = False
            log.info(
                "%s: source disk and CPUs quiet again (%s); resuming",
                self.source,
                self.pressure.describe(),
            )
            self.emit(Event.RESUMED, reason=self.pressure.describe())

    def trickle(self, now: float) -> bool:
        """While paused for long, one batch every few seconds: progress is guaranteed."""
        if now - self._paused_since < MAX_PAUSE or now - self._last_trickle < TRICKLE_EVERY:
            return False
        self._last_trickle = now
        if not self._said_trickle:
            self._said_trickle = True
            assert self.pressure is not None
            log.warning(
                "%s: %s for %.0f s (%s); copying one batch every %.0f s so the "
                "copy keeps moving (--no-backoff copies at full speed)",
                self.source,
                self.pressure.cause(),
                now - self._paused_since,
                self.pressure.describe(),
                TRICKLE_EVERY,
            )
        return True


def storage_reads(pids: list[int]) -> dict[int, int] | None:
    """Bytes each process made the kernel read from storage (page-cache misses), from
    /proc/PID/io; None when that cannot be read (another user's, or no such file)."""
    found = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/io", "rb") as f:
                text = f.read()
        except FileNotFoundError:
            continue  # ended meanwhile: replaced, or stopping
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(b"read_bytes:"):
                found[pid] = int(line.split()[1])
                break
        else:
            return None
    return found


def shares_disk(device: str | None, path: str) -> bool:
    """Whether files written under `path` land on the source's disk `device` (a
    /proc/diskstats name; None: the source has none to watch). Partitions of one disk
    share it; layered devices (LVM, RAID, loop files) may sit on any disk, so they do."""
    if device is None:
        return False
    try:
        other = block_device(path)
    except OSError:
        return True
    if other is None:
        return False  # tmpfs, NFS, FUSE: not a block device at all
    disks = {_whole_disk(device), _whole_disk(other)}
    return len(disks) == 1 or any(d.startswith(_LAYERED) for d in disks)


def _whole_disk(name: str) -> str:
    """The disk a partition belongs to (vda1 -> vda); anything else as it is."""
    node = f"/sys/class/block/{name}"
    if os.path.exists(f"{node}/partition"):
        return os.path.basename(os.path.dirname(os.path.realpath(node)))
    return name
