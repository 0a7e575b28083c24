"""What the supervisor and a copier say to each other over their socketpair.

Supervisor to copier: ("options", data) first (a copier may be started before its target
is known, see `spares`), then ("batch", id, [(key, compare_first), ...]) or ("stop",).
Copier to supervisor: ("done", id, encode_outcomes([Outcome, ...])) per batch, and notes ("warn" or
"debug", text) to be logged (a copier never writes to the terminal: it would tear the
live display).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..sinks.base import Outcome, SinkSpec
from ..sources.scan import Version


@dataclass(frozen=True)
class CopierOptions:
    """What a copier needs of its target; made by `pool.copier_options`, whose target
    settings come from the TargetConfig (their defaults are the option table's, not
    repeated here)."""

    source: str
    destination: str
    sleep_time: float
    fsync: bool
    digest: bool
    # (state file, bytes/s) of every rate limit this copier obeys: its target's
    # --max-rate and a run-wide one; all copiers sharing a file share its rate.
    rate_limits: tuple[tuple[str, float], ...] = ()
    nice: int = 19
    idle_io: bool = True
    idle_cpu: bool = True  # SCHED_IDLE
    # Where copiers write; None: the local directory `destination`.
    sink: SinkSpec | None = None


def encode(options: CopierOptions) -> dict[str, Any]:
    """The options as plain data (names as surrogate escapes), for the options message."""
    data = dict(options.__dict__)
    if options.sink is not None:
        data["sink"] = options.sink.as_dict()
    return data


def decode(data: dict[str, Any]) -> CopierOptions:
    data = dict(data)
    data["rate_limits"] = tuple(tuple(x) for x in data.get("rate_limits", ()))
    if data.get("sink") is not None:
        data["sink"] = SinkSpec.from_dict(data["sink"])
    return CopierOptions(**data)


def encode_outcomes(outcomes: list[Outcome]) -> list[tuple]:
    """Outcomes as tuples of plain values: pickled at C speed, where a dataclass (and the
    Version inside it) costs a class lookup and a dict each, 4 µs of a copier's time per
    file of a tiny-file copy."""
    return [
        (o.key, o.status, o.version and tuple(o.version), o.nbytes, o.error, o.errno,
         o.digest, o.checked_ns, o.resumed)
        for o in outcomes
    ]  # fmt: skip


def decode_outcomes(rows: list[tuple]) -> list[Outcome]:
    return [
        Outcome(key, status, version and Version(*version), *rest)
        for key, status, version, *rest in rows
    ]
