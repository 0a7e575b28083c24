"""`status`: the targets in the journal."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import EXIT_OK
from .render import status_record, status_text
from .signals import guarded, say


@click.command()
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where the journal lives [$XDG_STATE_HOME/softcopy].",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON record per target.")
@click.pass_context
def status(ctx: click.Context, state_dir: Path | None, as_json: bool) -> None:
    """Targets in the journal: state, files and bytes done and pending, failures, last activity."""
    from ..state.journal import default_state_dir, read_status

    def body() -> int:
        targets = read_status(state_dir or default_state_dir())
        for t in targets:
            if as_json:
                say(json.dumps(status_record(t), default=str))
            else:
                say(status_text(t))
        if not targets and not as_json:
            say("no targets in the journal")
        return EXIT_OK

    ctx.exit(guarded(ctx, body))
