"""`status`: the targets and runs in the journal; `forget`: one of them out of it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from ..errors import EXIT_OK, ConfigError
from ..names import json_record, safe_text, shown
from ..units import parse_duration
from .render import run_text, status_record, status_text
from .signals import guarded, say

# Every state `status` can show: a target's (states.State, `released`) and a run's (`retry`).
STATES = (
    "waiting",
    "copying",
    "draining",
    "verifying",
    "done",
    "failed",
    "interrupted",
    "released",
    "retry",
)
LOG_LINES = 20
_STATE_DIR_HELP = "Where the journal lives [$XDG_STATE_HOME/softcopy]."


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


@click.command()
@click.argument("name", required=False, metavar="[DEST|SOURCE|RUN]")
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help=_STATE_DIR_HELP,
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON record per run and per target (schema in docs/service.md).",
)
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(STATES),
    help="Only entries in this state (repeatable).",
)
@click.option(
    "--prune",
    is_flag=True,
    help="Remove finished entries (done, failed, released, interrupted) older than "
    "--older-than from the journal.",
)
@click.option(
    "--older-than",
    callback=_duration,
    metavar="DURATION",
    help="With --prune: last activity at least this long ago (e.g. 7d, 12h) [30d].",
)
@click.pass_context
def status(
    ctx: click.Context,
    name: str | None,
    state_dir: Path | None,
    as_json: bool,
    states: tuple[str, ...],
    prune: bool,
    older_than: float | None,
) -> None:
    """Runs (of `watch`) and targets in the journal: state, files and bytes, failures, hooks,
    last activity. With DEST, SOURCE or a run's name: that one in detail, with the last
    lines of its run log."""
    if older_than is not None and not prune:
        raise click.UsageError("--older-than goes with --prune")
    if prune and (name is not None or states):
        raise click.UsageError("--prune removes every finished entry: give no NAME or --state")

    def body() -> int:
        from ..state.journal import default_state_dir

        where = state_dir or default_state_dir()
        if prune:
            return _prune(where, 30 * 86400.0 if older_than is None else older_than, as_json)
        if name is not None:
            return _one(where, name, frozenset(states), as_json)
        return _all(where, frozenset(states), as_json)

    ctx.exit(guarded(ctx, body))


def _all(where: Path, states: frozenset[str], as_json: bool) -> int:
    from ..state.journal import read_status
    from ..state.runs import read_runs, run_record

    runs = [r for r in read_runs(where) if not states or r["state"] in states]
    # A run's copy is a target too: shown once, as the run.
    copies = {r["destination"] for r in read_runs(where)}
    targets = [
        t
        for t in read_status(where)
        if t["destination"] not in copies and (not states or t["state"] in states)
    ]
    for run in runs:
        record = run_record(run)
        say(json.dumps(json_record(record)) if as_json else run_text(record))
    for t in targets:
        say(json.dumps(status_record(t), default=str) if as_json else status_text(t))
    if not targets and not runs and not as_json:
        say(f"no targets in the journal{_in_states(states)}")
    return EXIT_OK


def _in_states(states: frozenset[str]) -> str:
    return f" in state {' or '.join(sorted(states))}" if states else ""


def _one(where: Path, name: str, states: frozenset[str], as_json: bool) -> int:
    """One target or run in detail: everything `status` says, its times, its log's tail."""
    from ..state.journal import JOURNAL, read_status
    from ..state.runs import matching, read_runs, run_record

    targets, runs = matching(read_status(where), read_runs(where), name)
    if not targets and not runs:
        raise ConfigError(
            name,
            "show",
            f"the journal ({where / JOURNAL}) has no target or run of that name (give a "
            "destination or source path, or a run's name, as `softcopy status` shows them)",
        )
    runs = [r for r in runs if not states or r["state"] in states]
    targets = [t for t in targets if not states or t["state"] in states]
    by_destination = {t["destination"]: t for t in targets}
    shown_targets: set[str] = set()
    for run in runs:
        record = run_record(run)
        copy = by_destination.get(run["destination"])
        shown_targets.add(run["destination"])
        tail = _log_tail(run["destination"])
        if as_json:
            say(json.dumps(json_record({**record, "log": tail})))
            if copy is not None:
                say(json.dumps(status_record({**copy, "log": tail}), default=str))
            continue
        say(run_text(record))
        if copy is not None:
            say(status_text(copy))
            say(_times(copy))
        say(_log_text(run["destination"], tail))
    for t in targets:
        if t["destination"] in shown_targets:
            continue
        tail = _log_tail(t["destination"])
        if as_json:
            say(json.dumps(status_record({**t, "log": tail}), default=str))
            continue
        say(status_text(t))
        say(_times(t))
        say(_log_text(t["destination"], tail))
    if not targets and not runs and not as_json:
        say(f"{shown(name)}: not{_in_states(states)}")
    return EXIT_OK


def _times(t: dict[str, Any]) -> str:
    def when(seconds: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))

    return f"{' ' * 12}started {when(t['started'])}, last activity {when(t['updated'])}"


def _log_tail(destination: str) -> list[dict[str, Any]]:
    """The last lines of the copy's run log (DEST.softcopy/log.jsonl); [] when it has none.
    Read like every record: never through a link, whoever owns the folder."""
    from ..errors import SoftcopyError
    from ..locations import is_object_store
    from ..state.records import Records, records_dir
    from ..state.runlog import read_tail

    try:
        if is_object_store(destination):  # the store found as a copy would find it (AWS chain)
            from ..sinks.base import sink_from_spec, spec_for

            records = sink_from_spec(spec_for(destination)).peek()[1]
        else:
            records = Records.open(records_dir(Path(destination)), create=False, check_owner=False)
    except SoftcopyError:
        return []  # a folder gone bad says so when the copy runs; status shows the journal
    if records is None:
        return []
    try:
        return read_tail(records, LOG_LINES)
    except (OSError, SoftcopyError):
        return []
    finally:
        records.close()


_KNOWN = ("schema", "event", "time", "source", "destination", "key", "names_hex")


def _log_text(destination: str, tail: list[dict[str, Any]]) -> str:
    pad = " " * 12
    if not tail:
        return f"{pad}no run log in {shown(destination)}.softcopy"
    lines = [f"{pad}last {len(tail)} line(s) of {shown(destination)}.softcopy/log.jsonl:"]
    for entry in tail:
        lines.append(f"{pad}  {_log_line(entry)}")
    return "\n".join(lines)


def _log_line(entry: dict[str, Any]) -> str:
    """One log object for people: time, event, key, then its other fields."""
    stamp = entry.get("time")
    when = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))
        if isinstance(stamp, int | float)
        else "-"
    )
    words = [when, str(entry.get("event", "?"))]
    if entry.get("key") is not None:
        words.append(str(entry["key"]))  # as in the log: strict JSON, raw bytes as \xNN
    words += [f"{k}={v}" for k, v in entry.items() if k not in _KNOWN]
    return safe_text(" ".join(words))


def _prune(where: Path, older_than: float, as_json: bool) -> int:
    from ..state.runs import prune

    targets, runs = prune(where, older_than)
    for run in runs:
        _said_gone("run", run["run"], run["state"], as_json)
    for t in targets:
        _said_gone("target", t["destination"], t["state"], as_json)
    if not as_json:
        say(f"pruned {_count(len(targets), 'target')} and {_count(len(runs), 'run')}")
    return EXIT_OK


def _said_gone(kind: str, name: str, state: str, as_json: bool) -> None:
    if as_json:
        say(json.dumps(json_record({"type": kind, "forgotten": name, "state": state})))
    else:
        say(f"forgot {kind} {shown(name)} ({state})")


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


@click.command()
@click.argument("name", metavar="DEST|SOURCE|RUN")
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help=_STATE_DIR_HELP,
)
@click.option("--json", "as_json", is_flag=True, help="One JSON record per entry removed.")
@click.pass_context
def forget(ctx: click.Context, name: str, state_dir: Path | None, as_json: bool) -> None:
    """Remove one target or run from the journal (not a running one). The copy and its
    records stay; a later run of it compares what it finds instead of trusting it."""

    def body() -> int:
        from ..state.journal import default_state_dir
        from ..state.runs import forget as forget_entries

        targets, runs = forget_entries(state_dir or default_state_dir(), name)
        for run in runs:
            _said_gone("run", run["run"], run["state"], as_json)
        for t in targets:
            _said_gone("target", t["destination"], t["state"], as_json)
        return EXIT_OK

    ctx.exit(guarded(ctx, body))
