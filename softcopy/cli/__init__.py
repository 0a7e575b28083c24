"""Command line: the `softcopy` group, logging, and one module per command."""

from __future__ import annotations

import logging
import sys

import click

from .. import __version__
from ..names import safe_text
from . import copy, release, signals, simulate, status, verify, watch

__all__ = ["entry", "main"]


@click.group(epilog=copy.EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="softcopy")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging and tracebacks.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """Copy Zarr archives off the acquisition machine while they are being written."""
    ctx.obj = {"verbose": verbose}
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _LineFormatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s"
            if verbose
            else "softcopy: %(message)s"
        )
    )
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])


class _LineFormatter(logging.Formatter):
    """Every log line is one printable line: a name in it (or in an error message that
    quotes one) cannot break the line, move the cursor or fail to encode (names.safe_text).
    A traceback (--verbose) is added after, as it is."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return safe_text(super().formatMessage(record))


# The modules keep their names here (a command's function would hide its module).
for _command in (copy.copy, copy.run, watch.watch, watch.retry, release.release, verify.verify,
                 status.status, simulate.simulate, simulate.demo):  # fmt: skip
    main.add_command(_command)


def entry() -> None:
    """The `softcopy` program: the console script and `python -m softcopy`.

    Stop signals are blocked only here, once the exit code is decided, never inside
    a command: a blocked mask is inherited by every process started later, so a
    command run in-process (a test, a service) would leave its caller deaf to Ctrl-C.
    """
    try:
        main(prog_name="softcopy")
    finally:
        signals.block_stop_signals()
