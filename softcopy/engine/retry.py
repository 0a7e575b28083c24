"""What to do when one file fails: retry later with back-off, give up on it, or stop.

A full destination or a read-only one stops the target (nothing else can succeed
there); anything else is one file's problem, retried with exponential back-off up
to `max_attempts`, then given up and named, while the rest of the target goes on.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

BASE_DELAY = 0.2
FATAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
OUT_OF_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


class Decision(StrEnum):
    RETRY = "retry"
    GIVE_UP = "give_up"
    STOP = "stop"  # the destination cannot take anything more


@dataclass
class RetryPolicy:
    max_attempts: int
    attempts: dict[str, int] = field(default_factory=dict)
    deferred: dict[str, float] = field(default_factory=dict)  # key -> monotonic retry time
    failed: dict[str, str] = field(default_factory=dict)  # given up: key -> last error

    def failure(self, key: str, error: str, err: int, now: float) -> tuple[Decision, int, float]:
        """(decision, attempts so far, delay before the retry)."""
        if err in FATAL_ERRNOS:
            return Decision.STOP, self.attempts.get(key, 0), 0.0
        attempts = self.attempts.get(key, 0) + 1
        self.attempts[key] = attempts
        if attempts < self.max_attempts:
            delay = BASE_DELAY * 2 ** (attempts - 1)
            self.deferred[key] = now + delay
            return Decision.RETRY, attempts, delay
        self.failed[key] = error
        return Decision.GIVE_UP, attempts, 0.0

    def succeeded(self, key: str) -> None:
        self.attempts.pop(key, None)

    def due(self, now: float) -> list[str]:
        """Keys whose back-off has passed: offer them again."""
        keys = [k for k, t in self.deferred.items() if t <= now]
        for key in keys:
            del self.deferred[key]
        return keys

    def changed(self, keys: Iterable[str]) -> None:
        """A new version at the source deserves a new chance."""
        if not self.failed:
            return
        for key in keys:
            if key in self.failed:
                del self.failed[key]
                self.attempts.pop(key, None)

    def skip(self) -> set[str]:
        """Keys not to hand out now: waiting for their retry, or given up."""
        return set(self.deferred) | set(self.failed)
