"""`release`: free the source of a finished copy, only when that is provably safe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import EXIT_FAILED, EXIT_OK, ConfigError
from ..locations import is_object_store
from ..names import shown
from .signals import guarded, say

if TYPE_CHECKING:
    from ..service.release import Release

RELEASE_HELP = """\b
Frees (deletes, or with --to moves) the source only when all hold: the copy's
certificate exists; its end was proven (the complete marker or a sentinel, not a
guess); it was made with --hash and its manifest is the certified one; the
destination, re-read from its device, matches the manifest; the source is the
copied directory and every file has the version the journal recorded (with
--rehash, also its content); no softcopy is copying it now. Otherwise every
reason is listed. DESTINATION may be a packed archive or a compressed copy: their own
records are checked (an archive's members verified where it is stored, its bytes
re-read), and the source always by content.
Exit codes: 0 released (or, with --dry-run, would be), 1 refused, 2 usage error."""


@click.command(epilog=RELEASE_HELP)
# Text first: a Path folds s3://b into s3:/b.
@click.argument("destination", type=click.Path())
@click.option(
    "--source",
    type=click.Path(path_type=Path),
    help="The source to free; it must be the copied one [the certificate's].",
)
@click.option(
    "--to",
    "to",
    type=click.Path(path_type=Path),
    help="Move the source into this directory (on its filesystem: a rename) instead of deleting.",
)
@click.option(
    "--rehash", is_flag=True, help="Also compare every source file's BLAKE3 with the manifest."
)
@click.option("--dry-run", is_flag=True, help="Check everything, change nothing.")
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where the journal lives [$XDG_STATE_HOME/softcopy].",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object: the outcome and checks.")
@click.pass_context
def release(
    ctx: click.Context,
    destination: str,
    source: Path | None,
    to: Path | None,
    rehash: bool,
    dry_run: bool,
    state_dir: Path | None,
    as_json: bool,
) -> None:
    """Free the source of the finished copy (or archive) at DESTINATION when provably safe."""
    from ..service.release import release as release_source

    def body() -> int:
        if is_object_store(destination):
            raise ConfigError(
                destination, "release the source of", "freeing the source of an object-store "
                "copy is not built yet: check the copy with `softcopy verify --hash SOURCE "
                f"{destination}`, and free the source yourself",
            )  # fmt: skip
        outcome = release_source(
            Path(destination), source, to=to, rehash=rehash, dry_run=dry_run, state_dir=state_dir
        )
        if as_json:
            say(json.dumps(outcome.as_dict()))
        else:
            _print(outcome)
        ok = outcome.released or (outcome.dry_run and not outcome.reasons)
        return EXIT_OK if ok else EXIT_FAILED

    ctx.exit(guarded(ctx, body))


def _print(outcome: Release) -> None:
    source = shown(outcome.source) if outcome.source else f"the source of {outcome.destination}"
    dest = shown(outcome.destination)
    by = {"journal": "versions checked against the journal", "content": "content re-hashed"}
    how = by.get(outcome.versions_checked_by, "")
    for reason in outcome.reasons:
        # Reasons already show their names (names.shown); only the line's frame is added.
        say(f"softcopy: refused to release {source}: {reason}", err=True)
    if outcome.reasons:
        verb = "would not be released" if outcome.dry_run else "not released"
        n = len(outcome.reasons)
        say(f"softcopy: {source} {verb}: {n} reason{'s' if n > 1 else ''} above", err=True)
    elif outcome.dry_run:
        where = "would move it" if "to_same_filesystem" in outcome.checks else "would delete it"
        say(f"would release {source}: the copy at {dest} is proven whole ({how}); {where}")
    elif outcome.moved_to:
        say(f"released {source}: moved to {shown(outcome.moved_to)} ({how}); copy at {dest}")
    else:
        say(f"released {source}: deleted ({how}); its verified copy is at {dest}")
