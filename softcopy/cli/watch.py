"""`watch` (the facility service) and `retry` (a failed run back in its queue)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import EXIT_OK
from ..names import shown
from ..options import OPTIONS, cli_values, click_options
from .signals import guarded, say, signals_to

WATCH_HELP = """\b
Exit codes:
  0  stopped by SIGTERM or Ctrl-C (runs in progress resume next time);
     with --once: every run present at start is done
  1  with --once: a run failed (or it was interrupted)
  2  usage or configuration error, before anything started"""


def _service_options() -> Any:
    from ..service.watch import SERVICE_OPTIONS

    return click_options(SERVICE_OPTIONS)


@click.command(epilog=WATCH_HELP)
# Text, not Path: a Path folds s3://b into s3:/b, which names a local folder.
@click.argument("source_root", type=click.Path())
@click.argument("destination_root", type=click.Path())
@_service_options()
@click_options()
@click.pass_context
def watch(ctx: click.Context, source_root: str, destination_root: str, **values: Any) -> None:
    """Copy every run that appears under SOURCE_ROOT to DESTINATION_ROOT (a folder, or
    s3://BUCKET/PREFIX), one copy per run (the same engine, options and promises as
    `copy`), until stopped."""
    from ..service.watch import SERVICE_OPTIONS, Service, watch_config

    def body() -> int:
        service_names = {o.dest or o.name for o in SERVICE_OPTIONS}
        service = cli_values(
            {k: v for k, v in values.items() if k in service_names}, SERVICE_OPTIONS
        )
        copy = cli_values({k: v for k, v in values.items() if k not in service_names}, OPTIONS)
        cfg = watch_config(source_root, destination_root, service, copy, "command line")
        stop_signals = None
        from ..engine.stop import StopSignal

        stop = StopSignal()
        svc = Service(cfg, stop, announce=True)
        stop_signals = signals_to(stop, keep=True)
        with stop_signals:
            return svc.run()

    ctx.exit(guarded(ctx, body))


@click.command()
@click.argument("run")
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where the journal lives [$XDG_STATE_HOME/softcopy].",
)
@click.pass_context
def retry(ctx: click.Context, run: str, state_dir: Path | None) -> None:
    """Put the failed RUN (its path under the source root, or its source) back in the
    queue of the watcher that found it: it is copied again, with fresh attempts."""
    from ..state.journal import default_state_dir
    from ..state.runs import retry_run

    def body() -> int:
        for row in retry_run(state_dir or default_state_dir(), run):
            say(f"run {shown(row['run'])}: back in the queue of {shown(row['source_root'])}")
        return EXIT_OK

    ctx.exit(guarded(ctx, body))
