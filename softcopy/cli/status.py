"""`status`: the targets in the journal."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import EXIT_OK
from ..names import json_record
from .render import run_text, status_record, status_text
from .signals import guarded, say


@click.command()
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where the journal lives [$XDG_STATE_HOME/softcopy].",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON record per run and per target (schema in docs/service.md).",
)
@click.pass_context
def status(ctx: click.Context, state_dir: Path | None, as_json: bool) -> None:
    """Runs (of `watch`) and targets in the journal: state, files and bytes, failures, hooks,
    last activity."""
    from ..state.journal import default_state_dir, read_status
    from ..state.runs import read_runs, run_record

    def body() -> int:
        where = state_dir or default_state_dir()
        runs = read_runs(where)
        # A run's copy is a target too: shown once, as the run.
        copies = {r["destination"] for r in runs}
        targets = [t for t in read_status(where) if t["destination"] not in copies]
        for run in runs:
            record = run_record(run)
            say(json.dumps(json_record(record)) if as_json else run_text(record))
        for t in targets:
            if as_json:
                say(json.dumps(status_record(t), default=str))
            else:
                say(status_text(t))
        if not targets and not runs and not as_json:
            say("no targets in the journal")
        return EXIT_OK

    ctx.exit(guarded(ctx, body))
