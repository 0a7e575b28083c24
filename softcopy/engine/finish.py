"""When is the writer done? The end rules, as pure functions of what the engine observed.

A rule that needs a fresh listing to be sure (settle, idle timeout) says so; the
engine confirms it with a full scan, which is the only side effect involved.
`marker` and `sentinel` prove the end (the writer said so); `settle` and
`idle_timeout` are guesses, and a guess never makes a copy "safe to free".
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Mapping
from dataclasses import dataclass

from ..sources.kinds import newest_change
from ..sources.scan import Version

END_PROVEN = {"marker": True, "sentinel": True, "settle": False, "idle_timeout": False}


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


@dataclass(frozen=True)
class Rules:
    complete_marker: str
    sentinel_min_age: float
    idle_timeout: float | None
    settle: float
    sentinel_fallbacks: tuple[str, ...] = ()


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
        return End("idle_timeout", f"nothing changed for {rules.idle_timeout:g} s (idle timeout)",
                   True)  # fmt: skip
    settle = settle_time(rules, seen.longest_pause)
    if seen.quiet < settle or not seen.has_expected_set:
        return None  # a plain directory has no expected set: sentinels or idle end it
    if not seen.all_expected_present or seen.temp_count:
        return None
    return End(
        "settle", f"every expected file is present and nothing changed for {settle:.3g} s", True
    )


def end_record(rule: str, reason: str, trust_guessed_end: bool) -> dict:
    """How the end was decided, for the certificate: a guess never frees the source."""
    proven = END_PROVEN.get(rule, False)
    trusted = not proven and trust_guessed_end
    return {
        "end": {"rule": rule, "proven": proven, "detail": reason, "trusted_by_user": trusted},
        "safe_to_free": proven or trusted,
    }
