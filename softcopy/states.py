"""A target's states, shared by the engine that sets them and the journal and displays
that read them. `StrEnum`: each is the plain string of the `--json` wire format."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    WAITING = "waiting"  # for the source to appear
    COPYING = "copying"
    DRAINING = "draining"  # the writer is judged done: copying what is left
    VERIFYING = "verifying"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    DRY_RUN = "dry-run"


FINAL_STATES = frozenset({State.DONE, State.FAILED, State.INTERRUPTED})
RUNNING_STATES = frozenset({State.WAITING, State.COPYING, State.DRAINING, State.VERIFYING})
