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
import time
from collections.abc import Callable

from ..sources.pressure import DiskPressure
from .events import Event
from .notes import MAX_PAUSE, TRICKLE_EVERY

log = logging.getLogger(__name__)


class Backoff:
    def __init__(self, source: str, emit: Callable[..., None]) -> None:
        self.source = source
        self.emit = emit
        self.pressure: DiskPressure | None = None  # None: --no-backoff
        self.paused = False
        self._paused_since = 0.0
        self._last_trickle = 0.0
        self._said_trickle = False

    def why(self) -> str | None:
        """The measurement while paused, else None."""
        return self.pressure.describe() if self.paused and self.pressure is not None else None

    def check(self, copying: bool = True) -> None:
        """Sample the source disk; pause (only while there is copying to do) or resume."""
        if self.pressure is None:
            return
        # Sampled either way: a busy verdict is over the interval since the last sample.
        self.pressure.update()
        if not self.paused and copying and self.pressure.busy():
            self.paused = True
            self._paused_since = time.monotonic()
            self._said_trickle = False
            log.warning(
                "%s: %s (%s); pausing copiers",
                self.source,
                self.pressure.cause(),
                self.pressure.describe(),
            )
            self.emit(Event.PAUSED, reason=self.pressure.describe())
        elif self.paused and self.pressure.quiet():
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
