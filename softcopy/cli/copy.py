"""`copy` and `run`: targets from the command line or a targets file, run together."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..config import TargetConfig, load_targets, make_target
from ..copiers import spares
from ..errors import EXIT_FAILED, EXIT_OK, ConfigError, SoftcopyError
from ..names import safe_text
from ..options import check_value, cli_values, click_options
from . import legacy
from .common import (
    EXIT_CODES_HELP,
    elapsed,
    quiet_asked,
    settings,
    stats_lines,
    stats_wanted,
    to_log_file,
    want_stats,
)
from .progress import Reporter, make_reporter, verbose_asked
from .render import plan_text, summary_lines
from .signals import guarded, say, signals_to

if TYPE_CHECKING:  # imported when a copy starts, after its copiers (see _start_copiers)
    from ..engine.runner import StopSignal

# Options shared by `copy` and `run` (for `run` they override the targets file).
_target_options = click_options()


def _output_options(func: Callable) -> Callable:
    """What `copy` and `run` show, and whether they write at all; rsync's short letters too
    (-n, -P), and its --stats."""
    options = [
        click.option(
            "--json",
            "as_json",
            is_flag=True,
            help="Events as JSON lines on stdout (schema in the user guide); "
            "human lines go to stderr.",
        ),
        click.option(
            "-P",
            "--progress/--no-progress",
            default=None,
            callback=_quiet_means_no_table,
            help="Live progress table on stderr [auto: on a terminal, unless -q; otherwise a "
            "log line per target every 10 s]. -P/--progress forces the table, --no-progress "
            "shows neither.",
        ),
        click.option(
            "-n",
            "--dry-run",
            is_flag=True,
            help="Show what would be copied, re-copied and deleted and whether it fits; "
            "write nothing.",
        ),
        click.option(
            "--stats",
            is_flag=True,
            expose_value=False,
            callback=want_stats,
            help="At the end, a short block of numbers as rsync --stats prints: files and "
            "bytes copied, deleted, already there; elapsed time and rate.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _quiet_means_no_table(ctx: click.Context, param: click.Parameter, value: bool | None) -> Any:
    # -q is an eager option, so it is known here, whether typed before or after the command.
    if value is None and settings(ctx).get("quiet"):
        return False
    return value


@click.command(epilog=EXIT_CODES_HELP)
# Text, not Path: a Path drops the "./" of "./host:dir", which says it is local (config.py).
@click.argument("source", type=click.Path())
@click.argument("destination", type=click.Path())
@_target_options
@_output_options
@click.pass_context
def copy(
    ctx: click.Context,
    source: str,
    destination: str,
    as_json: bool,
    progress: bool | None,
    dry_run: bool,
    **options: Any,
) -> None:
    """Copy one zarr SOURCE to DESTINATION (the copy itself; created if missing).

    DESTINATION may be an object store, s3://BUCKET/PREFIX: each file becomes the object
    PREFIX/<path>, the records go under PREFIX.softcopy/ (docs/object-storage.md).
    """
    legacy.say_hint(ctx)
    _run(
        ctx,
        lambda: [
            make_target(
                source, destination, cli_values({**options, **_dry(dry_run)}), "command line"
            )
        ],
        make_reporter(as_json, False if dry_run else progress),  # a plan has no progress
        dry_run,
    )


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("targets_file", type=click.Path(path_type=Path))
@_target_options
@_output_options
@click.pass_context
def run(
    ctx: click.Context,
    targets_file: Path,
    as_json: bool,
    progress: bool | None,
    dry_run: bool,
    **options: Any,
) -> None:
    """Copy every target of TARGETS_FILE in parallel, and watch each of its `watch:` roots
    as `softcopy watch` does (see targets.example.yaml)."""
    legacy.say_hint(ctx)
    run_rate = options.pop("max_rate", None)  # shared by all targets, not one each
    rates: list[float] = []

    def parse_rate() -> int:
        rates.append(_parse_rate_option(run_rate))
        return EXIT_OK

    if run_rate and (code := guarded(ctx, parse_rate)):
        ctx.exit(code)  # one paragraph, as every error of the command line
    rate = rates[0] if rates else None
    overrides = cli_values({**options, **_dry(dry_run)})
    loaded: dict[str, list] = {}

    def targets() -> list[TargetConfig]:
        loaded["targets"], loaded["watches"] = _load_entries(targets_file, overrides)
        return loaded["targets"]

    _run(
        ctx,
        targets,
        make_reporter(as_json, False if dry_run else progress),  # a plan has no progress
        dry_run,
        rate,
        # A dry run checks the `watch:` entries too, but watches nothing.
        watches=None if dry_run else lambda: loaded["watches"],
    )


def _load_entries(path: Path, overrides: dict[str, Any]) -> tuple[list[TargetConfig], list]:
    """A targets file's `targets:` and `watch:` entries, with every error of both at once."""
    from functools import partial

    from ..config import ConfigErrors, raise_in_order
    from ..service.watch import load_watches

    found: list[list] = []
    errors: list[ConfigError] = []
    # A missing source is an error of the file too, at its line: nothing starts.
    for load in (partial(load_targets, check_sources=True), load_watches):
        try:
            found.append(load(path, overrides))
        except ConfigError as exc:
            errors += exc.errors if isinstance(exc, ConfigErrors) else [exc]
            found.append([])
    # Both loaders read the same file and its `defaults:`: those errors are one each.
    raise_in_order(path, list({str(e): e for e in errors}.values()))
    return found[0], found[1]


def _parse_rate_option(text: str) -> float:
    try:
        return check_value("max_rate", text)
    except ValueError as exc:  # worded as `copy --max-rate` words it
        raise ConfigError("--max-rate", "read option", str(exc)) from None


def _dry(dry_run: bool) -> dict[str, bool]:
    return {"dry_run": True} if dry_run else {}


def _run(
    ctx: click.Context,
    make: Callable[[], list[TargetConfig]],
    reporter: Reporter,
    dry_run: bool = False,
    run_rate: float | None = None,
    watches: Callable[[], list] | None = None,
) -> None:
    targets: list[TargetConfig] = []

    def body() -> int:
        try:
            targets.extend(make())
            _start_copiers(targets, dry_run)
            roots = watches() if watches else []
            if not roots:
                return copy_all(
                    targets,
                    reporter=reporter,
                    dry_run=dry_run,
                    run_rate=run_rate,
                    keep_handlers=True,
                )
            return _copy_and_watch(targets, roots, reporter, run_rate)
        except SoftcopyError as exc:
            if reporter.json:  # a script reading stdout learns why it stopped
                one = targets[0] if len(targets) == 1 else None
                reporter.emit(
                    "error",
                    source=str(one.source) if one else None,
                    destination=str(one.destination) if one else None,
                    error=str(exc),
                    exit_code=exc.exit_code,
                )
            raise

    ctx.exit(guarded(ctx, body))


def _start_copiers(targets: list[TargetConfig], dry_run: bool) -> None:
    """The copiers of the targets that use them, started before the engine is imported
    (numpy, the ledger: longer than a copier's own start-up), so the two overlap.

    Not for a destination that holds a finished copy (its certificate): most likely a
    rerun with nothing to copy, whose copiers start only if work appears. A large one's
    destination side starts here instead (engine/early_match.py)."""
    if dry_run:
        return
    copiers = 0
    for cfg in targets:
        if _copies_with_copiers(cfg):
            copiers += cfg.nprocs
        else:
            from ..engine import early_match  # no numpy, nor the rest of the engine

            early_match.begin(cfg)
    spares.start(copiers)


def _copies_with_copiers(cfg: TargetConfig) -> bool:
    from ..locations import is_object_store
    from ..state.records import records_dir
    from ..verify.manifest import CERTIFICATE

    if cfg.pack or cfg.compress:
        return False  # packed or compressed in the supervisor
    if is_object_store(cfg.destination):
        return True  # its records are in the store: not worth a request here
    return not (records_dir(Path(cfg.destination)) / CERTIFICATE).exists()


def _copy_and_watch(
    targets: list[TargetConfig], roots: list, reporter: Reporter, run_rate: float | None
) -> int:
    """The targets, and a service per watched root, until the targets are done and the
    services stopped (a signal, or each one's --once)."""
    import threading

    from ..engine.runner import StopSignal
    from ..service.watch import Service

    stop = StopSignal()
    services = [Service(cfg, stop) for cfg in roots]  # every refusal before anything starts
    codes: list[int] = []
    threads = [
        threading.Thread(target=lambda s=s: codes.append(s.run()), name="watch", daemon=True)
        for s in services
    ]
    for thread in threads:
        thread.start()
    code = EXIT_OK
    if targets:
        code = copy_all(targets, stop, reporter, run_rate=run_rate, keep_handlers=True)
    with signals_to(stop, keep=True):
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    return max([code, *codes])


def copy_all(
    targets: list[TargetConfig],
    stop: StopSignal | None = None,
    reporter: Reporter | None = None,
    dry_run: bool = False,
    run_rate: float | None = None,
    keep_handlers: bool = False,
) -> int:
    """Every target in its own thread; the exit code of all of them.

    `keep_handlers`: signals stay caught until the process exits (see `signals_to`).
    """
    from ..engine import early_match
    from ..engine.runner import Runner
    from ..engine.target import Summary

    reporter = reporter or make_reporter()
    try:
        with Runner(stop, reporter, run_rate) as runner:
            # The live display ends (its last frame stays) before the summary lines print.
            signals = signals_to(runner.stop, keep=keep_handlers)
            with reporter, signals:
                for cfg in targets:
                    runner.add(cfg)
                finished = runner.wait()
    finally:
        spares.discard()  # a rerun with nothing to copy, a refused target: never told a thing
        early_match.discard()  # a destination side for a target that was refused
    # With --json, stdout carries the events only: the human lines go to stderr.
    err = reporter.json
    codes = [EXIT_OK]
    for end in finished:
        result = end.result
        if isinstance(result, Summary):
            if dry_run and result.plan:  # the engine emitted it as a `plan` event too
                listing = result.plan_files if verbose_asked() else None  # rsync -n -v
                say(plan_text(result.source, result.destination, result.plan, listing), err=err)
                codes.append(EXIT_OK if result.plan.get("fits") else EXIT_FAILED)
                continue
            for text, to_stderr in summary_lines(result, err, quiet_asked()):
                say(text, err=to_stderr, level=None)
            # The log file keeps the whole summary, -q or not: how the run ended.
            level = logging.INFO if result.ok else logging.ERROR
            for text, _ in summary_lines(result, err, quiet=False):
                to_log_file(text, level)
            codes.append(EXIT_OK if result.ok else EXIT_FAILED)
        elif isinstance(result, SoftcopyError):
            if len(targets) == 1:
                raise result
            say(f"softcopy: error: {safe_text(str(result))}", err=True, level=logging.ERROR)
            if reporter.json:
                reporter.emit(
                    "error",
                    source=str(end.cfg.source),
                    destination=str(end.cfg.destination),
                    error=str(result),
                    exit_code=result.exit_code,
                )
            codes.append(result.exit_code)
        else:
            raise result
    if stats_wanted():  # --stats: rsync's block, after every summary line
        summaries = [e.result for e in finished if isinstance(e.result, Summary)]
        for text in stats_lines([s for s in summaries if not s.plan], elapsed()):
            say(text, err=err)
    if signals.received:
        # "Interrupted, run again to resume", whenever the signal came: a rerun of a copy
        # that had finished anyway finds it done.
        codes.append(EXIT_FAILED)
    return max(codes)
