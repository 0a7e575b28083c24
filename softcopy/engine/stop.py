"""The stop signal every target of a run shares: 1 = finish the files in flight, 2 = abort.

A self-pipe, so a request wakes each supervisor's wait at once.
"""

from __future__ import annotations

import os


class StopSignal:
    """Ctrl-C / SIGTERM / SIGHUP, shared by every target: 1 = finish files in flight, 2 = abort."""

    def __init__(self) -> None:
        self.level = 0
        self._r, self._w = os.pipe()
        os.set_blocking(self._w, False)

    def request(self) -> None:
        self.level += 1
        try:
            os.write(self._w, b"x")
        except BlockingIOError:
            pass

    def fileno(self) -> int:
        return self._r
