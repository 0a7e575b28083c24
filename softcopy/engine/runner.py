"""The runner: many targets at once, one thread each, sharing a stop signal and the
run-wide rate limit; targets may be added while others copy (a service adds runs as
they appear)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..config import TargetConfig
from ..throttle import create_bucket
from .events import Summary
from .stop import StopSignal
from .target import copy_target


@dataclass
class Finished:
    """One target's end: its `Summary`, or what its thread raised (for the caller to report
    or re-raise: a target's failure never ends the others)."""

    cfg: TargetConfig
    result: Summary | BaseException


class Runner:
    """Targets in threads until `wait` has seen every one end; use as a context manager
    so the shared rate state is removed however the run ends."""

    def __init__(
        self,
        stop: StopSignal | None = None,
        events: Callable[[dict], None] | None = None,
        run_rate: float | None = None,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        self._copy_target = copy_target
        self._on_end = on_end  # told (from the target's thread) once its end can be taken
        self.stop = stop or StopSignal()
        self.events = events
        self._bucket = create_bucket() if run_rate else None
        self._shared = (self._bucket, run_rate) if self._bucket and run_rate else None
        self._lock = threading.Lock()
        self._ended = threading.Condition(self._lock)
        # By index, and only until taken: a service's runner lives for months.
        self._threads: dict[int, threading.Thread] = {}
        self._finished: dict[int, Finished] = {}
        self._next = 0
        self._closed = False

    def add(self, cfg: TargetConfig, stop: StopSignal | None = None) -> int:
        """Start copying `cfg` now, also while `wait` runs; its index in `wait`'s results.

        `stop`: this target's own stop signal (a service stops one run), else the runner's.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("the runner is closed")
            i = self._next
            self._next += 1
            thread = threading.Thread(
                target=self._work,
                args=(i, cfg, stop or self.stop),
                name=f"target-{i}",
                daemon=True,
            )
            # Started before `wait` can see it: a thread not yet started is not alive, and
            # `wait` would return without it.
            thread.start()
            self._threads[i] = thread
        return i

    def _work(self, i: int, cfg: TargetConfig, stop: StopSignal) -> None:
        try:
            result: Summary | BaseException = self._copy_target(
                cfg, stop, self.events, self._shared
            )
        except BaseException as exc:  # reported by the caller of `wait`
            result = exc
        with self._lock:  # `add` records this target's thread under the lock, maybe after us
            self._finished[i] = Finished(cfg, result)
            self._ended.notify_all()
        if self._on_end is not None:
            self._on_end()

    def running(self) -> int:
        """Targets not yet ended."""
        with self._lock:
            return len(self._threads) - len(self._finished)

    def take_finished(self, timeout: float = 0.0) -> list[tuple[int, Finished]]:
        """Targets that ended since the last call (waiting up to `timeout` for one), by
        index; forgotten here once taken."""
        with self._lock:
            if not self._finished and timeout > 0:
                self._ended.wait(timeout)
            taken = sorted(self._finished.items())
            for i, _ in taken:
                self._threads.pop(i).join()
            self._finished.clear()
            return taken

    def wait(self, poll: float = 0.2) -> list[Finished]:
        """Every target's end, in the order they were added, once all have ended; targets
        added meanwhile are waited for too. Joins in short steps so that the main thread's
        signal handlers run while it waits."""
        while True:
            with self._lock:
                alive = [t for t in self._threads.values() if t.is_alive()]
            if not alive:
                break
            for t in alive:
                while t.is_alive():
                    t.join(poll)
        with self._lock:
            # Only ended targets: one added since the check above is not in the list.
            return [self._finished[i] for i in sorted(self._finished)]

    def close(self) -> None:
        """Remove the shared rate state; call after `wait` (copiers still hold it open)."""
        with self._lock:
            self._closed = True
            bucket, self._bucket = self._bucket, None
        if bucket:
            os.unlink(bucket)

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
