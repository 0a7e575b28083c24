"""The engine's decisions as pure functions: end rules, retry policy, notes, states."""

from __future__ import annotations

import errno
import json

import pytest

from softcopy.engine.events import FINAL_STATES, RUNNING_STATES, Event, State, Summary
from softcopy.engine.finish import End, Observed, Rules, end_of, end_record, settle_time
from softcopy.engine.notes import Snapshot, waiting_for, waiting_note_after, why_stalled
from softcopy.engine.retry import Decision, RetryPolicy
from softcopy.sources.scan import Version

RULES = Rules(complete_marker="complete", sentinel_min_age=10, idle_timeout=None, settle=5)
NOW = 1_800_000_000.0


def seen(**changes) -> Observed:
    base = dict(
        markers={},
        quiet=0.0,
        longest_pause=0.0,
        all_expected_present=False,
        temp_count=0,
        has_expected_set=True,
        now_wall=NOW,
    )
    return Observed(**(base | changes))


def aged(seconds: float) -> Version:
    stamp = int((NOW - seconds) * 1e9)
    return Version(1, stamp, 1, stamp)


# ---- end rules ---------------------------------------------------------------------------


def test_the_marker_ends_at_once_and_needs_no_confirmation() -> None:
    assert end_of(RULES, seen(markers={"complete": aged(0)})) == End(
        "marker", "the source has a 'complete' marker", False
    )


def test_a_sentinel_ends_only_once_old_enough_by_its_newest_timestamp() -> None:
    assert end_of(RULES, seen(markers={"CopyComplete.txt": aged(3)})) is None
    end = end_of(RULES, seen(markers={"CopyComplete.txt": aged(30)}))
    assert end is not None and end.rule == "sentinel" and not end.confirm
    # An old mtime with a fresh ctime (copied onto NFS, or touched -d): not old.
    fresh_ctime = Version(1, int((NOW - 3600) * 1e9), 1, int((NOW - 1) * 1e9))
    assert end_of(RULES, seen(markers={"CopyComplete.txt": fresh_ctime})) is None


def test_the_idle_timeout_needs_a_confirming_listing() -> None:
    rules = Rules("complete", 10, idle_timeout=60, settle=5)
    assert end_of(rules, seen(quiet=59)) is None
    end = end_of(rules, seen(quiet=61))
    assert end is not None and (end.rule, end.confirm) == ("idle_timeout", True)


def test_settling_needs_every_expected_file_no_temporaries_and_enough_quiet() -> None:
    full = dict(all_expected_present=True, quiet=6.0)
    assert end_of(RULES, seen(**full)).rule == "settle"  # type: ignore[union-attr]
    assert end_of(RULES, seen(**full | {"all_expected_present": False})) is None
    assert end_of(RULES, seen(**full | {"temp_count": 1})) is None
    assert end_of(RULES, seen(**full | {"has_expected_set": False})) is None, "a plain tree"
    # A writer that paused 4 s between timepoints may pause as long again: wait 8 s.
    assert settle_time(RULES, 4.0) == 8.0
    assert end_of(RULES, seen(**full | {"longest_pause": 4.0})) is None
    assert end_of(RULES, seen(**full | {"longest_pause": 4.0, "quiet": 8.0})) is not None


@pytest.mark.parametrize(
    ("rule", "trusted", "safe"),
    [
        ("marker", False, True),
        ("sentinel", False, True),
        ("settle", False, False),
        ("idle_timeout", False, False),
        ("settle", True, True),
        ("marker", True, True),
    ],
)
def test_only_a_proven_or_trusted_end_is_safe_to_free(rule: str, trusted: bool, safe: bool) -> None:
    record = end_record(rule, "why", trusted)
    assert record["safe_to_free"] is safe
    assert record["end"]["proven"] is (rule in ("marker", "sentinel"))
    assert record["end"]["trusted_by_user"] is (trusted and rule not in ("marker", "sentinel"))


# ---- retry policy ------------------------------------------------------------------------


def test_retries_back_off_exponentially_then_give_up() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.failure("k", "EIO", errno.EIO, now=100.0) == (Decision.RETRY, 1, 0.2)
    assert policy.skip() == {"k"} and policy.due(100.1) == [] and policy.due(100.2) == ["k"]
    assert policy.failure("k", "EIO", errno.EIO, now=101.0) == (Decision.RETRY, 2, 0.4)
    assert policy.failure("k", "EIO again", errno.EIO, now=102.0)[0] == Decision.GIVE_UP
    assert policy.failed == {"k": "EIO again"} and "k" in policy.skip()


def test_a_full_or_read_only_destination_stops_the_target() -> None:
    policy = RetryPolicy(max_attempts=5)
    for err in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        assert policy.failure("k", "full", err, now=0.0)[0] == Decision.STOP
    assert not policy.failed and not policy.deferred


def test_a_new_version_of_a_given_up_file_gets_new_chances() -> None:
    policy = RetryPolicy(max_attempts=1)
    assert policy.failure("k", "EIO", errno.EIO, now=0.0)[0] == Decision.GIVE_UP
    policy.changed(["other"])
    assert "k" in policy.failed
    policy.changed(["k"])
    assert not policy.failed and policy.failure("k", "EIO", errno.EIO, 0.0)[1] == 1


# ---- notes -------------------------------------------------------------------------------


def test_a_stall_names_every_cause() -> None:
    text = why_stalled(Snapshot("sda 99% busy, written", 2, 1, 3, 1.0))
    assert "sda 99% busy" in text and "2 files in flight" in text
    assert "1 file waiting to be retried" in text and "3 copies waiting" in text
    assert why_stalled(Snapshot(None, 0, 0, 0, 0.004)) == "no copier is making progress"


def test_the_waiting_note_says_what_would_end_the_run() -> None:
    text = waiting_for(65, "complete", ("CopyComplete.txt",), (36, 52), 0, None)
    assert "nothing changed for 65 s" in text and "'complete' file" in text
    assert "'CopyComplete.txt'" in text and "16 of 52 expected chunk files are absent" in text
    assert "--idle-timeout" in text
    plain = waiting_for(65, "complete", (), None, 0, 600)
    assert "expected" not in plain and "--idle-timeout" not in plain
    assert waiting_note_after(1) == 10 and waiting_note_after(5) == 20


# ---- states and events on the wire -------------------------------------------------------


def test_states_and_events_are_their_wire_strings() -> None:
    assert json.dumps({"state": State.DRY_RUN, "event": Event.FILE_FAILED}) == (
        '{"state": "dry-run", "event": "file_failed"}'
    )
    assert State.DONE == "done" and f"{State.COPYING}" == "copying"
    assert FINAL_STATES.isdisjoint(RUNNING_STATES)
    assert {str(s) for s in FINAL_STATES | RUNNING_STATES} == {
        "waiting", "copying", "draining", "verifying", "done", "failed", "interrupted",
    }  # fmt: skip
    summary = Summary("s", "d", state=State.DONE)
    assert summary.ok and summary.as_dict()["state"] == "done"
    assert type(summary.as_dict()["state"]) is str


# ---- free space --------------------------------------------------------------------------


def test_space_problems_name_the_filesystem_and_what_is_missing() -> None:
    from softcopy.engine.space import full_problem, preflight_problem
    from softcopy.sinks.base import Space

    space = Space(free_bytes=1000, free_inodes=3, block=4096, mount="/mnt/x")
    assert preflight_problem(3, 1000, space) is None
    bytes_short = preflight_problem(2, 5000, space)
    assert bytes_short is not None and "/mnt/x" in bytes_short and "free at least" in bytes_short
    inodes_short = preflight_problem(4, 10, space)
    assert inodes_short is not None and "room for 3 more files" in inodes_short
    assert preflight_problem(10**6, 10, Space(1000, None, 4096, "/")) is None, "no inode limit"
    full = full_problem("No space left on device", 7, 9000, Space(0, 0, 4096, "/mnt/x"))
    assert "out of inodes" in full and "run the same command again" in full
