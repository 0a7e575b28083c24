"""Command line: the `softcopy` group, logging, and one module per command.

The group imports a command's module only when that command runs or shows its help:
`softcopy --help` and `--version` load click and this package's small modules, not the
engine (numpy, zarr, the copiers).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping
from typing import Any

import click

from .. import __version__
from ..priority import one_library_thread
from . import legacy
from .common import (
    EXIT_CODES_HELP,
    add_logging_options,
    apply,
    logging_options,
    quiet_in,
    settings,
)

__all__ = ["entry", "main"]

# name: (module under softcopy.cli, attribute, the short help `softcopy --help` shows).
# tests/test_dropin.py checks each short help against the command's own.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "copy": ("copy", "copy", "Copy one zarr SOURCE to DESTINATION (the copy itself; created "
             "if missing)."),
    "run": ("copy", "run", "Copy every target of TARGETS_FILE in parallel, and watch each of "
            "its `watch:` roots as `softcopy watch` does (see targets.example.yaml)."),
    "watch": ("watch", "watch", "Copy every run that appears under SOURCE_ROOT to "
              "DESTINATION_ROOT (a folder, or s3://BUCKET/PREFIX), one copy per run (the same "
              "engine, options and promises as `copy`), until stopped."),
    "retry": ("watch", "retry", "Put the failed RUN (its path under the source root, or its "
              "source) back in the queue of the watcher that found it: it is copied again, "
              "with fresh attempts."),
    "release": ("release", "release", "Free the source of the finished copy (or archive) at "
                "DESTINATION when provably safe."),
    "verify": ("verify", "verify", "Check a copy: `verify SOURCE DESTINATION`, or `verify "
               "DESTINATION` against its records."),
    "unpack": ("archive", "unpack", "Restore a packed copy into DIRECTORY, every member "
               "verified against its records."),
    "status": ("status", "status", "Runs (of `watch`) and targets in the journal: state, "
               "files and bytes, failures, hooks, last activity."),
    "forget": ("status", "forget", "Remove one target or run from the journal (not a running "
               "one)."),
    "simulate": ("simulate", "simulate", "Write a zarr archive with tensorstore the way a "
                 "microscope does (for demos and tests)."),
    "demo": ("simulate", "demo", "Simulate an acquisition, copy it live, verify, and print "
             "a summary."),
}  # fmt: skip


class _Commands(MutableMapping):
    """The group's `commands`: every name is there at once, each command is imported on
    first use. `add_command` still works, for commands registered the eager way."""

    def __init__(self, lazy: dict[str, tuple[str, str, str]]) -> None:
        self.lazy = lazy
        self.loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self.loaded:
            if name not in self.lazy:
                raise KeyError(name)
            module, attribute, _ = self.lazy[name]
            found = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
            self.loaded[name] = add_logging_options(found)
        return self.loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self.loaded[name] = add_logging_options(command)

    def __delitem__(self, name: str) -> None:
        self.loaded.pop(name, None)
        self.lazy.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self.loaded or name in self.lazy

    def __iter__(self) -> Iterator[str]:
        return iter({**dict.fromkeys(self.lazy), **dict.fromkeys(self.loaded)})

    def __len__(self) -> int:
        return len(set(self.lazy) | set(self.loaded))

    def short_help(self, name: str) -> str | None:
        """The listed text, without importing a command not loaded yet."""
        if name not in self.loaded and self.lazy[name][2]:
            return self.lazy[name][2]
        return None


class SoftcopyGroup(click.Group):
    """Lazy commands; the original softcopy's forms; "No such command" for the rest."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = _Commands(dict(COMMANDS))  # type: ignore[assignment]

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not ctx.resilient_parsing:
            modern = legacy.translate(args, self.commands, valued=("--log-file", "--log-level"))
            if modern is not None:
                if not quiet_in(args):  # said once the command line parsed (copy, run)
                    ctx.meta[legacy.HINT] = legacy.hint(modern)
                if modern[0] == "run":
                    try:
                        legacy.check_relative_paths(_first_positional(self, ctx, modern))
                    except click.ClickException:
                        legacy.say_hint(ctx)  # the line parsed: what to type, then why not
                        raise
                args = modern
            else:
                args = legacy.wait_values(args, valued=("--log-file", "--log-level"))
        return super().parse_args(ctx, args)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = click.utils.make_str(args[0])
        if name in self.commands or name.startswith("-") or ctx.resilient_parsing:
            return super().resolve_command(ctx, args)
        message = f"No such command {name!r}."
        if legacy.looks_like_path(name):
            message = (
                f"No such command {name!r}, nor an existing file or directory (the original "
                "softcopy's forms, TARGETS_FILE or SOURCE DEST, need it to exist, or "
                "--wait-for-source true)."
            )
        raise click.NoSuchCommand(name, message, possibilities=list(self.commands), ctx=ctx)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        limit = formatter.width - 6 - max((len(n) for n in self.commands), default=0)
        for name in self.list_commands(ctx):
            text = self.commands.short_help(name)  # type: ignore[attr-defined]
            if text is None:
                command = self.get_command(ctx, name)
                if command is None or command.hidden:
                    continue
                text = command.get_short_help_str(limit)
            else:
                text = click.utils.make_default_short_help(text, limit)
            rows.append((name, text))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _first_positional(group: click.Group, ctx: click.Context, modern: list[str]) -> str:
    rest = modern[1:]
    index = legacy._positionals(rest, legacy._VALUED | {"--log-file", "--log-level"})
    return rest[index[0]]


@click.group(cls=SoftcopyGroup, epilog=EXIT_CODES_HELP, params=logging_options())
@click.version_option(__version__, prog_name="softcopy")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Copy Zarr archives off the acquisition machine while they are being written.

    \b
    The original softcopy's forms still work, and say what the modern command is:
      softcopy TARGETS_FILE      is  softcopy run TARGETS_FILE
      softcopy SOURCE DEST       is  softcopy copy SOURCE DEST
    """
    apply(settings(ctx))


def entry() -> None:
    """The `softcopy` program: the console script and `python -m softcopy`.

    Stop signals are blocked only here, once the exit code is decided, never inside
    a command: a blocked mask is inherited by every process started later, so a
    command run in-process (a test, a service) would leave its caller deaf to Ctrl-C.
    """
    one_library_thread()
    try:
        main(prog_name="softcopy")
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    finally:
        from .signals import block_stop_signals

        block_stop_signals()
    _exit(code)


def _exit(code: object) -> None:
    """Exit without tearing the interpreter down when nothing is left to run: every output
    is flushed, every exit handler run (temporary files, log files), only the freeing of
    every module (numpy's among them, about 0.03 s) is skipped. With a thread still
    running that is not a daemon, or an exit message, Python's own exit waits as usual."""
    import atexit
    import logging
    import os
    import sys
    import threading

    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if not isinstance(code, int) or any(not t.daemon for t in others):
        raise SystemExit(code)
    atexit._run_exitfuncs()
    logging.shutdown()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: Python's own exit says 120 then
        code = 120
    os._exit(code)
