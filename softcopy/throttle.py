"""A byte rate shared by several copier processes (--max-rate).

The state is one float in a small local file: the time at which the bytes
granted so far will have been transferred at the allowed rate (the "generic
cell rate algorithm"). Each grant updates it under flock and sleeps until its
turn, so N processes together never exceed the rate, whatever N is.
"""

from __future__ import annotations

import fcntl
import os
import struct
import tempfile
import threading
import time

_STATE = struct.Struct("d")
# Up to this many seconds' worth of bytes may go at once: smooth enough for a
# 10 s window (held within 1 %), coarse enough not to wake for every small chunk.
_BURST = 0.1


def create_bucket() -> str:
    """A new shared rate state in the machine's temporary directory; the caller removes it."""
    fd, path = tempfile.mkstemp(prefix="softcopy-rate-")
    os.write(fd, _STATE.pack(0.0))
    os.close(fd)
    return path


class RateLimit:
    def __init__(self, path: str, rate: float) -> None:
        self.rate = rate
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        # flock keeps processes apart, not threads sharing the descriptor (a copier's
        # puts in flight): those take this first.
        self._threads = threading.Lock()

    def acquire(self, nbytes: int) -> None:
        """Wait until `nbytes` more may be transferred without exceeding the rate."""
        if nbytes <= 0:
            return
        with self._threads:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            try:
                (due,) = _STATE.unpack(os.pread(self.fd, _STATE.size, 0))
                now = time.time()  # wall clock: shared by every process on the machine
                start = max(due, now - _BURST)
                os.pwrite(self.fd, _STATE.pack(start + nbytes / self.rate), 0)
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
        if start > now:
            time.sleep(start - now)

    def close(self) -> None:
        os.close(self.fd)


def slice_size(rate: float) -> int:
    """Bytes per grant for a large file: a tenth of a second's worth, at least 64 KiB."""
    return max(64 << 10, int(rate * _BURST))
