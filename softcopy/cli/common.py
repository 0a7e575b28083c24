"""What every command shares: the logging options (accepted before and after the command's
name, as rsync and rclone users type them), the exit codes, and the `--stats` block.

Kept free of the engine's imports: `softcopy --help` and `--version` load this and click only.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import Any

import click

from ..errors import ConfigError
from ..names import safe_text

EXIT_CODES_HELP = """\b
Exit codes:
  0  every target copied and verified
  1  a copy or verification failed, or the run was interrupted
  2  usage or configuration error (bad option, targets file, source, metadata)"""

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_PLAIN = "softcopy: %(message)s"
_DETAILED = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_SETTINGS = ("verbose", "quiet", "log_file", "log_level")


class LineFormatter(logging.Formatter):
    """Every log line is one printable line: a name in it (or in an error message that
    quotes one) cannot break the line, move the cursor or fail to encode (names.safe_text).
    A traceback (--verbose) is added after, as it is."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return safe_text(super().formatMessage(record))


class _Ours:
    """Marks the handlers installed here, so a second configuration replaces them."""


class _Console(logging.StreamHandler, _Ours):
    pass


class _LogFile(logging.StreamHandler, _Ours):
    pass


def settings(ctx: click.Context) -> dict[str, Any]:
    """The logging settings of this invocation: one dict, on the root context's `obj`
    (which `guarded` reads for --verbose), whichever level set them."""
    root = ctx.find_root()
    if root.obj is None:
        root.obj = {}
    for name in _SETTINGS:
        root.obj.setdefault(name, None if name in ("log_file", "log_level") else False)
    ctx.obj = root.obj
    return root.obj


def quiet_asked() -> bool:
    """-q, before or after the command: as rsync -q, nothing printed on success (errors and
    failures still go to stderr)."""
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    return isinstance(obj, dict) and bool(obj.get("quiet"))


def quiet_in(args: list[str]) -> bool:
    """-q in arguments not parsed yet (the original's forms are rewritten before click
    parses them, so their hint is printed before -q is known)."""
    for arg in args:
        if arg == "--":
            return False
        if arg == "--quiet" or (arg.startswith("-") and not arg.startswith("--") and "q" in arg):
            return True
    return False


def _store(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    obj = settings(ctx)
    if ctx.resilient_parsing or value in (None, False):
        return  # not typed at this level: what the other level said stands
    obj[param.name] = value
    if obj["verbose"] and obj["quiet"]:
        raise click.UsageError("-v/--verbose and -q/--quiet contradict each other", ctx)
    apply(obj)


def apply(obj: dict[str, Any]) -> None:
    """configure(), with a bad log file as one line and exit 2, like every usage error."""
    try:
        configure(obj)
    except ConfigError as exc:
        raise Refused(str(exc)) from None


class Refused(click.ClickException):
    """A usage error worded as every softcopy error is: `softcopy: error: cannot ...`."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"softcopy: error: {safe_text(self.message)}", err=True)


def logging_options() -> list[click.Option]:
    """-v, -q, --log-file, --log-level: new objects each time, one set per command."""
    common = {"expose_value": False, "is_eager": True, "callback": _store}
    return [
        click.Option(
            ["-v", "--verbose"], is_flag=True, help="Debug logging and tracebacks.", **common
        ),
        click.Option(
            ["-q", "--quiet"],
            is_flag=True,
            help="Warnings and errors only on stderr, nothing on success (the log file "
            "keeps the rest).",
            **common,
        ),
        click.Option(
            ["--log-file"],
            metavar="FILE",
            help="Also append the log lines, with timestamps, to FILE.",
            **common,
        ),
        click.Option(
            ["--log-level"],
            type=click.Choice(list(LEVELS), case_sensitive=False),
            help="Lowest level logged [info; debug with -v; warning on stderr with -q].",
            **common,
        ),
    ]


def add_logging_options(command: click.Command) -> click.Command:
    """Give a command the shared logging options (once), after its own."""
    names = {p.name for p in command.params}
    command.params.extend(o for o in logging_options() if o.name not in names)
    return command


def configure(obj: dict[str, Any]) -> None:
    """(Re)install softcopy's log handlers for these settings; idempotent."""
    verbose, quiet = bool(obj.get("verbose")), bool(obj.get("quiet"))
    level_name = obj.get("log_level")
    chosen = LEVELS[level_name.lower()] if level_name else None
    console_level = chosen or (
        logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    )
    file_level = chosen or (logging.DEBUG if verbose else logging.INFO)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Ours)]:
        root.removeHandler(handler)
        if isinstance(handler, _LogFile):
            handler.close()
    console = _Console(sys.stderr)
    console.setFormatter(LineFormatter(_DETAILED if verbose else _PLAIN))
    console.setLevel(console_level)
    root.addHandler(console)
    levels = [console_level]
    if obj.get("log_file"):
        log_file = _LogFile(_open_log(obj["log_file"]))
        log_file.setFormatter(LineFormatter(_DETAILED))
        log_file.setLevel(file_level)
        root.addHandler(log_file)
        levels.append(file_level)
    root.setLevel(min(levels))
    # An object store's libraries log where they found credentials and each request, at
    # INFO and DEBUG: noise among softcopy's lines unless debugging.
    for name in ("boto3", "botocore", "s3transfer", "urllib3"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)


def to_log_file(text: str, level: int = logging.INFO) -> None:
    """What the program printed (a summary, a plan, an error), into --log-file too, a
    record per line: the log of a run from cron then says how it ended."""
    files = [h for h in logging.getLogger().handlers if isinstance(h, _LogFile)]
    if not files:
        return
    for line in text.splitlines():
        if not line.strip():
            continue
        said = line.removeprefix("softcopy: ")
        record = logging.LogRecord("softcopy", level, "", 0, said, None, None)
        for handler in files:
            if level >= handler.level:
                handler.handle(record)


def _open_log(path: str) -> Any:
    """Append-only, never through a link (a link planted at the log's name could make
    softcopy write into any file it can), never a FIFO or device that would block."""
    action = "open log file"
    try:
        fd = os.open(
            path,
            os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
            0o644,
        )
    except OSError as exc:
        if os.path.islink(path):
            raise ConfigError(path, action, "it is a symbolic link, which softcopy never "
                              "writes through; name the file itself") from None  # fmt: skip
        raise ConfigError(path, action, os.strerror(exc.errno or 0)) from None
    if not _regular(fd):
        os.close(fd)
        raise ConfigError(path, action, "it is not a regular file")
    return open(fd, "a", encoding="utf-8", errors="backslashreplace", buffering=1)


def _regular(fd: int) -> bool:
    import stat

    return stat.S_ISREG(os.fstat(fd).st_mode)


def stats_lines(summaries: Iterable[Any], seconds: float) -> list[str]:
    """rsync's --stats, for softcopy's numbers: what was copied, deleted and already there,
    over every target of the run."""
    from ..units import human_bytes

    rows = list(summaries)
    copied = sum(s.files_copied for s in rows)
    copied_bytes = sum(s.bytes_copied for s in rows)
    rate = copied_bytes / seconds if seconds > 0 else 0.0
    lines = [
        "",
        f"Targets: {len(rows)} ({sum(s.ok for s in rows)} verified)",
        f"Files at the source: {sum(s.files_at_source for s in rows)} "
        f"({human_bytes(sum(s.bytes_at_source for s in rows))})",
        f"Files copied: {copied} ({human_bytes(copied_bytes)})",
        f"Files deleted: {sum(s.files_deleted for s in rows)}",
        f"Files already there: {sum(s.files_already_there for s in rows)}",
        f"Elapsed: {seconds:.1f} s",
        f"Rate: {human_bytes(rate)}/s",
    ]
    return lines


def stats_wanted() -> bool:
    """Whether this invocation asked for `--stats` (set by the option's callback)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.meta.get("softcopy.stats"))


def want_stats(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        import time

        ctx.meta["softcopy.stats"] = True
        ctx.meta.setdefault("softcopy.started", time.monotonic())


def elapsed() -> float:
    import time

    ctx = click.get_current_context(silent=True)
    started = ctx.meta.get("softcopy.started") if ctx else None
    return time.monotonic() - started if started is not None else 0.0
