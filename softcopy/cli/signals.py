"""Signals into the stop signal, and output that a dead terminal cannot turn into a crash."""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # only an annotation: `softcopy --version` need not import the engine
    from ..engine.runner import StopSignal
from ..errors import EXIT_FAILED, SoftcopyError
from ..names import safe_text, utf8_text
from .common import to_log_file

log = logging.getLogger("softcopy")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class signals_to:
    """First Ctrl-C, SIGTERM or SIGHUP (the terminal or ssh session went away): finish the
    files in flight and stop. Second: abort.

    `keep`: the handlers stay for the rest of the process. Python's own would raise
    KeyboardInterrupt (exit 130) or end the process (SIGHUP, SIGTERM) while the summary
    prints, making the exit code a matter of timing; `received` makes it 1 instead.
    """

    def __init__(self, stop: StopSignal, keep: bool = False) -> None:
        self.stop = stop
        self.keep = keep
        self.saved: dict[int, Any] = {}
        self.ended = False
        self.received = 0  # signals, also those after the work ended

    def handle(self, signum: int, frame: object) -> None:
        self.received += 1
        if signum == signal.SIGHUP:
            silence_hung_up_outputs()
        if self.ended:
            return  # nothing left to stop: the summary is printing
        self.stop.request()
        if self.stop.level == 1:
            again = "Ctrl-C" if signum == signal.SIGINT else "a second signal"
            message = f"softcopy: stopping after the files in flight ({again} to abort)"
        else:
            message = "softcopy: aborting"
        tell(message)

    def __enter__(self) -> signals_to:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self.saved[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self.ended = True
        if not self.keep:
            for sig, handler in self.saved.items():
                signal.signal(sig, handler)


def block_stop_signals() -> None:
    """Every output is written: a late Ctrl-C must not reach the interpreter's shutdown,
    where Python's default handler is back and the exit status would become "killed by
    SIGINT" instead of the code decided here. Blocked signals die with the process.
    Only for the program's own exit (cli.entry): the mask is inherited by children.

    The mask is the calling thread's only: a signal sent to the process is delivered to
    any thread that does not block it (a library's worker thread, still alive at exit),
    where the default action, back once Python finalises, kills the process. Ignoring the
    signals is process-wide and closes that gap."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def guarded(ctx: click.Context, body: Callable[[], int]) -> int:
    """One paragraph per error, no traceback unless --verbose."""
    try:
        return body()
    except SoftcopyError as exc:
        if ctx.obj["verbose"]:
            log.exception("error")
        # Every error of an input at once (config.ConfigErrors), one paragraph each.
        errors = getattr(exc, "errors", None) or [exc]
        text = "\n\n".join(f"softcopy: error: {safe_text(str(e))}" for e in errors)
        say(text, err=True, level=logging.ERROR)
        return exc.exit_code
    except Exception as exc:
        # A bug of ours still gets one paragraph; the traceback is for -v and a report.
        if ctx.obj["verbose"]:
            log.exception("internal error")
        say(
            f"softcopy: internal error: {type(exc).__name__}: {safe_text(str(exc))}. This is "
            "a bug in softcopy: run again with -v for the traceback, and report it.",
            err=True,
        )
        return EXIT_FAILED


def tell(message: str) -> None:
    """A line on stderr from a signal handler; it must never raise.

    sys.stderr as it is now: the live display's proxy prints above the table (click.echo
    would write to the stream beneath it and tear the display).
    """
    try:
        print(message, file=sys.stderr, flush=True)
    except (OSError, ValueError, RuntimeError):  # gone (EIO, EPIPE), closed, re-entered
        silence(2)


def say(text: str, err: bool = False, level: int | None = logging.INFO) -> None:
    """A line of output that cannot turn a finished run into a crash: after a hang-up the
    terminal is gone (EIO, EPIPE), and a name that is not UTF-8 may not encode. It goes
    to --log-file too, at `level` (None: the caller logs it)."""
    if level is not None:
        to_log_file(text, level)
    try:
        try:
            click.echo(text, err=err)
        except UnicodeEncodeError:
            click.echo(utf8_text(text), err=err)
    except (OSError, ValueError):
        silence(2 if err else 1)


def silence_hung_up_outputs() -> None:
    """After a hang-up, stdout and stderr on the dead terminal go to /dev/null: every later
    write (log lines, the summary, the interpreter's last flush) then succeeds."""
    poller = select.poll()
    for fd in (1, 2):
        poller.register(fd, 0)  # POLLERR and POLLHUP are reported whatever is asked
    for fd, events in poller.poll(0):
        if events & (select.POLLERR | select.POLLHUP) and not events & select.POLLNVAL:
            silence(fd)


def silence(fd: int) -> None:
    try:
        null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.dup2(null, fd)
    except OSError:
        pass
    finally:
        os.close(null)
