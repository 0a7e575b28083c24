"""What a run that does not move says: why nothing finishes, or what would end it.

Pure text from a snapshot, so the wording is tested without waiting minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..units import counted

# A busy source disk pauses the copiers, but never for good: another job's I/O can keep
# a shared disk busy for hours. After this long, one batch goes out every TRICKLE_EVERY.
MAX_PAUSE = 30.0
TRICKLE_EVERY = 5.0
# Work pending and nothing done for this long: say why, in the log and in `status`.
STALL_AFTER = 20.0
# Nothing to copy and no end in sight for this long (at least 4 x --settle): say once
# what would end the run.
WAITING_NOTE_AFTER = 10.0


@dataclass(frozen=True)
class Snapshot:
    paused_because: str | None  # the disk measurement while paused, else None
    in_flight: int
    retrying: int
    unproven: int
    tick_seconds: float


def why_stalled(s: Snapshot) -> str:
    parts = []
    if s.paused_because is not None:
        parts.append(
            f"copiers paused while the source disk is busy ({s.paused_because}); "
            f"after {MAX_PAUSE:.0f} s one batch goes out every {TRICKLE_EVERY:.0f} s"
        )
    if s.in_flight:
        parts.append(f"{counted(s.in_flight, 'file')} in flight (a large file takes a while)")
    if s.retrying:
        parts.append(f"{counted(s.retrying, 'file')} waiting to be retried after errors")
    if s.unproven:
        parts.append(
            f"{s.unproven} copies waiting for the source's timestamp tick "
            f"({s.tick_seconds:g} s) to pass before they are compared again"
        )
    return "; ".join(parts) or "no copier is making progress"


def waiting_note_after(settle: float) -> float:
    return max(WAITING_NOTE_AFTER, 4 * settle)


def waiting_for(
    quiet: float,
    complete_marker: str,
    sentinels: tuple[str, ...],
    expected: tuple[int, int] | None,  # (present, expected) chunk files; None: no grid
    temp_count: int,
    idle_timeout: float | None,
) -> str:
    """What would end a run that has copied everything there is."""
    ends = [f"a '{complete_marker}' file at the source root"]
    ends += [f"a sentinel matching '{p}'" for p in sentinels]
    text = (
        f"everything there is has been copied and nothing changed for {quiet:.0f} s; waiting "
        "for the end of the acquisition: " + " or ".join(ends)
    )
    if expected is not None:
        present, total = expected
        if present < total:
            text += (
                f"; 'every expected file present' cannot end it while {total - present} "
                f"of {total} expected chunk files are absent (chunks equal to the fill "
                "value are never written, so that may never happen)"
            )
        elif temp_count:
            text += f"; {counted(temp_count, 'writer temporary file')} remain"
    if idle_timeout is None:
        text += "; or give --idle-timeout SECONDS to end it after that long without changes"
    return text
