"""When is the writer done? The end rules, as pure functions of what the engine observed.

A rule that needs a fresh listing to be sure (settle, idle timeout) says so; the
engine confirms it with a full scan, which is the only side effect involved.
`marker` and `sentinel` prove the end (the writer said so); `settle`,
`idle_timeout` and `old_source` are guesses, and a guess never makes a copy "safe
to free". Quiet time is measured from the newest change the source shows, not
from softcopy's start (observe.py), so a source long finished ends at once.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..sources.kinds import newest_change
from ..sources.scan import Version

END_PROVEN = {
    "marker": True,
    "sentinel": True,
    "settle": False,
    "idle_timeout": False,
    "old_source": False,
}


@dataclass(frozen=True)
class Observed:
    """What the end rules look at, at one moment."""

    markers: Mapping[str, Version]  # marker and sentinel files at the source root
    quiet: float  # seconds since the last change seen at the source
    longest_pause: float  # the longest gap between two changes seen so far
    all_expected_present: bool  # every file the chunk grids allow exists
    temp_count: int  # writers' temporary files in the last full listing
    has_expected_set: bool  # zarr trees have one; plain directories do not
    now_wall: float = 0.0  # time.time(), for sentinel ages
    quiet_at_start: float = 0.0  # seconds the source was unchanged at the first listing


@dataclass(frozen=True)
class Rules:
    complete_marker: str
    sentinel_min_age: float
    idle_timeout: float | None
    settle: float
    sentinel_fallbacks: tuple[str, ...] = ()
    finished_after: float = 0.0  # a source this old at the start is finished; 0: off


def rules_of(cfg: Any) -> Rules:
    """A target's end rules (a TargetConfig's options of the same names)."""
    return Rules(
        cfg.complete_marker,
        cfg.sentinel_min_age,
        cfg.idle_timeout,
        cfg.settle,
        cfg.sentinel_fallbacks,
        cfg.finished_after,
    )


@dataclass(frozen=True)
class End:
    rule: str  # a key of END_PROVEN
    reason: str  # in words, for logs, events, the journal and the certificate
    confirm: bool  # a fresh full listing must find no change before it holds


def settle_time(rules: Rules, longest_pause: float) -> float:
    """A writer that paused for 3 s between timepoints may pause as long again."""
    return max(rules.settle, 2 * longest_pause)


def end_of(rules: Rules, seen: Observed) -> End | None:
    """The first end rule that holds, or None while the writer may still be writing."""
    if rules.complete_marker in seen.markers:
        return End("marker", f"the source has a '{rules.complete_marker}' marker", False)
    now = seen.now_wall or time.time()
    for key, version in sorted(seen.markers.items()):
        age = now - newest_change(version)
        if age < rules.sentinel_min_age:
            continue
        if not any(fnmatch.fnmatchcase(key, p) for p in rules.sentinel_fallbacks):
            return End("sentinel", f"the sentinel '{key}' exists and is {age:.0f} s old", False)
        if seen.quiet >= rules.sentinel_min_age:
            return End(
                "sentinel",
                f"the fallback sentinel '{key}' exists and it and the whole run have been "
                f"unchanged for {rules.sentinel_min_age:g} s",
                True,
            )
    if rules.idle_timeout is not None and seen.quiet >= rules.idle_timeout:
        return End(
            "idle_timeout",
            f"nothing changed for {duration(seen.quiet)} (idle timeout {rules.idle_timeout:g} s)",
            True,
        )
    settle = settle_time(rules, seen.longest_pause)
    # A plain directory has no expected set: sentinels, idle or an old source end it.
    if (
        seen.quiet >= settle
        and seen.has_expected_set
        and seen.all_expected_present
        and not seen.temp_count
    ):
        return End(
            "settle",
            f"every expected file is present and nothing changed for {duration(seen.quiet)} "
            f"(settle {settle:.3g} s)",
            True,
        )
    return _old_source(rules, seen)


def _old_source(rules: Rules, seen: Observed) -> End | None:
    """Old when softcopy started, and unchanged since: finished, even with fill-value holes.

    Only at the start: a run that goes quiet later may be a long pause between timepoints,
    which is what --idle-timeout is for. Writers' leftover temporary files do not hold it
    up (a crashed writer's would, forever); they are never copied.
    """
    after = rules.finished_after
    if not after or seen.quiet_at_start < after or seen.quiet < after:
        return None
    return End(
        "old_source",
        f"nothing in the source changed for {duration(seen.quiet)} (older than "
        f"--finished-after {duration(after)})",
        True,
    )


def duration(seconds: float) -> str:
    """Seconds in words for people: 45 s, 12 min, 2 h, 3 days."""
    if seconds < 60:
        return f"{seconds:.2g} s"
    if seconds < 3600:
        return f"{seconds / 60:.2g} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.2g} h"
    days = seconds / 86400
    return f"{days:.2g} days" if days < 10 else f"{days:.0f} days"


def end_record(rule: str, reason: str, trust_guessed_end: bool) -> dict:
    """How the end was decided, for the certificate: a guess never frees the source."""
    proven = END_PROVEN.get(rule, False)
    trusted = not proven and trust_guessed_end
    return {
        "end": {"rule": rule, "proven": proven, "detail": reason, "trusted_by_user": trusted},
        "safe_to_free": proven or trusted,
    }
